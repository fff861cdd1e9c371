"""Through the installed CLI: the spec's CustomSelector (by registered name, and from a user module outside
the package via component._target_), and two processes (torchrun) making the same selection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FAST

pytestmark = pytest.mark.slow

# selection_order=selector: the selection files keep the selector's own order, which these tests compare
# (the default shuffles each selection for training; tests/select/test_trainer.py covers that).
SCHEDULE = (
    "trainer=dynamic_select",
    "trainer.warmup_step=1",
    "trainer.update_step=2",
    "trainer.update_times=2",
    "trainer.max_steps=-1",
    "trainer.selection_order=selector",
)

# The spec's example, unchanged except that a module outside the package imports the base module by its
# absolute name (the spec's `from .base_selector import ...` is the in-package form).
SPEC_CUSTOM = '''
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import logger, Selector

@register_selector('custom')
class CustomSelector(Selector):
    """
    A custom data selector implementation example.
    """
    def __init__(
        self,
        dataset,
        accelerator,
        data_collator,
        cache_dir,
    ):
        """
        Constructor for initializing the selector.
        """
        super().__init__(dataset, accelerator, data_collator, cache_dir)
        logger.info(f"CustomSelector initialized.")

    def select(self, model, step_id: int, num_samples: int, **kwargs):
        # Example logic: simply return indices from 0 to num_samples-1
        return list(range(num_samples))
'''


def _only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def _selected(run_dir: Path, update: int) -> list[int]:
    return json.loads((run_dir / "selection" / f"update_{update:03d}.json").read_text())["selected"]


def test_spec_custom_selector_by_registered_name(cli, tmp_path):
    proc = cli(*FAST, *SCHEDULE, "component=custom")
    run_dir = _only((tmp_path / "outputs").glob("*/*"))
    assert _selected(run_dir, 1) == _selected(run_dir, 2) == list(range(8))
    assert "CustomSelector initialized." in proc.stdout + proc.stderr
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("select/domain_fraction/greet") == 1.0 for r in records)  # ids 0..7 are greetings


def test_spec_custom_selector_from_a_user_module(cli, tmp_path):
    user = tmp_path / "user_pkg"
    user.mkdir()
    (user / "my_selector.py").write_text(SPEC_CUSTOM)
    env = {"PYTHONPATH": f"{user}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cli(*FAST, *SCHEDULE, "component=custom", "component._target_=my_selector.CustomSelector", env=env)
    run_dir = _only((tmp_path / "outputs").glob("*/*"))
    assert _selected(run_dir, 2) == list(range(8))
    cfg = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "my_selector.CustomSelector" in cfg


RECORDING = '''
import json
from pathlib import Path
from dataflex.train.selector.less_selector import LessSelector

class RecordingLess(LessSelector):
    """LESS that writes what THIS rank computed, before the trainer's broadcast."""
    def select(self, model, step_id, num_samples, **kwargs):
        out = LessSelector.select(self, model, step_id, num_samples, **kwargs)
        path = Path(self.cache_dir) / f"raw_rank{self.ctx.rank}_step{step_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"selected": out, "scores": [float(x) for x in self.last_scores],
                                    "world": self.ctx.world_size}))
        return out
'''


def test_two_processes_compute_the_same_selection(tmp_path):
    """Each rank scores half of the candidates and gathers the rest: both ranks must reach the same ids."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    user = tmp_path / "user_pkg"
    user.mkdir()
    (user / "recording.py").write_text(RECORDING)
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": f"{user}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HYDRA_FULL_ERROR": "1",
    }
    args = [
        *FAST,
        *SCHEDULE,
        "trainer.per_device_train_batch_size=2",
        "component=less",
        "component._target_=recording.RecordingLess",
        "component.target_domain=target",
        "component.target_max_samples=4",
        "component.proj_dim=256",
        "trainer.candidate_pool_size=40",
        f"hydra.run.dir={run_dir}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29561",
        "-m",
        "dataflex.cli",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for step in (1, 3):
        raw = [
            json.loads((run_dir / "selector" / f"raw_rank{r}_step{step}.json").read_text()) for r in (0, 1)
        ]
        assert raw[0]["world"] == raw[1]["world"] == 2
        assert raw[0]["selected"] == raw[1]["selected"]
        assert raw[0]["scores"] == pytest.approx(raw[1]["scores"])
        saved = _selected(run_dir, 1 if step == 1 else 2)
        assert saved == raw[0]["selected"] and len(saved) == 2 * 2 * 2
