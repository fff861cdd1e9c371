"""logger=wandb, offline for real (no mock): what lands in the offline run dir."""

from __future__ import annotations

import json
import logging

import pytest
from omegaconf import OmegaConf
from tracking_helpers import DOMAINS, dynamic_records
from wandb_records import config_of, history_rows, metric_records, run_record, wait_until_written

from dataflex.tracking.wandb import build_wandb_trackers, choose_mode, has_credentials


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def _offline_run_file(root):
    files = list(root.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return wait_until_written(files[0])


def test_credentials_decide_the_mode(no_credentials, monkeypatch, tmp_path):
    assert not has_credentials() and choose_mode(None) == ("offline", True)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_credentials() and choose_mode(None) == ("online", False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode(None) == ("disabled", False)
    assert choose_mode("offline") == ("offline", False)


def test_offline_run_holds_config_series_histograms_and_charts(no_credentials, tmp_path, caplog):
    cfg = OmegaConf.create(
        {"trainer": {"learning_rate": 0.003, "max_steps": "${oc.decode:'8'}"}, "run_name": "x"}
    )
    records = dynamic_records()
    with caplog.at_level(logging.INFO, logger="dataflex"):
        group = build_wandb_trackers(run_dir=tmp_path, plots=True, run_config=cfg, project="p", tags=["mine"])
        for r in records:
            group.log({k: v for k, v in r.items() if k != "step"}, step=r["step"])
        group.finish()
    assert sum("no credentials" in m for m in caplog.messages) == 1

    run_file = _offline_run_file(tmp_path)
    run = run_record(run_file)
    assert config_of(run)["trainer"] == {"learning_rate": 0.003, "max_steps": 8}  # resolved
    assert "mine" in list(run.tags)
    assert run.run_id == (tmp_path / "wandb_run_id").read_text().strip()

    rows = history_rows(run_file)
    logged = [r for r in rows if "mixture/greet" in r]
    assert [r["global_step"] for r in logged] == [r["step"] for r in records if "mixture/greet" in r]
    assert [r["mixture/greet"] for r in logged] == pytest.approx(
        [r["mixture/greet"] for r in records if "mixture/greet" in r]
    )
    hists = [r for r in rows if "weight/values/_type" in r]  # nested values are flattened to key paths
    assert len(hists) == sum("weight/values" in r for r in records)
    assert hists[0]["weight/values/_type"] == "histogram" and sum(hists[0]["weight/values/values"]) == 10
    assert any("select/domain_fraction/noise" in r for r in rows)
    assert [r["eval/loss/arith"] for r in rows if "eval/loss/arith" in r] == pytest.approx(
        [r["eval/loss/arith"] for r in records if "eval/loss/arith" in r]
    )
    step_metrics = {(m.name or m.glob_name): m.step_metric for m in metric_records(run_file)}
    assert step_metrics["*"] == "global_step"

    charts = run_file.parent / "files" / "media" / "table" / "charts"
    tables = {p.name.split("_table")[0]: json.loads(p.read_text()) for p in charts.glob("*.table.json")}
    assert set(tables) == {"mixture_proportions", "selection_domain_fractions", "eval_loss_per_domain"}
    mixture = tables["mixture_proportions"]
    assert mixture["columns"] == ["step", "lineKey", "lineVal"]
    greet = [(s, v) for s, k, v in mixture["data"] if k == "greet"]
    assert greet == [(r["step"], pytest.approx(r["mixture/greet"])) for r in records if "mixture/greet" in r]
    assert {k for _, k, _ in mixture["data"]} == set(DOMAINS)
    assert (tmp_path / "metrics.jsonl").is_file() and (
        tmp_path / "plots" / "mixture_proportions.png"
    ).is_file()


def test_same_run_dir_continues_the_same_run(no_credentials, tmp_path):
    ids = []
    for _ in range(2):
        group = build_wandb_trackers(run_dir=tmp_path, plots=False)
        group.log({"loss": 1.0}, step=1)
        group.finish()
        ids.append((tmp_path / "wandb_run_id").read_text().strip())
    assert ids[0] == ids[1]
    # offline-run-<time>-<id>: one dir per start (or one if both started within the same second), same id
    runs = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert runs and {run_record(wait_until_written(r)).run_id for r in runs} == {ids[0]}


def test_wandb_dir_and_disabled_mode(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    build_wandb_trackers(run_dir=tmp_path / "run", plots=False).finish()
    assert _offline_run_file(tmp_path / "elsewhere")
    group = build_wandb_trackers(run_dir=tmp_path / "run2", plots=False, mode="disabled")
    assert [type(t).__name__ for t in group.trackers] == ["JsonlTracker"]
    with pytest.raises(ValueError, match="logger.mode='onlin'"):
        build_wandb_trackers(run_dir=tmp_path / "run3", mode="onlin")


def test_only_rank_zero_builds_trackers(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    group = build_wandb_trackers(run_dir=tmp_path, plots=True)
    group.log({"loss": 1.0}, step=1)
    group.finish()
    assert group.trackers == [] and not list(tmp_path.iterdir())
