"""The routing MDP as a Gymnasium env: checker, hand-computed rewards, agreement with the batched trainer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import moerl  # noqa: F401  (registers moerl/RoutingMDP-v0)
from moerl.routing.data import build_digits_mtl
from moerl.routing.mdp import RoutingMDPEnv
from moerl.routing.policies import WPLRouter
from moerl.routing.registration import ROUTING_MDP_ID as ENV_ID
from moerl.routing.trainer import RoutingLearner

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return build_digits_mtl(seed=0)


def test_env_passes_gymnasium_checker(digits):
    env = gym.make(ENV_ID, dataset=digits, rho=0.3, hidden=8, channels=4, block_batch_size=4)
    check_env(env.unwrapped, skip_render_check=True)
    # with rho = 0 and frozen blocks the MDP is stationary: the checker's determinism test applies too
    still = RoutingMDPEnv(digits, rho=0.0, hidden=8, channels=4, train_blocks=False)
    check_env(still, skip_render_check=True)


def _episode(env, index, actions):
    obs, info = env.reset(seed=0, options={"index": index})
    rewards, infos = [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        infos.append(info)
    assert term and not trunc
    return rewards, infos


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_route_trace_and_rewards_by_hand(digits, rho):
    env = RoutingMDPEnv(digits, rho=rho, hidden=8, channels=4, train_blocks=False)
    env.usage.counts[:] = [[3, 1] + [0] * 8, [0, 2, 2] + [0] * 7, [1, 0, 0, 3] + [0] * 6]
    route = [1, 2, 3]
    rewards, infos = _episode(env, 5, route)
    # by hand: depth 0 block 1 was chosen 1 of 4 times, depth 1 block 2 2 of 4, depth 2 block 3 3 of 4
    x, t, y = digits.tensors(digits.train, np.array([5]))
    env.net.eval()
    with torch.no_grad():
        pred = int(env.net(x, torch.tensor([route])).argmax(1)[0])
    r_final = 1.0 if pred == int(y[0]) else -1.0
    assert rewards == pytest.approx([rho * 0.25, rho * 0.5, rho * 0.75 + r_final])
    assert infos[-1]["route"] == route and infos[-1]["r_final"] == r_final
    assert env.usage.counts[0, 1] == 2 and env.usage.counts[2, 3] == 4  # the choices are now counted


def test_env_rewards_equal_batched_trainer_rewards(digits):
    learner = RoutingLearner(digits, algo="wpl", rho=0.4, hidden=8, channels=4, samples_per_epoch=256)
    learner.learn(1)  # non-trivial usage counts and trained blocks
    env = RoutingMDPEnv(digits, net=learner.model, rho=0.4, train_blocks=False)
    for idx, route in ((3, [0, 1, 2]), (1000, [4, 4, 9]), (77, [2, 7, 7])):
        env.usage.counts[:] = learner.usage.counts
        rewards, _ = _episode(env, idx, route)
        x, t, y = digits.tensors(digits.train, np.array([idx]))
        imm, fin = learner.rewards_for_routes(x, t, y, np.array([route]))
        assert rewards[:-1] == pytest.approx(list(imm[0, :-1]))
        assert rewards[-1] == pytest.approx(imm[0, -1] + fin[0])


def test_router_learns_on_env_sb3_style(digits, tmp_path):
    env = RoutingMDPEnv(digits, rho=0.0, hidden=8, channels=4, block_batch_size=16)
    router = WPLRouter(env, seed=0).learn(total_timesteps=60)
    obs, _ = env.reset(seed=1)
    action, _ = router.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    router.save(tmp_path / "wpl.pt")
    again = WPLRouter.load(tmp_path / "wpl.pt", env=env)
    np.testing.assert_allclose(again.pi, router.pi)
    assert set(router.evaluate(n_episodes=20)) <= {f"task_{i}" for i in range(10)}


def test_out_of_space_actions_are_refused_not_wrapped():
    import gymnasium as gym


    env = gym.make("moerl/RoutingMDP-v0")
    env.reset(seed=0)
    for bad in (99, -1):
        with pytest.raises(ValueError, match="is not in Discrete"):
            env.step(bad)
