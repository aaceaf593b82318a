"""The batched Asterix against the ``minatar`` reference game, step by step, with the same random draws.

Every draw of the reference is injected exactly (see ``tests/minatar_oracle_b.py``), so nothing here is
statistical: each step's whole state, observation, reward and terminal flag must be equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.asterix import Asterix
from moerl.rl.envs.minatar.base import FULL_ACTIONS

pytest.importorskip("minatar")
from tests import minatar_oracle_b as oracle  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("ramping", [True, False])
def test_random_trajectories_match_the_reference(ramping):
    """16 envs x 500 steps of uniform random actions over the full set, every action also tried from every
    visited state; episodes end by enemies, gold is collected, and (ramping) the difficulty ramps."""
    counts = oracle.lockstep(Asterix(ramping), oracle.ASTERIX, n_envs=16, steps=500, seed=1 + ramping)
    assert counts["episodes"] >= 20
    assert counts.get("enemy", 0) + counts.get("enemy_on_move", 0) == counts["episodes"]
    assert counts.get("gold", 0) + counts.get("gold_on_move", 0) >= 20
    assert (counts.get("ramp", 0) > 0) == ramping


def _crowded_ramped_start(env, rng):
    """A start deep into the game: any spawn/move intervals and timers, a ramp about to happen, most rows taken
    (so spawns find few or no free rows), the player anywhere."""
    env.spawn_speed = int(rng.integers(1, 11))
    env.spawn_timer = int(rng.integers(0, env.spawn_speed + 1))
    env.move_speed = int(rng.integers(1, 6))
    env.move_timer = int(rng.integers(0, env.move_speed + 1))
    env.ramp_timer = int(rng.integers(-1, 4))
    env.ramp_index = int(rng.integers(0, 10))
    env.player_x, env.player_y = int(rng.integers(0, 10)), int(rng.integers(1, 9))
    density = rng.uniform(0.5, 1.0)
    for k in range(8):
        if rng.random() < density:
            env.entities[k] = [int(rng.integers(0, 10)), k + 1, bool(rng.random() < 0.5), bool(rng.random() < 0.4)]


@pytest.mark.parametrize("ramping", [True, False])
def test_scripted_crowded_ramped_starts_match_the_reference(ramping):
    """Episodes started from crowded, sped-up states: gold and enemy contact both before and during the
    entities' move, spawns with every row taken, speed-ups (ramping on) or none (off)."""
    counts = oracle.lockstep(Asterix(ramping), oracle.ASTERIX, n_envs=16, steps=150, seed=5 + ramping,
                             start=_crowded_ramped_start)
    for event in ("gold", "gold_on_move", "enemy", "enemy_on_move", "rows_full"):
        assert counts.get(event, 0) > 0, (event, counts)
    assert (counts.get("faster", 0) > 0) == ramping and (counts.get("ramp", 0) > 0) == ramping


def _run(game, u_reset, us, actions):
    state = game.reset(u_reset)
    out = []
    for u, a in zip(us, actions, strict=True):
        state, r, t = game.step(state, a, u)
        out.append((state, r, t, game.observe(state)))
        # restart ended games so every env keeps playing
        state = {k: torch.where(t.view(-1, *([1] * (v.dim() - 1))), game.reset(u_reset)[k], v) for k, v in state.items()}
    return out


def _inputs(n, steps, seed=0):
    streams = SeedStreams(list(range(n)), 9)
    g = torch.Generator().manual_seed(seed)
    us = [streams.uniform(Asterix.draws_per_step, dtype=torch.float64) for _ in range(steps)]
    actions = [torch.randint(0, 6, (n,), generator=g) for _ in range(steps)]
    return streams.uniform(Asterix.draws_per_reset, dtype=torch.float64), us, actions


def test_batched_equals_unbatched_and_is_deterministic():
    n, steps = 4, 200
    game = Asterix()
    u0, us, actions = _inputs(n, steps)
    batch = _run(game, u0, us, actions)
    again = _run(game, u0, us, actions)
    for (s1, r1, t1, o1), (s2, r2, t2, o2) in zip(batch, again, strict=True):
        assert all(torch.equal(s1[k], s2[k]) for k in s1) and torch.equal(r1, r2) and torch.equal(t1, t2)
        assert torch.equal(o1, o2)
    for i in range(n):
        alone = _run(game, u0[i:i + 1], [u[i:i + 1] for u in us], [a[i:i + 1] for a in actions])
        for (sb, rb, tb, ob), (sa, ra, ta, oa) in zip(batch, alone, strict=True):
            assert all(torch.equal(sb[k][i:i + 1], sa[k]) for k in sb)
            assert torch.equal(rb[i:i + 1], ra) and torch.equal(tb[i:i + 1], ta) and torch.equal(ob[i:i + 1], oa)


def test_spec_observation_and_terminal_state():
    from minatar.environments import asterix as ref

    game, env = Asterix(), ref.Env()
    assert game.spec.channels == tuple(sorted(env.channels, key=env.channels.get))
    assert game.spec.minimal_actions == tuple(env.minimal_action_set())
    assert env.action_map == [a[0] for a in FULL_ACTIONS]
    assert (game.draws_per_reset, game.draws_per_step) == (0, 3) and game.ramping and not Asterix(False).ramping
    state = game.reset(torch.zeros(5, 0, dtype=torch.float64))
    obs = game.observe(state)
    assert obs.dtype == torch.bool and obs.shape == (5, 10, 10, 4)
    assert np.array_equal(obs[0].numpy(), env.state())
    # a terminal game stands still and pays nothing
    state["terminal"] = torch.tensor([True, False, True, False, False])
    state["alive"][:, 4] = True
    state["gold"][:, 4] = True
    state["ex"][:, 4] = 4  # gold next to the player (5, 5): moving left collects it
    nxt, r, t = game.step(state, torch.full((5,), 1), torch.full((5, 3), 0.5, dtype=torch.float64))
    assert r.dtype == torch.float32 and r.tolist() == [0, 1, 0, 1, 1] and t.tolist() == state["terminal"].tolist()
    for k in state:
        assert torch.equal(nxt[k][0], state[k][0]) and torch.equal(nxt[k][2], state[k][2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_matches_the_reference():
    counts = oracle.lockstep(Asterix(), oracle.ASTERIX, n_envs=8, steps=100, seed=3, device="cuda")
    assert counts["episodes"] > 0


def test_terminal_games_stand_still():
    """A step of a game already over changes nothing (the reference returns at once), beside live games."""
    assert oracle.check_stand_still(Asterix()) > 0
