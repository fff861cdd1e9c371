"""The step feeder: the item ids the strategy decided, collated into micro-batches for this rank.

With `trainer.dataloader_num_workers=0` (the default) every micro-batch is collated on the training thread
when its step starts, exactly as the loop always did. With N > 0 workers, a torch `DataLoader` (persistent
workers, `pin_memory` on CUDA) collates them in N processes while the model trains, under the exact-plan
guarantee:

- Only what is already decided is prefetched. The ids of step t+1 are drawn early (while step t trains) only
  when the strategy says the end of step t cannot change them (`trainer.plan_fixed_after(t + 1)`: no
  selection/mixing update there, no side effect in `next_indices`) and no checkpoint is written after step t.
  Otherwise the prefetch stops at step t and step t+1 is drawn after `on_step_end`, as without workers.
  An update point therefore never has anything prefetched past it: nothing to invalidate, nothing lost.
- The loss needs the step's global token count before its first backward, so a step's micro-batches are all
  collated before it trains; the gain is collating step t+1 during step t.
- Workers hold their own copy of the dataset. Each key is `(item id, data epoch)` so a worker serves the
  window of rows of the epoch the id was drawn in (`size`/`weight` datasets move their window per epoch).

Works on any map-style `dataset[i] -> item` with `collate(items) -> dict of tensors` (TokenizedData, packed
rows, the token store). Streams (`data.in_process`) are read on the training thread when ids are drawn; their
items travel to the workers inside the keys, which still collate them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Key = tuple[int, Any, Any]
"""(item id, data epoch, the item itself or None): what a DataLoader worker turns into one item. The item
travels in the key only for data whose items exist in the training process alone (streams)."""


@dataclass
class DrawnStep:
    indices: np.ndarray
    """The global batch of the step (every rank's ids)."""
    data_epoch: Any
    """The data epoch these ids refer to (`trainer.data_epoch` right after they were drawn)."""
    epoch: float
    """`trainer.epoch` right after the draw."""


class _DecidedItems(Dataset):
    """The worker-side view: `(id, data epoch)` -> `data[id]` in that epoch's window of rows."""

    def __init__(self, data) -> None:
        self.data = data
        self._epoch: Any = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Key):
        i, epoch, item = key
        if item is not None:
            return item
        if epoch is not None and epoch != self._epoch and hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)
            self._epoch = epoch
        return self.data[i]


class _Plan:
    """The DataLoader's batch sampler: yields the micro-batches of the decided steps in order, drawing the
    next step's ids only while the feeder allows it; once it stops it stays stopped until the next `start`.
    (The DataLoader calls it on the training thread, when a worker slot frees up.)"""

    def __init__(self, feeder: StepFeeder) -> None:
        self.feeder = feeder
        self._keys: Iterator[list[Key]] = iter(())
        self._next_step = 0
        self._stopped = True

    def start(self, step: int) -> None:
        self._next_step, self._stopped, self._keys = step, False, iter(())

    def __iter__(self) -> _Plan:
        return self

    def __next__(self) -> list[Key]:
        while not self._stopped:
            keys = next(self._keys, None)
            if keys is not None:
                return keys
            step = self._next_step
            early = step != self.feeder.first_step_of_window
            if early and not self.feeder.may_draw_early(step):
                self._stopped = True
                break
            drawn = self.feeder.draw(step, early)
            self._keys = iter(self.feeder.micro_keys(drawn, with_items=self.feeder.items_in_process))
            self._next_step = step + 1
        raise StopIteration


class StepFeeder:
    """`feeder.step(t)` -> (global ids of step t, this rank's collated micro-batches); see the module doc."""

    def __init__(
        self,
        trainer,
        *,
        data,
        collate_fn: Callable[[list], dict[str, torch.Tensor]],
        rank: int,
        per_rank_batch: int,
        micro_batch_size: int,
        global_batch_size: int,
        total_steps: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        checkpoint_after: Callable[[int], bool] = lambda done: False,
    ) -> None:
        self.trainer, self.data, self.collate_fn = trainer, data, collate_fn
        self.rank, self.per_rank_batch, self.micro_batch_size = rank, per_rank_batch, micro_batch_size
        self.global_batch_size, self.total_steps = global_batch_size, total_steps
        self.num_workers = int(num_workers)
        self.items_in_process = bool(getattr(data, "in_process", False))
        self.checkpoint_after = checkpoint_after
        self._drawn: dict[int, DrawnStep] = {}
        self._early_epochs: dict[int, float] = {}
        self._last_epoch = 0.0
        self.first_step_of_window = -1
        self._plan = _Plan(self)
        self._iter: Iterator[dict[str, torch.Tensor]] | None = None
        self._loader = None
        if self.num_workers > 0:
            self._loader = DataLoader(
                _DecidedItems(data),
                batch_sampler=self._plan,
                num_workers=self.num_workers,
                collate_fn=collate_fn,
                pin_memory=pin_memory,
                persistent_workers=True,
                prefetch_factor=prefetch_factor,
            )

    # ---- deciding -------------------------------------------------------------------------------------
    def draw(self, step: int, early: bool = False) -> DrawnStep:
        """The strategy decides the ids of `step` (once; in step order). `early`: before step-1 has ended."""
        if early:  # step-1 reports the epoch it had before this draw moved the sampler on
            self._early_epochs[step - 1] = self._last_epoch
        indices = np.asarray(self.trainer.next_indices(step, self.global_batch_size), dtype=np.int64)
        drawn = DrawnStep(indices, getattr(self.trainer, "data_epoch", None), float(self.trainer.epoch))
        self._last_epoch = drawn.epoch
        self._drawn[step] = drawn
        return drawn

    def may_draw_early(self, step: int) -> bool:
        """Whether step `step`'s ids may be drawn before step `step-1` has ended."""
        done = step  # on_step_end(done=step) runs after step-1 trains
        return (
            step < self.total_steps
            and not self.checkpoint_after(done)
            and bool(self.trainer.plan_fixed_after(done))
        )

    def local_ids(self, indices: np.ndarray) -> np.ndarray:
        return indices[self.rank * self.per_rank_batch : (self.rank + 1) * self.per_rank_batch]

    def micro_keys(self, drawn: DrawnStep, with_items: bool = False) -> list[list[Key]]:
        local, size = self.local_ids(drawn.indices), self.micro_batch_size
        return [
            [(int(i), drawn.data_epoch, self.data[i] if with_items else None) for i in local[s : s + size]]
            for s in range(0, len(local), size)
        ]

    # ---- feeding ----------------------------------------------------------------------------------------
    def step(self, step: int) -> tuple[np.ndarray, list[dict[str, torch.Tensor]]]:
        if self._loader is None:
            drawn = self.draw(step)
            return drawn.indices, [
                self.collate_fn([self.data[i] for i, _, _ in keys]) for keys in self.micro_keys(drawn)
            ]
        if step not in self._drawn:  # a window starts: nothing was prefetched past the last decision point
            self.first_step_of_window = step
            self._plan.start(step)
            self._iter = iter(self._loader)
        batches = self._iter
        if batches is None:
            raise RuntimeError(f"StepFeeder.step({step}) after close()")
        drawn = self._drawn.pop(step)
        micro = [
            next(batches)
            for _ in range(math.ceil(len(self.local_ids(drawn.indices)) / self.micro_batch_size))
        ]
        return drawn.indices, micro

    def epoch_at(self, step: int, live: float) -> float:
        """`trainer.epoch` as it was when step `step` ended without prefetch (`live`: its value now)."""
        return self._early_epochs.pop(step, live)

    def close(self) -> None:
        """Ends the worker processes."""
        self._iter = None
        self._loader = None
