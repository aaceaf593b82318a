"""Compiled updates (``compile: on``): the same update as the eager engine within float32 rounding, a run
that resumes to its uninterrupted result, the setting recorded, and refusals where it cannot apply.

Compile tests are few and small (each compile takes seconds): two architectures, a dense and a routed one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from moerl.cli import main
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv

NETWORKS = [{"arch": "dense", "hidden": 32}, {"arch": "big", "router": "softmoe", "hidden": 16}]


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("network", NETWORKS, ids=["dense", "big-softmoe"])
def test_one_compiled_update_from_the_same_state_is_the_eager_update(network):
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=300)
    hp = {"learning_starts": 100, "aux_loss_coef": 0.01}
    eager = BatchedDQN(suite, [0, 1, 2], network, hp)
    compiled = BatchedDQN(suite, [0, 1, 2], network, hp, compile=True)
    assert compiled.compiled and not eager.compiled
    eager.learn(200)
    compiled.load_state_dict(eager.state_dict())
    before = [p.detach().clone() for p in eager.q_net.parameters()]
    eager.metrics_interval = compiled.metrics_interval = 10**9  # the compiled (not the recorded) pass
    eager.train(1)
    compiled.train(1)
    moved = _max_diff(eager.q_net.parameters(), before)
    assert moved > 1e-4  # the update changed the weights, so the comparison below says something
    assert _max_diff(eager.q_net.parameters(), compiled.q_net.parameters()) < 1e-5 * max(moved, 1.0)
    assert torch.allclose(torch.stack(eager._pending.td_loss), torch.stack(compiled._pending.td_loss),
                          rtol=1e-5, atol=1e-6)
    # gradients reached every parameter in both (the compiled backward is autograd's)
    for e, c in zip(eager.q_net.parameters(), compiled.q_net.parameters(), strict=True):
        assert c.grad is not None and torch.allclose(e.grad, c.grad, rtol=1e-4, atol=1e-6)


def test_a_compiled_engine_is_deterministic_and_keeps_learning_close_to_eager():
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=300)
    runs = [BatchedDQN(suite, [4, 5], NETWORKS[0], {"learning_starts": 100}, compile=c) for c in (True, True, False)]
    for agent in runs:
        agent.learn(400)
    assert _max_diff(runs[0].q_net.parameters(), runs[1].q_net.parameters()) == 0.0
    # 75 updates later the two engines have drifted by rounding only (whole runs are compared statistically)
    assert _max_diff(runs[0].q_net.parameters(), runs[2].q_net.parameters()) < 1e-3


ARGS = ["--env", "cartpole-crl", "--arch", "dense", "--timesteps", "600", "--set", "env_kwargs.block_steps=150",
        "--set", "eval.freq=300", "--set", "eval.episodes=2", "--set", "eval.final_episodes=2",
        "--set", "dqn.learning_starts=100", "--set", "network.hidden=16", "--set", "checkpoint.every=200",
        "--no-progress"]


def _eval_rows(root: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(root.glob("*/eval.csv"))}


def test_compiled_runs_record_it_and_resume_to_the_uninterrupted_result(tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", *ARGS, "--seeds", "0,1", "--compile", "on", "--logdir", str(whole)]) == 0
    configs = [yaml.safe_load(p.read_text()) for p in sorted(whole.glob("*/config.yaml"))]
    assert [c["compile"] for c in configs] == ["on", "on"]
    # the same runs crash before their checkpoint at 400 (after the one at 200), then resume
    import moerl.rl.batched_runs as batched_runs

    real = batched_runs._Batch.checkpoint

    def dies_at_400(self, started):
        if self.agent.num_timesteps == 400:
            raise RuntimeError("simulated crash before the checkpoint at 400")
        real(self, started)

    monkeypatch.setattr(batched_runs._Batch, "checkpoint", dies_at_400)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["train", *ARGS, "--seeds", "0,1", "--compile", "on", "--logdir", str(cut)])
    monkeypatch.undo()
    member = sorted(p for p in cut.iterdir() if p.is_dir())[1]
    assert json.loads((member / "status.json").read_text())["status"] == "failed"
    assert main(["train", "--resume", str(member), "--no-progress"]) == 0
    assert _eval_rows(cut) == _eval_rows(whole)


def test_the_default_is_eager_and_config_yaml_says_so(tmp_path):
    assert main(["train", *ARGS, "--seeds", "0,1", "--logdir", str(tmp_path)]) == 0
    assert {yaml.safe_load(p.read_text())["compile"] for p in tmp_path.glob("*/config.yaml")} == {"off"}


@pytest.mark.parametrize("args, message", [
    (["--compile", "sometimes"], "sometimes"),
    (["--compile", "on", "--engine", "sb3"], "compile: on applies to the batched engine"),
    (["--compile", "on", "--seed", "0"], "compile: on applies to the batched engine"),
])
def test_compile_where_it_cannot_apply_is_refused_in_one_line(tmp_path, capsys, args, message):
    assert main(["train", *ARGS, *args, "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not any(tmp_path.iterdir())
