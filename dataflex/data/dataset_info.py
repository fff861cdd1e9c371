"""Dataset metadata: parse a dataset_info file (DataFlex yaml/json or LLaMA-Factory v0 json) into
`DatasetInfo` records, and resolve `DataArguments.dataset` to those records.

Why a separate module: the engine only needs a list of fully-resolved records (absolute local paths or
hub ids, validated keys and values); every question about *where* data lives and *how it is spelled* is
answered here, once, with errors that name the file, the dataset and the key.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import DataError
from .plugins.converter import check_converter_options, get_converter
from .plugins.index import get_index_plugin
from .plugins.loader import data_extensions, get_loader, hub_download, list_loaders

logger = logging.getLogger(__name__)

EMBEDDED_SCHEME = "embedded://"
INFO_NAMES = ("dataset_info.yaml", "dataset_info.yml", "dataset_info.json")

# DataFlex keys (the spec's plus `subset`, `columns`, `tags`, `loader`, `index`).
NATIVE_KEYS = {
    "path",
    "hf_hub_url",
    "file_name",
    "source",
    "split",
    "subset",
    "converter",
    "columns",
    "tags",
    "size",
    "weight",
    "streaming",
    "domain",
    "eval",
    "loader",
    "index",
    "max_repetitions",
}
# LLaMA-Factory v0 dataset_info.json keys.
V0_ONLY_KEYS = {"formatting", "ranking", "num_samples", "ms_hub_url", "om_hub_url", "script_url", "folder"}
ALLOWED_KEYS = NATIVE_KEYS | V0_ONLY_KEYS
SOURCES = ("local", "hf_hub")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset, fully resolved. `path` is an absolute local path when `source == "local"`, else a hub
    repo id (`hub_file` then optionally names a file inside it)."""

    name: str
    path: str
    source: str = "local"
    split: str = "train"
    subset: str | None = None
    converter: str | None = None
    converter_options: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    weight: float | None = None
    streaming: bool = False
    domain: str = ""
    eval: str | None = None
    loader: str | None = None
    index: str = "size_weight"
    max_repetitions: float | None = None
    """Proportion mixing (static_mix/dynamic_mix) may use this dataset's domain at most this many times over
    (in the mixing unit: samples or tokens; 1 = no row repeats); None: no bound. As OLMo-core's
    `max_repetition_ratio`; a mixture that would need more fails before training."""
    origin: str = "<arguments>"
    """Where this record came from (the info file), for error messages."""
    hub_file: str | None = None
    base_dir: str | None = None
    """The info file's folder: relative `eval` files are resolved against it."""

    def for_eval(self) -> DatasetInfo:
        """The record of this dataset's eval part: `eval` is a file (relative to the info file's folder)
        for local data, a split name for hub datasets and `save_to_disk` DatasetDicts. Eval data is
        served once per row: `size`/`weight` do not apply."""
        if self.eval is None:
            raise DataError(f"dataset {self.name!r} ({self.origin}) has no `eval` entry")
        # eval sets are read whole
        common: dict[str, Any] = {"eval": None, "size": None, "weight": None, "streaming": False}
        if self.source == "hf_hub":
            if self.hub_file is not None:
                return replace(self, hub_file=self.eval, **common)
            return replace(self, split=self.eval, **common)
        if _is_saved_dict(Path(self.path)):
            return replace(self, split=self.eval, **common)
        base = Path(self.base_dir) if self.base_dir else Path.cwd()
        path = _resolve_local(self.eval, base)
        if not path.exists():
            raise DataError(
                f"eval file {str(path)!r} of dataset {self.name!r} ({self.origin}) does not exist; "
                "fix its `eval` entry (a path relative to the dataset_info file)."
            )
        return replace(self, path=str(path), loader=None, **common)


# ------------------------------------------------------------------------------------- resolution
def embedded_info_file(name: str = "default") -> Path:
    """The dataset_info.yaml of an embedded dataset, located inside the installed package."""
    from . import embedded

    root = Path(embedded.__file__).resolve().parent
    path = root / name / "dataset_info.yaml"
    if not path.is_file():
        available = sorted(p.name for p in root.iterdir() if (p / "dataset_info.yaml").is_file())
        raise DataError(
            f"unknown embedded dataset {EMBEDDED_SCHEME}{name}; available: "
            f"{[EMBEDDED_SCHEME + a for a in available]}"
        )
    return path


def resolve_dataset_arg(dataset: str, dataset_dir: str | None = None) -> dict[str, DatasetInfo]:
    """Turn `DataArguments.dataset` into dataset records, in order.

    Accepted: ``embedded://NAME``; a dataset_info yaml/json; a data file or a directory of data files; a
    `save_to_disk` folder; a directory holding a dataset_info file; a hub dataset id or a hub-hosted
    ``owner/repo/path/dataset_info.yaml``; several of these, or several dataset names of the info file in
    `dataset_dir`, separated by commas.
    """
    if not dataset or not dataset.strip():
        raise DataError(
            "data.dataset is empty; set it to a dataset_info.yaml, a data file, a hub id or "
            f"{EMBEDDED_SCHEME}default"
        )
    parts = [p.strip() for p in dataset.split(",") if p.strip()]
    infos: dict[str, DatasetInfo] = {}
    dir_infos: dict[str, DatasetInfo] | None = None
    for part in parts:
        if dataset_dir is not None and not part.startswith(EMBEDDED_SCHEME) and not _looks_like_path(part):
            if dir_infos is None:
                dir_infos = read_info_file(find_info_file(Path(dataset_dir).expanduser()))
            if part not in dir_infos:
                raise DataError(
                    f"dataset {part!r} is not defined in the dataset_info file of "
                    f"data.dataset_dir={dataset_dir!r}; defined: {sorted(dir_infos)}"
                )
            found = {part: dir_infos[part]}
        else:
            found = _resolve_one(part)
        for name, info in found.items():
            if name in infos:
                raise DataError(
                    f"dataset name {name!r} appears twice in data.dataset={dataset!r} "
                    f"({infos[name].origin} and {info.origin}); rename one"
                )
            infos[name] = info
    return infos


def find_info_file(folder: Path) -> Path:
    for name in INFO_NAMES:
        if (folder / name).is_file() and not (name.endswith(".json") and _is_saved_dataset(folder)):
            return folder / name
    raise DataError(
        f"no dataset_info.yaml/.yml/.json in {str(folder)!r} (data.dataset_dir); create one "
        "or point data.dataset at a file"
    )


def _looks_like_path(part: str) -> bool:
    return os.sep in part or "/" in part or Path(part).suffix.lower() in (*data_extensions(), ".yaml", ".yml")


def _resolve_one(part: str) -> dict[str, DatasetInfo]:
    if part.startswith(EMBEDDED_SCHEME):
        return read_info_file(embedded_info_file(part[len(EMBEDDED_SCHEME) :] or "default"))
    path = Path(part).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.exists():
        return _resolve_local_source(path)
    suffix = Path(part).suffix.lower()
    if part.startswith((".", "/", "~")) or (suffix in data_extensions() and part.count("/") < 2):
        raise DataError(
            f"data.dataset: {str(path)!r} does not exist (resolved against the current directory "
            f"{os.getcwd()!r}); fix the path, or give a hub dataset id like 'owner/name'."
        )
    return _resolve_hub(part)


def _resolve_local_source(path: Path) -> dict[str, DatasetInfo]:
    if path.is_dir():
        if _is_saved_dataset(path) or _is_saved_dict(path):
            return {
                path.name: DatasetInfo(
                    name=path.name,
                    path=str(path),
                    domain=path.name,
                    origin=str(path),
                    base_dir=str(path.parent),
                )
            }
        for name in INFO_NAMES:
            if (path / name).is_file():
                return read_info_file(path / name)
        return {
            path.name: DatasetInfo(
                name=path.name, path=str(path), domain=path.name, origin=str(path), base_dir=str(path.parent)
            )
        }
    if path.suffix.lower() in (".yaml", ".yml") or path.name == "dataset_info.json":
        return read_info_file(path)
    if path.suffix.lower() not in data_extensions():
        raise DataError(
            f"data.dataset: cannot tell how to read {str(path)!r} (suffix {path.suffix!r}). "
            f"Supported data files: {sorted(data_extensions())} (loaders: {list_loaders()}); "
            "or describe it in a dataset_info.yaml with a `loader` key."
        )
    return {
        path.stem: DatasetInfo(
            name=path.stem, path=str(path), domain=path.stem, origin=str(path), base_dir=str(path.parent)
        )
    }


def _resolve_hub(part: str) -> dict[str, DatasetInfo]:
    """`owner/name` is a hub dataset; `owner/name/some/dataset_info.yaml` is an info file in that repo."""
    pieces = part.split("/")
    if len(pieces) >= 3 and Path(part).suffix.lower() in (".yaml", ".yml", ".json"):
        repo_id, filename = "/".join(pieces[:2]), "/".join(pieces[2:])
        local = hub_download(repo_id, filename, what=f"data.dataset={part!r}")
        return read_info_file(Path(local), hub_repo=repo_id)
    if not HUB_ID.match(part):
        raise DataError(
            f"data.dataset={part!r} is neither an existing local path nor a hub id 'owner/name'. "
            "To pick datasets by name from a dataset_info file, also set data.dataset_dir."
        )
    name = pieces[-1]
    return {name: DatasetInfo(name=name, path=part, source="hf_hub", domain=name, origin=f"hub:{part}")}


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _is_saved_dict(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file()


def _resolve_local(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


# -------------------------------------------------------------------------------------------- parsing
class DuplicateKey(ValueError):
    """A key that appears twice in one mapping of a dataset_info file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load keeps the last of two equal keys without a word; this loader refuses them."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKey(f"{key!r} is listed twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"{key!r} is listed twice")
        seen[key] = value
    return seen


def read_info_file(path: Path, hub_repo: str | None = None) -> dict[str, DatasetInfo]:
    """Parse a dataset_info yaml/json (DataFlex or LLaMA-Factory v0 spelling) into records."""
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = (
            json.loads(text, object_pairs_hook=_unique_json_keys)
            if path.suffix.lower() == ".json"
            else yaml.load(text, Loader=_UniqueKeyLoader)
        )  # noqa: S506 - a SafeLoader subclass
    except DuplicateKey as e:
        raise DataError(
            f"dataset_info file {origin!r}: {e}; each dataset needs its own name (the first entry "
            "would silently be replaced by the second)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read dataset_info file {origin!r}: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise DataError(
            f"dataset_info file {origin!r} must map dataset names to their settings, "
            f"got {type(raw).__name__ if raw is not None else 'an empty file'}"
        )
    is_json = path.suffix.lower() == ".json"
    infos = {}
    for name, entry in raw.items():
        infos[str(name)] = parse_entry(
            str(name), entry, origin=origin, base_dir=path.parent, json_file=is_json, hub_repo=hub_repo
        )
    return infos


def parse_entry(
    name: str,
    entry: Any,
    *,
    origin: str,
    base_dir: Path,
    json_file: bool = False,
    hub_repo: str | None = None,
) -> DatasetInfo:
    """Validate one dataset entry and resolve its location."""
    where = f"dataset {name!r} in {origin!r}"
    if not isinstance(entry, dict):
        raise DataError(f"{where} must be a mapping of settings, got {type(entry).__name__}")
    unknown = sorted(set(entry) - ALLOWED_KEYS)
    if unknown:
        raise DataError(
            f"{where}: unknown key(s) {unknown}. Allowed keys: {sorted(NATIVE_KEYS)} (and the "
            f"LLaMA-Factory v0 keys {sorted(V0_ONLY_KEYS)}). Remove or rename them."
        )
    v0 = bool(set(entry) & V0_ONLY_KEYS) or (
        json_file and "converter" not in entry and bool({"file_name", "hf_hub_url"} & set(entry))
    )

    locations = [k for k in ("path", "hf_hub_url", "file_name") if k in entry]
    if len(locations) != 1:
        if not locations and any(k in entry for k in ("ms_hub_url", "om_hub_url", "script_url")):
            raise DataError(
                f"{where}: only ModelScope/Modelers/script sources are given; DataFlex loads from "
                "local files and the Hugging Face Hub: add `file_name` or `hf_hub_url`."
            )
        raise DataError(
            f"{where}: give exactly one of `path`, `hf_hub_url`, `file_name` (got {locations or 'none'})"
        )
    loc_key = locations[0]
    location = _str(entry[loc_key], loc_key, where)
    for ignored in ("ms_hub_url", "om_hub_url"):
        if ignored in entry:
            logger.info(
                "%s: `%s` is not used (DataFlex reads the Hugging Face Hub or local files)", where, ignored
            )
    if "script_url" in entry:
        raise DataError(
            f"{where}: `script_url` (dataset loading scripts) is not supported; use `file_name` "
            "or `hf_hub_url`."
        )

    source = entry.get("source")
    if source is not None and source not in SOURCES:
        raise DataError(f"{where}: `source` must be one of {list(SOURCES)}, got {source!r}")
    if source is None:
        source = "hf_hub" if loc_key == "hf_hub_url" else "local"
        if (
            loc_key == "path"
            and hub_repo is None
            and not _resolve_local(location, base_dir).exists()
            and HUB_ID.match(location)
            and Path(location).suffix.lower() not in data_extensions()
        ):
            source = "hf_hub"
    if loc_key == "file_name" and "folder" in entry:
        location = str(Path(_str(entry["folder"], "folder", where)) / location)

    hub_file = None
    if source == "local" and hub_repo is not None:  # a relative file of a hub-hosted dataset_info
        source, hub_file, resolved = "hf_hub", location, hub_repo
    elif source == "local":
        resolved = str(_resolve_local(location, base_dir))
        if not Path(resolved).exists():
            raise DataError(
                f"{where}: `{loc_key}` {location!r} resolves to {resolved!r}, which does not exist. "
                "Relative paths are resolved against the dataset_info file's folder."
            )
    else:
        if not HUB_ID.match(location):
            raise DataError(f"{where}: `{loc_key}` {location!r} is not a hub dataset id 'owner/name'")
        resolved = location

    converter = entry.get("converter")
    options: dict[str, Any] = {}
    if v0:
        formatting = entry.get("formatting", "alpaca")
        if converter is not None and "formatting" in entry:
            raise DataError(f"{where}: give `converter` or `formatting`, not both")
        converter = converter or formatting
        if entry.get("ranking"):
            options["ranking"] = True
    elif entry.get("ranking"):
        options["ranking"] = True
    if converter is not None:
        converter = _str(converter, "converter", where)
        get_converter(converter)  # unknown name -> error listing the registered ones, at config time
    for key in ("columns", "tags"):
        if key in entry:
            if not isinstance(entry[key], dict) or not all(isinstance(v, str) for v in entry[key].values()):
                raise DataError(f"{where}: `{key}` must map names to column/tag strings, got {entry[key]!r}")
            options[key] = dict(entry[key])
    if converter is not None:
        try:
            check_converter_options(converter, options)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
    elif options:
        raise DataError(f"{where}: `columns`/`tags`/`ranking` need a `converter` (or `formatting`)")

    size = entry.get("size", entry.get("num_samples"))
    if "size" in entry and "num_samples" in entry:
        raise DataError(f"{where}: give `size` or `num_samples`, not both")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise DataError(f"{where}: `size` must be an integer >= 0 (rows drawn per epoch), got {size!r}")
    weight = entry.get("weight")
    if weight is not None:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not weight >= 0
            or weight == float("inf")
        ):
            raise DataError(
                f"{where}: `weight` must be a finite number >= 0 (length multiplier), got {weight!r}"
            )
        weight = float(weight)
    max_repetitions = entry.get("max_repetitions")
    if max_repetitions is not None:
        if (
            isinstance(max_repetitions, bool)
            or not isinstance(max_repetitions, (int, float))
            or not 0 < max_repetitions < float("inf")
        ):
            raise DataError(
                f"{where}: `max_repetitions` must be a finite number > 0 (how many times over the "
                f"domain's data may be used; 1 = each row at most once), got {max_repetitions!r}"
            )
        max_repetitions = float(max_repetitions)
    streaming = entry.get("streaming", False)
    if not isinstance(streaming, bool):
        raise DataError(f"{where}: `streaming` must be true or false, got {streaming!r}")
    loader = entry.get("loader")
    if loader is not None:
        get_loader(_str(loader, "loader", where))
    index = _str(entry.get("index", "size_weight"), "index", where)
    get_index_plugin(index)
    return DatasetInfo(
        name=name,
        path=resolved,
        source=source,
        split=_str(entry.get("split", "train"), "split", where),
        subset=None if entry.get("subset") is None else _str(entry["subset"], "subset", where),
        converter=converter,
        converter_options=options,
        size=size,
        weight=weight,
        streaming=streaming,
        domain=_str(entry.get("domain", name), "domain", where),
        eval=None if entry.get("eval") is None else _str(entry["eval"], "eval", where),
        loader=loader,
        index=index,
        max_repetitions=max_repetitions,
        origin=origin,
        hub_file=hub_file,
        base_dir=str(base_dir),
    )


def _str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: `{key}` must be a non-empty string, got {value!r}")
    return value
