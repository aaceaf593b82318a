"""The Python API refuses what ``moerl train`` refuses, with the CLI's line, before anything is built.

Why: ``MoEDQN`` and ``BatchedDQN`` used to accept a negative clipping norm (gradient ascent), epsilon 5, a
router on a dense network, duplicate, fractional or string seeds, and failed with internal errors on natural
misuse (a ``gym.make`` suite, a dict of settings, no seeds, zero evaluation episodes, batch size 0, a plain
SB3 DQN zip). The API now runs the CLI's own checks (``DQNHyperParams.validate``, ``checked_network``,
``check_seeds``), so each case below compares the API's ``ConfigError`` with what the CLI prints for the
same setting.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import moerl  # noqa: F401  (registers the moerl/ envs)
from moerl import BatchedDQN, DQNHyperParams, MoEDQN
from moerl.cli import main
from moerl.core.errors import ConfigError

SUITE_ID = "moerl/CartPole-MTRL-v0"


def cli_error(capsys, *args: str) -> str:
    """The one line ``moerl train`` prints for ``args`` (it must refuse them with exit status 2)."""
    capsys.readouterr()
    assert main(["train", "--env", "cartpole-mtrl", "--timesteps", "600", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moerl: error: ") and "\n" not in err, err
    return err.removeprefix("moerl: error: ")


def api_error(build) -> str:
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def suite():
    env = gym.make(SUITE_ID)
    yield env.unwrapped
    env.close()


@pytest.mark.parametrize("setting,value", [
    ("max_grad_norm", -1), ("exploration_final_eps", 5), ("batch_size", 0), ("learning_rate", -0.1),
    ("gamma", 1.5), ("loss", "l1"),
])
def test_dqn_settings_are_refused_by_both_classes_with_the_cli_line(setting, value, suite, capsys, tmp_path):
    cli = cli_error(capsys, "--logdir", str(tmp_path), "--set", f"dqn.{setting}={value}")
    assert api_error(lambda: MoEDQN("MoEPolicy", gym.make(SUITE_ID), **{setting: value})) == cli
    assert api_error(lambda: BatchedDQN(suite, [0], dqn={setting: value})) == cli
    assert api_error(lambda: BatchedDQN(suite, [0], dqn=DQNHyperParams(**{setting: value}))) == cli
    assert not any(tmp_path.iterdir())  # the CLI created nothing either


def test_a_router_on_a_dense_network_is_refused_with_the_cli_line(suite, capsys, tmp_path):
    """The CLI's line also names its flag ("(--experts)"); otherwise the message is the same."""
    cli = cli_error(capsys, "--logdir", str(tmp_path), "--arch", "dense", "--router", "topk", "--experts", "9")
    network = {"arch": "dense", "router": "topk", "experts": 9}
    expected = cli.replace(" (--experts)", "")
    assert expected.startswith("'network.experts' does not apply to arch 'dense'")
    assert api_error(lambda: MoEDQN("MoEPolicy", gym.make(SUITE_ID), policy_kwargs={"network": network})) == expected
    assert api_error(lambda: BatchedDQN(suite, [0], network=network)) == expected
    topk_on_softmoe = {"arch": "big", "router": "softmoe", "topk": 2}
    assert "does not apply to router 'softmoe'" in api_error(lambda: BatchedDQN(suite, [0], network=topk_on_softmoe))


def test_seeds_are_read_as_the_cli_reads_them(suite, capsys, tmp_path):
    assert cli_error(capsys, "--logdir", str(tmp_path), "--seeds", "0,0") == "--seeds '0,0' names a seed twice"
    assert api_error(lambda: BatchedDQN(suite, [0, 0])) == "seeds [0, 0] names a seed twice"
    assert api_error(lambda: BatchedDQN(suite, [1.5])) == "seed must be an integer in [0, 4294967295], got 1.5"
    assert api_error(lambda: BatchedDQN(suite, [-1])) == "seed must be an integer in [0, 4294967295], got -1"
    assert api_error(lambda: BatchedDQN(suite, [])).startswith("seeds is empty")
    assert api_error(lambda: BatchedDQN(suite, 3)).startswith("seeds must be a list of integer seeds")
    # text is the CLI's --seeds spec: '12' is seed 12 (it trained seeds 1 and 2), '0-2' a range
    assert BatchedDQN(suite, "12").seeds == [12]
    assert BatchedDQN(suite, "0-2").seeds == [0, 1, 2]
    assert api_error(lambda: BatchedDQN(suite, "0,0")) == "--seeds '0,0' names a seed twice"


def test_moedqn_seed_and_metrics_interval_are_checked():
    env = gym.make(SUITE_ID)
    assert api_error(lambda: MoEDQN("MoEPolicy", env, seed=-3)) == "seed must be an integer in [0, 4294967295], got -3"
    assert api_error(lambda: MoEDQN("MoEPolicy", env, metrics_interval=0)) == (
        "logging.metrics_interval must be positive, got 0")
    # SB3's own forms stay accepted: a learning-rate schedule and train_freq as (n, unit)
    MoEDQN("MoEPolicy", env, learning_rate=lambda progress: 1e-3 * progress, train_freq=(1, "episode"))
    assert api_error(lambda: MoEDQN("MoEPolicy", env, train_freq=(0, "step"))) == "dqn.train_freq must be positive, got 0"


def test_a_made_suite_trains_as_the_suite_itself():
    """``BatchedDQN(gym.make("moerl/..."), ...)`` (the README's natural call) is the unwrapped suite's run."""
    dqn = {"learning_starts": 50, "batch_size": 16}
    network = {"hidden": 16}
    made = BatchedDQN(gym.make(SUITE_ID), [0, 1], network, dqn).learn(200)
    plain = BatchedDQN(gym.make(SUITE_ID).unwrapped, [0, 1], network, DQNHyperParams(**dqn)).learn(200)
    assert made.n_updates == plain.n_updates > 0
    for (key, a), b in zip(made.q_net.state_dict().items(), plain.q_net.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_envs_the_engine_would_run_differently_are_refused():
    message = api_error(lambda: BatchedDQN(gym.make(SUITE_ID, max_episode_steps=100), [0]))
    assert "TimeLimit would be ignored" in message and "max_episode_steps" in message
    assert "not CartPoleEnv" in api_error(lambda: BatchedDQN(gym.make("CartPole-v1"), [0]))
    assert "does not render" in api_error(lambda: BatchedDQN(gym.make(SUITE_ID, render_mode="rgb_array"), [0]))


def test_evaluate_needs_at_least_one_episode(suite):
    agent = BatchedDQN(suite, [0], {"hidden": 8})
    assert api_error(lambda: agent.evaluate(suite, episodes=0, seed=0)) == "episodes must be positive, got 0"


def test_moedqn_load_of_a_plain_sb3_dqn_zip_is_refused(tmp_path):
    from stable_baselines3 import DQN

    DQN("MlpPolicy", gym.make("CartPole-v1"), policy_kwargs={"net_arch": [8]}).save(tmp_path / "plain.zip")
    assert api_error(lambda: MoEDQN.load(tmp_path / "plain.zip")) == (
        "MoEDQN needs the policy MoEPolicy (MoEDQNPolicy), got DQNPolicy; a model saved by stable_baselines3.DQN "
        "loads with stable_baselines3.DQN.load")
    DQN.load(tmp_path / "plain.zip")  # where it belongs
