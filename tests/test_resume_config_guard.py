"""``--resume`` continues a run with the config its checkpoint was written with: an edited ``config.yaml``
(a big/softmoe network relabelled dense, a learning rate changed) is refused with one line naming the key,
nothing changes in the run, and the restored file resumes (both RL engines)."""

from __future__ import annotations

import json

import pytest

from moerl.cli import main
from moerl.rl import batched_runs
from moerl.rl.sb3 import checkpoint as sb3_checkpoint

ARGS = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "1200",
        "--set", "network.hidden=8", "--set", "checkpoint.every=400", "--set", "eval.freq=400",
        "--set", "eval.episodes=1", "--set", "eval.final_episodes=1", "--set", "dqn.buffer_size=1000",
        "--no-progress", "-q"]


def _crash_at_800(monkeypatch, engine: str) -> None:
    if engine == "sb3":
        real = sb3_checkpoint.save_checkpoint

        def dies(run_path, model, extra):
            if model.num_timesteps == 800:
                raise RuntimeError("simulated crash")
            return real(run_path, model, extra)

        monkeypatch.setattr(sb3_checkpoint, "save_checkpoint", dies)
    else:
        real_b = batched_runs._Batch.checkpoint

        def dies_b(self, started):
            if self.agent.num_timesteps == 800:
                raise RuntimeError("simulated crash")
            return real_b(self, started)

        monkeypatch.setattr(batched_runs._Batch, "checkpoint", dies_b)


@pytest.mark.parametrize("engine", ["sb3", "batched"])
def test_an_edited_config_does_not_resume(tmp_path, monkeypatch, capsys, engine):
    _crash_at_800(monkeypatch, engine)
    extra = ["--run-name", "cut"] if engine == "sb3" else ["--seeds", "0,1", "--engine", "batched", "--run-name", "cut"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["train", *ARGS, *extra, "--logdir", str(tmp_path)])
    monkeypatch.undo()
    run = tmp_path / ("cut" if engine == "sb3" else "cut_s0")
    config = run / "config.yaml"
    original = config.read_text()
    for edit, key in ((original.replace("arch: big", "arch: dense"), "network.arch"),
                      (original.replace("learning_rate: 0.001", "learning_rate: 0.0005"), "dqn.learning_rate")):
        assert edit != original
        config.write_text(edit)
        before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--no-progress", "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"at '{key}'" in err and "keeps its config" in err, err
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing touched
    config.write_text(original)
    assert main(["train", "--resume", str(run), "--no-progress", "-q", "--timesteps", "1600"]) == 0  # a new total is fine
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
