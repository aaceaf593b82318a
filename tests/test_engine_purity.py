"""The batched engine stands on pure torch (importing and running it loads no Stable-Baselines3) and reads
nothing on the host between boundaries."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv

CODE = """
import sys
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv
agent = BatchedDQN(TaskSuiteEnv("cartpole", "crl"), [0, 1], {"arch": "big", "router": "softmoe", "hidden": 8},
                   metrics_interval=100)
agent.learn(600)
returns = agent.evaluate(TaskSuiteEnv("cartpole", "crl"), 1, seed=0)
print(agent.num_timesteps, returns.shape, "stable_baselines3" in sys.modules)
"""


def test_the_batched_engine_imports_and_trains_without_stable_baselines3():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["600", "(2,", "1)", "False"], out


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


@contextlib.contextmanager
def no_host_reads():
    """Every way Python code reads a device value on the host raises while the block runs."""
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def refuse(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read: Tensor.{name} inside a chunk")
        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def _agent(arch: str, router: str | None) -> BatchedDQN:
    network = {"arch": arch, "hidden": 8, **({"router": router} if router else {}),
               **({"balance_loss": "importance"} if router == "topk" else {})}
    hp = DQNHyperParams(learning_starts=100, batch_size=16, target_update_interval=50, exploration_fraction=0.5,
                        aux_loss_coef=0.1)
    return BatchedDQN(TaskSuiteEnv("classic", "crl", block_steps=150), [0, 1, 2], network, hp,
                      metrics_interval=100)


@pytest.mark.parametrize("arch, router", [("dense", None), ("big", "topk"), ("all", "softmoe")])
def test_a_chunk_reads_nothing_on_the_host_and_its_log_equals_a_learned_ones(arch, router):
    """Between boundaries the engine never waits on the device: warm-up, exploration, updates, target
    copies, MoE metrics, episode ends and CRL block switches (classic: 8 tasks, blocks of 150 steps) all run
    with every host read raising; the boundary then yields the log that learn() gives."""
    with no_host_reads():
        with pytest.raises(AssertionError, match="host read"):  # the guard works: the check can fail
            bool(torch.ones(1))
        chunked = _agent(arch, router).advance(1200)
    assert chunked._pending.episodes and chunked._pending.td_loss  # the chunk did log, on the device
    log = chunked.pop_log()
    reference = _agent(arch, router).learn(1200).pop_log()
    assert len(log.episodes) == len(reference.episodes) > 0
    for ours, theirs in zip(log.episodes, reference.episodes, strict=True):
        assert ours[0] == theirs[0] and all(np.array_equal(a, b) for a, b in zip(ours[1:], theirs[1:], strict=True))
    assert np.array_equal(np.stack(log.td_loss), np.stack(reference.td_loss))
    assert [step for step, _ in log.metrics] == [step for step, _ in reference.metrics]
    assert len(log.metrics) >= 5 and len(log.td_loss) == (1200 - 100) // 4
    if router == "topk":  # with a balancing loss
        assert len(log.aux_loss) == len(log.td_loss)
        assert np.array_equal(np.stack(log.aux_loss), np.stack(reference.aux_loss))
