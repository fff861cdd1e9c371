"""`component=nice`: NICE (Wang et al. 2025, "NICE Data Selection for Instruction Tuning in LLMs with
Non-differentiable Evaluation Metric"), computed online at each update.

Like LESS, but a target example's feature is a policy gradient of a (non-differentiable) reward instead
of the gradient of its loss: `mc_samples` responses y_i are sampled from the current model for the
target prompt x, scored with the reward r_i (a local reward model, or token F1 against the reference
answer), and the feature is the projection of (1/m) sum_i r_i * grad NLL(y_i | x) (NLL summed over the
response tokens, i.e. minus the REINFORCE direction, so a positive cosine with a training loss gradient
means training on that sample raises the expected reward). The per-row gradients come from the same
batched per-sample machinery, with the reward as the row's loss weight. Training features are the Adam-
preconditioned ones of LESS; the score is LESS's mean cosine per target subtask, max over subtasks.
This is the paper's vanilla estimator (no rejection sampling or top-k filtering of responses).

Defaults follow the authors' code (JTWang2000/NICE): `mc_samples=20` responses per target, sampled with
`temperature=1.2`, `top_k=50`, `top_p=0.95`, up to `max_new_tokens=100`; the response's gradient covers its
tokens up to, not including, EOS (`include_eos=false`); a reward model scores the (question, answer) pair
as a text pair (its tokenizer inserts its own separator), as the authors call it. These are expensive on a
CPU (20 x 100-token generations per target example): lower mc_samples / max_new_tokens for smoke runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from dataflex.config.component.select import NiceSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.data.processor import IGNORE_INDEX, Features, collate
from dataflex.train.selector.base_selector import top_k
from dataflex.train.selector.less_selector import less_scores
from dataflex.train.selector.reward_model import RewardModel, load_reward_model
from dataflex.train.selector.scoring import sharded
from dataflex.train.selector.targeted import GradientSelector
from dataflex.train.signals.gradients import gradient_features
from dataflex.utils.modes import eval_mode


def token_f1(prediction: Sequence[int], reference: Sequence[int]) -> float:
    """Bag-of-tokens F1 (SQuAD-style) between two token id sequences."""
    common = sum((Counter(prediction) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def trim_response(row: Sequence[int], eos: int | None, pad: int | None, include_eos: bool) -> list[int]:
    """A generated continuation up to its first EOS (kept only with `include_eos`), padding dropped."""
    row = list(row)
    if eos is not None and eos in row:
        row = row[: row.index(eos) + (1 if include_eos else 0)]
    return [t for t in row if t != pad or t == eos]


def split_prompt(item: Features) -> tuple[list[int], list[int]]:
    """(prompt ids, reference answer ids) of a tokenized SFT item: the prompt is everything before the first
    supervised token."""
    supervised = [k for k, label in enumerate(item.labels) if label != IGNORE_INDEX]
    if not supervised:
        return list(item.input_ids), []
    return list(item.input_ids[: supervised[0]]), [item.labels[k] for k in supervised]


@contextmanager
def seeded(seed: int, device):
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@register_selector("nice")
class NiceSelector(GradientSelector):
    selector_name = "nice"

    Config = NiceSelectorConfig
    _reward_model: RewardModel | None = None

    # ---- responses and rewards --------------------------------------------------------------------------
    def _special(self) -> set[int]:
        tok = self.ctx.tokenizer
        return (
            {t for t in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) if t is not None}
            if tok
            else set()
        )

    def sample_responses(self, model, prompt: list[int], seed: int) -> list[list[int]]:
        tok = self.ctx.tokenizer
        eos = tok.eos_token_id
        ids = torch.tensor([prompt], device=self.ctx.device)
        with seeded(seed, self.ctx.device), torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=self.config.temperature,
                top_k=self.config.top_k,
                top_p=self.config.top_p,
                max_new_tokens=self.config.max_new_tokens,
                num_return_sequences=self.config.mc_samples,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
            )
        return [
            trim_response(row, eos, tok.pad_token_id, self.config.include_eos)
            for row in out[:, len(prompt) :].tolist()
        ]

    def rewards(self, prompt: list[int], responses: list[list[int]], reference: list[int]) -> np.ndarray:
        special = self._special()
        if self.config.reward == "f1":
            ref = [t for t in reference if t not in special]
            return np.asarray(
                [token_f1([t for t in r if t not in special], ref) if ref else 0.0 for r in responses]
            )
        if self._reward_model is None:
            assert self.config.reward_model is not None  # (reward=model needs it: checked by the schema)
            self._reward_model = load_reward_model(self.config.reward_model, self.ctx.device)
        tok = self.ctx.tokenizer
        prompt_text = tok.decode(prompt, skip_special_tokens=True)
        return self._reward_model(
            [prompt_text] * len(responses), [tok.decode(r, skip_special_tokens=True) for r in responses]
        )

    # ---- features -----------------------------------------------------------------------------------------
    def _policy_features(self, model, data, ids: np.ndarray, step_id: int) -> torch.Tensor:
        projector = self.spec.projector(model)
        rows, weights, owner = [], [], []
        with eval_mode(model):
            for slot, i in enumerate(ids):
                prompt, reference = split_prompt(data[int(i)])
                responses = self.sample_responses(
                    model, prompt, int(self.rng(step_id, int(i)).integers(2**31))
                )
                for y, r in zip(responses, self.rewards(prompt, responses, reference)):
                    if y:
                        rows.append(Features(prompt + y, [IGNORE_INDEX] * len(prompt) + y, 0, int(i)))
                        weights.append(float(r))
                        owner.append(slot)
            feats = torch.zeros(len(ids), projector.proj_dim)
            bs = self.ctx.batch_size
            for start in range(0, len(rows), bs):
                batch = collate(rows[start : start + bs], self.ctx.pad_token_id)
                f = gradient_features(
                    model,
                    batch,
                    projector=projector,
                    reduction="sum",
                    weights=torch.tensor(weights[start : start + bs]),
                    device=self.ctx.device,
                )
                feats.index_add_(0, torch.as_tensor(owner[start : start + bs]), f.cpu())
        return torch.nn.functional.normalize(feats / self.config.mc_samples, dim=-1)

    def target_features(self, model, step_id: int = 0) -> torch.Tensor:
        t = self.target
        return sharded(lambda s: self._policy_features(model, t.data, s, step_id), t.ids, self.ctx)

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        if num_samples > len(cands):
            raise ValueError(
                f"nice: {num_samples} samples requested from {len(cands)} candidates; enlarge "
                "trainer.candidate_pool_size or lower trainer.update_step."
            )
        val = self.target_features(model, step_id)
        train = self.train_features(model, cands, kwargs.get("optimizer"))
        scores = less_scores(train, val, self.target.groups).numpy()
        pos = top_k(scores, num_samples, self.rng(step_id))
        self.last_scores = scores[pos]
        self.last_info = {"candidate_score_mean": float(scores.mean())}
        return [int(i) for i in cands[pos]]
