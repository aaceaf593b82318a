"""The batched Freeway against the ``minatar`` reference game, step by step, with the same random draws.

Every draw of the reference is injected exactly (see ``tests/minatar_oracle_b.py``), so nothing here is
statistical: each step's whole state, observation, reward and terminal flag must be equal. (The one known
difference, a car direction drawn at exactly ``u = 1/2``, has probability 2**-53 a draw; see the module.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.base import FULL_ACTIONS
from moerl.rl.envs.minatar.freeway import Freeway

pytest.importorskip("minatar")
from tests import minatar_oracle_b as oracle  # noqa: E402

torch.set_num_threads(1)


def _mostly_up(t, refs, rng):
    """Up three times in four (so chickens cross and get hit), else any of the six actions."""
    return np.where(rng.random(len(refs)) < 0.75, 2, rng.integers(0, 6, len(refs)))


def test_random_trajectories_match_the_reference():
    """16 envs x 500 steps of uniform random actions, every action also tried from every visited state."""
    counts = oracle.lockstep(Freeway(), oracle.FREEWAY, n_envs=16, steps=500, seed=1)
    assert counts.get("hit", 0) > 0


def _late_start(env, rng):
    """An episode near its time limit, the chicken anywhere, its cooldown anywhere."""
    env.terminate_timer = int(rng.integers(0, 120))
    env.pos = int(rng.integers(1, 10))
    env.move_timer = int(rng.integers(0, 4))
    for car in env.cars:
        car[0], car[2] = int(rng.integers(0, 10)), int(rng.integers(0, abs(car[3]) + 1))


@pytest.mark.parametrize("ramping", [True, False])
def test_crossing_hits_and_time_out_match_the_reference(ramping):
    """A mostly-up policy from late, scrambled starts: crossings (new car speeds), hits and time-outs."""
    counts = oracle.lockstep(Freeway(ramping), oracle.FREEWAY, n_envs=16, steps=300, seed=2 + ramping,
                             policy=_mostly_up, start=_late_start)
    for event in ("cross", "hit", "time_out"):
        assert counts.get(event, 0) >= 5, (event, counts)
    assert counts["time_out"] == counts["episodes"]


def test_a_whole_episode_ends_after_2501_steps():
    """From a real reset to the time-out (2501 steps) beside the reference, all actions tried every 50th step."""
    counts = oracle.lockstep(Freeway(), oracle.FREEWAY, n_envs=4, steps=2502, seed=7, policy=_mostly_up,
                             all_actions_every=50)
    assert counts["episodes"] == 4 and counts["time_out"] == 4 and counts["cross"] >= 4 * 20


def _run(game, u_reset, us, actions):
    state = game.reset(u_reset)
    out = []
    for u, a in zip(us, actions, strict=True):
        state, r, t = game.step(state, a, u)
        out.append((state, r, t, game.observe(state)))
    return out


def test_batched_equals_unbatched_and_is_deterministic():
    n, steps = 4, 200
    game = Freeway()
    streams = SeedStreams(list(range(n)), 9)
    g = torch.Generator().manual_seed(0)
    u0 = streams.uniform(game.draws_per_reset, dtype=torch.float64)
    us = [streams.uniform(game.draws_per_step, dtype=torch.float64) for _ in range(steps)]
    actions = [torch.where(torch.rand(n, generator=g) < 0.7, 2, torch.randint(0, 6, (n,), generator=g))
               for _ in range(steps)]
    batch = _run(game, u0, us, actions)
    again = _run(game, u0, us, actions)
    assert sum(float(r.sum()) for _, r, _, _ in batch) > 0
    for (s1, r1, t1, o1), (s2, r2, t2, o2) in zip(batch, again, strict=True):
        assert all(torch.equal(s1[k], s2[k]) for k in s1) and torch.equal(r1, r2) and torch.equal(t1, t2)
        assert torch.equal(o1, o2)
    for i in range(n):
        alone = _run(game, u0[i:i + 1], [u[i:i + 1] for u in us], [a[i:i + 1] for a in actions])
        for (sb, rb, tb, ob), (sa, ra, ta, oa) in zip(batch, alone, strict=True):
            assert all(torch.equal(sb[k][i:i + 1], sa[k]) for k in sb)
            assert torch.equal(rb[i:i + 1], ra) and torch.equal(tb[i:i + 1], ta) and torch.equal(ob[i:i + 1], oa)


def test_spec_observation_and_terminal_state():
    from minatar.environments import freeway as ref

    game, env = Freeway(), ref.Env()
    assert game.spec.channels == tuple(sorted(env.channels, key=env.channels.get))
    assert game.spec.minimal_actions == tuple(env.minimal_action_set())
    assert env.action_map == [a[0] for a in FULL_ACTIONS]
    assert (game.draws_per_reset, game.draws_per_step) == (16, 16)
    u = torch.rand(5, 16, dtype=torch.float64)
    state = game.reset(u)
    obs = game.observe(state)
    assert obs.dtype == torch.bool and obs.shape == (5, 10, 10, 7)
    assert obs[..., 0].sum().item() == 5 and obs[..., 1].sum().item() == 5 * 8 and obs[..., 2:].sum().item() == 40
    # the one draw the package would turn into a car of speed 0 (u == 1/2 exactly) heads left here
    halves = game.reset(torch.cat([u[:, :8], torch.full((5, 8), 0.5, dtype=torch.float64)], 1))
    assert (halves["car_speed"] < 0).all()
    # a terminal game stands still and pays nothing
    state["terminal"] = torch.tensor([True, False, True, False, False])
    state["pos"][:] = 1
    state["cooldown"][:] = 0
    nxt, r, t = game.step(state, torch.full((5,), 2), u)
    assert r.dtype == torch.float32 and r.tolist() == [0, 1, 0, 1, 1] and t.tolist() == state["terminal"].tolist()
    for k in state:
        assert torch.equal(nxt[k][0], state[k][0]) and torch.equal(nxt[k][2], state[k][2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_matches_the_reference():
    counts = oracle.lockstep(Freeway(), oracle.FREEWAY, n_envs=8, steps=100, seed=3, device="cuda",
                             policy=_mostly_up)
    assert counts.get("cross", 0) > 0


def test_terminal_games_stand_still():
    """A step of a game already over changes nothing (the reference returns at once), beside live games."""
    assert oracle.check_stand_still(Freeway()) > 0
