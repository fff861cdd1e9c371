"""The precomputed-score loader (dataflex/data/scores.py) shared by dynamic_reorder and the `precomputed`
selector/weighter: errors name the key, the file and the row; run() refuses bad scores before the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import alpaca_rows, write_jsonl

from dataflex.data import DataArguments, DataEngine
from dataflex.data.scores import precomputed_scores, read_score_file


def test_npy_and_text_files_are_read(tmp_path):
    np.save(tmp_path / "s.npy", np.array([3.0, 1.0, 2.0]))
    (tmp_path / "s.txt").write_text("3\n1\n2.5\n")
    assert read_score_file(str(tmp_path / "s.npy"), 3, "k").tolist() == [3.0, 1.0, 2.0]
    assert read_score_file(str(tmp_path / "s.txt"), 3, "k").tolist() == [3.0, 1.0, 2.5]


@pytest.mark.parametrize(
    "content, n, match",
    [
        ("1\n2\n", 3, r"component\.score_path=.*s\.txt holds 2 scores but the training data has 3 items"),
        ("1\nnan\n3\n", 3, r"component\.score_path=.*s\.txt: row 1 \(0-based item id\) is nan"),
        ("1\ninf\nnan\n", 3, r"row 1 .* is inf \(and 1 more rows\)"),
        ("1\nhigh\n3\n", 3, r"component\.score_path=.*not a \.npy array or a text file of numbers"),
    ],
)
def test_bad_files_name_key_file_and_row(tmp_path, content, n, match):
    (tmp_path / "s.txt").write_text(content)
    with pytest.raises(ValueError, match=match):
        read_score_file(str(tmp_path / "s.txt"), n, "component.score_path")


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"trainer\.score_path=.*nope\.npy: no such file"):
        read_score_file(str(tmp_path / "nope.npy"), 3, "trainer.score_path")


def _engine(folder: Path, values) -> DataEngine:
    write_jsonl(folder / "a.jsonl", [{**r, "q": v} for r, v in zip(alpaca_rows(len(values), "a"), values)])
    (folder / "info.yaml").write_text("ds_a:\n  path: a.jsonl\n  converter: alpaca\n  domain: alpha\n")
    return DataEngine(DataArguments(dataset=str(folder / "info.yaml")))


def test_a_nan_field_names_the_item_and_its_row(tmp_path):
    engine = _engine(tmp_path, [0.5, "nan", 2.0])
    with pytest.raises(
        ValueError, match=r"component\.score_field=q: training item 1 \(dataset 'ds_a': .*\) has q=nan"
    ):
        precomputed_scores(engine, field="q", path=None, prefix="component")


def test_negative_scores_are_refused_for_proportional_weights(tmp_path):
    engine = _engine(tmp_path, [0.5, -1.0, 2.0])
    assert precomputed_scores(engine, field="q", path=None, prefix="component").tolist() == [0.5, -1.0, 2.0]
    with pytest.raises(ValueError, match=r"training item 1 has score -1\.0 < 0.*mapping=proportional"):
        precomputed_scores(engine, field="q", path=None, prefix="component", nonnegative=True)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ("trainer=dynamic_weight", "component=precomputed", "component.score_path=short.txt"),
            r"component\.score_path=short\.txt holds 2 scores",
        ),
        (
            ("trainer=dynamic_select", "component=precomputed", "component.score_field=quality"),
            r"no field 'quality'",
        ),
        (
            ("trainer=dynamic_reorder", "trainer.score_source=file", "trainer.score_path=short.txt"),
            r"trainer\.score_path=short\.txt holds 2 scores",
        ),
    ],
)
def test_run_refuses_bad_scores_before_the_model_loads(compose, tmp_path, monkeypatch, overrides, match):
    import dataflex.run as run_module

    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.txt").write_text("1\n2\n")
    cfg = compose("data.max_samples=8", f"trainer.output_dir={tmp_path / 'out'}", *overrides)
    real = run_module.instantiate

    def no_model(node, *args, **kwargs):
        if node is cfg.model or str(node.get("_target_", "")).startswith("dataflex.models"):
            raise AssertionError("the model was loaded before the scores were checked")
        return real(node, *args, **kwargs)

    monkeypatch.setattr(run_module, "instantiate", no_model)
    with pytest.raises(Exception, match=match):
        run_module.run(cfg, tmp_path / "out")
