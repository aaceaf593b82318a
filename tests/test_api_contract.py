"""The Python API and the CLI are one product: same names, same defaults, same results."""

import dataclasses
import inspect
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import moerl
from moerl.cli import main
from moerl.core.errors import ConfigError


def test_public_api_is_importable_from_the_top():
    from moerl import (  # noqa: F401
        DQNHyperParams,
        LearnerConfig,
        MaskedExpertLearner,
        MaskedExpertsConfig,
        MoEDQN,
        MoEDQNPolicy,
        MoENetworkConfig,
        PackNetLearner,
        RoutingLearner,
        TaskSuiteEnv,
        build_mtl_dataset,
        build_vision_suite,
        evaluate_tasks,
        make_router,
    )

    # The public surface is exact: dir() advertises __all__ and the version, each reachable with getattr.
    assert set(dir(moerl)) == set(moerl.__all__) | {"__version__"}
    for name in dir(moerl):
        assert getattr(moerl, name) is not None, name
    for package in (moerl.nn, moerl.rl.sb3):
        assert set(dir(package)) == set(package.__all__), package.__name__
        assert all(getattr(package, name) is not None for name in dir(package)), package.__name__
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        moerl.Nope  # noqa: B018


def test_import_moerl_stays_light():
    """``import moerl`` registers the envs but imports neither torch nor SB3 (names load on first use)."""
    code = "import sys, moerl; print('torch' in sys.modules, 'stable_baselines3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_moedqn_signature_defaults_are_the_config_schema_defaults():
    from moerl import DQNHyperParams, MoEDQN

    params = inspect.signature(MoEDQN.__init__).parameters
    for f in dataclasses.fields(DQNHyperParams):
        assert params[f.name].default == getattr(DQNHyperParams(), f.name), f.name


def test_api_and_cli_train_the_same_algorithm_to_the_same_weights(tmp_path):
    """``MoEDQN("MoEPolicy", env).learn(n)`` == ``moerl train --env ... --timesteps n`` (same seed), bitwise."""
    from moerl import MoEDQN

    steps = 1200
    env = gym.make("moerl/CartPole-CRL-v0")
    model = MoEDQN("MoEPolicy", env, policy_kwargs={"network": {"arch": "big", "router": "softmoe"}}, seed=7)
    model.learn(steps)
    rc = main(["train", "--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", str(steps),
               "--seed", "7", "--logdir", str(tmp_path), "--run-name", "cli", "--no-progress"])
    assert rc == 0
    cli = MoEDQN.load(tmp_path / "cli" / "model.zip", device="cpu")
    assert cli.buffer_size == model.buffer_size == 10_000  # one CRL block, read from the env by both
    assert cli.policy.q_net.layout == model.policy.q_net.layout  # the task-id layout, read from the env
    api_state, cli_state = model.policy.state_dict(), cli.policy.state_dict()
    assert api_state.keys() == cli_state.keys()
    for key in api_state:
        torch.testing.assert_close(api_state[key], cli_state[key], rtol=0, atol=0, msg=key)
    assert model.policy.optimizer.defaults["eps"] == 3.125e-4 and model.learning_rate == 1e-3
    env.close()


def test_mlp_policy_alias_is_refused_not_silently_moe():
    from moerl import MoEDQN

    with pytest.raises(ConfigError, match="unknown policy 'MlpPolicy' for MoEDQN; valid choices: MoEPolicy"):
        MoEDQN("MlpPolicy", gym.make("CartPole-v1"))


def test_layout_is_read_from_an_sb3_vec_env_too():
    from stable_baselines3.common.env_util import make_vec_env

    from moerl import MoEDQN

    venv = make_vec_env("moerl/CartPole-MTRL-v0", n_envs=2, seed=0)
    model = MoEDQN("MoEPolicy", venv, seed=0)
    lay = model.policy.q_net.layout
    assert lay.num_tasks == 4 and lay.base_dim == 4 and len(lay.task_names) == 4
    obs = venv.reset()
    assert np.all(model.predict(obs, deterministic=True)[0] >= 0)
    venv.close()


def test_device_auto_means_the_same_in_train_and_eval(tmp_path, capsys, monkeypatch):
    """``auto`` resolves through one function everywhere (``moerl eval`` used to mean the CPU): for the SB3
    engine it is the CPU in both (``engine_device``)."""
    import moerl.rl.experiment as fam

    seen = []
    real = fam.engine_device

    def spy(config, device=None):
        out = real(config, device)
        seen.append((config.device, device, str(out)))
        return out

    monkeypatch.setattr(fam, "engine_device", spy)
    assert main(["train", "--env", "CartPole-v1", "--timesteps", "200", "--logdir", str(tmp_path),
                 "--run-name", "r", "--no-progress"]) == 0
    assert main(["eval", str(tmp_path / "r"), "--episodes", "1"]) == 0
    assert len(seen) >= 2 and set(seen) == {("auto", None, "cpu")}  # train (model, stack record) and eval


def test_moedqn_weights_do_not_depend_on_what_was_built_before():
    from moerl import MoEDQN

    def build(seed):
        return MoEDQN("MoEPolicy", gym.make("moerl/CartPole-MTRL-v0"),
                      policy_kwargs={"network": {"arch": "middle", "router": "topk"}}, seed=seed)

    a1, b1 = build(1), build(2)
    torch.rand(10)  # unrelated draws in between
    b2, a2 = build(2), build(1)
    for x, y in ((a1, a2), (b1, b2)):
        for (k, v), w in zip(x.policy.state_dict().items(), y.policy.state_dict().values(), strict=True):
            assert torch.equal(v, w), k
