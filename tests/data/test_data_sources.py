"""Sources: dataset_info yaml/json (incl. LLaMA-Factory v0), every file type, directories,
save_to_disk folders, comma-separated names, and the hub code path with local stand-ins."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import alpaca_rows, make_two_domain_info, snapshot, text_of, write_jsonl

from dataflex.data import DataArguments, DataEngine, DataError

ROWS = alpaca_rows(6)


@pytest.fixture
def two_domain_info(tmp_path: Path) -> Path:
    return make_two_domain_info(tmp_path)


def _write_all_formats(folder: Path) -> dict[str, Path]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    out = {"jsonl": write_jsonl(folder / "d.jsonl", ROWS)}
    (folder / "d.json").write_text(json.dumps(ROWS))
    out["json"] = folder / "d.json"
    with open(folder / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        w.writerows(ROWS)
    out["csv"] = folder / "d.csv"
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, folder / "d.parquet")
    out["parquet"] = folder / "d.parquet"
    with pa.ipc.new_file(str(folder / "d.arrow"), table.schema) as w:
        w.write_table(table)
    out["arrow"] = folder / "d.arrow"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder / "saved"))
    out["saved"] = folder / "saved"
    return out


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _write_all_formats(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "arrow", "saved"])
def test_every_file_type_gives_the_same_samples(formats: dict[str, Path], kind: str) -> None:
    before = snapshot(formats[kind].parent)
    e = DataEngine(DataArguments(dataset=str(formats[kind])))
    assert len(e) == 6
    assert e.dataset_infos[next(iter(e.dataset_infos))].converter == "alpaca"  # detected
    assert [text_of(s, 0) for s in e] == [
        r["instruction"] + ("\n" + r["input"] if r["input"] else "") for r in ROWS
    ]
    assert [text_of(s) for s in e] == [r["output"] for r in ROWS]
    assert snapshot(formats[kind].parent) == before  # nothing written into the user's data folder


def test_csv_keeps_text_columns_as_text(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("instruction,input,output\nAdd,1 + 2,3\nAdd,,007\n")
    e = DataEngine(DataArguments(dataset=str(tmp_path / "n.csv")))
    assert [text_of(s) for s in e] == ["3", "007"] and text_of(e[1], 0) == "Add"


def test_txt_file_is_plain_text(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("first line\n\n  \nsecond line\n")
    e = DataEngine(DataArguments(dataset=str(tmp_path / "p.txt")))
    assert [s["messages"] for s in e] == [
        [{"role": "assistant", "content": [{"type": "text", "value": v}], "loss_weight": 1.0}]
        for v in ("first line", "second line")
    ]


def test_directory_of_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "dir" / "part-0.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "dir" / "sub" / "part-1.jsonl", ROWS[2:])
    e = DataEngine(DataArguments(dataset=str(tmp_path / "dir")))
    assert [text_of(s) for s in e] == [r["output"] for r in ROWS] and e.domain_names == ["dir"]
    (tmp_path / "dir" / "x.csv").write_text("text\nz\n")
    with pytest.raises(DataError, match="mixes file types"):
        DataEngine(DataArguments(dataset=str(tmp_path / "dir")))


def test_saved_dataset_dict_splits(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "validation": datasets.Dataset.from_list(ROWS[:2])}
    ).save_to_disk(str(tmp_path / "dd"))
    (tmp_path / "info.yaml").write_text("dd:\n  path: dd\n  eval: validation\n")
    assert len(DataEngine(DataArguments(dataset=str(tmp_path / "info.yaml")))) == 6
    assert len(DataEngine(DataArguments(dataset=str(tmp_path / "info.yaml")), split="eval")) == 2
    (tmp_path / "bad.yaml").write_text("dd:\n  path: dd\n  split: nope\n")
    with pytest.raises(DataError, match=r"split 'nope' is not in .*splits: \['train', 'validation'\]"):
        DataEngine(DataArguments(dataset=str(tmp_path / "bad.yaml")))


def test_info_yaml_all_keys_and_old_spellings(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.jsonl", ROWS)
    write_jsonl(
        tmp_path / "msgs.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    (tmp_path / "dataset_info.yaml").write_text(
        "x:\n  file_name: x.jsonl\n  source: local\n  split: train\n  converter: alpaca\n  size: 4\n"
        "  weight: 1.5\n  streaming: false\n  domain: shared\n"
        "m:\n  path: msgs.jsonl\n  converter: openai\n  domain: shared\n"
    )
    e = DataEngine(DataArguments(dataset=str(tmp_path / "dataset_info.yaml")))
    assert len(e) == 7 and e.domain_names == ["shared"] and e.domain_sizes.tolist() == [7]


def test_unknown_key_names_file_dataset_and_key(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.jsonl", ROWS)
    info = tmp_path / "dataset_info.yaml"
    info.write_text("x:\n  path: x.jsonl\n  convertor: alpaca\n")
    with pytest.raises(DataError) as err:
        DataEngine(DataArguments(dataset=str(info)))
    assert str(info) in str(err.value) and "'x'" in str(err.value) and "convertor" in str(err.value)


@pytest.mark.parametrize(
    "entry, match",
    [
        ("path: x.jsonl\n  size: -1", "`size` must be an integer >= 0"),
        ("path: x.jsonl\n  weight: -0.5", "`weight` must be a finite number >= 0"),
        ("path: x.jsonl\n  streaming: yes please", "`streaming` must be true or false"),
        ("path: nope.jsonl", "does not exist"),
        (
            "path: x.jsonl\n  converter: alpacca",
            r"Unknown converter 'alpacca'. Registered converters: \['alpaca'",
        ),
        ("path: x.jsonl\n  loader: xml", r"Unknown loader 'xml'. Registered loaders: \['arrow', 'csv'"),
        ("converter: alpaca", "give exactly one of `path`"),
        ("path: x.jsonl\n  source: s3", "`source` must be one of"),
    ],
)
def test_bad_info_entries(tmp_path: Path, entry: str, match: str) -> None:
    write_jsonl(tmp_path / "x.jsonl", ROWS)
    (tmp_path / "i.yaml").write_text(f"x:\n  {entry}\n")
    with pytest.raises(DataError, match=match):
        DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml")))


def test_llamafactory_v0_dataset_info(tmp_path: Path) -> None:
    """A LLaMA-Factory data/ folder works unchanged: file_name, formatting, columns, tags, ranking."""
    (tmp_path / "alpaca_en_demo.json").write_text(
        json.dumps(
            [{"instruction": "hi", "input": "", "output": "yo", "system": "be nice", "history": [["a", "b"]]}]
        )
    )
    (tmp_path / "sg.json").write_text(
        json.dumps(
            [
                {
                    "conv": [
                        {"role": "user", "text": "q1"},
                        {"role": "bot", "text": "a1"},
                        {"role": "user", "text": "q2"},
                        {"role": "bot", "text": "a2"},
                    ],
                    "sys": "S",
                }
            ]
        )
    )
    (tmp_path / "dpo.json").write_text(
        json.dumps([{"instruction": "p", "chosen": "good", "rejected": "bad"}])
    )
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "alpaca_en_demo": {"file_name": "alpaca_en_demo.json", "ms_hub_url": "x/y"},
                "sg_demo": {
                    "file_name": "sg.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "conv", "system": "sys"},
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "text",
                        "user_tag": "user",
                        "assistant_tag": "bot",
                    },
                },
                "dpo_demo": {"file_name": "dpo.json", "ranking": True, "num_samples": 2},
            }
        )
    )
    e = DataEngine(DataArguments(dataset="alpaca_en_demo,sg_demo,dpo_demo", dataset_dir=str(tmp_path)))
    assert list(e.dataset_infos) == ["alpaca_en_demo", "sg_demo", "dpo_demo"] and len(e) == 4
    a = e[0]["messages"]
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"][0]["value"] for m in a] == ["be nice", "a", "b", "hi", "yo"]
    s = e[1]["messages"]
    assert [(m["role"], m["content"][0]["value"], m["loss_weight"]) for m in s] == [
        ("system", "S", 0.0),
        ("user", "q1", 0.0),
        ("assistant", "a1", 1.0),
        ("user", "q2", 0.0),
        ("assistant", "a2", 1.0),
    ]
    d = e[2]
    assert d["chosen_messages"][-1]["content"][0]["value"] == "good"
    assert d["rejected_messages"][-1]["content"][0]["value"] == "bad"
    assert e[3]["_dataset_name"] == "dpo_demo"  # num_samples=2 -> two draws of the single row
    # the same file, named directly
    assert len(DataEngine(DataArguments(dataset=str(tmp_path / "dataset_info.json")))) == 4
    with pytest.raises(DataError, match="not defined in the dataset_info file"):
        DataEngine(DataArguments(dataset="missing", dataset_dir=str(tmp_path)))


def test_comma_separated_sources(tmp_path: Path, two_domain_info: Path) -> None:
    write_jsonl(tmp_path / "extra.jsonl", [{"text": "t"}])
    e = DataEngine(DataArguments(dataset=f"{two_domain_info},{tmp_path / 'extra.jsonl'}"))
    assert e.domain_names == ["alpha", "beta", "extra"] and len(e) == 15
    with pytest.raises(DataError, match="appears twice"):
        DataEngine(DataArguments(dataset=f"{two_domain_info},{two_domain_info}"))


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        DataEngine(DataArguments(dataset=str(tmp_path / "nope.jsonl")))
    with pytest.raises(DataError, match="does not exist"):
        DataEngine(DataArguments(dataset="./data/train.jsonl"))


# ------------------------------------------------------------------------------------------- hub
def test_hub_id_goes_through_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_list(
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 3
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    e = DataEngine(DataArguments(dataset="someone/chat-data"))
    assert calls == [("someone/chat-data", None, {"split": "train", "streaming": False})]
    assert len(e) == 3 and e.domain_names == ["chat-data"] and text_of(e[0]) == "a"
    assert e.dataset_infos["chat-data"].converter == "openai"


def test_hub_yaml_goes_through_hf_hub_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub

    (tmp_path / "dataset_info.yaml").write_text(
        "sft:\n  path: data/sft.jsonl\n  converter: alpaca\n  eval: data/eval.jsonl\n"
        "other:\n  hf_hub_url: org/other\n  converter: text\n  subset: en\n  eval: validation\n"
    )
    got = []
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo_id, filename, repo_type: (
            got.append((repo_id, filename, repo_type)) or str(tmp_path / "dataset_info.yaml")
        ),
    )

    def fake_load_dataset(path, name=None, **kwargs):
        got.append((path, name, kwargs))
        if path == "org/other":
            return datasets.Dataset.from_list([{"text": "t"}])
        return datasets.Dataset.from_list(ROWS[:2])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    e = DataEngine(DataArguments(dataset="org/repo/cfg/dataset_info.yaml"))
    assert got[0] == ("org/repo", "cfg/dataset_info.yaml", "dataset")
    assert ("org/repo", None, {"split": "train", "streaming": False, "data_files": "data/sft.jsonl"}) in got
    assert ("org/other", "en", {"split": "train", "streaming": False}) in got
    assert len(e) == 3
    ev = DataEngine(DataArguments(dataset="org/repo/cfg/dataset_info.yaml"), split="eval")
    assert got[-2:] == [
        ("org/repo", None, {"split": "train", "streaming": False, "data_files": "data/eval.jsonl"}),
        ("org/other", "en", {"split": "validation", "streaming": False}),
    ]
    assert len(ev) == 3 and ev.domain_names == ["sft", "other"]


def test_offline_hub_error_names_the_dataset(tmp_path: Path) -> None:
    """The real `datasets.load_dataset` with HF_HUB_OFFLINE=1: a clear DataError, not a traceback."""
    code = (
        "from dataflex.data import DataArguments, DataEngine, DataError\n"
        "try:\n    DataEngine(DataArguments(dataset='nobody-xyz/not-a-dataset'))\n"
        "except DataError as e:\n    print('DATAERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "DATAERROR" in out.stdout, out.stderr[-2000:]
    assert "nobody-xyz/not-a-dataset" in out.stdout and "offline" in out.stdout


def test_columns_are_checked_against_the_converter(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps([{"instruction": "q", "output": "a", "images": ["x.png"]}]))
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"mm": {"file_name": "d.json", "columns": {"prompt": "instruction", "images": "images"}}})
    )
    with pytest.raises(DataError, match=r"does not use `columns` key\(s\) \['images'\]"):
        DataEngine(DataArguments(dataset=str(tmp_path / "dataset_info.json")))


def test_custom_index_plugin(tmp_path: Path) -> None:
    import numpy as np

    from dataflex.data import register_index_plugin
    from dataflex.data.plugins import index

    @register_index_plugin("reverse_order")
    def reverse_order(length, size, weight, seed, key, epoch):
        return np.arange(length)[::-1]

    try:
        write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}"} for i in range(4)])
        (tmp_path / "i.yaml").write_text("d: {path: d.jsonl, index: reverse_order}\n")
        e = DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml")))
        assert [text_of(s) for s in e] == ["t3", "t2", "t1", "t0"]
        (tmp_path / "j.yaml").write_text("d: {path: d.jsonl, index: nope}\n")
        with pytest.raises(DataError, match=r"Unknown index plugin 'nope'. Registered: \["):
            DataEngine(DataArguments(dataset=str(tmp_path / "j.yaml")))
    finally:
        index._PLUGINS.pop("reverse_order")


def test_bare_name_without_dataset_dir_says_how() -> None:
    with pytest.raises(DataError, match="set data.dataset_dir"):
        DataEngine(DataArguments(dataset="alpaca_en_demo"))
