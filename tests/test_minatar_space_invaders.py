"""moerl's batched SpaceInvaders against MinAtar's (the ``minatar`` package, the oracle; see
tests/minatar_oracle_a.py).

The game draws no random numbers, so everything is checked exactly; the reference's generator is replaced by
a stand-in fed no uniforms, which fails the test if the game ever draws. Checked after every step:
observation, reward, terminal and the whole hidden state (timers, direction, ramp), over long random
trajectories (ramping on and off), over a dodging sharpshooter that clears wave after wave (so the aliens
speed up as their number falls, new waves spawn and the ramp runs down to its floor, or stays with ramping
off), and one step from random states under every action; then batched = alone, determinism, purity and the
observation's layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.base import FULL_ACTIONS, where_state
from moerl.rl.envs.minatar.space_invaders import SpaceInvaders
from tests.minatar_oracle_a import (
    act_reference,
    assert_same_obs,
    assert_same_state,
    make_reference,
    row,
    run_lockstep,
)

torch.set_num_threads(1)
reference = pytest.importorskip("minatar.environments.space_invaders")

#: Our state keys -> the reference's attributes.
_ATTRS = {"pos": "pos", "alien_dir": "alien_dir", "move_interval": "enemy_move_interval",
          "move_timer": "alien_move_timer", "shot_timer": "alien_shot_timer", "cool_down": "shot_timer",
          "ramp_index": "ramp_index"}
_MAPS = {"aliens": "alien_map", "f_bullets": "f_bullet_map", "e_bullets": "e_bullet_map"}


def read_reference(env) -> dict:
    out = {key: getattr(env, attr) for key, attr in _ATTRS.items()}
    out.update({key: getattr(env, attr) != 0 for key, attr in _MAPS.items()})
    out["terminal"] = env.terminal
    return out


def load_reference(env, values: dict) -> None:
    """Put one environment's state (numpy values, :func:`row`) into a reference game."""
    for key, attr in _ATTRS.items():
        setattr(env, attr, int(values[key]))
    for key, attr in _MAPS.items():
        setattr(env, attr, values[key].astype(np.float64))
    env.terminal = bool(values["terminal"])


def test_spec_and_observation_layout():
    game = SpaceInvaders()
    env, _ = make_reference(reference, ramping=True)
    assert game.spec.channels == tuple(sorted(env.channels, key=env.channels.get))
    assert list(game.spec.minimal_actions) == env.minimal_action_set()
    assert [FULL_ACTIONS[a][0] for a in range(6)] == env.action_map
    assert (game.draws_per_reset, game.draws_per_step) == (0, 0)
    state = game.reset(torch.zeros(3, 0, dtype=torch.float64))
    obs = game.observe(state)
    assert obs.dtype == torch.bool and obs.shape == (3, 10, 10, 6) == (3, *env.state_shape())
    for i in range(3):
        assert_same_state(row(state, i), read_reference(env), "reset")
        np.testing.assert_array_equal(obs[i].numpy(), env.state())
    nxt, reward, terminal = game.step(state, torch.tensor([1, 5] + [3] * (state["pos"].shape[0] - 2)),
                                      torch.zeros(state["pos"].shape[0], 0, dtype=torch.float64))
    assert reward.dtype == torch.float32 and terminal.dtype == torch.bool
    assert all(v.dtype in (torch.int64, torch.bool) and nxt[k].dtype == v.dtype for k, v in state.items())


@pytest.mark.parametrize("ramping", [True, False])
def test_random_trajectories_match_the_reference(ramping):
    """16 envs x 600 steps of uniform actions over the full set, resetting on terminal."""
    out = run_lockstep(SpaceInvaders(ramping=ramping), reference, read_reference, n_envs=16, steps=600,
                       seed=10 + int(ramping))
    assert len(out["returns"]) > 50 and max(out["returns"]) >= 3


def _sharpshooter(seed: int):
    """Aim at the lowest alien (the nearest to the cannon on a tie): the column where it will be when a bullet
    fired now reaches its row (counting the block's moves on its timer, walls ignored); fire when the cannon
    is there, or when the block is still big and the cannon is under it; else walk towards that column; never
    step where an alien bullet lands next (a bullet on row 8) or an alien is low. A tenth of the time a random
    action of the full set instead, when that is safe (so the envs' paths differ and every action is used)."""
    streams = SeedStreams(range(seed, seed + 64), purpose=13)

    def policy(state):
        n = state["pos"].shape[0]
        pos, aliens = state["pos"], state["aliens"]
        rows = torch.arange(n)
        grid = torch.arange(10)
        count = aliens.flatten(1).sum(1)
        depth = torch.where(aliens, grid[None, :, None], -1)  # the row of each alien
        score = depth * 100 - (grid[None, None, :] - pos[:, None, None]).abs()
        best = score.flatten(1).argmax(1)
        r, c = best // 10, best % 10
        j = 8 - r  # steps until a bullet fired now reaches row r
        period = torch.minimum(count, state["move_interval"]).clamp(min=1)
        timer = state["move_timer"]
        moves = torch.where(timer > j, 0, 1 + (j - timer).clamp(min=0) // period)
        aim = (c + state["alien_dir"] * moves).clamp(0, 9)
        under = aliens.any(1)[rows, pos] & (count > 4)
        ready = state["cool_down"] == 0
        wanted = torch.where(ready & ((aim == pos) | under), 5,
                             torch.where(aim < pos, 1, torch.where(aim > pos, 3, 0)))
        u = streams.uniform(2, dtype=torch.float64)[:n]
        wanted = torch.where(u[:, 0] < 0.1, torch.floor(u[:, 1] * 6).long(), wanted)
        danger = state["e_bullets"][:, 8] | aliens[:, 9] | aliens[:, 8]  # (N, columns) next step's hazards

        def safe(a):
            new = (pos - (a == 1).long() + (a == 3).long()).clamp(0, 9)
            return ~danger[rows, new]

        action = wanted
        for fallback in (torch.full((n,), 1), torch.full((n,), 3), torch.full((n,), 0)):
            action = torch.where(safe(action), action, fallback)
        return action

    return policy


@pytest.mark.parametrize("ramping", [True, False])
def test_sharpshooter_clears_waves_and_the_ramp_runs_down(ramping):
    """Waves cleared one after another: the last aliens speed up, new waves spawn, the move interval ramps
    from 12 to its floor of 6 and stays there (or stays at 12 with ramping off); enemy shots land and
    sometimes kill. Some envs start late in the ramp (interval 7, 6) to reach the floor within the test."""
    game = SpaceInvaders(ramping=ramping)
    counts = dict.fromkeys(["wave", "fast_move", "down", "shot", "killed"], 0)
    intervals: set[int] = set()

    def on_step(state, nxt, reward, terminal):
        counts["wave"] += int(((state["aliens"].flatten(1).sum(1) < 24) & (nxt["aliens"].flatten(1).sum(1) == 24)).sum())
        counts["fast_move"] += int(((state["move_timer"] == 0) & (nxt["move_timer"] < 2)).sum())
        counts["down"] += int((nxt["alien_dir"] != state["alien_dir"]).sum())
        counts["shot"] += int((state["shot_timer"] == 0).sum())
        counts["killed"] += int(terminal.sum())
        intervals.update(nxt["move_interval"].tolist())

    def start(state):
        state = {k: v.clone() for k, v in state.items()}
        state["move_interval"][:3] = torch.tensor([7, 6, 8])
        state["ramp_index"][:3] = torch.tensor([5, 6, 4])
        return state

    run_lockstep(game, reference, read_reference, n_envs=8, steps=1500, seed=20 + int(ramping),
                 policy=_sharpshooter(int(ramping)), on_step=on_step, start=start, load_reference=load_reference)
    assert all(v > 0 for v in counts.values()), counts
    assert counts["wave"] >= 20, counts
    if ramping:
        assert intervals == set(range(6, 13))  # down to the floor, never below
    else:
        assert intervals == {6, 7, 8, 12}


def _random_states(n: int, seed: int) -> dict:
    """Random states: an alien block of random density anywhere (a single alien in some, aliens on the bottom
    row or at a wall in others), random bullets and timers, either direction, any ramp; some ended."""
    g = torch.Generator().manual_seed(seed)

    def ints(high, low=0):
        return torch.randint(low, high, (n,), generator=g)

    aliens = torch.rand(n, 10, 10, generator=g) < torch.rand(n, 1, 1, generator=g) * 0.5
    single = torch.zeros(n, 10, 10, dtype=torch.bool)
    single.view(n, 100)[torch.arange(n), ints(100)] = True
    few = torch.rand(n, generator=g) < 0.3
    aliens = torch.where(few[:, None, None], single, aliens)
    aliens.view(n, 100)[torch.arange(n), ints(100)] = True  # never empty (the reference needs a shooter)
    f_bullets = torch.rand(n, 10, 10, generator=g) < 0.1
    # a bullet right under a single alien: the wave is cleared this step
    f_bullets |= few[:, None, None] & torch.cat([single[:, 1:], single[:, :1]], 1)
    interval = ints(13, 6)
    return {"pos": ints(10), "alien_dir": torch.where(ints(2) == 0, -1, 1), "move_interval": interval,
            "move_timer": torch.floor(torch.rand(n, generator=g) * (interval + 1)).long(),
            "shot_timer": ints(11), "cool_down": ints(6), "ramp_index": 12 - interval,
            "terminal": torch.rand(n, generator=g) < 0.05, "aliens": aliens, "f_bullets": f_bullets,
            "e_bullets": torch.rand(n, 10, 10, generator=g) < 0.1}


@pytest.mark.parametrize("ramping", [True, False])
def test_one_step_from_random_states_under_every_action(ramping):
    game = SpaceInvaders(ramping=ramping)
    states = _random_states(300, seed=int(ramping))
    u = torch.zeros(300, 0, dtype=torch.float64)
    env, stand_in = make_reference(reference, ramping=ramping)
    for a in range(6):
        nxt, reward, terminal = game.step(states, torch.full((300,), a), u)
        obs = game.observe(nxt).numpy()
        for i in range(300):
            load_reference(env, row(states, i))
            r, done = act_reference(env, stand_in, a, u[i])
            where = f"state {i} action {FULL_ACTIONS[a]}"
            assert (float(reward[i]), bool(terminal[i])) == (r, done), where
            assert_same_obs(obs[i], env.state(), where)
            assert_same_state(row(nxt, i), read_reference(env), where)
    assert stand_in.calls == 0


def _rollout(game, n, steps, seed, device="cpu"):
    """Observations, rewards and terminals of ``n`` envs under random actions, resetting on terminal."""
    streams = SeedStreams(range(seed, seed + n), purpose=5, device=device)
    none = torch.zeros(n, 0, dtype=torch.float64, device=device)
    state = game.reset(none)
    out = []
    for _ in range(steps):
        nxt, reward, terminal = game.step(state, streams.integers(6, 1)[:, 0], none)
        out.append((game.observe(nxt), reward, terminal))
        state = where_state(terminal, game.reset(none), nxt)
    return [torch.stack(x) for x in zip(*out, strict=True)]


def test_batched_equals_alone_and_is_deterministic():
    game = SpaceInvaders()
    batch = _rollout(game, 6, 300, seed=40)
    for i in (0, 3, 5):
        alone = _rollout(game, 1, 300, seed=40 + i)
        for b, a in zip(batch, alone, strict=True):
            assert torch.equal(b[:, i], a[:, 0])
    again = _rollout(game, 6, 300, seed=40)
    assert all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))


def test_step_is_pure_and_an_ended_game_stays():
    game = SpaceInvaders()
    state = _random_states(64, seed=5)
    before = {k: v.clone() for k, v in state.items()}
    nxt, reward, terminal = game.step(state, torch.full((64,), 5), torch.zeros(64, 0, dtype=torch.float64))
    assert all(torch.equal(before[k], state[k]) for k in state)
    ended = before["terminal"]
    assert ended.any() and terminal[ended].all() and (reward[ended] == 0).all()
    assert all(torch.equal(nxt[k][ended], before[k][ended]) for k in state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    game = SpaceInvaders()
    cpu = _rollout(game, 32, 200, seed=7)
    cuda = _rollout(game, 32, 200, seed=7, device="cuda")
    assert all(c.device.type == "cuda" and torch.equal(a, c.cpu()) for a, c in zip(cpu, cuda, strict=True))
