"""``moerl train --resume`` on runs that cannot, or need not, train on: a damaged checkpoint or batch record, a
path that is not a run, a flag the resume cannot honour, a checkpoint already at the total, a second
process. Each is one line and exit 2 with the run left exactly as it was, or (nothing left to train) a
finished run; one process at a time trains a run (a kernel lock held for the whole training).

One interrupted run per family (MoE DQN on both engines, routing, masked experts) is trained once for the
module; every case damages its own copy."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moerl.cli import main
from moerl.masked import experiment as masked
from moerl.rl import batched_runs
from moerl.rl.sb3 import checkpoint as sb3_checkpoint
from moerl.routing import experiment as routing

DQN = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "1200",
       "--set", "network.hidden=8", "--set", "checkpoint.every=400", "--set", "eval.freq=400",
       "--set", "eval.episodes=1", "--set", "eval.final_episodes=1", "--set", "dqn.buffer_size=1000"]
ROUTING = ["--env", "digits-mtl", "--algo", "wpl", "--epochs", "4", "--seed", "5", "--set", "samples_per_epoch=600",
           "--set", "hidden=8", "--set", "channels=4", "--set", "checkpoint_every=1"]
MASKED = ["--env", "digits-split", "--arch", "masked-moe", "--experts", "1", "--epochs", "2", "--seed", "5",
          "--set", "schedule=sequential", "--set", "batch_size=32", "--set", "max_train=100",
          "--set", "feature_dim=16", "--set", "expert_dims=[16,8]", "--set", "checkpoint_every=1"]
QUIET = ["--no-progress", "-q"]
#: Where each run's checkpoint is (every run dies writing its second one).
CKPT = {"cut": "checkpoints/step-400", "bt_s0": "checkpoints/step-400", "rt": "checkpoints/epoch-1",
        "mk": "checkpoints/epoch-1"}


def _crash_at_second_checkpoint(mp: pytest.MonkeyPatch) -> None:
    """Each family's checkpoint writer raises at its second checkpoint: the run is left failed, with the
    first checkpoint (MoE DQN at step 400 of 1,200 on both engines; routing and vision at epoch 1)."""
    real_sb3, real_batch = sb3_checkpoint.save_checkpoint, batched_runs._Batch.checkpoint
    real_routing, real_masked = routing._RoutingRun._checkpoint, masked._save_checkpoint

    def sb3(run_path, model, extra):
        if model.num_timesteps == 800:
            raise RuntimeError("simulated crash")
        return real_sb3(run_path, model, extra)

    def batch(self, started):
        if self.agent.num_timesteps == 800:
            raise RuntimeError("simulated crash")
        return real_batch(self, started)

    def route(self):
        if self.learner.epoch == 2:
            raise RuntimeError("simulated crash")
        return real_routing(self)

    def mask(run, learner):
        if learner.epochs_done == 2:
            raise RuntimeError("simulated crash")
        return real_masked(run, learner)

    mp.setattr(sb3_checkpoint, "save_checkpoint", sb3)
    mp.setattr(batched_runs._Batch, "checkpoint", batch)
    mp.setattr(routing._RoutingRun, "_checkpoint", route)
    mp.setattr(masked, "_save_checkpoint", mask)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """``cut`` (MoE DQN, SB3 path), ``bt_s0`` + ``bt_s1`` (a batch, leader bt_s0), ``rt`` (routing), ``mk``
    (masked experts): each failed after its first checkpoint."""
    root = tmp_path_factory.mktemp("interrupted")
    with pytest.MonkeyPatch.context() as mp:
        _crash_at_second_checkpoint(mp)
        for args in ([*DQN, "--run-name", "cut"], [*DQN, "--seeds", "0,1", "--engine", "batched", "--run-name", "bt"],
                     [*ROUTING, "--run-name", "rt"], [*MASKED, "--run-name", "mk"]):
            with pytest.raises(RuntimeError, match="simulated crash"):
                main(["train", *args, *QUIET, "--logdir", str(root)])
    for name, folder in CKPT.items():
        assert (root / name / folder).is_dir(), name
    return root


def _copy(interrupted: Path, tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(interrupted, root)
    return root


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


# (case id, run to resume, damage (root -> None), extra flags, what the one line says)
REFUSED = [
    # defect 10: a damaged checkpoint pointer
    ("pointer-garbage", "cut", lambda r: (r / "cut/checkpoint.json").write_text("garbage\n"),
     [], "cut/checkpoint.json' is damaged (Expecting value"),
    ("pointer-empty", "cut", lambda r: (r / "cut/checkpoint.json").write_text("{}"),
     [], "cut/checkpoint.json' is damaged (its step None is not a whole number)"),
    ("pointer-list", "rt", lambda r: (r / "rt/checkpoint.json").write_text("[1]"),
     [], "rt/checkpoint.json' is damaged (not a JSON object)"),
    ("pointer-step-x", "bt_s1", lambda r: _edit_json(r / "bt_s0/checkpoint.json", lambda d: d.update(step="x")),
     [], "bt_s0/checkpoint.json' is damaged (its step 'x' is not a whole number)"),
    ("pointer-outside", "mk", lambda r: _edit_json(r / "mk/checkpoint.json", lambda d: d.update(folder="../x")),
     [], "mk/checkpoint.json' is damaged (its folder '../x' is not one of checkpoints/)"),
    # defect 10: truncated or missing checkpoint files, every family
    *[(f"truncated-{name}", "cut", lambda r, name=name: _truncate(r / "cut" / CKPT["cut"] / name),
       [], f"cut/{CKPT['cut']}/{name}' is damaged and cannot be loaded") for name in ("state.pkl", "model.zip", "replay.pkl")],
    *[(f"missing-{name}", "cut", lambda r, name=name: (r / "cut" / CKPT["cut"] / name).unlink(),
       [], f"run '{{root}}/cut' has no {CKPT['cut']}/{name} (its checkpoint is incomplete)")
      for name in ("state.pkl", "model.zip", "replay.pkl")],
    ("missing-folder", "cut", lambda r: shutil.rmtree(r / "cut/checkpoints"),
     [], f"run '{{root}}/cut' has no {CKPT['cut']}/state.pkl"),
    ("truncated-batch.pt", "bt_s1", lambda r: _truncate(r / "bt_s0" / CKPT["bt_s0"] / "batch.pt"),
     [], f"bt_s0/{CKPT['bt_s0']}/batch.pt' is damaged and cannot be loaded"),
    ("missing-batch.pt", "bt_s0", lambda r: (r / "bt_s0" / CKPT["bt_s0"] / "batch.pt").unlink(),
     [], f"run '{{root}}/bt_s0' has no {CKPT['bt_s0']}/batch.pt"),
    ("truncated-routing", "rt", lambda r: _truncate(r / "rt" / CKPT["rt"] / "state.pt"),
     [], f"rt/{CKPT['rt']}/state.pt' is damaged and cannot be loaded"),
    ("truncated-masked", "mk", lambda r: _truncate(r / "mk" / CKPT["mk"] / "state.pt"),
     [], f"mk/{CKPT['mk']}/state.pt' is damaged and cannot be loaded"),
    # defect 10: a damaged batch record, a deleted member or leader
    ("batch-no-members", "bt_s1", lambda r: _edit_json(r / "bt_s1/status.json", lambda d: d["batch"].pop("members")),
     [], "bt_s1/status.json' has a damaged batch record"),
    ("batch-escaping-member", "bt_s1",
     lambda r: _edit_json(r / "bt_s1/status.json", lambda d: d["batch"].update(members=["bt_s0", "../bt_s1"])),
     [], "has a damaged batch record (member '../bt_s1' is not a folder beside it)"),
    ("batch-member-deleted", "bt_s0", lambda r: shutil.rmtree(r / "bt_s1"),
     [], "bt_s1', a member of the batch led by"),
    ("batch-leader-deleted", "bt_s1", lambda r: shutil.rmtree(r / "bt_s0"),
     [], "bt_s0', the leader (it holds the checkpoint), is missing"),
    # defect 27: not a run
    ("missing-path", "nothing-here", lambda r: None, [], "run directory '{root}/nothing-here' does not exist"),
    ("a-file", "cut/config.yaml", lambda r: None, [], "cut/config.yaml' is a file, not a run directory"),
    ("empty-folder", "empty", lambda r: (r / "empty").mkdir(), [], "empty' is an empty folder, not a run directory"),
    ("no-status", "cut", lambda r: (r / "cut/status.json").unlink(), [], "cut' is a folder without status.json"),
    ("status-list", "cut", lambda r: (r / "cut/status.json").write_text("[1]"),
     [], "cut/status.json' is damaged (not a JSON object naming the run's family)"),
    ("status-family", "cut", lambda r: _edit_json(r / "cut/status.json", lambda d: d.update(family="other")),
     [], "cut/status.json' names an unknown family 'other'; valid choices: masked-experts, moe-dqn, routing"),
    # defect 22: flags a resume cannot honour, every family
    *[(f"env-{run}", run, lambda r: None, ["--env", env], f"option --env {env} cannot change a resumed run; it trains")
      for run, env in (("cut", "CartPole-v1"), ("bt_s1", "cartpole-mtrl"), ("rt", "digits-split"), ("mk", "mnist-split"))],
    *[(f"{flag[2:]}-{run}", run, lambda r: None, [flag, value], "cannot change a resumed run")
      for run in ("cut", "bt_s0", "rt", "mk")
      for flag, value in (("--config", "dqn/big-softmoe"), ("--run-name", "other"), ("--arch", "dense"))],
    ("seeds-cut", "cut", lambda r: None, ["--seeds", "0-2"], "option --seeds cannot change a resumed run"),
    ("epochs-masked", "mk", lambda r: None, ["--epochs", "2"], "option --epochs cannot change a resumed run"),
    # defect 9: a total below the checkpoint
    ("below-cut", "cut", lambda r: None, ["--timesteps", "399"], "--timesteps 399 is below the checkpoint's step 400"),
    ("below-batch", "bt_s1", lambda r: None, ["--timesteps", "300"], "--timesteps 300 is below the checkpoint's step 400"),
    ("below-routing", "rt", lambda r: None, ["--epochs", "0"], "--epochs 0 is below the checkpoint's epoch 1"),
]


@pytest.mark.parametrize("run,damage,extra,message", [case[1:] for case in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_resume_that_cannot_go_on_is_one_line_and_leaves_the_run_as_it_was(interrupted, tmp_path, capsys, run,
                                                                             damage, extra, message):
    root = _copy(interrupted, tmp_path)
    damage(root)
    before = _snapshot(root)
    capsys.readouterr()
    assert main(["train", "--resume", str(root / run), *extra, *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moerl: error: ") and err.count("\n") == 1, err
    assert message.format(root=root) in err, err
    assert _snapshot(root) == before  # no status flipped, nothing rewritten, not even the lock file


@pytest.mark.parametrize("run,extra,members", [
    ("cut", ["--timesteps", "400"], ["cut"]),
    ("bt_s1", ["--timesteps", "400"], ["bt_s0", "bt_s1"]),
    ("rt", ["--epochs", "1"], ["rt"]),
    ("cut", ["--env", "cartpole-crl", "--timesteps", "400"], ["cut"]),  # its own env: nothing to ignore
])
def test_a_resume_with_nothing_left_to_train_finishes_the_run(interrupted, tmp_path, capsys, run, extra, members):
    """Defect 9: a new total equal to the checkpoint's position writes the last evaluation and the results,
    as a run trained to that total does; one "run directory" line per run (defect 33)."""
    root = _copy(interrupted, tmp_path)
    capsys.readouterr()
    assert main(["train", "--resume", str(root / run), *extra, *QUIET]) == 0
    assert capsys.readouterr().out.splitlines() == [f"run directory: {root / m}" for m in members]
    for name in members:
        path = root / name
        assert json.loads((path / "status.json").read_text())["status"] == "finished"
        results = json.loads((path / "results.json").read_text())
        assert results.get("timesteps", results.get("epochs")) in (400, 1)
        assert not (path / "checkpoint.json").exists()
        if name != "rt":
            assert (path / "eval.csv").read_text().splitlines()[-1].startswith("400,")


def _lock_held(run: Path) -> bool:
    """Whether a process holds the run's kernel lock (probed without taking it for long)."""
    lock = run / ".run.lock"
    if not lock.is_file():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _resume(run: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moerl", "train", "--resume", str(run), "--timesteps", "2000",
                             *QUIET], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("first,second", [("cut", "cut"), ("bt_s0", "bt_s1")])
def test_two_resumes_at_once_train_the_run_once(interrupted, tmp_path, first, second):
    """Defect 21: two resumes started together (of one run, or of two members of one batch): one trains,
    the other is refused in one line naming the process that trains."""
    root = _copy(interrupted, tmp_path)
    procs = [_resume(root / first), _resume(root / second)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    err = outs[loser][1]
    assert err.count("\n") == 1 and f"pid {procs[winner].pid}" in err, err
    for name in {first, second} | ({"bt_s0", "bt_s1"} if first.startswith("bt") else set()):
        stack = json.loads((root / name / "stack.json").read_text())
        assert len(stack) == 2, name  # the first session and one resume: trained once


def test_a_training_process_holds_every_runs_lock_until_it_ends(tmp_path, capsys):
    """A fresh batched ``moerl train`` holds the lock of each of its run directories while it trains: a
    resume of any of them is refused naming it; the lock goes with the process, however it ends."""
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", "--env", "cartpole-crl", "--timesteps", "200000",
                             "--seeds", "0,1", "--engine", "batched", "--set", "network.hidden=8",
                             "--logdir", str(tmp_path), "--run-name", "live", *QUIET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = [tmp_path / "live_s0", tmp_path / "live_s1"]
    try:
        deadline = time.time() + 120
        while not all((r / "stack.json").is_file() for r in runs):  # written after the lock and the status
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.1)
        assert all(_lock_held(r) for r in runs)
        assert main(["train", "--resume", str(runs[1]), *QUIET]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pid {proc.pid}" in err, err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert not any(_lock_held(r) for r in runs)  # the kernel released them with the process
