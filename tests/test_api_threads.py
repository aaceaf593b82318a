"""The Python API's ``learn()`` trains on the thread count ``moerl train`` uses, and gives the caller's back.

Why: a new user's ``MoEDQN(...).learn()`` ran 15x slower than the CLI because torch's default (a thread per
core) was used on these small networks, while the CLI pins one thread. ``learn()`` of both API classes now
runs on :data:`moerl.core.threads.TRAINING_THREADS` and restores the caller's ``torch.get_num_threads()``
afterwards, also when learning raises; ``threads=`` picks another count and ``None`` keeps the caller's.
Measured from inside learning: an SB3 callback, and a ``BatchedDQN`` subclass whose ``train`` records.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import moerl  # noqa: F401  (registers the moerl/ envs)
from moerl import BatchedDQN, MoEDQN
from moerl.core.errors import ConfigError
from moerl.core.threads import TRAINING_THREADS

CALLER = 3  # the caller's own setting, different from the CLI's
SMALL = {"learning_starts": 20, "batch_size": 8}


@pytest.fixture
def caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER)
    yield CALLER
    torch.set_num_threads(before)


class RecordThreads(BaseCallback):
    """Records torch's thread count at every env step of ``learn``; raises at ``fail_at`` when given."""

    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.seen: set[int] = set()
        self.fail_at = fail_at

    def _on_step(self) -> bool:
        self.seen.add(torch.get_num_threads())
        if self.fail_at is not None and self.num_timesteps >= self.fail_at:
            raise RuntimeError("stop here")
        return True


class RecordingBatchedDQN(BatchedDQN):
    """The engine, recording torch's thread count at every update; raises at the ``fail_at``-th when given."""

    def __init__(self, *args, fail_at: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: set[int] = set()
        self.fail_at = fail_at

    def train(self, gradient_steps: int) -> None:
        self.seen.add(torch.get_num_threads())
        if self.fail_at is not None and self.n_updates + 1 >= self.fail_at:
            raise RuntimeError("stop here")
        super().train(gradient_steps)


def moedqn() -> MoEDQN:
    return MoEDQN("MoEPolicy", gym.make("CartPole-v1"), policy_kwargs={"network": {"hidden": 8}}, seed=0, **SMALL)


def batched(**kwargs) -> RecordingBatchedDQN:
    return RecordingBatchedDQN(gym.make("moerl/CartPole-MTRL-v0"), [0, 1], {"hidden": 8}, SMALL, **kwargs)


def test_moedqn_learns_on_the_cli_thread_count_and_restores_the_callers(caller_threads):
    assert TRAINING_THREADS == 1
    record = RecordThreads()
    moedqn().learn(60, callback=record)
    assert record.seen == {TRAINING_THREADS}
    assert torch.get_num_threads() == caller_threads


def test_moedqn_threads_argument_and_opt_out(caller_threads):
    record = RecordThreads()
    moedqn().learn(30, callback=record, threads=2)
    assert record.seen == {2} and torch.get_num_threads() == caller_threads
    record = RecordThreads()
    moedqn().learn(30, callback=record, threads=None)  # keep the caller's setting
    assert record.seen == {caller_threads} and torch.get_num_threads() == caller_threads
    with pytest.raises(ConfigError, match="threads must be a positive integer or None"):
        moedqn().learn(30, threads=0)


def test_moedqn_restores_the_callers_threads_when_learning_raises(caller_threads):
    record = RecordThreads(fail_at=10)
    with pytest.raises(RuntimeError, match="stop here"):
        moedqn().learn(60, callback=record)
    assert record.seen == {TRAINING_THREADS}
    assert torch.get_num_threads() == caller_threads


def test_batched_dqn_learns_on_the_cli_thread_count_and_restores_the_callers(caller_threads):
    agent = batched().learn(60)
    assert agent.n_updates > 0 and agent.seen == {TRAINING_THREADS}
    assert torch.get_num_threads() == caller_threads
    agent = batched().learn(60, threads=None)
    assert agent.seen == {caller_threads} and torch.get_num_threads() == caller_threads


def test_batched_dqn_restores_the_callers_threads_when_learning_raises(caller_threads):
    agent = batched(fail_at=3)
    with pytest.raises(RuntimeError, match="stop here"):
        agent.learn(60)
    assert agent.seen == {TRAINING_THREADS}
    assert torch.get_num_threads() == caller_threads
