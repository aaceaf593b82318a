"""Task families: physics really change, derived quantities stay consistent, mirrored tasks conflict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv

from moerl.core.errors import ConfigError
from moerl.rl.envs.games import CARTPOLE, MOUNTAINCAR
from moerl.rl.envs.gym_games import set_cartpole_physics
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.envs.tasks import FAMILIES, TASKS, Task, get_task, resolve_tasks


def balance(obs: np.ndarray) -> int:
    """Hand-written CartPole controller: push towards the side the pole falls to (PD on angle and cart)."""
    x, x_dot, theta, theta_dot = obs[:4]
    return int(10 * theta + theta_dot + 0.1 * x + 0.5 * x_dot > 0)


def pump(obs: np.ndarray) -> int:
    """Hand-written MountainCar controller: push in the direction of motion (energy pumping)."""
    return 2 if obs[1] >= 0 else 0


def mean_return(task: str, policy, episodes: int, seed: int = 0) -> float:
    env = TaskSuiteEnv([task], task_onehot=False)
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
        obs, _ = env.reset()
    return float(np.mean(returns))


def test_default_families_have_conflicting_and_physics_tasks() -> None:
    for family, game in (("cartpole", "cartpole"), ("mountaincar", "mountaincar")):
        tasks = resolve_tasks(family)
        assert len(tasks) == 4
        assert {t.game for t in tasks} == {game}
        assert sum(t.mirrored for t in tasks) == 1
        assert sum(bool(t.physics) for t in tasks) == 2
        assert tasks[0].physics == () and not tasks[0].mirrored  # the stock game comes first
    classic = FAMILIES["classic"]
    assert sorted(classic) == sorted(FAMILIES["cartpole"] + FAMILIES["mountaincar"])
    assert [get_task(n).game for n in classic[:4]] == ["cartpole", "mountaincar"] * 2  # games alternate


def test_task_is_plain_hashable_data() -> None:
    task = Task("t", "cartpole", {"length": 1.0, "gravity": 5})
    assert task.physics == (("gravity", 5.0), ("length", 1.0))
    assert task == Task("t", "cartpole", (("length", 1.0), ("gravity", 5.0)))
    assert hash(task) == hash(Task("t", "cartpole", {"gravity": 5.0, "length": 1.0}))
    assert task.physics_dict == {**CARTPOLE.physics, "gravity": 5.0, "length": 1.0}
    assert task.action_map == (0, 1) and not task.mirrored
    assert task.return_bounds == CARTPOLE.return_bounds
    with pytest.raises(AttributeError):
        task.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", [n for n in TASKS if n.startswith("cartpole")])
def test_cartpole_derived_quantities_are_recomputed(name: str) -> None:
    env = TaskSuiteEnv([name])._envs[0]
    task = get_task(name)
    for key, value in task.physics_dict.items():
        assert getattr(env, key) == pytest.approx(value)
    assert env.total_mass == pytest.approx(env.masspole + env.masscart)
    assert env.polemass_length == pytest.approx(env.masspole * env.length)


def reference_cartpole_step(state, force, gravity, masscart, masspole, length, tau=0.02):
    """CartPole's equations of motion written from the raw physics (no cached derived values)."""
    x, x_dot, theta, theta_dot = state
    total = masscart + masspole
    temp = (force + masspole * length * theta_dot**2 * math.sin(theta)) / total
    theta_acc = (gravity * math.sin(theta) - math.cos(theta) * temp) / (
        length * (4 / 3 - masspole * math.cos(theta) ** 2 / total)
    )
    x_acc = temp - masspole * length * theta_acc * math.cos(theta) / total
    return (x + tau * x_dot, x_dot + tau * x_acc, theta + tau * theta_dot, theta_dot + tau * theta_acc)


def test_cartpole_dynamics_use_the_new_masses() -> None:
    params = {"gravity": 4.9, "masscart": 2.0, "masspole": 0.5, "length": 1.0, "force_mag": 20.0}
    env = set_cartpole_physics(CartPoleEnv(), **params)
    env.reset(seed=3)
    state = tuple(env.state)
    for action in (1, 1, 0, 1, 0, 0):
        obs, *_ = env.step(action)
        force = params["force_mag"] if action == 1 else -params["force_mag"]
        state = reference_cartpole_step(state, force, **{k: v for k, v in params.items() if k != "force_mag"})
        np.testing.assert_allclose(obs, state, rtol=1e-5, atol=1e-6)


def fixed_action_trajectory(task: str, actions: list[int]) -> np.ndarray:
    env = TaskSuiteEnv([task], task_onehot=False, max_episode_steps=1000)
    obs, _ = env.reset(seed=7)
    states = [obs]
    for action in actions:
        obs, _, terminated, _, _ = env.step(action)
        states.append(obs)
        if terminated:
            break
    return np.array(states)


@pytest.mark.parametrize("family", ["cartpole", "mountaincar"])
def test_physics_change_trajectories(family: str) -> None:
    n_actions = CARTPOLE.n_actions if family == "cartpole" else MOUNTAINCAR.n_actions
    actions = [i % n_actions for i in range(8)] + [n_actions - 1] * 8
    trajs = {name: fixed_action_trajectory(name, actions) for name in FAMILIES[family]}
    starts = {name: t[0].tobytes() for name, t in trajs.items()}
    assert len(set(starts.values())) == 1  # same seed, same start: only the dynamics differ
    names = list(trajs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            n = min(len(trajs[a]), len(trajs[b]))
            assert not np.allclose(trajs[a][:n], trajs[b][:n]), f"{a} and {b} move alike"


@pytest.mark.parametrize("name", ["cartpole-default", "cartpole-longheavy", "cartpole-lowgrav"])
def test_balancing_controller_solves_physics_variants_but_not_mirror(name: str) -> None:
    assert mean_return(name, balance, episodes=2) == 500.0
    assert mean_return(name, lambda o: 1 - balance(o), episodes=5) < 50


def test_mirrored_cartpole_needs_the_mirrored_controller() -> None:
    assert mean_return("cartpole-mirror", balance, episodes=5) < 50
    assert mean_return("cartpole-mirror", lambda o: 1 - balance(o), episodes=2) == 500.0


def test_mountaincar_pumping_solves_variants_and_mirror_needs_mirrored_pumping() -> None:
    for name in ("mountaincar-default", "mountaincar-strong", "mountaincar-lowgrav"):
        task = get_task(name)
        ret = mean_return(name, pump, episodes=10)
        low, high = task.return_bounds
        assert -150 < ret < -80, (name, ret)
        assert 0.5 < (ret - low) / (high - low) <= 1.1  # bounds put a good controller near 1
        assert mean_return(name, lambda o: 2 - pump(o), episodes=3) == -200.0
    assert mean_return("mountaincar-mirror", pump, episodes=3) == -200.0
    assert -150 < mean_return("mountaincar-mirror", lambda o: 2 - pump(o), episodes=10) < -80


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: Task("t", "pong"), "pong"),
        (lambda: Task("t", "cartpole", {"friction": 1.0}), "friction"),
        (lambda: Task("t", "cartpole", {"gravity": -9.8}), "-9.8"),
        (lambda: Task("t", "mountaincar", {"force": float("nan")}), "nan"),
        (lambda: Task("t", "cartpole", action_map=(0, 0)), "(0, 0)"),
        (lambda: Task("t", "mountaincar", action_map=(0, 1)), "(0, 1)"),
        (lambda: Task("t", "cartpole", return_bounds=(500.0, 0.0)), "(500.0, 0.0)"),
        (lambda: resolve_tasks(["cartpole-default", "cartpole-mirrored"]), "cartpole-mirrored"),
        (lambda: resolve_tasks("atari"), "atari"),
        (lambda: resolve_tasks([]), "empty"),
        (lambda: resolve_tasks(["cartpole-default", "cartpole-default"]), "cartpole-default"),
    ],
)
def test_bad_task_definitions_raise_config_error(make, bad: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        make()
    message = str(err.value)
    assert bad in message
    assert "\n" not in message


def test_unknown_task_message_lists_choices() -> None:
    with pytest.raises(ConfigError) as err:
        get_task("cartpole-mirrored")
    assert "did you mean 'cartpole-mirror'" in str(err.value)
    assert "mountaincar-default" in str(err.value)
