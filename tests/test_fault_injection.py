"""Faults injected into real runs: SIGKILL, SIGTERM, SIGINT, a failing disk. Nothing lost, nothing faked."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moerl.cli import main
from moerl.experiments.rundir import RunDir, run_state


def _start_training(tmp_path: Path, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "moerl", "train", "--env", "cartpole-crl", "--arch", "big", "--timesteps", "200000",
           "--logdir", str(tmp_path), "--run-name", name, "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_training(run: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the run has written its status and some TensorBoard output (it is inside ``learn``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (run / "status.json").is_file() and (run / "eval.csv").is_file():
            return
        time.sleep(0.2)
    raise AssertionError("training did not start in time")


def test_sigkill_leaves_a_run_that_reads_as_crashed(tmp_path, capsys):
    proc = _start_training(tmp_path, "k")
    run = tmp_path / "k"
    _wait_until_training(run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "running" and status["pid"] == proc.pid  # it had no chance to say anything
    assert run_state(status) == "crashed"
    assert main(["eval", str(run)]) == 2
    assert "status: crashed" in capsys.readouterr().err
    assert not (run / "model.zip").exists() and not list(run.glob(".*tmp*"))


@pytest.mark.parametrize("sig,state,rc,reason", [
    (signal.SIGTERM, "interrupted", 143, "terminated by SIGTERM"),
    (signal.SIGINT, "interrupted", 130, "interrupted by the user (SIGINT)"),
])
def test_sigterm_and_sigint_mark_the_run_interrupted(tmp_path, sig, state, rc, reason):
    proc = _start_training(tmp_path, "t")
    run = tmp_path / "t"
    _wait_until_training(run, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == rc, err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == state and status["error"] == reason
    assert "Traceback" not in err


def test_a_live_run_is_running_and_a_dead_heartbeat_is_crashed():
    import socket

    live = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time()}
    assert run_state(live) == "running"
    remote = {"status": "running", "pid": 1, "host": "elsewhere", "heartbeat": time.time() - 3600}
    assert run_state(remote) == "crashed"
    assert run_state({"status": "finished"}) == "finished"


def test_a_failing_write_keeps_the_previous_complete_file(tmp_path):
    run = RunDir(tmp_path)
    run.write_json("results.json", {"a": 1})

    def full_disk(tmp: Path) -> None:
        tmp.write_text('{"a": 2, "trunc')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        run.save_atomic("results.json", full_disk)
    assert run.read_json("results.json") == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
