"""The batched Seaquest against the ``minatar`` reference game, step by step, with the same random draws.

Every draw of the reference is injected exactly (see ``tests/minatar_oracle_b.py``), so nothing here is
statistical: each step's whole state (lists in their order, hidden countdowns included), observation, reward
and terminal flag must be equal. The scripted starts put the reference in states a long game reaches (divers
aboard, low oxygen, a ramped difficulty, the diver count below 0 after a full surfacing) and carry them over.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.base import FULL_ACTIONS
from moerl.rl.envs.minatar.seaquest import Seaquest, fields

pytest.importorskip("minatar")
from tests import minatar_oracle_b as oracle  # noqa: E402

torch.set_num_threads(1)


def _ramped(env, rng, low=0, high=19):
    """The clocks after R surfacings (R drawn), as the ramp leaves them."""
    r = int(rng.integers(low, high + 1))
    env.ramp_index, env.e_spawn_speed, env.move_speed = r, max(1, 20 - r), max(2, 5 - r // 2)
    env.e_spawn_timer = int(rng.integers(0, env.e_spawn_speed + 1))


def _careful(t, refs, rng):
    """Uniform over the six actions, but never up into the surface with no diver aboard."""
    acts = rng.integers(0, 6, len(refs))
    fatal = np.array([e.sub_y == 1 and e.diver_count == 0 for e in refs]) & (acts == 2)
    return np.where(fatal, 0, acts)


@pytest.mark.parametrize("ramping", [True, False])
def test_random_trajectories_match_the_reference(ramping):
    """16 envs x 500 steps of uniform random actions, every action also tried from every fourth state."""
    counts = oracle.lockstep(Seaquest(ramping), oracle.SEAQUEST, n_envs=16, steps=500, seed=1 + ramping,
                             all_actions_every=4)
    for event in ("enemy_fire", "torpedo_kill", "diver_picked", "death_surfacing_empty", "death_enemy"):
        assert counts.get(event, 0) > 0, (event, counts)


def test_long_careful_episodes_match_the_reference():
    """Longer episodes (no suicidal surfacing): divers collected, subs' bullets and enemies kill, oxygen runs
    out; every action tried every third step."""
    counts = oracle.lockstep(Seaquest(), oracle.SEAQUEST, n_envs=16, steps=350, seed=3, policy=_careful,
                             all_actions_every=3)
    for event in ("diver_picked", "surface_divers", "death_bullet", "death_enemy", "death_oxygen", "torpedo_kill"):
        assert counts.get(event, 0) > 0, (event, counts)


def _surfacing_start(ramping):
    def start(env, rng):
        """Just under the surface with 0-6 divers aboard (or below 0, as after a full surfacing), oxygen
        anywhere (often nearly out), the difficulty ramped as a long game leaves it (ramping on)."""
        env.sub_y, env.surface = int(rng.integers(1, 3)), False
        env.diver_count = int(rng.choice([-2, -1, 0, 1, 3, 5, 6, 6, 6, 6]))
        env.oxygen = int(rng.integers(0, 6) if rng.random() < 0.3 else rng.integers(6, 201))
        if ramping:
            _ramped(env, rng)
    return start


def _up_mostly(t, refs, rng):
    return np.where(rng.random(len(refs)) < 0.6, 2, rng.integers(0, 6, len(refs)))


@pytest.mark.parametrize("ramping", [True, False])
def test_surfacing_and_oxygen_match_the_reference(ramping):
    """Surfacing with 6 divers (oxygen paid out, the count left at -1), with fewer (one lost), with none (the
    end), and again below 0; oxygen running out; the ramp on surfacing (ramping on) or not at all (off)."""
    counts = oracle.lockstep(Seaquest(ramping), oracle.SEAQUEST, n_envs=16, steps=120, seed=5 + ramping,
                             policy=_up_mostly, start=_surfacing_start(ramping))
    for event in ("surface_full", "surface_reward", "surface_divers", "death_surfacing_empty", "death_oxygen"):
        assert counts.get(event, 0) > 0, (event, counts)
    assert (counts.get("ramp", 0) > 0) == ramping and (counts.get("faster", 0) > 0) == ramping


def _hard_start(env, rng):
    """Deep into a ramped game (spawns every 1-8 steps, enemies moving every 3), the diver count below 0 so
    that surfacing is free: the board fills up."""
    _ramped(env, rng, 12, 19)
    env.diver_count = -3


def _lurk(t, refs, rng):
    """Mostly at the surface (out of the enemies' rows), now and then a dive of a few rows."""
    acts = []
    for e in refs:
        if e.sub_y == 0:
            acts.append(4 if rng.random() < 0.08 else int(rng.choice([0, 1, 3, 5])))
        else:
            acts.append(2 if rng.random() < 0.6 else int(rng.integers(0, 6)))
    return np.array(acts)


def test_crowded_ramped_boards_match_the_reference():
    """Crowded boards at the fastest spawn rates: many enemies at once (within the 40 slots, never
    overflowing), volleys of enemy bullets, deaths by bullets and by enemies; every action every fourth step."""
    counts = oracle.lockstep(Seaquest(), oracle.SEAQUEST, n_envs=16, steps=250, seed=7, policy=_lurk,
                             start=_hard_start, all_actions_every=4)
    for event in ("crowded", "enemy_fire", "death_bullet", "death_enemy", "torpedo_kill", "surface_divers"):
        assert counts.get(event, 0) > 0, (event, counts)
    assert 16 <= counts["max_gauge"] <= 34, counts


def _melee_start(env, rng):
    """A close fight around the submarine (one step is all it takes to test the rules' fine print): enemies
    stacked in and next to a few cells (several fish, several subs, twins moving together, countdowns and
    guns at 0), torpedoes flying into those cells (two meeting in one), two divers coming at the submarine
    from both sides with 5 or 6 aboard, enemy bullets about."""
    move = env.move_speed
    sx, sy = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    env.sub_x, env.sub_y, env.sub_or, env.surface = sx, sy, bool(rng.random() < 0.5), False
    env.diver_count = int(rng.choice([4, 5, 5, 6]))
    env.oxygen, env.shot_timer = int(rng.integers(20, 201)), int(rng.choice([0, 0, 3]))
    heading = {row: bool(rng.random() < 0.5) for row in range(1, 9)}  # one direction per row, as spawns keep it
    fish, subs, torpedoes = [], [], []
    for _ in range(3):
        hy, hx = int(np.clip(sy + rng.integers(-1, 2), 1, 8)), int(rng.integers(1, 9))
        step = 1 if heading[hy] else -1
        for _ in range(int(rng.integers(1, 5))):
            x, timer = (hx, int(rng.choice([1, move]))) if rng.random() < 0.4 else (hx - step, 0)
            if rng.random() < 0.5:
                subs.append([x, hy, heading[hy], timer, int(rng.choice([0, 0, 1, 10]))])
            else:
                fish.append([x, hy, heading[hy], timer])
        for _ in range(2):
            if len(torpedoes) < 2 and rng.random() < 0.7:
                right = bool(rng.random() < 0.5)
                tx = hx - (1 if right else -1) * int(rng.choice([0, 1, 1, 2]))
                if 0 <= tx <= 9 and [tx, hy, right] not in torpedoes:
                    torpedoes.append([tx, hy, right])
    env.e_fish, env.e_subs, env.f_bullets = fish, subs, torpedoes
    if len(torpedoes) == 2:  # two in flight: the second was fired under 5 steps ago, the gun is still cooling
        env.shot_timer = int(rng.integers(3, 5))
    env.divers = [[sx + side * int(rng.integers(0, 2)), sy, side < 0, int(rng.choice([0, 0, 2]))]
                  for side in (-1, 1) if rng.random() < 0.8]
    env.divers = [d for d in env.divers if 0 <= d[0] <= 9]
    env.e_bullets = [[sx + int(rng.integers(-2, 3)), sy, bool(rng.random() < 0.5)] for _ in range(int(rng.integers(0, 3)))]
    env.e_bullets = [b for b in env.e_bullets if 0 <= b[0] <= 9]


@pytest.mark.parametrize("ramping", [True, False])
def test_close_fights_match_the_reference(ramping):
    """Hundreds of short episodes from close-fight starts, every action from every state: which fish or sub a
    torpedo strikes (the oldest fish in the cell, else the oldest sub), which torpedo goes first (the newest),
    which enemy of several meets a torpedo (subs before fish, the newest first) and that a destroyed sub still
    fires, which diver of two is picked up when only one fits (the newest) and that none is with 6 aboard."""
    game = Seaquest(ramping, max_enemies=None if ramping else 16)
    counts = oracle.lockstep(game, oracle.SEAQUEST, n_envs=16, steps=60, seed=11 + ramping, start=_melee_start,
                             max_episode_steps=3)
    for event in ("torpedo_kill", "diver_picked", "diver_refused", "death_enemy", "death_bullet", "enemy_fire"):
        assert counts.get(event, 0) > 0, (event, counts)


def _run(game, us, actions):
    state = game.reset(us[0][:, :0])
    out = []
    for u, a in zip(us, actions, strict=True):
        state, r, t = game.step(state, a, u)
        out.append((state, r, t, game.observe(state)))
        fresh = game.reset(u[:, :0])
        state = {k: torch.where(t.view(-1, *([1] * (v.dim() - 1))), fresh[k], v) for k, v in state.items()}
    return out


def test_batched_equals_unbatched_and_is_deterministic():
    n, steps = 3, 150
    game = Seaquest()
    streams = SeedStreams(list(range(n)), 9)
    g = torch.Generator().manual_seed(0)
    us = [streams.uniform(game.draws_per_step, dtype=torch.float64) for _ in range(steps)]
    actions = [torch.randint(0, 6, (n,), generator=g) for _ in range(steps)]
    batch = _run(game, us, actions)
    again = _run(game, us, actions)
    for (s1, r1, t1, o1), (s2, r2, t2, o2) in zip(batch, again, strict=True):
        assert all(torch.equal(s1[k], s2[k]) for k in s1) and torch.equal(r1, r2) and torch.equal(t1, t2)
        assert torch.equal(o1, o2)
    for i in range(n):
        alone = _run(game, [u[i:i + 1] for u in us], [a[i:i + 1] for a in actions])
        for (sb, rb, tb, ob), (sa, ra, ta, oa) in zip(batch, alone, strict=True):
            assert all(torch.equal(sb[k][i:i + 1], sa[k]) for k in sb)
            assert torch.equal(rb[i:i + 1], ra) and torch.equal(tb[i:i + 1], ta) and torch.equal(ob[i:i + 1], oa)


def test_spec_observation_and_terminal_state():
    from minatar.environments import seaquest as ref

    game, env = Seaquest(), ref.Env()
    assert game.spec.channels == tuple(sorted(env.channels, key=env.channels.get))
    assert game.spec.minimal_actions == tuple(env.minimal_action_set())
    assert env.action_map == [a[0] for a in FULL_ACTIONS]
    assert (game.draws_per_reset, game.draws_per_step) == (0, 5)
    assert (game.max_enemies, Seaquest(ramping=False).max_enemies, Seaquest(max_enemies=7).max_enemies) == (40, 4, 7)
    state = game.reset(torch.zeros(5, 0, dtype=torch.float64))
    obs = game.observe(state)
    assert obs.dtype == torch.bool and obs.shape == (5, 10, 10, 10)
    assert np.array_equal(obs[0].numpy(), env.state())
    # a terminal game stands still and pays nothing
    state["terminal"] = torch.tensor([True, False, True, False, False])
    fields(state)["y"][:] = 1
    fields(state)["surfaced"][:] = False
    nxt, r, t = game.step(state, torch.full((5,), 2), torch.full((5, 5), 0.5, dtype=torch.float64))
    assert r.dtype == torch.float32 and r.tolist() == [0] * 5 and t.tolist() == [True] * 5  # surfaced empty
    for k in state:
        assert torch.equal(nxt[k][0], state[k][0]) and torch.equal(nxt[k][2], state[k][2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_matches_the_reference():
    counts = oracle.lockstep(Seaquest(), oracle.SEAQUEST, n_envs=8, steps=100, seed=3, device="cuda",
                             policy=_careful)
    assert counts["episodes"] >= 0


def test_terminal_games_stand_still():
    """A step of a game already over changes nothing (the reference returns at once), beside live games."""
    assert oracle.check_stand_still(Seaquest(), steps=200) > 0
