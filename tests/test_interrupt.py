"""Interrupted runs say so: SIGTERM/SIGINT → status.json `interrupted` with the step, a checkpoint (SIGTERM
with save_steps), one line with the exact resume command, no traceback; the resumed run ends as an
uninterrupted one would. Also with two processes, signalling the launching `dataflex-run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dataflex.tracking.status import guarded_run
from dataflex.train.interrupt import TrainingInterrupted

from conftest import dataflex_run_cmd
from helpers import FAST, run_in_process

LONG = [o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.eval_steps"))] + [
    "trainer.eval_steps=0",
    "trainer.save_steps=1000",
    "logger.plots=false",
]


def test_an_interruption_is_recorded_with_its_step_and_the_resume_command(tmp_path):
    def stopped():
        raise TrainingInterrupted(7, "SIGTERM", str(tmp_path / "checkpoint-7"))

    with pytest.raises(TrainingInterrupted) as err:
        guarded_run(stopped, tmp_path, multirun=True)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == 7 and status["signal"] == "SIGTERM"
    assert status["resume"] == f"dataflex-run --resume {tmp_path.resolve()}" == err.value.resume_command
    assert err.value.exit_code == 143


@pytest.mark.parametrize("others", [0, 1])
def test_the_stop_decision_is_the_vote_even_when_the_signal_lands_right_after_it(monkeypatch, others):
    """Two ranks vote by all-reduce whether to stop. A signal handled on this rank just after the vote (Python
    runs handlers between bytecodes) must not change this step's answer: the other rank counted this rank's
    vote as 0 and goes on. (Caught live: rank 0 stopped and waited in its checkpoint barrier while rank 1
    waited in the next step's all-reduce, forever.) It is counted at the next step."""
    import dataflex.train.distributed as distributed
    from dataflex.train.interrupt import StopRequest

    stop = StopRequest()

    def reduce_then_signal(tensor):
        total = tensor + others  # the other rank's vote
        stop.signal_name = "SIGTERM"  # the handler runs here, after the all-reduce
        return total

    monkeypatch.setattr(distributed, "all_reduce_sum", reduce_then_signal)
    assert stop.agreed(2, torch.device("cpu")) is bool(others)  # what every rank reads from the votes
    assert stop.agreed(2, torch.device("cpu")) is True  # the next step counts it


def _start(args, cwd, **env):
    return subprocess.Popen(
        dataflex_run_cmd() + list(args),
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **env},
    )


def _wait_for_step(run_dir: Path, step: int, proc, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and any(
            json.loads(x)["step"] >= step for x in metrics.read_text().splitlines() if x
        ):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise TimeoutError(f"{run_dir} did not reach step {step}")


def _interrupt(args, run_dir, sig, at_step=4, **env):
    proc = _start([*args, f"trainer.output_dir={run_dir}"], run_dir.parent, **env)
    try:
        _wait_for_step(run_dir, at_step, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=240)
    except BaseException:  # a hung run: kill the launcher and its ranks, or they outlive the test
        import psutil

        try:
            launcher = psutil.Process(proc.pid)
            for p in [*launcher.children(recursive=True), launcher]:
                p.kill()
        except psutil.NoSuchProcess:
            pass
        raise
    return proc.returncode, out, err


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_the_resume_command_continues_exactly(cli, compose, tmp_path):
    run_dir = tmp_path / "run"
    args = [*LONG, "trainer.max_steps=60"]
    code, out, err = _interrupt(args, run_dir, signal.SIGTERM)
    assert code == 143 and "Traceback" not in err, err
    status = json.loads((run_dir / "status.json").read_text())
    step = status["step"]
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM" and 4 <= step < 60
    assert (
        Path(status["checkpoint"]) == run_dir / f"checkpoint-{step}"
        and (run_dir / f"checkpoint-{step}").is_dir()
    )
    line = [x for x in err.splitlines() if x.startswith("dataflex-run: interrupted")]
    assert line == [
        f"dataflex-run: interrupted (SIGTERM) after step {step}; checkpoint {status['checkpoint']}. "
        f"Resume with: dataflex-run --resume {run_dir}"
    ]
    cli(*line[0].split("Resume with: dataflex-run ")[1].split())  # the printed command, as printed
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 60
    ref = tmp_path / "ref"
    run_in_process(compose, ref, *args)
    a, b = (
        load_file(ref / "final_model" / "model.safetensors"),
        load_file(run_dir / "final_model" / "model.safetensors"),
    )
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ctrl_c_is_recorded_without_a_traceback(tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _interrupt(
        [*LONG, "trainer.max_steps=100000", "trainer.save_steps=0"], run_dir, signal.SIGINT
    )
    assert code == 130 and "Traceback" not in err, err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGINT" and status["step"] >= 4
    assert not list(run_dir.glob("checkpoint-*"))
    assert "no checkpoint (trainer.save_steps=0)" in err and f"--resume {run_dir}" in err


@pytest.mark.slow
def test_two_processes_stop_together_when_the_launcher_gets_sigterm(cli, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *LONG,
        "trainer.max_steps=40",
        "launcher.nproc_per_node=2",
        "trainer.per_device_train_batch_size=2",
    ]
    code, out, err = _interrupt(args, run_dir, signal.SIGTERM)
    assert code == 143 and "Traceback" not in err, err[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    step = status["step"]
    assert status["status"] == "interrupted" and 4 <= step < 40
    checkpoint = run_dir / f"checkpoint-{step}"
    assert (checkpoint / "rng_state_0.pt").is_file() and (checkpoint / "rng_state_1.pt").is_file()
    cli("--resume", str(run_dir), timeout=400)
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == str(checkpoint)


_THREAD_MASKS = """
import os, signal, socket, threading
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
import torch.distributed as dist
from dataflex.train.interrupt import signals_to_main_thread

def sigterm_blocked(tid):
    line = next(x for x in open(f"/proc/self/task/{tid}/status") if x.startswith("SigBlk"))
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))

before = set(os.listdir("/proc/self/task"))
with signals_to_main_thread():
    dist.init_process_group("gloo")
started = set(os.listdir("/proc/self/task")) - before
print(len(started), all(sigterm_blocked(t) for t in started), sigterm_blocked(threading.get_native_id()))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread signal masks from /proc")
def test_process_group_threads_leave_sigterm_to_the_main_thread():
    """gloo's communication threads are started with SIGTERM blocked (so a stop signal never interrupts a
    collective's system call); the main thread, where the handler runs, still takes it."""
    out = subprocess.run(
        [sys.executable, "-c", _THREAD_MASKS], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert int(out[0]) >= 1 and out[1:] == ["True", "False"], out
