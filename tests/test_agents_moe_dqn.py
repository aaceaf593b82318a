"""MoE DQN under Stable-Baselines3: every arch x router trains, saves and reloads exactly."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.monitor import Monitor

import moerl  # noqa: F401
from moerl.nn import ARCHS, ROUTERS
from moerl.nn.choices import ROUTED_ARCHS
from moerl.rl.experiment import DQNRunConfig, build_model, validate
from moerl.rl.sb3.moe_dqn import MoEDQN

SMALL = dict(buffer_size=2000, learning_starts=50, batch_size=32, target_update_interval=50)


def small_config(env: str, arch: str, router: str, experts: int = 2, aux_loss_coef: float = 0.01,
                 **net) -> DQNRunConfig:
    cfg = DQNRunConfig(env=env, seed=3, device="cpu")
    if arch == "dense":  # a dense network reads no expert count: MoEDQN refuses one, as moerl train does
        experts = cfg.network.experts
    cfg.network = dataclasses.replace(cfg.network, arch=arch, router=router, experts=experts, hidden=16, **net)
    cfg.dqn = dataclasses.replace(cfg.dqn, aux_loss_coef=aux_loss_coef, **SMALL)
    return validate(cfg)


def suite_env(n_tasks=2, mode="mtrl"):
    tasks = ["cartpole-default", "cartpole-mirror", "cartpole-lowgrav"][:n_tasks]
    return Monitor(gym.make("moerl/CartPole-MTRL-v0", tasks=tasks) if mode == "mtrl" else
                   gym.make("moerl/CartPole-CRL-v0", tasks=tasks, block_steps=100))


#: Every arch with every router; an arch without a router once (a router there is refused, as by moerl train).
ARCH_ROUTERS = [(arch, router) for router in ROUTERS for arch in ARCHS if arch in ROUTED_ARCHS] + [
    (arch, "softmoe") for arch in ARCHS if arch not in ROUTED_ARCHS]


@pytest.mark.parametrize("arch,router", ARCH_ROUTERS)
def test_each_arch_and_router_trains_and_reloads_identically(arch, router, tmp_path):
    env = suite_env(2)
    model = build_model(small_config("cartpole-mtrl", arch, router), env)
    model.learn(300)
    assert model._n_updates > 0
    obs = np.stack([env.observation_space.sample() for _ in range(16)])
    obs[:, 4:] = np.eye(2)[np.arange(16) % 2]  # valid one-hot task ids
    before = model.q_values(obs)
    model.save(tmp_path / "m.zip")
    loaded = MoEDQN.load(tmp_path / "m.zip", device="cpu")
    np.testing.assert_array_equal(loaded.q_values(obs), before)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert loaded.policy.q_net.network_config.arch == arch
    env.close()


def test_training_changes_router_and_expert_weights():
    env = suite_env(2)
    model = build_model(small_config("cartpole-mtrl", "big", "softmoe"), env)
    before = {k: v.clone() for k, v in model.policy.q_net.state_dict().items()}
    model.learn(400)
    after = model.policy.q_net.state_dict()
    assert not torch.equal(before["q_net.layers.0.router.phi"], after["q_net.layers.0.router.phi"])
    assert not torch.equal(before["q_net.layers.0.router.experts.layers.0.weight"],
                           after["q_net.layers.0.router.experts.layers.0.weight"])


def test_aux_loss_reaches_the_router_and_is_logged(tmp_path, tb_scalars):
    from stable_baselines3.common.logger import configure

    env = suite_env(2)
    cfg = small_config("cartpole-mtrl", "middle", "topk", balance_loss="importance", aux_loss_coef=0.5)
    model = build_model(cfg, env)
    assert model.aux_loss_coef == 0.5
    model.set_logger(configure(str(tmp_path), ["tensorboard"]))
    model.learn(600, log_interval=1)
    tags = tb_scalars(tmp_path)
    assert "train/aux_loss" in tags and all(np.isfinite(v) for _, v in tags["train/aux_loss"])


def test_hardcoded_router_needs_a_task_suite_and_one_expert_per_task():
    from moerl.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no task one-hot"):
        build_model(small_config("CartPole-v1", "big", "hardcoded"), Monitor(gym.make("CartPole-v1")))
    with pytest.raises(ConfigError, match="one expert per task"):
        build_model(small_config("cartpole-mtrl", "big", "hardcoded", experts=3), suite_env(2))


def test_hardcoded_big_gives_each_task_its_own_network():
    """Training on task-0 data only must leave task 1's expert untouched."""
    env = Monitor(gym.make("moerl/CartPole-MTRL-v0", tasks=["cartpole-default", "cartpole-mirror"],
                           task_probs=[1.0, 0.0]))
    model = build_model(small_config("cartpole-mtrl", "big", "hardcoded"), env)
    w = model.policy.q_net.q_net.layers[0].experts.layers[0].weight
    before = w.detach().clone()
    model.learn(400)
    after = w.detach()
    assert not torch.equal(before[0], after[0])
    assert torch.equal(before[1], after[1])


def test_mixed_suite_actions_respect_the_valid_action_mask():
    env = Monitor(gym.make("moerl/ClassicControl-MTRL-v0"))
    cfg = small_config("classic-mtrl", "dense", "softmoe")
    model = build_model(cfg, env)
    model.learn(400)
    layout = model.policy.q_net.layout
    cart_tasks = [i for i, row in enumerate(layout.valid_actions) if not all(row)]
    assert cart_tasks, "the mixed suite should have tasks with fewer actions"
    obs = np.zeros((200, env.observation_space.shape[0]), dtype=np.float32)
    obs[:, layout.base_dim + cart_tasks[0]] = 1.0
    obs[:, : layout.base_dim] = np.random.default_rng(0).uniform(-1, 1, (200, layout.base_dim))
    greedy = model.predict(obs, deterministic=True)[0]
    model.exploration_rate = 1.0
    explore = model.predict(obs, deterministic=False)[0]
    assert set(greedy) <= {0, 1} and set(explore) <= {0, 1}
    assert len(set(explore)) == 2


def test_same_seed_same_training():
    def run():
        env = suite_env(2)
        model = build_model(small_config("cartpole-mtrl", "middle", "softmoe"), env)
        model.learn(300)
        return model.q_values(np.ones((3, 6), dtype=np.float32))

    np.testing.assert_array_equal(run(), run())


def test_inputs_are_rescaled_per_task_in_the_mixed_suite():
    env = gym.make("moerl/ClassicControl-MTRL-v0")
    model = build_model(small_config("classic-mtrl", "dense", "softmoe"), env)
    q = model.policy.q_net
    names = q.layout.task_names
    car, pole = names.index("mountaincar-default"), names.index("cartpole-default")
    obs = np.zeros((2, env.observation_space.shape[0]), dtype=np.float32)
    obs[0, :2] = [0.6, 0.07]  # MountainCar at its upper bounds
    obs[1, :4] = [2.4, 5.0, np.pi / 12, 2 * np.pi]  # CartPole at dopamine's bounds
    obs[0, q.layout.base_dim + car] = 1
    obs[1, q.layout.base_dim + pole] = 1
    feats, task_id = q.split(torch.as_tensor(obs))
    np.testing.assert_allclose(feats[0, :2].numpy(), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(feats[1, :4].numpy(), [1.0, 1.0, 1.0, 1.0], rtol=1e-5)
    assert task_id.tolist() == [car, pole]
