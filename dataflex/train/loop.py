"""The one training loop. Strategies (trainer/*) plug in through hooks; nothing here is copied from HF.

Per optimizer step: the strategy names the global batch (item ids), this rank takes its contiguous share,
splits it into `gradient_accumulation_steps` micro-batches, and every micro-batch's loss is already
normalised by the *global* token/sample count, so accumulation and the number of ranks do not change the
update. The strategy's decision at the end of step t governs the batch of step t+1 exactly (no prefetch).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataflex.data.processor import collate
from dataflex.train.context import StepContext
from dataflex.train.distributed import all_reduce_sum, average_gradients
from dataflex.train.evaluation import evaluate
from dataflex.train.optim import build_optimizer, build_scheduler
from dataflex.train.saving import save_model
from dataflex.train.signals.losses import per_sample_losses
from dataflex.utils.logging import logger


def build_accelerator(args):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if args.fp16 and not cuda:
        raise ValueError("trainer.fp16=true needs a CUDA GPU and none is available; use trainer.bf16=true "
                         "(also works on CPU) or leave both false.")
    if args.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("trainer.bf16=true but this GPU has no bfloat16 support; use trainer.fp16=true.")
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    return Accelerator(mixed_precision=precision, cpu=not cuda)


class TrainingLoop:
    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.args = trainer.args
        self.run_dir = Path(trainer.run_dir)
        self.accelerator = build_accelerator(self.args)
        self.is_main = self.accelerator.is_main_process
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.pad_id = trainer.tokenizer.pad_token_id

    # ---- helpers -------------------------------------------------------------------------------------
    @property
    def per_rank_batch(self) -> int:
        return self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps

    @property
    def global_batch_size(self) -> int:
        return self.per_rank_batch * self.world_size

    def _micro_batches(self, indices: np.ndarray) -> list[dict[str, torch.Tensor]]:
        local = indices[self.rank * self.per_rank_batch : (self.rank + 1) * self.per_rank_batch]
        size = self.args.per_device_train_batch_size
        data = self.trainer.train_data
        return [collate([data[i] for i in local[s : s + size]], self.pad_id) for s in range(0, len(local), size)]

    def _forward(self, model, mb: dict[str, torch.Tensor], ctx: StepContext):
        device = self.accelerator.device
        logits = model(input_ids=mb["input_ids"].to(device), attention_mask=mb["attention_mask"].to(device)).logits
        losses = per_sample_losses(logits, mb["labels"].to(device))
        ctx.record(mb, losses)
        return losses

    def _deferred_step(self, model, micro: list[dict[str, torch.Tensor]], ctx: StepContext) -> None:
        """For strategies whose loss needs statistics of the whole global batch (weights normalised over all
        micro-batches and ranks, DoReMi's domain weights): forward every micro-batch first (graphs kept),
        let the strategy see all losses, then back-propagate each; gradients are averaged over ranks by
        hand because DDP's bucketed sync expects one forward per backward. Costs activation memory for the
        whole per-rank batch instead of one micro-batch."""
        with self.accelerator.no_sync(model):
            all_losses = [self._forward(model, mb, ctx) for mb in micro]
            self.trainer.before_backward(all_losses, micro, ctx)
            for losses, mb in zip(all_losses, micro):
                self.accelerator.backward(self.trainer.compute_loss(losses, mb, ctx))
        average_gradients(model)

    def _evaluate(self, model) -> dict[str, float]:
        if self.trainer.eval_data is None:
            return {}
        return evaluate(model, self.trainer.eval_data, batch_size=self.args.per_device_eval_batch_size,
                        pad_token_id=self.pad_id, device=self.accelerator.device, rank=self.rank,
                        world_size=self.world_size, max_per_domain=self.args.max_eval_samples_per_domain)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        args, trainer = self.args, self.trainer
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        set_seed(args.seed)
        total_steps = trainer.total_steps(self.global_batch_size)
        model = trainer.model
        optimizer = build_optimizer(model, args)
        scheduler = build_scheduler(optimizer, args, total_steps)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        trainer.setup(self)
        trackers = trainer.trackers if self.is_main else None
        params = [p for p in model.parameters() if p.requires_grad]
        logger.info(f"training {total_steps} steps, global batch {self.global_batch_size} "
                    f"({self.world_size} process(es) x {args.per_device_train_batch_size} x "
                    f"{args.gradient_accumulation_steps} accumulation), run dir {self.run_dir}")

        first_eval = self._evaluate(model) if args.eval_on_start else {}
        if trackers and first_eval:
            trackers.log(first_eval, step=0)
        last_eval = first_eval
        bar = tqdm(total=total_steps, disable=not self.is_main or args.disable_tqdm, desc="train", dynamic_ncols=True)
        start = interval_start = time.perf_counter()
        interval_loss, interval_steps, interval_samples = 0.0, 0, 0
        total_samples = total_tokens = 0
        model.train()
        for step in range(total_steps):
            indices = np.asarray(trainer.next_indices(step, self.global_batch_size), dtype=np.int64)
            micro = self._micro_batches(indices)
            local_tokens = sum(int((mb["labels"][:, 1:] != -100).sum()) for mb in micro)
            global_tokens = int(all_reduce_sum(torch.tensor(local_tokens, device=self.accelerator.device)))
            ctx = StepContext(step=step, indices=indices, global_tokens=global_tokens,
                              global_samples=len(indices), world_size=self.world_size, rank=self.rank)
            if trainer.defer_backward:
                self._deferred_step(model, micro, ctx)
            else:
                for k, mb in enumerate(micro):
                    with nullcontext() if k == len(micro) - 1 else self.accelerator.no_sync(model):
                        losses = self._forward(model, mb, ctx)
                        self.accelerator.backward(trainer.compute_loss(losses, mb, ctx))
            total_tokens += sum(int(mb["attention_mask"].sum()) for mb in micro)
            if args.max_grad_norm and args.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            step_loss = float(all_reduce_sum(trainer.reported_loss(ctx).to(self.accelerator.device)))
            interval_loss += step_loss
            interval_steps += 1
            interval_samples += len(indices)
            total_samples += len(indices)
            done = step + 1
            metrics = dict(trainer.on_step_end(done, ctx) or {})
            if args.logging_steps and (done % args.logging_steps == 0 or done == total_steps):
                elapsed = time.perf_counter() - interval_start
                metrics.update({"loss": interval_loss / interval_steps, "lr": scheduler.get_last_lr()[0],
                                "samples_per_s": interval_samples / max(elapsed, 1e-9), "epoch": trainer.epoch})
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                samples_s=f"{metrics['samples_per_s']:.0f}")
                interval_loss, interval_steps, interval_samples = 0.0, 0, 0
                interval_start = time.perf_counter()
            if done == total_steps or (args.eval_steps and done % args.eval_steps == 0):
                last_eval = self._evaluate(model)
                metrics.update(last_eval)
            if trackers and metrics:
                trackers.log(metrics, step=done)
            if args.save_steps and done % args.save_steps == 0 and done < total_steps:
                self._save(model, self.run_dir / f"checkpoint-{done}", done)
            bar.update(1)
        bar.close()
        wall = time.perf_counter() - start
        if args.save_final_model:
            self._save(model, self.run_dir / "final_model", total_steps)
        summary = {
            "run_dir": str(self.run_dir), "steps": total_steps, "wall_time_s": wall,
            "train_samples_per_s": total_samples / wall, "train_tokens_per_s": total_tokens * self.world_size / wall,
            "initial_eval": first_eval, "final_eval": last_eval,
        }
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.accelerator.wait_for_everyone()
        return summary

    def _save(self, model, path: Path, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            save_model(self.trainer.bundle, self.accelerator.unwrap_model(model), path)
            (path / "trainer_state.json").write_text(json.dumps({"global_step": step}, indent=2))
        self.accelerator.wait_for_everyone()


def format_summary(summary: dict[str, Any]) -> str:
    """The short table printed at the end of a run."""
    final, initial = summary.get("final_eval", {}), summary.get("initial_eval", {})
    lines = [f"DataFlex run finished: {summary['steps']} steps in {summary['wall_time_s']:.1f}s "
             f"({summary['train_samples_per_s']:.1f} samples/s, {summary['train_tokens_per_s']:.0f} tokens/s)",
             f"run dir: {summary['run_dir']}"]
    domains = sorted(k.removeprefix("eval/loss/") for k in final if k.startswith("eval/loss/"))
    if domains:
        lines.append(f"{'eval loss':<14}{'start':>10}{'end':>10}")
        for d in domains + ["(all)"]:
            key = "eval/loss" if d == "(all)" else f"eval/loss/{d}"
            start = initial.get(key, math.nan)
            lines.append(f"{d:<14}{start:>10.4f}{final[key]:>10.4f}")
    return "\n".join(lines)
