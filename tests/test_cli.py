"""End-to-end through the installed `dataflex-run`: single run, multirun, introspection, early errors."""

from __future__ import annotations

import json

import pytest

from helpers import FAST

pytestmark = pytest.mark.slow


def _only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def test_single_run_writes_everything(cli, tmp_path):
    """Config, metrics, per-domain evaluation, summary, and a final model that plain transformers loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proc = cli(*FAST)
    run_dir = _only((tmp_path / "outputs").glob("*/*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps[0] == 0 and steps[-1] == 4
    assert any("loss" in r and "lr" in r and "samples_per_s" in r for r in records)
    final = records[-1]
    for domain in ("greet", "arith", "reverse", "noise", "target"):
        assert f"eval/loss/{domain}" in final and f"eval/ppl/{domain}" in final
    assert (run_dir / "final_model" / "config.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["train_tokens_per_s"] > 0
    assert "DataFlex run finished: 4 steps" in proc.stdout
    assert "noise" in proc.stdout  # the per-domain table
    model_dir = run_dir / "final_model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.model_type == "llama" and len(tok) == model.config.vocab_size


def test_lora_run_saves_a_loadable_adapter(cli, tmp_path):
    from peft import AutoPeftModelForCausalLM

    cli(*FAST, "trainer.max_steps=1", "model.finetuning_type=lora", "model.lora_rank=4")
    model_dir = _only((tmp_path / "outputs").glob("*/*/final_model"))
    assert (model_dir / "adapter_config.json").is_file()
    model = AutoPeftModelForCausalLM.from_pretrained(model_dir)
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_multirun_writes_one_dir_per_job(cli, tmp_path):
    cli("-m", "trainer.learning_rate=1e-3,3e-3", "trainer.max_steps=5", *FAST[1:])
    jobs = sorted(p for p in (tmp_path / "multirun_outputs").glob("*/*/*") if p.is_dir())
    assert len(jobs) == 2, jobs
    assert [j.name for j in jobs] == ["0_trainer.learning_rate=0.001", "1_trainer.learning_rate=0.003"]
    for job in jobs:
        assert (job / ".hydra" / "overrides.yaml").is_file()
        records = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == 5


def test_cfg_job_and_defaults_tree(cli):
    out = cli("--cfg", "job").stdout
    assert "_target_: dataflex.train.trainer.static.StaticTrainer" in out
    tree = cli("--info", "defaults-tree").stdout + cli("--info", "defaults-tree").stderr
    assert "trainer: static" in tree and "model: tiny" in tree


def test_shell_completion(cli):
    script = cli("-sc", "install=bash").stdout
    assert "complete" in script and "dataflex-run" in script
    # The query bash makes on <TAB> after `dataflex-run trainer=dyn`:
    out = cli("-sc", "query=bash", env={"COMP_LINE": "dataflex-run model=", "COMP_POINT": "19"}).stdout
    assert "model=tiny" in out and "model=hf" in out


def test_bad_override_fails_before_training(cli, tmp_path):
    proc = cli("trainer.warmup_stpe=3", check=False)
    assert proc.returncode != 0 and "warmup_stpe" in proc.stderr
    proc = cli("data.cutoff_len=0", check=False)
    assert proc.returncode != 0 and "data.cutoff_len" in proc.stderr
    assert not list((tmp_path / "outputs").glob("*/*/metrics.jsonl"))


def test_never_overwrites_a_previous_run(cli, tmp_path):
    out_dir = tmp_path / "myrun"
    cli(*FAST, "trainer.max_steps=1", f"trainer.output_dir={out_dir}")
    before = (out_dir / "metrics.jsonl").read_text()
    proc = cli(*FAST, "trainer.max_steps=1", f"trainer.output_dir={out_dir}", check=False)
    assert proc.returncode != 0 and "overwrite_output_dir" in proc.stderr
    assert (out_dir / "metrics.jsonl").read_text() == before


def test_default_model_learns_every_learnable_domain(cli, tmp_path):
    cli(
        "trainer.max_steps=80",
        "trainer.eval_steps=0",
        "trainer.max_eval_samples_per_domain=40",
        "trainer.disable_tqdm=true",
        "trainer.save_final_model=false",
    )
    summary = json.loads(_only((tmp_path / "outputs").glob("*/*/summary.json")).read_text())
    start, end = summary["initial_eval"], summary["final_eval"]
    for domain in ("greet", "arith", "reverse", "target"):
        assert end[f"eval/loss/{domain}"] < 0.6 * start[f"eval/loss/{domain}"], domain
    # The noise domain has an irreducible loss: it stays far above the easy domain.
    assert end["eval/loss/noise"] > 2 * end["eval/loss/greet"]


def test_hf_model_from_a_local_folder(cli, tmp_path):
    from dataflex.models.tiny import build_tiny_model

    from helpers import SMALL_MODEL

    model_dir = tmp_path / "my_model"
    bundle = build_tiny_model(**SMALL_MODEL)
    bundle.model.save_pretrained(model_dir)
    bundle.tokenizer.save_pretrained(model_dir)
    cli(
        *[o for o in FAST if not o.startswith("model.")],
        "trainer.max_steps=1",
        "model=hf",
        f"model.name_or_path={model_dir}",
    )
    assert _only((tmp_path / "outputs").glob("*/*/final_model/config.json"))
    proc = cli("model=hf", f"model.name_or_path={tmp_path / 'nope'}", check=False)
    assert proc.returncode != 0 and "nope" in proc.stderr and "no such model folder" in proc.stderr


def test_component_of_another_trainer_lists_the_valid_ones(cli):
    proc = cli("trainer=dynamic_mix", "component=loss", check=False)
    assert proc.returncode != 0
    assert "not a component of trainer=dynamic_mix" in proc.stderr and "odm" in proc.stderr
