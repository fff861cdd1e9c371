"""The one training loop. Strategies (trainer/*) plug in through hooks; nothing here is copied from HF.

Per optimizer step: the strategy names the global batch (item ids), this rank takes its contiguous share,
splits it into `gradient_accumulation_steps` micro-batches, and every micro-batch's loss is already
normalised by the *global* token/sample count, so accumulation and the number of ranks do not change the
update. The strategy's decision at the end of step t governs the batch of step t+1 exactly: the feeder
(`dataflex/train/loader.py`) prefetches, with `trainer.dataloader_num_workers > 0`, only ids already decided.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import closing, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch

from dataflex.config.dist import accelerator_plugins
from dataflex.data.packing import collate_packed
from dataflex.data.processor import collate
from dataflex.train.activation_checkpointing import enable_gradient_checkpointing
from dataflex.train.best_model import BestModelTracker
from dataflex.train.checkpoint import load_checkpoint, load_model_weights, resolve_resume, save_checkpoint
from dataflex.train.components import RunContext
from dataflex.train.context import StepContext
from dataflex.train.distributed import all_reduce_sum, average_gradients
from dataflex.train.evaluation import evaluate
from dataflex.train.interrupt import TrainingInterrupted, interruptible, signals_to_main_thread
from dataflex.train.ledger import DataLedger
from dataflex.train.loader import StepFeeder
from dataflex.train.log_lines import eval_line, run_description, train_line
from dataflex.train.optim import build_optimizer, build_scheduler
from dataflex.train.saving import save_model_atomic
from dataflex.train.signals.losses import LossSettings, configure_losses, model_losses
from dataflex.train.signals.packed import check_packing_support, packed_sample_losses
from dataflex.utils.logging import logger
from dataflex.utils.progress import configure_progress


def build_accelerator(args, dist=None):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if args.fp16 and not cuda:
        raise ValueError(
            "trainer.fp16=true needs a CUDA GPU and none is available; use trainer.bf16=true "
            "(also works on CPU) or leave both false."
        )
    if args.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("trainer.bf16=true but this GPU has no bfloat16 support; use trainer.fp16=true.")
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    plugins = accelerator_plugins(dist, args.max_grad_norm, micro_batch_size=args.per_device_train_batch_size)
    with signals_to_main_thread():  # the process group's threads never take a SIGTERM meant for the loop
        accelerator = Accelerator(mixed_precision=precision, cpu=not cuda, **plugins)
    check_strategy(accelerator, dist)
    return accelerator


def check_strategy(accelerator, dist) -> None:
    """accelerate drops a DeepSpeed/FSDP plugin without a word when it cannot use it (on a CPU it trains plain
    data parallel instead): refuse rather than run something other than what was asked for."""
    wanted = {"deepspeed": "DEEPSPEED", "fsdp": "FSDP"}.get(dist.strategy if dist is not None else "ddp")
    if wanted is None or accelerator.distributed_type.name == wanted:
        return
    why = (
        "accelerate runs DeepSpeed and FSDP only on GPUs; on a CPU it falls back to plain data parallel"
        if accelerator.device.type == "cpu"
        else "FSDP needs launcher.nproc_per_node >= 2"
    )
    raise RuntimeError(
        f"dist.strategy={dist.strategy} was asked for, but accelerate set up "
        f"{accelerator.distributed_type.value} ({why}). Use dist=ddp here."
    )


class TrainingLoop:
    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.args = trainer.args
        self.run_dir = Path(trainer.run_dir)
        self.accelerator = build_accelerator(self.args, getattr(trainer, "dist_config", None))
        self.is_main = self.accelerator.is_main_process
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.pad_id = trainer.tokenizer.pad_token_id
        self.pack_capacity = getattr(trainer, "pack_capacity", None)
        self.log_interval = {"loss": 0.0, "steps": 0, "samples": 0}
        """Train-loss sums since the last log (checkpointed, so a resumed run logs the same values)."""
        self._interval_start = 0.0
        """perf_counter() when the current log interval began (set when training starts)."""
        self.best = BestModelTracker(self.args)
        """metric_for_best_model over evaluations (checkpointed): best checkpoint and early stopping."""

    # ---- helpers -------------------------------------------------------------------------------------
    @property
    def per_rank_batch(self) -> int:
        return self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps

    @property
    def global_batch_size(self) -> int:
        return self.per_rank_batch * self.world_size

    @property
    def zero_stage(self) -> int:
        """DeepSpeed's ZeRO stage; 0 without DeepSpeed."""
        if self.accelerator.distributed_type.name != "DEEPSPEED":
            return 0
        return int(self.accelerator.state.deepspeed_plugin.zero_stage)

    def _collate_fn(self):
        """micro-batch items -> tensors (a picklable callable: DataLoader workers run it)."""
        if self.pack_capacity:
            return partial(collate_packed, pad_token_id=self.pad_id, max_capacity=self.pack_capacity)
        return partial(collate, pad_token_id=self.pad_id)

    def _build_feeder(self) -> StepFeeder:
        args = self.args
        return StepFeeder(
            self.trainer,
            data=self.trainer.train_data,
            collate_fn=self._collate_fn(),
            rank=self.rank,
            per_rank_batch=self.per_rank_batch,
            micro_batch_size=args.per_device_train_batch_size,
            global_batch_size=self.global_batch_size,
            total_steps=self.total_steps,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory and self.accelerator.device.type == "cuda",
            checkpoint_after=lambda done: bool(args.save_steps and done % args.save_steps == 0),
        )

    def _forward(self, model, mb: dict[str, torch.Tensor], ctx: StepContext):
        device = self.accelerator.device
        losses = (
            packed_sample_losses(model, mb, device) if "packed" in mb else model_losses(model, mb, device)
        )
        ctx.record(mb, losses)
        return losses

    def _deferred_step(self, model, micro: list[dict[str, torch.Tensor]], ctx: StepContext) -> None:
        """For strategies whose loss needs statistics of the whole global batch (weights normalised over all
        micro-batches and ranks, DoReMi's domain weights): forward every micro-batch first (graphs kept),
        let the strategy see all losses, then back-propagate each; gradients are averaged over ranks by
        hand because DDP's bucketed sync expects one forward per backward. Costs activation memory for the
        whole per-rank batch instead of one micro-batch."""
        if len(micro) > 1 and self.zero_stage == 3:
            raise RuntimeError(
                "dist=deepspeed_zero3 with a trainer that weights the loss over the whole batch "
                "(dynamic_weight, DoReMi) needs trainer.gradient_accumulation_steps=1: DeepSpeed ZeRO-3 "
                "computes wrong gradients when several forward graphs are back-propagated one after "
                "the other. Raise per_device_train_batch_size instead, or use deepspeed_zero2."
            )
        with self.accelerator.no_sync(model):
            all_losses = [self._forward(model, mb, ctx) for mb in micro]
            self.trainer.before_backward(all_losses, micro, ctx)
            for k, (losses, mb) in enumerate(zip(all_losses, micro)):
                self.accelerator.sync_gradients = k == len(micro) - 1  # see _train_step
                self.accelerator.backward(self.trainer.compute_loss(losses, mb, ctx))
        average_gradients(model)

    def _non_finite(self, ctx: StepContext) -> bool:
        """True when some sample's loss is NaN/inf on any rank and the policy is to skip the step; raises
        (naming the step and sample ids) when the policy is `stop`. One scalar all-reduce per step; the
        per-sample gather happens only when something is wrong."""
        local_bad = (~torch.isfinite(torch.cat(ctx.token_sum))).any()
        if not int(all_reduce_sum(local_bad.to(torch.int64))):
            return False
        gathered = ctx.gathered()
        ids = gathered["sample_ids"][~torch.isfinite(gathered["token_sum"])].tolist()
        if self.args.nan_policy == "stop":
            raise FloatingPointError(
                f"non-finite loss at step {ctx.step} for sample ids {ids[:20]}; inspect those "
                "samples, lower trainer.learning_rate, or set trainer.nan_policy=skip_step."
            )
        logger.warning(
            f"step {ctx.step}: non-finite loss for sample ids {ids[:20]}; "
            "update skipped (nan_policy=skip_step)"
        )
        return True

    def _evaluate(self, model) -> dict[str, float]:
        if self.trainer.eval_data is None:
            return {}
        return evaluate(
            model,
            self.trainer.eval_data,
            batch_size=self.args.per_device_eval_batch_size,
            max_tokens=self.args.scoring_max_tokens,
            pad_token_id=self.pad_id,
            device=self.accelerator.device,
            rank=self.rank,
            world_size=self.world_size,
            max_per_domain=self.args.max_eval_samples_per_domain,
            lockstep=self.zero_stage == 3,
        )

    def _stop_early(self, metrics: dict[str, float], step: int, candidate: bool) -> bool:
        """Best-model bookkeeping for one evaluation; True when early stopping ends the run here."""
        if not (self.args.load_best_model_at_end or self.args.early_stopping_patience):
            return False
        stop = self.best.update(metrics, step, candidate)
        if stop:
            logger.info(
                f"early stopping at step {step}: {self.best.key} did not improve by more than "
                f"{self.args.early_stopping_threshold:g} for {self.best.patience} evaluation(s) "
                f"(best {self.best.stop_value:.4f})"
            )
        return stop

    def _load_best(self, last_step: int) -> None:
        """load_best_model_at_end: the live weights become the best checkpoint's (every rank loads them)."""
        best = self.best.best_step
        if not self.args.load_best_model_at_end or best is None or best == last_step:
            return
        path = self.run_dir / f"checkpoint-{best}"
        self.accelerator.wait_for_everyone()
        load_model_weights(self.accelerator.unwrap_model(self.model), path)
        logger.info(
            f"loaded the best model from {path} ({self.best.key}={self.best.best_value:.4f}, step {best})"
        )

    # ---- the loop ------------------------------------------------------------------------------------
    def _train_step(self, step: int) -> StepContext:
        """Forward/backward of one global batch and the optimizer update; returns what happened."""
        args, trainer, model = self.args, self.trainer, self.model
        indices, micro = self.feeder.step(step)
        local_tokens = sum(int((mb["labels"][:, 1:] != -100).sum()) for mb in micro)
        global_tokens = int(all_reduce_sum(torch.tensor(local_tokens, device=self.accelerator.device)))
        ctx = StepContext(
            step=step,
            indices=indices,
            global_tokens=global_tokens,
            global_samples=len(indices),
            world_size=self.world_size,
            rank=self.rank,
        )
        ctx.input_tokens = sum(int(mb["attention_mask"].sum()) for mb in micro)
        provided = trainer.step_gradients(micro, ctx)
        if provided is not None:  # the strategy wrote this step's gradients from a pass it already ran
            for mb, losses in zip(micro, provided, strict=True):
                ctx.record(mb, losses)
        elif trainer.defer_backward:
            self._deferred_step(model, micro, ctx)
        else:
            for k, mb in enumerate(micro):
                with nullcontext() if k == len(micro) - 1 else self.accelerator.no_sync(model):
                    # Only the last micro-batch is an accumulation boundary: DeepSpeed's engine reduces and
                    # steps inside `backward` on a boundary (accelerate counts every call as one otherwise).
                    self.accelerator.sync_gradients = k == len(micro) - 1
                    losses = self._forward(model, mb, ctx)
                    self.accelerator.backward(trainer.compute_loss(losses, mb, ctx))
        ctx.skipped = self._non_finite(ctx)
        if not ctx.skipped:
            if args.max_grad_norm and args.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(self._clipped, args.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return ctx

    def _train_metrics(self, ctx: StepContext, done: int, total_steps: int) -> dict[str, Any]:
        """Accumulates the train loss and, at logging steps, returns loss / lr / samples/s."""
        interval = self.log_interval
        epoch = self.feeder.epoch_at(ctx.step, self.trainer.epoch)
        interval["loss"] += float(all_reduce_sum(self.trainer.reported_loss(ctx).to(self.accelerator.device)))
        interval["steps"] += 1
        interval["samples"] += ctx.global_samples
        if not self.args.logging_steps or (done % self.args.logging_steps and done != total_steps):
            return {}
        elapsed = time.perf_counter() - self._interval_start
        metrics = {
            "loss": interval["loss"] / interval["steps"],
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": interval["samples"] / max(elapsed, 1e-9),
            "epoch": epoch,
        }
        self.log_interval = {"loss": 0.0, "steps": 0, "samples": 0}
        self._interval_start = time.perf_counter()
        return metrics

    def _prepare(self) -> int:
        """Optimizer, scheduler, accelerator, strategy setup and (if asked) resume; returns the start step."""
        from accelerate.utils import set_seed

        args, trainer = self.args, self.trainer
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        set_seed(args.seed)
        configure_losses(LossSettings(args.loss_impl, args.loss_chunk_size))
        configure_progress(self.is_main and not args.disable_tqdm)
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(trainer.model)
        if (
            args.save_steps or args.resume_from_checkpoint
        ) and self.accelerator.distributed_type.name == "FSDP":
            raise NotImplementedError(
                "checkpoints (trainer.save_steps, trainer.resume_from_checkpoint) are not "
                "supported with dist=fsdp yet: the optimizer state and weights are sharded "
                "over the ranks. Unset them, or use dist=ddp or dist=deepspeed_*."
            )
        if args.nan_policy == "skip_step" and self.zero_stage:
            raise NotImplementedError(
                "trainer.nan_policy=skip_step cannot skip under DeepSpeed: its engine applies the "
                "update inside backward(), before the loss is checked. Use nan_policy=stop."
            )
        if args.load_best_model_at_end and self.zero_stage == 3:
            raise NotImplementedError(
                "trainer.load_best_model_at_end is not supported under dist=deepspeed_zero3 yet "
                "(the live weights are shards); pick the best checkpoint-<step> by hand."
            )
        self.total_steps = trainer.total_steps(self.global_batch_size)
        optimizer = build_optimizer(trainer.model, args)
        self.scheduler = build_scheduler(optimizer, args, self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(trainer.model, optimizer)
        # what max_grad_norm clips: the trainable parameters (= the optimizer's), in the model's order, listed
        # once instead of by a walk over every module each step (milliseconds a step through peft's tree)
        self._clipped = [p for p in self.model.parameters() if p.requires_grad]
        if self.pack_capacity:
            check_packing_support(self.model, self.accelerator.device, len(trainer.tokenizer))
        self.context = RunContext(
            model=self.model,
            accelerator=self.accelerator,
            optimizer=self.optimizer,
            tokenizer=trainer.tokenizer,
            train_data=trainer.train_data,
            eval_data=trainer.eval_data,
            seed=args.seed,
            rank=self.rank,
            world_size=self.world_size,
            is_main=self.is_main,
            run_dir=self.run_dir,
            global_batch_size=self.global_batch_size,
            total_steps=self.total_steps,
            pad_token_id=self.pad_id,
            zero_stage=self.zero_stage,
        )
        trainer.setup(self.context)
        self.resumed_from = resolve_resume(self.run_dir, args.resume_from_checkpoint)
        if self.resumed_from is None:
            return 0
        start = load_checkpoint(self, self.resumed_from)
        logger.info(f"resumed from {self.resumed_from} at step {start}")
        if self.is_main:
            truncate_metrics(self.run_dir / "metrics.jsonl", start)
        return start

    def _stop(self, done: int, signal_name: str, already_saved: bool) -> None:
        """Ends training after step `done` on a signal: a checkpoint when `save_steps` is set, then raises."""
        checkpoint = None
        if self.args.save_steps:
            path = self.run_dir / f"checkpoint-{done}"
            if not already_saved:
                save_checkpoint(self, path, done)
            checkpoint = str(path.resolve())
        logger.warning(
            f"{signal_name} received: stopped after step {done}"
            + (
                f", checkpoint written to {checkpoint}"
                if checkpoint
                else " (no checkpoint: trainer.save_steps=0)"
            )
        )
        raise TrainingInterrupted(done, signal_name, checkpoint)

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        args, trainer = self.args, self.trainer
        start_step = self._prepare()
        self.ledger = DataLedger.for_loop(self)
        self.ledger.truncate(start_step)  # a resumed run drops the rows after its checkpoint
        total_steps = self.total_steps
        self.feeder = self._build_feeder()
        trackers = trainer.trackers if self.is_main else None
        for line in run_description(trainer):
            logger.info(line)
        logger.info(
            f"training {total_steps} steps, global batch {self.global_batch_size} "
            f"({self.world_size} process(es) x {args.per_device_train_batch_size} x "
            f"{args.gradient_accumulation_steps} accumulation), run dir {self.run_dir}"
        )
        first_eval = self._evaluate(self.model) if args.eval_on_start and start_step == 0 else {}
        if (
            start_step > 0 and self.is_main
        ):  # a resumed run's summary keeps the start eval its first part logged
            first_eval = logged_eval(self.run_dir / "metrics.jsonl", 0)
        if first_eval and start_step == 0:
            if trackers:
                trackers.log(first_eval, step=0)
            logger.info(eval_line(0, first_eval))
        last_eval = first_eval
        bar = tqdm(
            total=total_steps,
            initial=start_step,
            disable=not self.is_main or args.disable_tqdm,
            desc="train",
            dynamic_ncols=True,
        )
        start = self._interval_start = time.perf_counter()
        samples = tokens = skipped = 0
        stopped_at = None
        self.model.train()
        completed = start_step
        # closing(): the progress bar and the loader's workers end also when a signal stops the run.
        with (
            interruptible(lambda: completed) as stop,
            closing(self.feeder),
            closing(bar),
            closing(self.ledger),
        ):
            for step in range(start_step, total_steps):
                ctx = self._train_step(step)
                done = step + 1
                samples, tokens, skipped = (
                    samples + ctx.global_samples,
                    tokens + ctx.input_tokens,
                    skipped + ctx.skipped,
                )
                metrics = dict(trainer.on_step_end(done, ctx) or {})
                self.ledger.record(done, ctx, trainer)
                metrics.update(self._train_metrics(ctx, done, total_steps))
                if metrics.get("loss") is not None:
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.4f}",
                        lr=f"{metrics['lr']:.2e}",
                        samples_s=f"{metrics['samples_per_s']:.0f}",
                    )
                    logger.info(train_line(done, total_steps, metrics))
                checkpoint = bool(args.save_steps and done % args.save_steps == 0 and done < total_steps)
                if done == total_steps or (args.eval_steps and done % args.eval_steps == 0):
                    last_eval = self._evaluate(self.model)
                    metrics.update(last_eval)
                    if last_eval:
                        logger.info(eval_line(done, last_eval))
                    if last_eval and self._stop_early(
                        last_eval, done, candidate=checkpoint or done == total_steps
                    ):
                        stopped_at = done
                if trackers and metrics:
                    trackers.log(metrics, step=done)
                if checkpoint:
                    save_checkpoint(self, self.run_dir / f"checkpoint-{done}", done)
                bar.update(1)
                completed = done
                if stopped_at is not None:
                    break
                if done < total_steps and stop.agreed(self.world_size, self.accelerator.device):
                    self._stop(done, stop.signal_name or "SIGTERM", already_saved=checkpoint)
        wall = time.perf_counter() - start
        self._load_best(stopped_at or total_steps)
        if args.save_final_model:
            self.accelerator.wait_for_everyone()
            # ZeRO-3: the weights are shards; every rank takes part in gathering them into one state dict.
            state = self.accelerator.get_state_dict(self.model) if self.zero_stage == 3 else None
            if self.is_main:
                save_model_atomic(
                    trainer.bundle,
                    self.accelerator.unwrap_model(self.model),
                    self.run_dir / "final_model",
                    state_dict=state,
                )
        summary = {
            "run_dir": str(self.run_dir),
            "steps": stopped_at or total_steps,
            "wall_time_s": wall,
            "train_samples_per_s": samples / wall,
            "train_tokens_per_s": tokens * self.world_size / wall,
            "initial_eval": first_eval,
            "final_eval": last_eval,
            "skipped_steps": skipped,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "stopped_early_at": stopped_at if stopped_at is not None and stopped_at < total_steps else None,
            **(
                {"best_step": self.best.best_step, "best_metric": {self.best.key: self.best.best_value}}
                if args.load_best_model_at_end
                else {}
            ),
        }
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.accelerator.wait_for_everyone()
        return summary


def truncate_metrics(path: Path, step: int) -> None:
    """Drops records logged after `step` (a resumed run logs them again)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def logged_eval(path: Path, step: int) -> dict[str, float]:
    """The eval metrics metrics.jsonl holds for `step` (empty if none)."""
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("step") == step and any(k.startswith("eval/") for k in record):
            return {k: v for k, v in record.items() if k.startswith("eval/")}
    return {}


def format_summary(summary: dict[str, Any]) -> str:
    """The short table printed at the end of a run."""
    final, initial = summary.get("final_eval", {}), summary.get("initial_eval", {})
    lines = [
        f"DataFlex run finished: {summary['steps']} steps in {summary['wall_time_s']:.1f}s "
        f"({summary['train_samples_per_s']:.1f} samples/s, {summary['train_tokens_per_s']:.0f} tokens/s)",
        f"run dir: {summary['run_dir']}",
    ]
    domains = sorted(k.removeprefix("eval/loss/") for k in final if k.startswith("eval/loss/"))
    if domains:
        lines.append(f"{'eval loss':<14}{'start':>10}{'end':>10}")
        for d in domains + ["(all)"]:
            key = "eval/loss" if d == "(all)" else f"eval/loss/{d}"
            start = initial.get(key, math.nan)
            lines.append(f"{d:<14}{start:>10.4f}{final[key]:>10.4f}")
    return "\n".join(lines)
