"""The selectors on a tiny model: LESS equals a direct computation; every selector's state round-trips
(a restored selector makes the same next selection); target sets and precomputed files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from select_helpers import loop_gradients, make_setup, shared_setup, step_adamw

from dataflex.train.selector import (
    ClusterLessSelector,
    CustomSelector,
    DeltaLossSelector,
    IconsSelector,
    LessSelector,
    LossSelector,
    NearSelector,
    NiceSelector,
    RandomSelector,
    TsdsSelector,
)
from dataflex.train.selector.reward_model import build_tiny_reward_model
from dataflex.train.signals.gradients import num_trainable
from dataflex.train.signals.projection import RandomProjector

POOL_1 = np.arange(0, 100, 2)
POOL_2 = np.arange(1, 100, 2)


def _make(cls, setup, **kw):
    if cls.Config is not None:  # a built-in: its parameters are its schema
        kw = {"config": cls.Config(**kw)}
    sel = cls(setup.train, None, None, "unused", **kw)
    sel.bind(setup.context())
    return sel


def _select(sel, setup, step, pool, n=12, optimizer=None, update=1):
    return sel.select(
        setup.model,
        step,
        n,
        candidates=pool,
        update_index=update,
        current_update_times=update,
        update_times=3,
        update_step=3,
        optimizer=optimizer,
    )


def test_less_scores_equal_a_direct_computation():
    """Adam-preconditioned, projected, normalised train features vs SGD target features; mean per subtask,
    max over subtasks — recomputed here by hand from batch-size-1 gradients."""
    s = make_setup("full", seed=1)
    opt = step_adamw(s.model, s.train, np.arange(100), s.pad)
    sel = _make(
        LessSelector,
        s,
        seed=3,
        proj_dim=256,
        proj_type="gaussian",
        target_domain="target,arith",
        target_max_samples=3,
    )
    pool = np.arange(0, 100, 5)
    picked = _select(sel, s, 10, pool, n=4, optimizer=opt)

    inner = opt
    params = [p for g in inner.param_groups for p in g["params"]]
    by_param = {id(p): p for p in params}
    ordered = [p for _, p in s.model.named_parameters() if p.requires_grad]
    assert {id(p) for p in ordered} == set(by_param)
    beta1, beta2 = inner.param_groups[0]["betas"]
    eps = inner.param_groups[0]["eps"]
    m = torch.cat([inner.state[p]["exp_avg"].reshape(-1) for p in ordered])
    v = torch.cat([inner.state[p]["exp_avg_sq"].reshape(-1) for p in ordered])
    t = float(inner.state[ordered[0]]["step"]) + 1
    grads = loop_gradients(s.model, s.train, pool, s.pad)
    m1 = (beta1 * m + (1 - beta1) * grads) / (1 - beta1**t)
    v1 = (beta2 * v + (1 - beta2) * grads**2) / (1 - beta2**t)
    proj = RandomProjector(num_trainable(s.model), 256, seed=3, kind="gaussian")
    train = torch.nn.functional.normalize(proj.project(m1 / (v1.sqrt() + eps)), dim=-1)
    target_ids = sel.target.ids
    target = torch.nn.functional.normalize(
        proj.project(loop_gradients(s.model, s.eval, target_ids, s.pad)), dim=-1
    )
    groups = sel.target.groups
    assert sorted(set(groups.tolist())) == [0, 1] and len(target_ids) == 6
    direct = []
    for i in range(len(pool)):
        means = [float((train[i] @ target[groups == k].T).mean()) for k in (0, 1)]
        direct.append(max(means))
    direct = np.asarray(direct)
    best = pool[np.argsort(-direct)[:4]]
    assert sorted(picked) == sorted(best.tolist())
    assert np.allclose(np.sort(sel.last_scores), np.sort(direct)[-4:], rtol=1e-3, atol=1e-5)


def _selectors(s):
    target = dict(target_domain="target", target_max_samples=4)
    return {
        "random": lambda: _make(RandomSelector, s),
        "loss": lambda: _make(LossSelector, s, focus="high"),
        "delta_loss": lambda: _make(DeltaLossSelector, s, window_size=0.3),
        "less": lambda: _make(LessSelector, s, proj_dim=128, **target),
        "icons": lambda: _make(
            IconsSelector, s, proj_dim=128, target_domain="target,arith", target_max_samples=4
        ),
        "cluster_less": lambda: _make(
            ClusterLessSelector, s, proj_dim=128, cluster_size=10, samples_per_cluster=2, **target
        ),
        "near": lambda: _make(NearSelector, s, **target),
        "tsds": lambda: _make(TsdsSelector, s, max_K=20, kde_K=10, **target),
        "nice": lambda: _make(
            NiceSelector,
            s,
            proj_dim=128,
            reward="model",
            reward_model="tiny",
            mc_samples=2,
            max_new_tokens=4,
            target_domain="target",
            target_max_samples=2,
        ),
        "custom": lambda: _make(CustomSelector, s),
    }


@pytest.mark.parametrize(
    "name",
    ["random", "loss", "delta_loss", "less", "icons", "cluster_less", "near", "tsds", "nice", "custom"],
)
def test_restored_selector_makes_the_same_next_selection(name):
    s = make_setup("full", seed=2)
    opt = step_adamw(s.model, s.train, np.arange(100), s.pad, steps=2)
    make = _selectors(s)[name]
    first = make()
    _select(first, s, 5, POOL_1, optimizer=opt, update=1)
    state = json.loads(json.dumps(first.state_dict()))  # checkpointable as JSON
    step_adamw(s.model, s.train, np.arange(50), s.pad, steps=1)  # the model moves on between updates
    restored = make()
    restored.load_state_dict(state)
    a = _select(first, s, 8, POOL_2, optimizer=opt, update=2)
    b = _select(restored, s, 8, POOL_2, optimizer=opt, update=2)
    assert a == b and len(a) == 12
    assert all(0 <= i < len(s.train) for i in a)
    if name == "delta_loss":  # the baseline is state: a fresh selector would start a new baseline instead
        assert restored.last_info.get("phase") != "baseline" and make().state_dict()["baseline_ids"] is None


def test_selected_ids_come_from_the_candidates():
    tiny = shared_setup("full")
    for name, make in _selectors(tiny).items():
        if name in ("custom", "nice", "delta_loss"):
            continue
        picked = _select(
            make(),
            tiny,
            3,
            POOL_2,
            n=10,
            optimizer=None
            if name not in ("less", "icons", "cluster_less")
            else torch.optim.AdamW(tiny.model.parameters()),
        )
        assert set(picked) <= set(POOL_2.tolist()), name


def test_near_and_less_prefer_the_target_domain():
    tiny = shared_setup("full")
    target_id = tiny.train.domain_names.index("target")
    base_rate = float(np.mean(tiny.train.domain_ids == target_id))
    near = _make(NearSelector, tiny, target_domain="target")
    picked = _select(near, tiny, 1, np.arange(100), n=15)
    assert np.mean(tiny.train.domain_ids[picked] == target_id) > 2 * base_rate


def test_missing_or_wrong_target_names_the_key():
    tiny = shared_setup("full")
    with pytest.raises(ValueError, match="component.target_domain"):
        _select(
            _make(LessSelector, tiny), tiny, 1, POOL_1, optimizer=torch.optim.AdamW(tiny.model.parameters())
        )
    with pytest.raises(ValueError, match="component.target_domain"):
        _select(_make(NearSelector, tiny, target_domain="nope"), tiny, 1, POOL_1)
    no_eval = _make(TsdsSelector, tiny, target_domain="target")
    no_eval.bind(tiny.context(eval_data=None))
    with pytest.raises(ValueError, match="no eval split"):
        _select(no_eval, tiny, 1, POOL_1)


def test_trainer_default_target_and_named_target_dataset(tmp_path):
    tiny = shared_setup("full")
    sel = _make(NearSelector, tiny)
    sel.bind(tiny.context(target_domain="target"))
    assert sel.target.group_names == ["target"]
    rows = [{"instruction": "Translate to Zorbian.", "input": "stone", "output": "vabohu"}] * 3
    path = tmp_path / "zorb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    named = _make(NearSelector, tiny, target_dataset=str(path), target_split="train")
    assert len(named.target.ids) == 3
    assert len(_select(named, tiny, 1, POOL_1, n=5)) == 5


def test_target_split_is_honoured_with_a_target_domain():
    """Issue 13 item 14: component.target_split=train takes the domain's first *training* rows (it was
    ignored)."""
    tiny = shared_setup("full")
    evaluated = _make(NearSelector, tiny, target_domain="target", target_max_samples=4)
    trained = _make(NearSelector, tiny, target_domain="target", target_max_samples=4, target_split="train")
    assert evaluated.target.data is tiny.eval
    assert trained.target.data is tiny.train
    target = tiny.train.domain_names.index("target")
    assert (
        trained.target.ids.tolist()
        == np.flatnonzero(np.asarray(tiny.train.domain_ids) == target)[:4].tolist()
    )
    no_eval = _make(NearSelector, tiny, target_domain="target", target_split="train")
    no_eval.bind(tiny.context(eval_data=None))
    assert no_eval.target.data is tiny.train  # no eval split needed for a training-split target


def test_delta_loss_refuses_instead_of_silently_drawing_with_replacement():
    """Issue 13 item 14: with outside_weight=0 the window holds fewer candidates than a selection needs."""
    tiny = shared_setup("full")
    sel = _make(DeltaLossSelector, tiny, outside_weight=0.0, window_size=0.2)
    _select(sel, tiny, 1, POOL_1, n=12, update=1)  # baseline: a uniform draw of 12 of 50
    with pytest.raises(ValueError, match="component.replacement=true"):
        _select(sel, tiny, 2, POOL_1, n=12, update=2)  # window: at most 10 of the 50 baseline candidates
    sel.config.replacement = True
    assert len(_select(sel, tiny, 2, POOL_1, n=12, update=2)) == 12
    with pytest.raises(ValueError, match="trainer.candidate_pool_size"):
        _select(_make(DeltaLossSelector, tiny), tiny, 1, POOL_1[:5], n=12, update=1)


def test_precomputed_near_and_tsds_files(tmp_path):
    tiny = shared_setup("full")
    ranked = np.array([[5, 6, 7], [6, 8, 9]])
    np.save(tmp_path / "top.npy", ranked)
    near = _make(NearSelector, tiny, indices_path=str(tmp_path / "top.npy"))
    assert _select(near, tiny, 1, None, n=4) == [5, 6, 8, 7]
    probs = np.zeros(len(tiny.train))
    probs[[3, 4]] = [0.25, 0.75]
    np.save(tmp_path / "p.npy", probs)
    tsds = _make(TsdsSelector, tiny, probs_path=str(tmp_path / "p.npy"))
    assert set(_select(tsds, tiny, 1, None, n=20)) == {3, 4}
    with pytest.raises(FileNotFoundError, match="component.probs_path"):
        _select(_make(TsdsSelector, tiny, probs_path=str(tmp_path / "missing.npy")), tiny, 1, None)


def test_near_with_a_separate_local_encoder(tmp_path):
    tiny = shared_setup("full")
    from dataflex.models.tiny import build_tiny_model

    enc = build_tiny_model(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        seed=9,
    )
    enc.model.model.save_pretrained(tmp_path / "enc")
    enc.tokenizer.save_pretrained(tmp_path / "enc")
    sel = _make(NearSelector, tiny, target_domain="target", encoder_path=str(tmp_path / "enc"))
    picked = _select(sel, tiny, 1, POOL_1, n=6)
    assert len(set(picked)) == 6 and sel._encoder is not None


def test_nice_reward_model_dir_and_f1(tmp_path):
    tiny = shared_setup("full")
    model, tok = build_tiny_reward_model(seed=4)
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    opt = torch.optim.AdamW(tiny.model.parameters())
    for kw in (dict(reward="model", reward_model=str(tmp_path / "rm")), dict(reward="f1")):
        sel = _make(
            NiceSelector,
            tiny,
            proj_dim=64,
            mc_samples=2,
            max_new_tokens=3,
            target_domain="target",
            target_max_samples=2,
            **kw,
        )
        picked = _select(sel, tiny, 1, POOL_1, n=5, optimizer=opt)
        assert len(picked) == 5 and np.isfinite(sel.last_scores).all()
    with pytest.raises(FileNotFoundError, match="component.reward_model"):
        sel = _make(NiceSelector, tiny, reward_model=str(tmp_path / "none"), target_domain="target")
        _select(sel, tiny, 1, POOL_1, n=5, optimizer=opt)


def test_nice_follows_the_authors_sampling_eos_and_reward_pairs():
    """Issue 13 item 10: the authors' defaults, EOS out of the response gradient, (question, answer) pairs."""
    from dataflex.config.component.select import NiceSelectorConfig
    from dataflex.train.selector.nice_selector import trim_response

    cfg = NiceSelectorConfig(reward="f1")
    assert (cfg.mc_samples, cfg.temperature, cfg.top_k, cfg.top_p, cfg.max_new_tokens, cfg.include_eos) == (
        20,
        1.2,
        50,
        0.95,
        100,
        False,
    )
    assert trim_response([5, 6, 2, 7, 0], eos=2, pad=0, include_eos=False) == [5, 6]
    assert trim_response([5, 6, 2, 7, 0], eos=2, pad=0, include_eos=True) == [5, 6, 2]
    assert trim_response([5, 0, 6], eos=2, pad=0, include_eos=False) == [5, 6]
    tiny = shared_setup("full")
    sel = _make(NiceSelector, tiny, reward="model", reward_model="tiny", target_domain="target")
    seen = {}

    def fake(texts, pairs=None):
        seen["texts"], seen["pairs"] = list(texts), pairs
        return np.zeros(len(texts))

    sel._reward_model = fake
    prompt = tiny.tokenizer("Question?")["input_ids"]
    sel.rewards(prompt, [tiny.tokenizer("yes")["input_ids"], tiny.tokenizer("no")["input_ids"]], [])
    assert len(seen["texts"]) == 2 and seen["texts"][0] == seen["texts"][1]
    assert seen["pairs"] is not None and [p.strip() for p in seen["pairs"]] == ["yes", "no"]


def test_nice_policy_feature_weights_responses_by_reward():
    tiny = shared_setup("full")
    """With a constant reward the policy feature is the normalised mean of the responses' NLL gradients;
    with reward 0 it vanishes."""
    sel = _make(
        NiceSelector,
        tiny,
        proj_dim=64,
        reward="f1",
        mc_samples=2,
        max_new_tokens=3,
        target_domain="target",
        target_max_samples=1,
    )
    sel.rewards = lambda prompt, responses, reference: np.zeros(len(responses))
    zero = sel.target_features(tiny.model, step_id=1)
    assert float(zero.abs().max()) == 0
    sel.rewards = lambda prompt, responses, reference: np.ones(len(responses))
    feat = sel.target_features(tiny.model, step_id=1)
    assert math.isclose(float(feat.norm()), 1.0, rel_tol=1e-5)
