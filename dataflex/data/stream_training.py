"""Training from streams: `static` and `dynamic_mix` read streaming domains lazily, never holding the corpus.

- One reader per domain on every rank. A domain's reader mixes that domain's datasets by their `weight`
  (`MixedStream`) and reads, of every dataset, only this rank's disjoint shard (`DataEngine._open_stream` with
  reader = rank of world: byte ranges of a local .jsonl, `split_dataset_by_node` for `datasets` streams, hub
  datasets with `streaming: true` included).
- `StreamSampler` decides the domain of every slot of the global batch by the current proportions
  (`ProportionScheduler`: each prefix within one sample per domain of them), identically on every rank; the
  slots of this rank's share of the batch take the next item of their domain's reader. The global ids are
  slot numbers (`step * global batch + slot`): the loop and the prefetching loader address items by them.
- SFT: every sample is rendered and tokenized as in `TokenizedData`. Pretrain: a domain's documents are
  tokenized with an EOS after each and cut into `cutoff_len` blocks (the partial block carries over, in the
  state), as the in-memory packing does per domain.
- A domain that runs out starts its next pass from its beginning (logged); `max_repetitions` (dataset_info)
  bounds the passes. Streams are read in order, not shuffled (a shuffle needs the whole domain or a buffer).
- `rank_state_dict()`: every reader's position (byte offsets / `datasets` state, the pass, the carried
  tokens), written per rank into the checkpoint, so a resumed run reads exactly what an uninterrupted one
  would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dataflex.data.engine import _rank_world
from dataflex.data.errors import DataError, MixtureInfeasible
from dataflex.data.plugins.loader import LoadContext
from dataflex.data.processor import Features, SFTProcessor, message_text
from dataflex.data.sampling import ProportionScheduler, validate_proportions
from dataflex.data.streaming import MixedStream
from dataflex.utils.logging import logger


class DomainReader:
    """This rank's reader of one domain: its datasets' shards mixed by weight, pass after pass."""

    def __init__(
        self,
        engine,
        domain: str,
        rank: int,
        world: int,
        max_passes: float | None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.engine, self.domain, self.rank, self.world = engine, domain, rank, world
        self.names = [n for n, i in engine.dataset_infos.items() if i.domain == domain]
        self.weights = [
            engine.dataset_infos[n].weight if engine.dataset_infos[n].weight is not None else 1.0
            for n in self.names
        ]
        self.max_passes = max_passes
        self.passes = 0 if state is None else int(state["passes"])
        self.read = 0 if state is None else int(state["read"])
        self._open(None if state is None else state["mix"])

    def _open(self, mix_state: dict[str, Any] | None) -> None:
        ctxs = [LoadContext(n, self.engine.args.on_error) for n in self.names]
        streams_state = mix_state["streams"] if mix_state is not None else [None] * len(self.names)
        streams = [
            self.engine._open_stream(n, self.rank, self.world, s, c)
            for n, s, c in zip(self.names, streams_state, ctxs)
        ]
        self.mix = MixedStream(streams, self.weights, mix_state)

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "read": self.read, "mix": self.mix.state_dict()}

    def next_sample(self) -> dict[str, Any]:
        while True:
            try:
                k, row = next(self.mix)
            except StopIteration:
                if self.read == 0:
                    raise DataError(
                        f"domain {self.domain!r} has no rows in the shard of rank {self.rank} of "
                        f"{self.world}; give its datasets more rows or use fewer processes."
                    ) from None
                self.passes += 1
                if self.max_passes is not None and self.passes >= self.max_passes:
                    raise MixtureInfeasible(
                        f"domain {self.domain!r} ran out after {self.passes} pass(es) over its stream "
                        f"on rank {self.rank} and its max_repetitions is {self.max_passes:g}; "
                        "raise max_repetitions in dataset_info, lower its proportion or train fewer steps."
                    ) from None
                logger.info(
                    f"streaming: domain {self.domain!r} starts pass {self.passes + 1} over its data "
                    f"(rank {self.rank})"
                )
                self._open(None)
                continue
            name = self.names[k]
            self.read += 1
            return self.engine._convert_data_sample(
                row, name, where=f"streamed row {self.read} of {self.domain!r}"
            )


class StreamingTrainData:
    """The training view of a streaming engine: items are read on demand, per slot, by `StreamSampler`."""

    streaming = True
    in_process = True
    """Items exist only in this process once read: loader workers receive them, they cannot read them."""

    def __init__(
        self,
        engine,
        tokenizer,
        cutoff_len: int,
        mode: str = "sft",
        template: str | None = None,
        train_on_prompt: bool = False,
    ) -> None:
        self.engine, self.mode, self.cutoff_len = engine, mode, int(cutoff_len)
        self.tokenizer = tokenizer
        self.domain_names: list[str] = list(engine.domain_names)
        self.processor = SFTProcessor(tokenizer, cutoff_len, template, train_on_prompt)
        self.rank, self.world = _rank_world()
        self.readers: list[DomainReader] | None = None
        self._carry: list[list[int]] = [[] for _ in self.domain_names]
        self._buffer: dict[int, Features] = {}
        self._pending_state: dict[str, Any] | None = None

    def domain_weights(self) -> np.ndarray:
        """The static trainer's proportions: each domain's share by its datasets' `weight` (default 1)."""
        infos = self.engine.dataset_infos.values()
        w = np.asarray(
            [
                sum(i.weight if i.weight is not None else 1.0 for i in infos if i.domain == d)
                for d in self.domain_names
            ],
            dtype=np.float64,
        )
        return w / w.sum()

    def open(self, max_repetitions: Sequence[float | None] | None = None) -> None:
        reps = list(max_repetitions) if max_repetitions is not None else [None] * len(self.domain_names)
        states = (self._pending_state or {}).get("readers") or [None] * len(self.domain_names)
        self.readers = [
            DomainReader(self.engine, d, self.rank, self.world, r, s)
            for d, r, s in zip(self.domain_names, reps, states)
        ]
        if self._pending_state is not None:
            self._carry = [list(c) for c in self._pending_state["carry"]]
            self._pending_state = None

    # ---- items -----------------------------------------------------------------------------------------
    def _next_item(self, d: int) -> tuple[list[int], list[int]]:
        if self.readers is None:
            raise RuntimeError("StreamingTrainData.open() must run before items are read")
        reader = self.readers[d]
        if self.mode == "sft":
            return self.processor.encode(reader.next_sample())
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        carry = self._carry[d]
        while len(carry) < self.cutoff_len:
            sample = reader.next_sample()
            text = " ".join(message_text(m) for m in sample["messages"])
            carry += self.tokenizer.encode(text, add_special_tokens=False) + eos
        block, self._carry[d] = carry[: self.cutoff_len], carry[self.cutoff_len :]
        return block, list(block)

    def read(self, ids: np.ndarray, domains: np.ndarray) -> None:
        """Reads the items of this rank's slots of a global batch (`ids`, `domains`: every slot's)."""
        share = len(ids) // self.world
        for slot in range(self.rank * share, (self.rank + 1) * share):
            d = int(domains[slot])
            input_ids, labels = self._next_item(d)
            self._buffer[int(ids[slot])] = Features(input_ids, labels, d, int(ids[slot]))

    def __getitem__(self, i: int) -> Features:
        return self._buffer.pop(int(i))

    def __len__(self) -> int:
        raise TypeError(
            "a streaming training set has no length; set trainer.max_steps (the number of steps)."
        )

    def set_epoch(self, epoch: int) -> None:
        """Streams have no epochs (a domain starts its next pass when it runs out)."""

    # ---- state (per rank) ----------------------------------------------------------------------------
    def rank_state_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world": self.world,
            "readers": [r.state_dict() for r in self.readers or []],
            "carry": [list(c) for c in self._carry],
        }

    def load_rank_state_dict(self, state: dict[str, Any]) -> None:
        if (state["rank"], state["world"]) != (self.rank, self.world):
            raise ValueError(
                f"the checkpoint's stream positions are for rank {state['rank']} of {state['world']}; "
                f"this is rank {self.rank} of {self.world}: resume with the same number of processes."
            )
        self._pending_state = state
        self.open([r.max_passes for r in self.readers] if self.readers else None)


class StreamSampler:
    """The domain of every slot by the current proportions (same on every rank), then this rank reads its
    slots. Interface of `ProportionSampler` (`next`, `set_proportions`, `proportions`, `drawn`, state)."""

    def __init__(self, data: StreamingTrainData, proportions: Sequence[float]) -> None:
        self.data, self.names = data, list(data.domain_names)
        self.slots = 0
        self.drawn = np.zeros(len(self.names), dtype=np.int64)
        self.set_proportions(proportions)

    @property
    def proportions(self) -> np.ndarray:
        """As given to `set_proportions` (see `ProportionSampler.proportions`)."""
        return self._given.copy()

    def set_proportions(self, proportions: Sequence[float]) -> None:
        self._scheduler = ProportionScheduler(validate_proportions(proportions, self.names))
        self._given = np.asarray(proportions, dtype=np.float64).reshape(-1).copy()

    def next(self, n: int) -> np.ndarray:
        domains = np.asarray([self._scheduler.next_domain() for _ in range(int(n))], dtype=np.int64)
        ids = np.arange(self.slots, self.slots + int(n), dtype=np.int64)
        self.slots += int(n)
        self.drawn += np.bincount(domains, minlength=len(self.names))
        self.data.read(ids, domains)
        return ids

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "stream",
            "proportions": self.proportions.tolist(),
            "scheduler": self._scheduler.state_dict(),
            "slots": self.slots,
            "drawn": self.drawn.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "stream":
            raise ValueError(f"state_dict of a {state.get('kind')!r} sampler given to a streaming sampler")
        self.set_proportions(state["proportions"])
        self._scheduler.load_state_dict(state["scheduler"])
        self.slots, self.drawn = int(state["slots"]), np.asarray(state["drawn"], dtype=np.int64)
