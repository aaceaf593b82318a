"""A report is over distinct (config, seed) pairs: a repeat of a run (a command run twice, a copied folder,
two sweeps on one logdir) is dropped with a line naming the run it repeats, never counted as another seed
(black-box through the CLI, for an RL line's runs and a routing run)."""

from __future__ import annotations

import shutil
from pathlib import Path

from moerl.cli import main

PRE_MOVE = Path(__file__).parent / "data" / "pre-move"
ROUTING = ["--env", "digits-mtl", "--algo", "task-specific-1-fc", "--epochs", "1", "--seed", "3",
           "--set", "samples_per_epoch=256", "--set", "channels=4", "--set", "hidden=8", "--no-progress"]


def test_a_repeated_config_and_seed_counts_once(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(PRE_MOVE / "sb3", runs / "cp_s0")
    shutil.copytree(PRE_MOVE / "sb3", runs / "cp_s0-2")  # the same config and seed, a second time
    shutil.copytree(PRE_MOVE / "batched_s1", runs / "cp_s1")  # the same network, another seed and engine
    assert main(["train", *ROUTING, "--logdir", str(runs), "--run-name", "r_s3"]) == 0
    assert main(["train", *ROUTING, "--logdir", str(runs), "--run-name", "r_s3-2"]) == 0
    capsys.readouterr()
    assert main(["report", str(runs)]) == 0
    out, err = capsys.readouterr()
    dropped = [line for line in err.splitlines() if "a repeat, counted once" in line]
    assert len(dropped) == 2 and any("cp_s0-2" in line and "cp_s0:" in line for line in dropped), err
    assert any("r_s3-2" in line for line in dropped), err
    assert "| cartpole-crl | big/softmoe [engine=sb3] | 1 |" in out  # seed 0 once, not twice
    assert "| cartpole-crl | big/softmoe [engine=batched] | 1 |" in out  # a variant of its own, not pooled
    assert "| r (digits-mtl task-specific-1-fc) | 1 | 3 |" in out  # one seed (3), not two
