"""`DataArguments`: the single input of the `DataEngine` (spec 003) plus the processor's options.

Deviation from the spec text: the spec calls `cutoff_len` "the maximum number of samples", which
contradicts its name and LLaMA-Factory's usage. Here `cutoff_len` is the maximum number of *tokens* per
sample (LLaMA-Factory semantics) and `max_samples` caps the number of rows per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataArguments:
    dataset: str = "embedded://default"
    """What to load: a dataset_info.yaml/json path, a data file or directory, a `save_to_disk` folder, a hub
    repo id, or comma-separated dataset names of a dataset_info file (see `dataset_dir`).
    `embedded://default` is the multi-domain dataset shipped with DataFlex."""
    dataset_dir: str | None = None
    """Folder holding `dataset_info.yaml`/`.json` when `dataset` lists dataset names."""
    cutoff_len: int = 128
    """Maximum tokens per training sample (prompt + response); longer samples are truncated."""
    max_samples: int | None = None
    """Keep at most this many rows of each dataset (None: all)."""
    mode: str = "sft"
    """`sft`: chat-formatted instruction data with prompt masking; `pretrain`: plain text packed into
    `cutoff_len` blocks."""
    template: str | None = None
    """Chat template: None (= `auto`) uses the tokenizer's own if it has one, else DataFlex's built-in
    `simple`; `tokenizer`, `simple`, or a named format as LLaMA-Factory writes it: `chatml`, `qwen`, `llama3`.
    The saved tokenizer (final_model/, checkpoints) carries the template the model was trained with."""
    train_on_prompt: bool = False
    """Also compute the loss on prompt (user/system) tokens."""
    seed: int = 42
    """Seed for index building (size/weight draws) and per-epoch shuffles."""
    streaming: bool = False
    """Force streaming for every dataset (also settable per dataset in dataset_info)."""
    val_size: float | None = None
    """Hold out part of every dataset that has no `eval` entry as its eval split (LLaMA-Factory's `val_size`):
    a fraction in (0, 1) of its rows, or a row count >= 1; seeded by `seed`, after `max_samples`. None: such
    datasets are not evaluated (a warning names their domains)."""
    on_error: str = "raise"
    """A malformed row: `raise` (default; names the file and line) or `skip` (count and report)."""
    packing: bool = False
    """SFT only: pack each micro-batch's samples into rows of up to `cutoff_len` tokens (longest first, first
    fit) with position ids restarting per sample and attention that never crosses samples, instead of padding
    every sample to the longest. Samples, per-sample losses, domains and ids stay exactly those of the
    unpacked run (see dataflex/data/packing.py); only the forward is cheaper."""

    cache_dir: str | None = None
    """Where `dataflex-run` keeps the token store (tokenized data as memory-mapped arrays, built once per data
    + tokenizer + processing key and shared by every rank and sweep job). None: $DATAFLEX_CACHE, else
    $XDG_CACHE_HOME/dataflex, else ~/.cache/dataflex. See dataflex/data/README.md "Token store"."""
    rebuild_cache: bool = False
    """Build the token store again even when a valid one exists for this key."""
    preprocessing_num_workers: int | None = None
    """Tokenizer processes of a token-store build (HF `datasets` map(num_proc)); None: every core for builds
    of 20k+ rows, one process below."""

    def __post_init__(self) -> None:
        if not str(self.dataset).strip():
            raise ValueError(
                "data.dataset is empty; data=custom needs data.dataset=<dataset_info.yaml, a data file "
                "or folder, or a hub dataset id> (see README, Your own data)."
            )
        if self.cutoff_len is not None and self.cutoff_len <= 0:
            raise ValueError(
                f"data.cutoff_len must be > 0, got {self.cutoff_len}. Set e.g. data.cutoff_len=128."
            )
        if self.max_samples is not None and self.max_samples <= 0:
            raise ValueError(f"data.max_samples must be > 0 or null, got {self.max_samples}.")
        from dataflex.data.templates import check_template_name

        check_template_name(self.template)
        if self.mode not in ("sft", "pretrain"):
            raise ValueError(f"data.mode must be 'sft' or 'pretrain', got {self.mode!r}.")
        if self.packing and self.mode == "pretrain":
            raise ValueError(
                "data.packing=true is for data.mode=sft: data.mode=pretrain already packs the text into "
                "cutoff_len blocks. Drop data.packing."
            )
        if self.val_size is not None and not (
            0 < self.val_size < 1 or (self.val_size >= 1 and float(self.val_size).is_integer())
        ):
            raise ValueError(
                f"data.val_size must be a fraction in (0, 1) or a whole row count >= 1, got {self.val_size}."
            )
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise ValueError(
                f"data.preprocessing_num_workers must be >= 1 or null, got {self.preprocessing_num_workers}."
            )
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}.")
