"""moerl's batched Breakout against MinAtar's (the ``minatar`` package, the oracle; see tests/minatar_oracle_a.py).

Everything is checked exactly (the game's one random event, the ball's starting side, is injected through
the stand-in): observation, reward, terminal and the whole hidden state after every step of long random
trajectories and of a paddle-tracking policy that clears waves of bricks, and one step from random states
under every action; then batched = alone, determinism, purity and the observation's layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.base import FULL_ACTIONS, where_state
from moerl.rl.envs.minatar.breakout import Breakout
from tests.minatar_oracle_a import (
    act_reference,
    assert_same_obs,
    assert_same_state,
    make_reference,
    reset_reference,
    row,
    run_lockstep,
)

torch.set_num_threads(1)
reference = pytest.importorskip("minatar.environments.breakout")


def read_reference(env) -> dict:
    return {"pos": env.pos, "ball_x": env.ball_x, "ball_y": env.ball_y, "ball_dir": env.ball_dir,
            "last_x": env.last_x, "last_y": env.last_y, "strike": env.strike, "terminal": env.terminal,
            "bricks": env.brick_map != 0}


def load_reference(env, values: dict) -> None:
    """Put one environment's state (numpy values, :func:`row`) into a reference game."""
    for key in ("pos", "ball_x", "ball_y", "ball_dir", "last_x", "last_y"):
        setattr(env, key, int(values[key]))
    env.strike, env.terminal = bool(values["strike"]), bool(values["terminal"])
    env.brick_map = values["bricks"].astype(np.float64)


def test_spec_and_observation_layout():
    game = Breakout()
    env, _ = make_reference(reference, ramping=True)
    assert game.spec.channels == tuple(sorted(env.channels, key=env.channels.get))
    assert list(game.spec.minimal_actions) == env.minimal_action_set()
    assert [FULL_ACTIONS[a][0] for a in range(6)] == env.action_map
    assert (game.draws_per_reset, game.draws_per_step) == (1, 0)
    state = game.reset(torch.tensor([[0.2], [0.7]], dtype=torch.float64))
    obs = game.observe(state)
    assert obs.dtype == torch.bool and obs.shape == (2, 10, 10, 4) == (2, *env.state_shape())
    assert obs[:, :, :, 3].sum().item() == 60 and obs[:, 9, 4, 0].all()
    nxt, reward, terminal = game.step(state, torch.tensor([1, 5] + [3] * (state["pos"].shape[0] - 2)),
                                      torch.zeros(state["pos"].shape[0], 0, dtype=torch.float64))
    assert reward.dtype == torch.float32 and terminal.dtype == torch.bool
    assert all(v.dtype in (torch.int64, torch.bool) and nxt[k].dtype == v.dtype for k, v in state.items())


@pytest.mark.parametrize("u", [0.0, 0.4999, 0.5, 0.9999])
def test_reset_matches_both_starting_sides(u):
    game = Breakout()
    env, stand_in = make_reference(reference, ramping=True)
    uu = torch.tensor([[u]], dtype=torch.float64)
    state = game.reset(uu)
    reset_reference(env, stand_in, uu[0])
    assert_same_state(row(state, 0), read_reference(env), f"reset u={u}")
    np.testing.assert_array_equal(game.observe(state)[0].numpy(), env.state())


@pytest.mark.parametrize("ramping", [True, False])
def test_random_trajectories_match_the_reference(ramping):
    """16 envs x 800 steps of uniform actions over the full set, resetting on terminal."""
    out = run_lockstep(Breakout(ramping=ramping), reference, read_reference, n_envs=16, steps=800, seed=int(ramping))
    assert len(out["returns"]) > 100  # many episodes, so many resets (both starting sides) were checked
    assert max(out["returns"]) >= 2


def _tracking_policy(seed: int, give_up: int):
    """For ``give_up`` steps keep the paddle under the ball's next column (the paddle moves as fast as the ball, so once in step it
    never misses); when the ball is about to land, half the time stay under it instead (a straight bounce
    rather than a bounce back), so the ball's path does not settle into a loop that misses the last bricks.
    "Stay" is any of the four actions that leave the paddle. After that, uniform actions (which soon miss)."""
    streams = SeedStreams(range(seed, seed + 64), purpose=11)
    calls = [0]

    def policy(state):
        n = state["pos"].shape[0]
        calls[0] += 1
        if calls[0] > give_up:
            return streams.integers(6, 1)[:n, 0]
        x, pos = state["ball_x"], state["pos"]
        target = (x + torch.tensor([-1, 1, 1, -1])[state["ball_dir"]]).clamp(0, 9)
        u = streams.uniform(2, dtype=torch.float64)[:n]
        landing = (state["ball_y"] == 8) & (state["ball_dir"] >= 2) & (pos == x)
        target = torch.where(landing & (u[:, 0] < 0.5), x, target)
        stay = torch.tensor([0, 2, 4, 5])[torch.floor(u[:, 1] * 4).long()]
        return torch.where(pos < target, 3, torch.where(pos > target, 1, stay))

    return policy


def test_tracking_policy_reaches_every_event():
    """A policy that keeps the ball in play long enough to clear walls of bricks: every rule of the ball
    (sides, ceiling, brick smash, passing into a brick in contact, both paddle bounces, new bricks, a miss)
    happens, and every step still matches the reference."""
    game = Breakout()
    counts = dict.fromkeys(["refill", "pass_into_brick", "straight", "back", "miss", "ceiling", "side"], 0)

    def on_step(state, nxt, reward, terminal):
        bricks_before = state["bricks"].flatten(1).sum(1)
        bricks_after = nxt["bricks"].flatten(1).sum(1)
        counts["refill"] += int((bricks_after > bricks_before).sum())
        counts["pass_into_brick"] += int((state["strike"] & nxt["strike"] & (reward == 0)).sum())
        bounce = (nxt["ball_y"] == 8) & (state["ball_y"] == 8) & ~terminal
        counts["straight"] += int((bounce & (nxt["ball_x"] == state["ball_x"])).sum())
        counts["back"] += int((bounce & (nxt["ball_x"] != state["ball_x"])).sum())
        counts["miss"] += int(terminal.sum())
        counts["ceiling"] += int(((state["ball_y"] == 0) & (nxt["ball_y"] == 0)).sum() +
                                 ((state["ball_y"] == 1) & (nxt["ball_y"] == 0) & (nxt["ball_dir"] >= 2)).sum())
        counts["side"] += int(((nxt["ball_x"] == state["ball_x"]) & (nxt["ball_y"] != state["ball_y"])).sum())

    out = run_lockstep(game, reference, read_reference, n_envs=8, steps=1500, seed=3,
                       policy=_tracking_policy(3, give_up=1300), on_step=on_step)
    assert all(v > 0 for v in counts.values()), counts
    assert counts["refill"] >= 8 and max(out["returns"]) > 90  # several walls cleared


def _random_states(n: int, seed: int) -> dict:
    """Random (mostly reachable) states: bricks anywhere in rows 1-3, the ball anywhere above the bottom row,
    any direction, contact or not, paddle anywhere; a few with no bricks; some ended."""
    g = torch.Generator().manual_seed(seed)

    def ints(high, low=0):
        return torch.randint(low, high, (n,), generator=g)

    bricks = torch.zeros(n, 10, 10, dtype=torch.bool)
    bricks[:, 1:4] = torch.rand(n, 3, 10, generator=g) < torch.rand(n, 1, 1, generator=g)
    bricks[: n // 8] = False
    ball_x, ball_y, ball_dir = ints(10), ints(9), ints(4)
    dx, dy = torch.tensor([-1, 1, 1, -1])[ball_dir], torch.tensor([-1, -1, 1, 1])[ball_dir]
    return {"pos": ints(10), "ball_x": ball_x, "ball_y": ball_y, "ball_dir": ball_dir,
            "last_x": (ball_x - dx).clamp(0, 9), "last_y": (ball_y - dy).clamp(0, 9),
            "strike": torch.rand(n, generator=g) < 0.3, "terminal": torch.rand(n, generator=g) < 0.05,
            "bricks": bricks}


def test_one_step_from_random_states_under_every_action():
    game = Breakout()
    states = _random_states(400, seed=0)
    u = torch.zeros(400, 0, dtype=torch.float64)
    env, stand_in = make_reference(reference, ramping=True)
    for a in range(6):
        nxt, reward, terminal = game.step(states, torch.full((400,), a), u)
        obs = game.observe(nxt).numpy()
        for i in range(400):
            load_reference(env, row(states, i))
            r, done = act_reference(env, stand_in, a, u[i])
            where = f"state {i} action {FULL_ACTIONS[a]}"
            assert (float(reward[i]), bool(terminal[i])) == (r, done), where
            assert_same_obs(obs[i], env.state(), where)
            assert_same_state(row(nxt, i), read_reference(env), where)


def _rollout(game, n, steps, seed, device="cpu"):
    """Observations, rewards and terminals of ``n`` envs under random actions, resetting on terminal."""
    streams = SeedStreams(range(seed, seed + n), purpose=5, device=device)
    state = game.reset(streams.uniform(1, dtype=torch.float64))
    out = []
    for _ in range(steps):
        action = streams.integers(6, 1)[:, 0]
        nxt, reward, terminal = game.step(state, action, streams.uniform(0, dtype=torch.float64))
        out.append((game.observe(nxt), reward, terminal))
        state = where_state(terminal, game.reset(streams.uniform(1, dtype=torch.float64)), nxt)
    return [torch.stack(x) for x in zip(*out, strict=True)]


def test_batched_equals_alone_and_is_deterministic():
    game = Breakout()
    batch = _rollout(game, 6, 300, seed=40)
    for i in (0, 3, 5):
        alone = _rollout(game, 1, 300, seed=40 + i)
        for b, a in zip(batch, alone, strict=True):
            assert torch.equal(b[:, i], a[:, 0])
    again = _rollout(game, 6, 300, seed=40)
    assert all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))


def test_step_is_pure_and_an_ended_game_stays():
    game = Breakout()
    state = _random_states(64, seed=1)
    before = {k: v.clone() for k, v in state.items()}
    nxt, reward, terminal = game.step(state, torch.full((64,), 1), torch.zeros(64, 0, dtype=torch.float64))
    assert all(torch.equal(before[k], state[k]) for k in state)
    ended = before["terminal"]
    assert ended.any() and terminal[ended].all() and (reward[ended] == 0).all()
    assert all(torch.equal(nxt[k][ended], before[k][ended]) for k in state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    game = Breakout()
    cpu = _rollout(game, 32, 200, seed=7)
    cuda = _rollout(game, 32, 200, seed=7, device="cuda")
    assert all(c.device.type == "cuda" and torch.equal(a, c.cpu()) for a, c in zip(cpu, cuda, strict=True))
