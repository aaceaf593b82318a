"""The suite env: checkers, the attribute contract, seeding, CRL schedules, MTRL sampling, mixed games."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import moerl  # noqa: F401  (registers the ids)
from moerl.core.errors import ConfigError
from moerl.rl.envs.registration import (
    SHORT_NAMES,
    default_timesteps,
    describe_suites,
    register_all,
    resolve_env_id,
)
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.envs.tasks import FAMILIES

#: The classic-control suites (the MinAtar suites have their own tests: tests/test_minatar_suites.py).
ENV_IDS = sorted(env_id for env_id in SHORT_NAMES.values() if not env_id.startswith("moerl/MinAtar"))


def rollout(env: gym.Env, steps: int, seed: int, policy_seed: int = 0):
    """Random policy for ``steps`` steps; yields (reset?, obs, info, terminated|truncated) per transition."""
    actions = np.random.default_rng(policy_seed)
    obs, info = env.reset(seed=seed)
    yield True, obs, info, False
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(int(actions.integers(env.action_space.n)))
        done = terminated or truncated
        yield False, obs, info, done
        if done:
            obs, info = env.reset()
            yield True, obs, info, False


# ---------------------------------------------------------------- checkers and contract
@pytest.mark.parametrize("onehot", [True, False])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_checkers_pass(env_id: str, onehot: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id, task_onehot=onehot)
        check_env(env.unwrapped, skip_render_check=True)  # rendering needs the optional pygame
        sb3_check_env(env)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "space" in m or "not within" in m], messages


@pytest.mark.parametrize("env_id", ["moerl/CartPole-CRL-v0", "moerl/MountainCar-MTRL-v0"])
def test_env_checker_render(env_id: str) -> None:
    pytest.importorskip("pygame")
    check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_contract_attributes(env_id: str) -> None:
    env = gym.make(env_id)
    attr = env.get_wrapper_attr
    names, n = attr("task_names"), attr("num_tasks")
    assert isinstance(names, tuple) and len(names) == n and all(isinstance(s, str) for s in names)
    assert attr("mode") == ("crl" if "CRL" in env_id else "mtrl")
    assert attr("task_onehot") is True
    base_dim = 2 if "MountainCar" in env_id else 4
    assert env.observation_space.shape == (base_dim + n,)
    assert env.observation_space.dtype == np.float32
    valid = attr("valid_actions")
    assert valid.dtype == bool and valid.shape == (n, env.action_space.n)
    low, high = attr("obs_bounds")
    assert low.shape == high.shape == (base_dim,)
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)
    bounds = attr("return_bounds")
    assert bounds.shape == (n, 2) and np.all(bounds[:, 0] < bounds[:, 1])
    obs, info = env.reset(seed=0)
    assert info["task_id"] == attr("current_task") and info["task_name"] == names[info["task_id"]]
    assert obs[base_dim + info["task_id"]] == 1.0 and obs[base_dim:].sum() == 1.0
    schedule = attr("schedule")()
    if attr("mode") == "crl":
        assert [b["task_name"] for b in schedule] == list(names)  # default: sequential, one cycle
        assert [b["start_step"] for b in schedule] == [i * attr("block_steps") for i in range(n)]
        assert set(info) >= {"block", "cycle", "block_step", "schedule_done"}
    else:
        assert schedule == []


def test_observation_without_onehot_and_dopamine_bounds() -> None:
    env = TaskSuiteEnv("cartpole", task_onehot=False)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (4,)
    np.testing.assert_allclose(env.obs_bounds[1], [2.4, 5.0, math.pi / 12, 2 * math.pi], rtol=1e-6)
    np.testing.assert_allclose(env.obs_bounds[0], -env.obs_bounds[1])
    mc = TaskSuiteEnv("mountaincar")
    np.testing.assert_allclose(mc.obs_bounds, [[-1.2, -0.07], [0.6, 0.07]], rtol=1e-6)


def test_return_bounds_documented_values_and_time_limit() -> None:
    env = TaskSuiteEnv("classic")
    bounds = dict(zip(env.task_names, map(tuple, env.return_bounds), strict=True))
    assert bounds["cartpole-mirror"] == (0.0, 500.0)
    assert bounds["mountaincar-default"] == (-200.0, -100.0)
    assert bounds["mountaincar-strong"] == (-200.0, -80.0)
    short = TaskSuiteEnv("classic", max_episode_steps=150)
    bounds = dict(zip(short.task_names, map(tuple, short.return_bounds), strict=True))
    assert bounds["cartpole-default"] == (0.0, 150.0)
    assert bounds["mountaincar-default"] == (-150.0, -100.0)


@pytest.mark.parametrize(("tasks", "limit"), [("cartpole", 500), ("mountaincar", 200), ("cartpole", 37)])
def test_episodes_truncate_at_the_time_limit(tasks: str, limit: int) -> None:
    kwargs = {"max_episode_steps": limit} if limit == 37 else {}
    env = TaskSuiteEnv([f"{tasks}-default"], **kwargs)
    obs, _ = env.reset(seed=0)
    for step in range(1, limit + 1):
        # Balancing CartPole / idling MountainCar never terminate, so only the time limit ends them.
        action = int(obs[2] * 10 + obs[3] + 0.1 * obs[0] + 0.5 * obs[1] > 0) if tasks == "cartpole" else 1
        obs, _, terminated, truncated, _ = env.step(action)
        assert not terminated
        assert truncated == (step == limit)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


# ---------------------------------------------------------------- seeding
def trace(env: gym.Env, seed: int, steps: int = 400):
    obs_list, tasks = [], []
    for is_reset, obs, info, _ in rollout(env, steps, seed):
        obs_list.append(obs)
        if is_reset:
            tasks.append(info["task_id"])
    return np.array(obs_list), tasks


@pytest.mark.parametrize("env_id", ["moerl/ClassicControl-MTRL-v0", "moerl/CartPole-CRL-v0"])
def test_same_seed_same_trajectory(env_id: str) -> None:
    kwargs = {"block_steps": 100, "order": "random", "cycles": 2} if "CRL" in env_id else {}
    obs_a, tasks_a = trace(gym.make(env_id, **kwargs), seed=5)
    obs_b, tasks_b = trace(gym.make(env_id, **kwargs), seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert tasks_a == tasks_b
    obs_c, _ = trace(gym.make(env_id, **kwargs), seed=6)
    assert obs_c.shape != obs_a.shape or not np.array_equal(obs_a, obs_c)


def test_mtrl_task_sequence_depends_on_seed() -> None:
    env = TaskSuiteEnv("classic")
    sequences = []
    for seed in (0, 1, 0):
        env.reset(seed=seed)
        sequences.append([env.reset()[1]["task_id"] for _ in range(40)])
    assert sequences[0] == sequences[2]
    assert sequences[0] != sequences[1]


def test_seeded_reset_restarts_the_crl_schedule() -> None:
    env = TaskSuiteEnv("cartpole", "crl", block_steps=20)
    for _ in rollout(env, 200, seed=0):
        pass
    assert env.reset()[1]["block"] > 0
    _, info = env.reset(seed=0)
    assert (info["block"], info["block_step"], info["task_id"]) == (0, 0, 0)


# ---------------------------------------------------------------- MTRL sampling
def test_mtrl_frequencies_match_declared_distribution() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    env = TaskSuiteEnv(
        [
            "cartpole-default",
            "cartpole-mirror",
            "mountaincar-default",
            "mountaincar-mirror",
            "cartpole-lowgrav",
        ],
        task_probs=probs,
    )
    env.reset(seed=123)
    n = 4000
    counts = np.bincount([env.reset()[1]["task_id"] for _ in range(n)], minlength=5)
    assert counts[4] == 0  # a zero-probability task never runs
    expected = n * probs[:4]
    chi2 = float(((counts[:4] - expected) ** 2 / expected).sum())
    assert chi2 < 21.11  # chi-square, 3 degrees of freedom, p = 1e-4
    uniform = TaskSuiteEnv("cartpole")
    uniform.reset(seed=9)
    counts = np.bincount([uniform.reset()[1]["task_id"] for _ in range(n)], minlength=4)
    assert np.all(np.abs(counts - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75))  # 5 sigma per task


# ---------------------------------------------------------------- CRL schedule
def run_schedule(env: TaskSuiteEnv, extra: int, seed: int = 0) -> list[tuple[int, int]]:
    """Random policy over the schedule plus ``extra`` steps, checking the switching rule at each reset.

    Returns the (block, task_id) sequence seen. The rule: the block advances by one at the first
    reset at which the step count has reached the block's nominal end; never inside an episode.
    """
    schedule = env.schedule()
    total = len(schedule) * env.block_steps
    steps, block, block_start, seen = 0, 0, 0, []
    episode_task = None
    for is_reset, obs, info, _ in rollout(env, total + extra, seed):
        if is_reset:
            if steps >= (block + 1) * env.block_steps and block < len(schedule) - 1:
                block, block_start = block + 1, steps
            episode_task = info["task_id"]
            if not seen or seen[-1][0] != info["block"]:
                seen.append((info["block"], info["task_id"]))
        else:
            steps += 1
            assert info["task_id"] == episode_task  # no switch inside an episode
        assert info["block"] == block
        assert info["task_id"] == schedule[block]["task_id"] == env.current_task
        assert info["cycle"] == schedule[block]["cycle"]
        assert info["block_step"] == steps - block_start
        assert info["schedule_done"] == (steps >= total)
        assert obs[env.base_obs_dim + info["task_id"]] == 1.0
    return seen


@pytest.mark.parametrize(
    ("order", "cycles", "expected"),
    [
        ("sequential", 1, [0, 1, 2, 3]),
        ("reverse", 2, [3, 2, 1, 0, 3, 2, 1, 0]),
        (["cartpole-mirror", 0, "cartpole-mirror"], 2, [3, 0, 3, 3, 0, 3]),
    ],
)
def test_crl_switches_on_schedule(order, cycles: int, expected: list[int]) -> None:
    env = TaskSuiteEnv("cartpole", "crl", block_steps=150, cycles=cycles, order=order)
    assert [b["task_id"] for b in env.schedule()] == expected
    assert [b["cycle"] for b in env.schedule()] == [
        i // (len(expected) // cycles) for i in range(len(expected))
    ]
    seen = run_schedule(env, extra=300)
    assert seen == list(enumerate(expected))  # every block visited once, in order, none skipped
    assert env.current_task == expected[-1]  # keeps the last task after the schedule


def test_crl_random_order_is_a_seeded_permutation_per_cycle() -> None:
    env = TaskSuiteEnv("cartpole", "crl", block_steps=100, cycles=3, order="random")
    orders = {}
    for seed in range(6):
        env.reset(seed=seed)
        ids = [b["task_id"] for b in env.schedule()]
        cycles = [ids[i : i + 4] for i in range(0, 12, 4)]
        assert all(sorted(c) == [0, 1, 2, 3] for c in cycles)
        orders[seed] = ids
    assert len({tuple(o) for o in orders.values()}) > 1
    env.reset(seed=3)
    assert [b["task_id"] for b in env.schedule()] == orders[3]
    seen = run_schedule(env, extra=100, seed=3)
    assert [task for _, task in seen] == orders[3]


def test_crl_blocks_shorter_than_an_episode_are_not_skipped() -> None:
    env = TaskSuiteEnv(["cartpole-default", "cartpole-mirror", "cartpole-lowgrav"], "crl", block_steps=3)
    seen = run_schedule(env, extra=50)
    assert seen == [(0, 0), (1, 1), (2, 2)]


# ---------------------------------------------------------------- mixed suite and fixed tasks
def test_mixed_suite_padding_onehot_and_valid_actions() -> None:
    env = TaskSuiteEnv("classic", "crl", block_steps=1, order=["mountaincar-strong", "cartpole-mirror"])
    assert env.action_space.n == 3 and env.observation_space.shape == (4 + 8,)
    cartpole = np.array([name.startswith("cartpole") for name in env.task_names])
    np.testing.assert_array_equal(env.valid_actions[cartpole], [[True, True, False]] * 4)
    np.testing.assert_array_equal(env.valid_actions[~cartpole], [[True, True, True]] * 4)
    low, high = env.obs_bounds
    np.testing.assert_allclose(low, [-2.4, -5.0, -math.pi / 12, -2 * math.pi], rtol=1e-6)
    np.testing.assert_allclose(
        env.task_obs_bounds[env.task_names.index("mountaincar-strong")],
        [[-1.2, -0.07, -1, -1], [0.6, 0.07, 1, 1]],
        rtol=1e-6,
    )
    obs, info = env.reset(seed=0)
    assert info["task_name"] == "mountaincar-strong"
    assert -0.6 <= obs[0] <= -0.4 and obs[1] == 0.0
    np.testing.assert_array_equal(obs[2:4], 0.0)  # padding
    assert obs[4 + env.task_names.index("mountaincar-strong")] == 1.0
    obs, *_, info = env.step(2)
    assert obs[1] > 0 and not info["invalid_action"]
    env.reset()
    assert env.task_names[env.current_task] == "cartpole-mirror"


def test_invalid_action_is_mapped_modulo_and_flagged() -> None:
    a = TaskSuiteEnv("classic", fixed_task="cartpole-default")
    b = TaskSuiteEnv("classic", fixed_task="cartpole-default")
    a.reset(seed=4)
    b.reset(seed=4)
    for action in (2, 2, 1, 2):
        obs_a, _, _, _, info_a = a.step(action)
        obs_b, _, _, _, info_b = b.step(action % 2)
        np.testing.assert_array_equal(obs_a, obs_b)
        assert info_a["invalid_action"] == (action == 2) and not info_b["invalid_action"]
    with pytest.raises(ValueError, match="action"):
        a.step(3)


@pytest.mark.parametrize("fixed", [2, "cartpole-lowgrav"])
def test_fixed_task_always_runs_that_task_with_same_spaces(fixed) -> None:
    env = gym.make("moerl/CartPole-CRL-v0", fixed_task=fixed, block_steps=10)
    ref = gym.make("moerl/CartPole-CRL-v0")
    assert env.observation_space == ref.observation_space and env.action_space == ref.action_space
    assert env.get_wrapper_attr("schedule")() == []
    tasks = {info["task_name"] for _, _, info, _ in rollout(env, 300, seed=0)}
    assert tasks == {"cartpole-lowgrav"}


# ---------------------------------------------------------------- bad configuration
@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"tasks": ["cartpole-default", "cartpole-upside"]}, "cartpole-upside"),
        ({"tasks": []}, "empty"),
        ({"tasks": "atari"}, "atari"),
        ({"mode": "both"}, "both"),
        ({"mode": "crl", "block_steps": 0}, "0"),
        ({"mode": "crl", "block_steps": 2.5}, "2.5"),
        ({"mode": "crl", "cycles": -1}, "-1"),
        ({"mode": "crl", "order": "shuffled"}, "shuffled"),
        ({"mode": "crl", "order": ["cartpole-default", "nope"]}, "nope"),
        ({"mode": "crl", "order": [0, 4]}, "4"),
        ({"mode": "crl", "order": []}, "empty"),
        ({"task_probs": [0.5, 0.5]}, "[0.5, 0.5]"),
        ({"task_probs": [0.5, 0.5, 0.5, 0.5]}, "sum to 1"),
        ({"task_probs": [1.5, -0.5, 0.0, 0.0]}, "-0.5"),
        ({"mode": "crl", "task_probs": [0.25] * 4}, "task_probs"),
        ({"block_steps": 100}, "block_steps"),
        ({"fixed_task": 4}, "4"),
        ({"fixed_task": "mountaincar-default"}, "mountaincar-default"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"render_mode": "ascii"}, "ascii"),
    ],
)
def test_bad_kwargs_raise_config_error(kwargs: dict, bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        TaskSuiteEnv(**{"tasks": "cartpole", **kwargs})
    assert bad in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_bad_kwargs_through_gym_make_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'shuffled'.*reverse.*sequential"):
        gym.make("moerl/CartPole-CRL-v0", order="shuffled")


# ---------------------------------------------------------------- registration
def test_register_all_is_idempotent() -> None:
    before = {env_id: gym.spec(env_id).kwargs for env_id in ENV_IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_all()
        register_all()
    assert {env_id: gym.spec(env_id).kwargs for env_id in ENV_IDS} == before
    assert all(gym.spec(env_id).max_episode_steps is None for env_id in ENV_IDS)  # suite truncates


def test_short_names_and_descriptions() -> None:
    assert set(SHORT_NAMES) == {
        "cartpole-mtrl",
        "cartpole-crl",
        "mountaincar-mtrl",
        "mountaincar-crl",
        "classic-mtrl",
        "classic-crl",
        "minatar-mtrl",
        "minatar-crl",
    }
    rows = dict(describe_suites())
    assert set(rows) == set(SHORT_NAMES)
    for short, line in rows.items():
        family = short.split("-")[0]
        tasks = ("space_invaders", "breakout", "asterix") if family == "minatar" else FAMILIES[family]
        assert all(task in line for task in tasks)
        assert SHORT_NAMES[short] in line and "\n" not in line
    assert resolve_env_id("cartpole-crl") == "moerl/CartPole-CRL-v0"
    with pytest.raises(ConfigError, match="cartpole-crl"):
        resolve_env_id("cartpole-clr")


def test_default_timesteps() -> None:
    assert default_timesteps("moerl/CartPole-CRL-v0") == 40_000
    assert default_timesteps("mountaincar-crl") == 100_000
    assert default_timesteps("classic-crl") == 120_000
    assert default_timesteps("cartpole-mtrl") == 40_000
    assert default_timesteps("cartpole-crl", cycles=3, block_steps=1_000) == 12_000
    assert default_timesteps("cartpole-crl", order=["cartpole-mirror", "cartpole-default"]) == 20_000
    assert default_timesteps("CartPole-v1") is None
    env = gym.make("moerl/MountainCar-CRL-v0")
    schedule = env.get_wrapper_attr("schedule")()
    assert default_timesteps("mountaincar-crl") == len(schedule) * env.get_wrapper_attr("block_steps")


def test_non_boolean_task_onehot_is_refused_not_coerced() -> None:
    """``task_onehot='no'`` used to become True (a non-empty string)."""
    for bad in ("no", 0, 1, None):
        with pytest.raises(ConfigError, match="task_onehot must be true or false"):
            gym.make("moerl/CartPole-MTRL-v0", task_onehot=bad)
    assert gym.make("moerl/CartPole-MTRL-v0", task_onehot=False).observation_space.shape == (4,)


def test_out_of_range_actions_are_refused() -> None:
    env = gym.make("moerl/CartPole-MTRL-v0")
    env.reset(seed=0)
    for bad in (2, -1):
        with pytest.raises(ValueError, match="is not in Discrete"):
            env.step(bad)
