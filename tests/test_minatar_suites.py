"""The MinAtar suites on the reference path: checkers, layout, masks, semantics, schedules, limits, errors."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import moerl  # noqa: F401  (registers the ids)
from moerl.cli import main
from moerl.core.errors import ConfigError
from moerl.rl.envs.minatar.games import DEFAULT_GAMES, GAMES
from moerl.rl.envs.minatar_suite import MinAtarSuiteEnv
from moerl.rl.envs.registration import check_env_kwargs, default_timesteps, resolve_env_id

torch.set_num_threads(1)
needs_minatar = pytest.mark.skipif(importlib.util.find_spec("minatar") is None, reason="needs the minatar extra")
IDS = ["moerl/MinAtar-MTRL-v0", "moerl/MinAtar-CRL-v0"]
HINT = 'pip install "moerl[minatar]"'


def resets(env: gym.Env, steps: int, seed: int, policy_seed: int = 0) -> list[tuple[int, dict]]:
    """Random policy for ``steps`` steps: (steps taken so far, info) at every reset."""
    actions = np.random.default_rng(policy_seed)
    _, info = env.reset(seed=seed)
    out = [(0, info)]
    for step in range(1, steps + 1):
        _, _, terminated, truncated, _ = env.step(int(actions.integers(env.action_space.n)))
        if terminated or truncated:
            out.append((step, env.reset()[1]))
    return out


# ---------------------------------------------------------------- checkers, ids, layout
@needs_minatar
@pytest.mark.parametrize("onehot", [True, False])
@pytest.mark.parametrize("env_id", IDS)
def test_env_checkers_pass(env_id: str, onehot: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id, task_onehot=onehot)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "space" in m or "not within" in m or "image" in m], messages
    render = gym.make(env_id, render_mode="rgb_array")
    check_env(render.unwrapped)
    render.reset(seed=0)
    assert render.render().shape == (160, 160, 3)


def test_short_names_and_moerl_envs_list_the_ids(capsys) -> None:
    assert resolve_env_id("minatar-mtrl") == "moerl/MinAtar-MTRL-v0"
    assert resolve_env_id("minatar-crl") == "moerl/MinAtar-CRL-v0"
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for text in ("minatar-mtrl", "moerl/MinAtar-MTRL-v0", "minatar-crl", "moerl/MinAtar-CRL-v0", HINT,
                 "space_invaders, breakout, asterix"):
        assert text in out


@needs_minatar
def test_observation_is_the_padded_grid_then_the_onehot() -> None:
    env = MinAtarSuiteEnv(["breakout", "seaquest"], task_onehot=True)  # 4 channels padded to Seaquest's 10
    assert env.grid_shape == (10, 10, 10) and env.base_obs_dim == 1000
    assert env.observation_space.shape == (1002,) and env.observation_space.dtype == np.uint8
    np.testing.assert_array_equal(env.obs_bounds[0], 0.0)
    np.testing.assert_array_equal(env.obs_bounds[1], 1.0)
    assert env.task_obs_bounds.shape == (2, 2, 1000)
    default = MinAtarSuiteEnv()
    assert default.grid_shape == (10, 10, 6) and default.observation_space.shape == (603,)
    for task, game in enumerate(env.task_names):
        pinned = MinAtarSuiteEnv(["breakout", "seaquest"], fixed_task=game)
        channels = GAMES[game].num_channels
        rng = np.random.default_rng(task)
        obs, info = pinned.reset(seed=task)
        for _ in range(300):
            assert obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
            grid = pinned.grid_of(obs)
            np.testing.assert_array_equal(grid[..., :channels], pinned._envs[task].state())  # the package's grid
            assert not grid[..., channels:].any()  # padded channels are zero
            assert obs[1000 + task] == 1 and obs[1000:].sum() == 1 and info["task_name"] == game
            obs, _, terminated, truncated, info = pinned.step(int(rng.integers(pinned.action_space.n)))
            if terminated or truncated:
                obs, info = pinned.reset()
    assert MinAtarSuiteEnv(task_onehot=False).observation_space.shape == (600,)


# ---------------------------------------------------------------- actions and semantics
@needs_minatar
def test_masks_match_each_games_action_set() -> None:
    import minatar

    env = MinAtarSuiteEnv(list(GAMES))
    assert env.action_space.n == 6  # Seaquest's minimal set is all six
    for row, game in zip(env.valid_actions, env.task_names, strict=True):
        n = len(minatar.Environment(game).minimal_action_set())
        assert row.tolist() == [True] * n + [False] * (6 - n), game
    default = MinAtarSuiteEnv()
    assert default.task_names == DEFAULT_GAMES and default.action_space.n == 5  # Asterix's five
    assert default.valid_actions.sum(axis=1).tolist() == [4, 3, 5]
    full = MinAtarSuiteEnv(action_set="full")
    assert full.action_space.n == 6 and full.valid_actions.all()


def paddle_after(env: MinAtarSuiteEnv, action: int, steps: int = 3) -> int:
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        obs, *_ = env.step(action)
    return int(np.argmax(env.grid_of(obs)[9, :, 0]))  # Breakout's paddle: bottom row, channel 0


@needs_minatar
def test_actions_index_the_games_set_and_invalid_ones_are_flagged() -> None:
    minimal = MinAtarSuiteEnv(["breakout", "asterix"], fixed_task="breakout")
    start = paddle_after(minimal, 0)
    assert paddle_after(minimal, 1) == start - 3  # minimal set (no-op, left, right): 1 = left
    assert paddle_after(minimal, 2) == start + 3  # 2 = right
    _, _, _, _, info = minimal.step(4)  # Asterix has a fifth action, Breakout does not
    assert info["invalid_action"] and info["task_name"] == "breakout"
    full = MinAtarSuiteEnv(["breakout"], action_set="full")
    assert paddle_after(full, 2) == start  # full set: 2 = up, nothing in Breakout
    assert paddle_after(full, 3) == start + 3  # 3 = right
    assert paddle_after(MinAtarSuiteEnv(["breakout"], sticky_action_prob=1.0), 1) == start  # always the no-op


@needs_minatar
def test_sticky_and_ramping_reach_the_package() -> None:
    env = MinAtarSuiteEnv(sticky_action_prob=0.1, ramping=False)
    assert all(e.sticky_action_prob == 0.1 for e in env._envs)
    assert [getattr(e.env, "ramping", None) for e in env._envs] == [False, None, False]  # Breakout never ramps
    default = MinAtarSuiteEnv()
    assert (default.action_set, default.sticky_action_prob, default.ramping) == ("minimal", 0.0, True)
    assert all(e.sticky_action_prob == 0.0 for e in default._envs)
    assert default._envs[0].env.ramping and default._envs[2].env.ramping


@needs_minatar
def test_same_seed_same_run_sticky_included() -> None:
    def run(seed: int) -> list:
        env = gym.make("moerl/MinAtar-MTRL-v0", sticky_action_prob=0.1, max_episode_steps=50)
        rng = np.random.default_rng(0)
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        for _ in range(600):
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(5)))
            trace.append(np.append(obs, [reward, info["task_id"]]))
            if terminated or truncated:
                trace.append(env.reset()[0])
        return trace

    a, b, c = run(3), run(3), run(4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(a) != len(c) or not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------- MTRL draws, CRL schedules, fixed task
@needs_minatar
def test_mtrl_draws_every_task_from_the_seed() -> None:
    env = MinAtarSuiteEnv(max_episode_steps=5)
    first = [info["task_id"] for _, info in resets(env, 600, seed=0)]
    assert set(first) == {0, 1, 2} and len(first) > 100
    assert [info["task_id"] for _, info in resets(env, 600, seed=0)] == first
    assert [info["task_id"] for _, info in resets(env, 600, seed=1)] != first
    assert env.schedule() == []


@needs_minatar
@pytest.mark.parametrize(("order", "cycles", "expected"), [
    ("sequential", 2, [0, 1, 2, 0, 1, 2]),
    (["asterix", "space_invaders"], 1, [2, 0]),
])
def test_crl_switches_at_the_block_boundaries(order, cycles: int, expected: list[int]) -> None:
    block = 150
    env = gym.make("moerl/MinAtar-CRL-v0", block_steps=block, cycles=cycles, order=order)
    schedule = env.get_wrapper_attr("schedule")()
    assert [b["task_id"] for b in schedule] == expected
    seen = resets(env, block * len(expected) + 200, seed=0)
    blocks = [info["block"] for _, info in seen]
    for (step, info), prev in zip(seen[1:], blocks, strict=False):
        assert info["task_id"] == expected[info["block"]]
        switched = info["block"] != prev
        # A switch happens at the first reset at or after the block's nominal end, never before.
        assert switched == (step >= (prev + 1) * block and prev < len(expected) - 1)
    assert sorted(set(blocks)) == list(range(len(expected)))
    assert seen[-1][1]["schedule_done"]


@needs_minatar
@pytest.mark.parametrize("fixed", ["breakout", 1])
def test_fixed_task_always_runs_that_task(fixed) -> None:
    env = gym.make("moerl/MinAtar-CRL-v0", fixed_task=fixed, block_steps=50, max_episode_steps=20)
    assert env.get_wrapper_attr("schedule")() == []
    seen = resets(env, 400, seed=0)
    assert len(seen) > 10 and {info["task_name"] for _, info in seen} == {"breakout"}
    assert all("block" not in info for _, info in seen)
    assert env.observation_space.shape == (603,) and env.action_space.n == 5


# ---------------------------------------------------------------- limits and bounds
@needs_minatar
@pytest.mark.parametrize("limit", [None, 37])
def test_episodes_truncate_at_the_limit(limit: int | None) -> None:
    # Freeway never ends before its clock runs out (the package ends it after 2,501 steps).
    env = MinAtarSuiteEnv(["freeway", "breakout"], fixed_task="freeway", max_episode_steps=limit)
    expected = limit or 2500
    assert env.episode_limits.tolist() == ([2500, 1000] if limit is None else [limit, limit])
    env.reset(seed=0)
    for step in range(1, expected + 1):
        _, _, terminated, truncated, _ = env.step(step % 3)
        assert not terminated and truncated == (step == expected)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


@needs_minatar
def test_return_bounds_documented_and_overridable() -> None:
    env = MinAtarSuiteEnv(list(GAMES))
    assert dict(zip(env.task_names, map(tuple, env.return_bounds), strict=True)) == {
        "asterix": (0.0, 15.0), "breakout": (0.0, 28.0), "freeway": (0.0, 58.0), "seaquest": (0.0, 20.0),
        "space_invaders": (0.0, 131.0)}
    custom = MinAtarSuiteEnv(return_bounds={"breakout": [0, 10]})
    assert custom.return_bounds.tolist() == [[0, 131], [0, 10], [0, 15]]


@needs_minatar
def test_default_budgets() -> None:
    assert default_timesteps("minatar-crl") == 300_000
    assert default_timesteps("minatar-mtrl") == 300_000
    assert default_timesteps("minatar-crl", cycles=2, block_steps=1_000, games=["breakout", "freeway"]) == 4_000


# ---------------------------------------------------------------- the games table
@needs_minatar
def test_games_table_matches_the_package_and_the_batched_games() -> None:
    import minatar

    from moerl.rl.envs.minatar import breakout, space_invaders

    for name, game in GAMES.items():
        ref = minatar.Environment(name)
        assert (game.num_channels, game.minimal_actions) == (ref.state_shape()[2], tuple(ref.minimal_action_set()))
    for spec in (breakout.SPEC, space_invaders.SPEC):
        assert (spec.num_channels, spec.minimal_actions) == (GAMES[spec.name].num_channels,
                                                             GAMES[spec.name].minimal_actions)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"games": ["pong"]}, "valid choices: asterix, breakout, freeway, seaquest, space_invaders"),
    ({"games": []}, "asterix, breakout, freeway, seaquest, space_invaders"),
    ({"games": ["breakout", "breakout"]}, "more than once"),
    ({"action_set": "minimum"}, "valid choices: full, minimal"),
    ({"sticky_action_prob": 1.5}, "sticky_action_prob"),
    ({"ramping": "yes"}, "ramping"),
    ({"return_bounds": {"pong": [0, 1]}}, "valid choices: asterix, breakout, space_invaders"),
    ({"return_bounds": {"breakout": [5, 1]}}, "low < high"),
    ({"fixed_task": "freeway"}, "freeway"),
    ({"mode": "crl", "task_probs": [0.5, 0.25, 0.25]}, "task_probs"),
])
def test_bad_kwargs_are_refused_in_one_line(kwargs: dict, bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        MinAtarSuiteEnv(**kwargs)
    assert bad in str(err.value) and "\n" not in str(err.value)


def test_bad_env_kwargs_are_refused_before_a_run(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="env_kwargs.games"):
        check_env_kwargs("moerl/MinAtar-CRL-v0", {"tasks": ["breakout"]})
    for setting, bad in (("games=[pong]", "'pong'"), ("games=[]", "non-empty")):
        code = main(["train", "--env", "minatar-crl", "--set", f"env_kwargs.{setting}",
                     "--logdir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2 and bad in err and "breakout, freeway" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path, capsys) -> None:
    for name in [n for n in sys.modules if n == "minatar" or n.startswith("minatar.")] + ["minatar"]:
        monkeypatch.setitem(sys.modules, name, None)  # "import minatar" now fails as if it were not installed
    for make in (MinAtarSuiteEnv, lambda: gym.make("moerl/MinAtar-CRL-v0")):
        with pytest.raises(ConfigError) as err:
            make()
        assert HINT in str(err.value) and "\n" not in str(err.value)
    assert main(["train", "--env", "minatar-mtrl", "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert HINT in err and err.count("\n") == 1
    assert main(["envs"]) == 0 and "minatar-crl" in capsys.readouterr().out  # still listed


# ---------------------------------------------------------------- the reference path reads it
@needs_minatar
def test_moe_dqn_reads_the_suite_and_the_batched_engine_takes_its_spec() -> None:
    from moerl import MoEDQN
    from moerl.rl.batched_runs import suite_spec
    from moerl.rl.nets.obs_layout import layout_for_env

    env = gym.make("moerl/MinAtar-CRL-v0", block_steps=100)
    layout = layout_for_env(env)
    assert (layout.base_dim, layout.num_tasks, len(layout.valid_actions)) == (600, 3, 3)
    model = MoEDQN("MoEPolicy", env, learning_starts=50, buffer_size=500, seed=0,
                   policy_kwargs={"network": {"arch": "big", "router": "hardcoded", "experts": 3, "hidden": 16}})
    assert model.replay_buffer.observations.dtype == np.uint8
    model.learn(200)
    spec = suite_spec("moerl/MinAtar-CRL-v0", {})  # the batched engine reproduces the reference suite
    assert isinstance(spec, MinAtarSuiteEnv) and spec.grid_shape == (10, 10, 6)
