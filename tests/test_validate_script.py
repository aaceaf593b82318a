"""``scripts/validate_batched_engine.py``'s score of a run: its final normalised return per task, and for a run
pinned to one task (``env_kwargs.fixed_task``) that task's alone (checked on real tiny runs)."""

from __future__ import annotations

import json

from moerl.cli import main
from tests.conftest import load_script


def test_a_pinned_run_is_scored_on_its_task_alone(tmp_path):
    tiny = ["--env", "cartpole-crl", "--timesteps", "300", "--set", "eval.freq=0", "--set", "eval.episodes=1",
            "--set", "eval.final_episodes=1", "--set", "dqn.learning_starts=100", "--set", "network.hidden=8",
            "--no-progress", "-q", "--logdir", str(tmp_path)]
    assert main(["train", *tiny, "--run-name", "all"]) == 0
    assert main(["train", *tiny, "--run-name", "pinned", "--set", "env_kwargs.fixed_task=2"]) == 0
    scores = load_script("validate_batched_engine").scores
    final = {name: json.loads((tmp_path / name / "results.json").read_text())["final_eval"]
             for name in ("all", "pinned")}
    whole = scores([tmp_path / "all"])
    assert whole.shape == (1, 4)
    assert list(whole[0]) == [final["all"][t]["normalized"] for t in sorted(final["all"])]
    pinned = scores([tmp_path / "pinned"])
    task = list(final["pinned"])[2]
    assert pinned.shape == (1, 1) and pinned[0, 0] == final["pinned"][task]["normalized"]
