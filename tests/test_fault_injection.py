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
from moerl.runs.rundir import RunDir, run_state


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
    # Kill between writes: right after the first evaluation the run writes several files in a burst, and a
    # SIGKILL inside an atomic write leaves its hidden temp file (never a half-written visible one); the next
    # evaluation is thousands of steps away.
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "running" and status["pid"] == proc.pid  # it had no chance to say anything
    assert run_state(status) == "crashed"
    assert main(["eval", str(run)]) == 2
    assert "status: crashed" in capsys.readouterr().err
    assert not (run / "model.zip").exists() and not list(run.glob(".*tmp*"))
    header, *rows = (run / "eval.csv").read_text().splitlines()  # the visible files are whole
    assert header.startswith("step,task,") and rows and all(len(r.split(",")) == len(header.split(",")) for r in rows)


@pytest.mark.parametrize("sig,state,rc,reason", [
    (signal.SIGTERM, "interrupted", 143, "terminated by SIGTERM (checkpoint saved)"),
    (signal.SIGINT, "interrupted", 130, "interrupted by the user (SIGINT; checkpoint saved)"),
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
    assert (run / "checkpoint.json").is_file()  # stopped at a clean point and saved


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


# --- read-only commands stay read-only -------------------------------------------------------------
TINY = ["--set", "dqn.learning_starts=50", "--set", "eval.freq=0", "--set", "eval.final_episodes=1",
        "--set", "eval.episodes=1", "--no-progress"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        assert main(["train", "--env", "cartpole-mtrl", "--arch", "final", "--timesteps", "300", "--seed", str(seed),
                     "--logdir", str(root), "--run-name", f"s{seed}", *TINY]) == 0
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_eval_never_writes_into_the_run_and_works_read_only(two_runs, tmp_path, capsys):
    run = two_runs / "s0"
    before = _snapshot(run)
    os.chmod(run, 0o555)
    try:
        assert main(["eval", str(run), "--episodes", "1"]) == 0
        assert main(["eval", str(run), "--episodes", "1", "--out", str(tmp_path / "e.json")]) == 0
    finally:
        os.chmod(run, 0o755)
    assert _snapshot(run) == before
    assert json.loads((tmp_path / "e.json").read_text())["per_task"]
    capsys.readouterr()


def test_report_refuses_to_overwrite_run_files_and_directories(two_runs, capsys):
    before = _snapshot(two_runs / "s0")
    assert main(["report", str(two_runs / "s0"), "--out", str(two_runs / "s0" / "results.json")]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert main(["report", str(two_runs / "s0"), "--out", str(two_runs)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert _snapshot(two_runs / "s0") == before


def test_report_counts_a_run_once_and_skips_corrupt_ones(two_runs, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "status.json").write_text('{"status": "finished", "family": "moe-dqn"}')
    (bad / "results.json").write_text("{not json")
    s0, s1 = str(two_runs / "s0"), str(two_runs / "s1")
    assert main(["report", s0, s0, s0, s1, str(bad)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("counted once") == 1 and "(2 more times; counted once)" in captured.err  # one line
    assert "results.json is missing or corrupt" in captured.err
    summary = captured.out.split("\n\n")[1]
    assert "| cartpole-mtrl | final/softmoe | 2 |" in summary  # two seeds, not four


def test_a_run_nested_in_another_runs_folders_does_not_change_its_report(two_runs, capsys):
    import shutil

    s0 = str(two_runs / "s0")
    assert main(["report", s0]) == 0
    first = capsys.readouterr().out
    assert main(["train", "--env", "cartpole-mtrl", "--arch", "final", "--timesteps", "300", "--seed", "5",
                 "--logdir", str(two_runs / "s0" / "tb"), "--run-name", "nested", *TINY]) == 2
    assert "inside the run directory" in capsys.readouterr().err  # training there is refused
    nested = two_runs / "s0" / "tb" / "nested"
    shutil.copytree(two_runs / "s1", nested)  # a run copied there by hand
    try:
        assert main(["report", s0]) == 0
        assert capsys.readouterr().out == first
    finally:
        shutil.rmtree(nested)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (root only); skipped elsewhere, where the patched-writer test above covers ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()}); ENOSPC is covered by a patched writer")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_the_run_honestly(tiny_disk):
    """A real full disk mid-run: the run is not finished, says why (or reads as crashed), leaves no half file."""
    proc = subprocess.run([sys.executable, "-m", "moerl", "train", "--env", "cartpole-crl", "--timesteps", "3000",
                           "--set", "checkpoint.every=1000", "--logdir", str(tiny_disk), "--run-name", "full",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    run = tiny_disk / "full"
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    status = json.loads((run / "status.json").read_text())
    assert run_state(status) in ("failed", "crashed")
    if status["status"] == "failed":
        assert "No space left on device" in status["error"]
    assert not list(run.rglob(".*tmp*")), "a temporary file was left behind"
    if (run / "checkpoint.json").exists():  # whatever checkpoint is named is complete
        folder = run / json.loads((run / "checkpoint.json").read_text())["folder"]
        assert {p.name for p in folder.iterdir()} == {"model.zip", "replay.pkl", "state.pkl"}


def test_a_full_disk_at_a_batched_checkpoint_fails_every_run_in_one_line(tiny_disk):
    """The batched engine's checkpoint (torch's writer) on a full disk: one line, not a torch RuntimeError
    traceback, and every run of the batch marked failed (the half-written checkpoint's space is given back
    at once, so the status can be written)."""
    proc = subprocess.run([sys.executable, "-m", "moerl", "train", "--env", "cartpole-crl", "--timesteps", "1200",
                           "--seeds", "0,1", "--engine", "batched", "--set", "network.hidden=8",
                           "--set", "checkpoint.every=400", "--set", "dqn.buffer_size=20000",
                           "--set", "eval.episodes=1", "--logdir", str(tiny_disk), "--run-name", "full",
                           "--no-progress", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "No space left on device" in proc.stderr, proc.stderr
    for name in ("full_s0", "full_s1"):
        status = json.loads((tiny_disk / name / "status.json").read_text())
        assert status["status"] == "failed" and "No space left on device" in status["error"]
    assert not (tiny_disk / "full_s0" / "checkpoint.json").exists()
    assert not list(tiny_disk.rglob(".*tmp*")), "a temporary file was left behind"


def test_a_full_disk_at_the_start_leaves_no_run_directory(tiny_disk):
    """A disk already full: one line, and no ``NAME/tb/`` without a status (a directory that is no run)."""
    with open(tiny_disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    for engine in (["--engine", "sb3"], ["--seeds", "0,1", "--engine", "batched"]):
        proc = subprocess.run([sys.executable, "-m", "moerl", "train", "--env", "cartpole-crl", "--timesteps", "600",
                               *engine, "--logdir", str(tiny_disk / "runs"), "--run-name", "full", "--no-progress"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "No space left on device" in proc.stderr, proc.stderr
        assert not any((tiny_disk / "runs").iterdir()), engine


def test_read_only_storage_is_refused_before_anything_runs(read_only_disk, capsys):
    ro = read_only_disk
    assert main(["train", "--env", "CartPole-v1", "--timesteps", "100", "--logdir", str(ro / "runs")]) == 2
    assert "cannot create log directory" in capsys.readouterr().err
    assert main(["train", "--env", "CartPole-v1", "--timesteps", "100", "--logdir", str(ro)]) == 2
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("damage,message", [
    ("truncated", "is damaged and cannot be loaded"),
    ("random", "is damaged and cannot be loaded"),
    ("missing", "has no model.zip"),
    ("status", "status: corrupt"),
    ("config", "has a missing or broken config.yaml"),
])
def test_eval_on_a_damaged_run_is_one_line(two_runs, tmp_path, damage, message, capsys):
    import shutil

    run = tmp_path / damage
    shutil.copytree(two_runs / "s1", run)
    model = run / "model.zip"
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[:500])
    elif damage == "random":
        model.write_bytes(os.urandom(5000))
    elif damage == "missing":
        model.unlink()
    elif damage == "status":
        (run / "status.json").write_text('{"status": "fin')
    else:
        (run / "config.yaml").write_text("env: [\n")
    assert main(["eval", str(run), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("where", ["while the heartbeat thread starts", "while training"])
def test_a_stop_at_any_moment_after_running_is_written_marks_the_run_interrupted(tmp_path, monkeypatch, where):
    """A SIGTERM reaches a run's process as ``Terminated`` raised wherever the main thread is (rundir's
    handler); from the moment "running" is written, no such moment may leave a dead process's run reading
    "running". The exception is raised here where the handler would raise it: once as the heartbeat thread
    starts (a moment a sweep stopping its children as they start hit on a loaded machine), once in the body."""
    import threading

    from moerl.runs import rundir

    class StoppedAtStart(threading.Thread):
        def start(self) -> None:
            raise rundir.Terminated("terminated by SIGTERM")

    if where == "while the heartbeat thread starts":
        monkeypatch.setattr(rundir.threading, "Thread", StoppedAtStart)
    run = RunDir.create(tmp_path, "stopped")
    with pytest.raises(rundir.Terminated), rundir.running(run, "moe-dqn", seed=0):
        assert run.read_status()["status"] == "running"
        raise rundir.Terminated("terminated by SIGTERM")
    status = run.read_status()
    assert status["status"] == "interrupted" and "SIGTERM" in status["error"], status
    assert run_state(status) == "interrupted"
