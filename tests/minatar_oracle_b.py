"""Test oracle for the batched Asterix, Freeway and Seaquest: the ``minatar`` reference games fed our uniforms.

How the reference gets our random numbers: each reference ``Env`` gets a :class:`StandIn` as its ``random``
(the numpy ``RandomState`` it draws from). The stand-in answers every call from the row of uniforms the
batched game consumes in the same step, at the slots the *calling function* owns: a game's plan maps a
function name (``_spawn_entity``, ``_randomize_cars``, ...) to the first slot of each successive call inside one
step (a call of size k takes k consecutive slots). So a draw lands in the slot of its meaning, whichever other
draws happen in the step, and the mappings are the batched side's: ``rand`` is ``u``, ``randint(lo, hi)`` is
``lo + floor(u * (hi - lo))`` in float64.

Comparison: after every step, each environment's whole state (hidden timers included, as a canonical tuple
of Python values: the reference's lists in their order, ours from the slots) and its observation grid must
be equal, with equal reward and terminal flag. :func:`lockstep` also steps every one of the six actions from
each visited state (the batch tiled six times against copies of the reference).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.base import State
from moerl.rl.envs.minatar.seaquest import fields as seaquest_fields

_PURPOSE = 4242


class StandIn:
    """Stands in for a reference game's ``numpy.random.RandomState`` (see the module docstring)."""

    def __init__(self, plan: dict[str, Sequence[int]]) -> None:
        self.plan = {name: list(starts) for name, starts in plan.items()}
        self.row = np.zeros(0)
        self.calls: dict[str, int] = {}

    def load(self, row: np.ndarray) -> None:
        """The uniforms of the next step (or reset); restarts every call site's count."""
        self.row = np.asarray(row, dtype=np.float64)
        self.calls = {}

    def _take(self, size: int | None) -> np.ndarray:
        caller = sys._getframe(2).f_code.co_name
        k = self.calls.get(caller, 0)
        self.calls[caller] = k + 1
        starts = self.plan.get(caller)
        assert starts is not None and k < len(starts), f"no draw slot planned for call {k} of {caller}"
        n = 1 if size is None else int(size)
        start = starts[k]
        assert start + n <= len(self.row), f"{caller}: slots {start}..{start + n} past the row ({len(self.row)})"
        return self.row[start:start + n]

    def rand(self, *size: int) -> Any:
        assert len(size) <= 1
        u = self._take(size[0] if size else None)
        return u.copy() if size else float(u[0])

    def randint(self, low: int, high: int | None = None, size: int | None = None) -> Any:
        if high is None:
            low, high = 0, low
        u = self._take(size)
        ints = low + np.floor(u * (high - low)).astype(np.int64)
        return ints if size is not None else int(ints[0])


def _rows(state: State) -> dict[str, list]:
    """The state as Python lists; a grid ``(N, rows, cols)`` as each env's list of its set cells ``(x, y)``."""
    out: dict[str, list] = {}
    for k, v in state.items():
        if v.dim() == 3:
            cells: list[list[tuple[int, int]]] = [[] for _ in range(v.shape[0])]
            for i, y, x in v.nonzero().tolist():
                cells[i].append((x, y))
            out[k] = cells
        else:
            out[k] = v.cpu().tolist()
    return out


# ---------------------------------------------------------------------------------------------------- adapters
@dataclass
class Adapter:
    """How one game's reference and batched states are read, compared and converted."""

    name: str
    make: Callable[[bool], Any]  # ramping -> a reference Env with a StandIn as its random
    ref_tuple: Callable[[Any], tuple]  # a reference env's canonical state
    our_tuple: Callable[[dict[str, list], int], tuple]  # env i of our state (as lists) in the same form
    to_state: Callable[[Sequence[Any], torch.device, Any], State]  # (reference envs, device, game) -> our state
    #: (reference before the step, after it, action, reward, terminal) -> names of the events the step shows
    events: Callable[[Any, Any, int, float, bool], list[str]] = field(default=lambda *args: [])
    #: a number read off a reference env after each step, whose maximum lockstep reports as ``max_gauge``
    gauge: Callable[[Any], int] = field(default=lambda env: 0)
    #: our state's named fields (views), for a game whose state packs several fields in one tensor
    fields: Callable[[State], State] = field(default=lambda state: state)


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"minatar.environments.{name}")


ASTERIX_PLAN = {"_spawn_entity": [0, 1, 2]}


def _asterix_make(ramping: bool) -> Any:
    env = _module("asterix").Env(ramping=ramping)
    env.random = StandIn(ASTERIX_PLAN)
    return env


def _asterix_ref(env: Any) -> tuple:
    ents = tuple(None if e is None else (e[0], bool(e[2]), bool(e[3])) for e in env.entities)
    for i, e in enumerate(env.entities):
        assert e is None or e[1] == i + 1
    return (env.player_x, env.player_y, ents, env.spawn_speed, env.spawn_timer, env.move_speed, env.move_timer,
            env.ramp_timer, env.ramp_index, bool(env.terminal))


def _asterix_ours(s: dict[str, list], i: int) -> tuple:
    ents = tuple((s["ex"][i][k], s["right"][i][k], s["gold"][i][k]) if s["alive"][i][k] else None for k in range(8))
    return (s["x"][i], s["y"][i], ents, s["spawn_interval"][i], s["spawn_timer"][i], s["move_interval"][i],
            s["move_timer"][i], s["ramp_timer"][i], s["ramp_index"][i], s["terminal"][i])


def _asterix_state(envs: Sequence[Any], device: torch.device, game: Any = None) -> State:
    def col(f: Callable[[Any], Any], dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.tensor([f(e) for e in envs], dtype=dtype, device=device)

    def slots(k: int, default: Any, dtype: torch.dtype) -> torch.Tensor:
        return col(lambda e: [default if x is None else x[k] for x in e.entities], dtype)

    return {
        "x": col(lambda e: e.player_x), "y": col(lambda e: e.player_y),
        "alive": col(lambda e: [x is not None for x in e.entities], torch.bool),
        "ex": slots(0, 0, torch.int64), "right": slots(2, False, torch.bool), "gold": slots(3, False, torch.bool),
        "spawn_interval": col(lambda e: e.spawn_speed), "spawn_timer": col(lambda e: e.spawn_timer),
        "move_interval": col(lambda e: e.move_speed), "move_timer": col(lambda e: e.move_timer),
        "ramp_timer": col(lambda e: e.ramp_timer), "ramp_index": col(lambda e: e.ramp_index),
        "terminal": col(lambda e: e.terminal, torch.bool),
    }


def _asterix_events(before: Any, after: Any, action: int, reward: float, terminal: bool) -> list[str]:
    out = []
    moved = "_on_move" if before.move_timer == 0 else ""
    if reward > 0:
        out.append("gold" + moved)
    if terminal and not before.terminal:
        out.append("enemy" + moved)
    if after.ramp_index > before.ramp_index:
        out.append("ramp")
    if after.move_speed < before.move_speed:
        out.append("faster")
    if before.spawn_timer == 0 and all(e is not None for e in before.entities):
        out.append("rows_full")
    return out


ASTERIX = Adapter("asterix", _asterix_make, _asterix_ref, _asterix_ours, _asterix_state, _asterix_events)


FREEWAY_PLAN = {"_randomize_cars": [0, 8]}


def _freeway_make(ramping: bool) -> Any:
    env = _module("freeway").Env(ramping=ramping)
    env.random = StandIn(FREEWAY_PLAN)
    return env


def _freeway_ref(env: Any) -> tuple:
    for i, car in enumerate(env.cars):
        assert car[1] == i + 1
    cars = tuple((int(c[0]), int(c[2]), int(c[3])) for c in env.cars)
    return (env.pos, env.move_timer, env.terminate_timer, cars, bool(env.terminal))


def _freeway_ours(s: dict[str, list], i: int) -> tuple:
    cars = tuple(zip(s["car_x"][i], s["car_timer"][i], s["car_speed"][i], strict=True))
    return (s["pos"][i], s["cooldown"][i], s["time_left"][i], cars, s["terminal"][i])


def _freeway_state(envs: Sequence[Any], device: torch.device, game: Any = None) -> State:
    def col(f: Callable[[Any], Any], dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.tensor([f(e) for e in envs], dtype=dtype, device=device)

    return {
        "pos": col(lambda e: e.pos), "cooldown": col(lambda e: e.move_timer),
        "time_left": col(lambda e: e.terminate_timer),
        "car_x": col(lambda e: [int(c[0]) for c in e.cars]), "car_timer": col(lambda e: [int(c[2]) for c in e.cars]),
        "car_speed": col(lambda e: [int(c[3]) for c in e.cars]), "terminal": col(lambda e: e.terminal, torch.bool),
    }


def _freeway_events(before: Any, after: Any, action: int, reward: float, terminal: bool) -> list[str]:
    out = []
    pos = before.pos
    if before.move_timer == 0 and action in (2, 4):
        pos = max(0, pos - 1) if action == 2 else min(9, pos + 1)
    if reward > 0:
        out.append("cross")
    elif pos != 9 and after.pos == 9:
        out.append("hit")
    if terminal and not before.terminal:
        out.append("time_out")
    return out


FREEWAY = Adapter("freeway", _freeway_make, _freeway_ref, _freeway_ours, _freeway_state, _freeway_events)


SEAQUEST_PLAN = {"_spawn_enemy": [0, 1, 2], "_spawn_diver": [3, 4]}


def _seaquest_make(ramping: bool) -> Any:
    env = _module("seaquest").Env(ramping=ramping)
    env.random = StandIn(SEAQUEST_PLAN)
    return env


def _seaquest_ref(env: Any) -> tuple:
    """The reference's whole state; the lists in their order, the enemy bullets as a set (they never interact
    with anything but the submarine, so their order and repeats are immaterial)."""
    b = bool
    return (env.sub_x, env.sub_y, b(env.sub_or), env.oxygen, env.diver_count, env.shot_timer, b(env.surface),
            env.e_spawn_speed, env.e_spawn_timer, env.d_spawn_timer, env.move_speed, env.ramp_index,
            tuple((t[0], t[1], b(t[2])) for t in env.f_bullets),
            tuple((d[0], d[1], b(d[2]), d[3]) for d in env.divers),
            tuple((f[0], f[1], b(f[2]), f[3]) for f in env.e_fish),
            tuple((e[0], e[1], b(e[2]), e[3], e[4]) for e in env.e_subs),
            tuple(sorted({(e[0], e[1], b(e[2])) for e in env.e_bullets})), b(env.terminal))


def _seaquest_ours(s: dict[str, list], i: int) -> tuple:
    torpedoes = tuple((s["t_x"][i][k], s["t_y"][i][k], s["t_right"][i][k]) for k in range(len(s["t_alive"][i]))
                      if s["t_alive"][i][k])
    assert all(s["t_alive"][i][:len(torpedoes)]), "torpedo slots not in list order"
    divers = tuple((s["d_x"][i][k], s["d_y"][i][k], s["d_right"][i][k], s["d_timer"][i][k])
                   for k in range(len(s["d_alive"][i])) if s["d_alive"][i][k])
    assert all(s["d_alive"][i][:len(divers)]), "diver slots not in list order"
    live = sorted((s["e_seq"][i][k], k) for k in range(len(s["e_alive"][i])) if s["e_alive"][i][k])
    assert not s["overflow"][i], "an enemy, diver or torpedo found no free slot"
    fish = tuple((s["e_x"][i][k], s["e_y"][i][k], s["e_right"][i][k], s["e_timer"][i][k])
                 for _, k in live if not s["e_sub"][i][k])
    subs = tuple((s["e_x"][i][k], s["e_y"][i][k], s["e_right"][i][k], s["e_timer"][i][k], s["e_gun"][i][k])
                 for _, k in live if s["e_sub"][i][k])
    bullets = tuple(sorted((x, y, right) for right, key in ((True, "b_right"), (False, "b_left"))
                           for x, y in s[key][i]))
    return (s["x"][i], s["y"][i], s["facing_right"][i], s["oxygen"][i], s["divers"][i], s["shot_timer"][i],
            s["surfaced"][i], s["e_spawn_interval"][i], s["e_spawn_timer"][i], s["d_spawn_timer"][i],
            s["move_interval"][i], s["ramp_index"][i], torpedoes, divers, fish, subs, bullets, s["terminal"][i])


def _seaquest_state(envs: Sequence[Any], device: torch.device, game: Any) -> State:
    """Our state from reference envs: lists into slots in their order, fish then subs numbered in list order."""
    n, k = len(envs), game.max_enemies
    state = {key: v.clone() for key, v in game.reset(torch.zeros(n, 0, dtype=torch.float64, device=device)).items()}
    named = seaquest_fields(state)  # views: writing them writes the state
    grid = np.zeros((n, 2, 10, 10), dtype=bool)
    for i, e in enumerate(envs):
        assert len(e.f_bullets) <= 2 and len(e.divers) <= 2 and len(e.e_fish) + len(e.e_subs) <= k
        for key, value in (("x", e.sub_x), ("y", e.sub_y), ("facing_right", e.sub_or), ("oxygen", e.oxygen),
                           ("divers", e.diver_count), ("shot_timer", e.shot_timer), ("surfaced", e.surface),
                           ("e_spawn_interval", e.e_spawn_speed), ("e_spawn_timer", e.e_spawn_timer),
                           ("d_spawn_timer", e.d_spawn_timer), ("move_interval", e.move_speed),
                           ("ramp_index", e.ramp_index), ("terminal", e.terminal)):
            named[key][i] = int(value)
        for j, t in enumerate(e.f_bullets):
            named["t_alive"][i, j], named["t_x"][i, j], named["t_y"][i, j], named["t_right"][i, j] = True, *t[:3]
        for j, d in enumerate(e.divers):
            for key, value in zip(("d_alive", "d_x", "d_y", "d_right", "d_timer"), (True, *d), strict=True):
                named[key][i, j] = value
        enemies = [(*f, 0, False) for f in e.e_fish] + [(*sub, True) for sub in e.e_subs]
        for j, (x, y, right, timer, gun, is_sub) in enumerate(enemies):
            for key, value in zip(("e_alive", "e_x", "e_y", "e_right", "e_timer", "e_gun", "e_sub", "e_seq"),
                                  (True, x, y, right, timer, gun, is_sub, j), strict=True):
                named[key][i, j] = value
        named["next_seq"][i] = len(enemies)
        for x, y, right in e.e_bullets:
            grid[i, 0 if right else 1, y, x] = True
    state["bullets"] = torch.as_tensor(grid, device=device)
    return state


def _seaquest_events(before: Any, after: Any, action: int, reward: float, terminal: bool) -> list[str]:
    out = []
    surfacing = not before.surface and after.surface and after.sub_y == 0
    if surfacing:
        out.append("surface_full" if after.diver_count == -1 else "surface_divers")
    if surfacing and reward > 0:
        out.append("surface_reward")
    if not surfacing and reward > 0:
        out.append("torpedo_kill")
    if after.diver_count > before.diver_count:
        out.append("diver_picked")
    if after.diver_count >= 6 and any(d[:2] == [after.sub_x, after.sub_y] for d in after.divers):
        out.append("diver_refused")
    if len(after.e_bullets) > len(before.e_bullets):
        out.append("enemy_fire")
    if after.ramp_index > before.ramp_index:
        out.append("ramp")
    if after.move_speed < before.move_speed:
        out.append("faster")
    if len(after.e_fish) + len(after.e_subs) >= 12:
        out.append("crowded")
    if terminal and not before.terminal:
        near = [(o[0], o[1]) for o in after.e_bullets]
        if before.oxygen <= 0:
            out.append("death_oxygen")
        if after.sub_y == 0 and not after.surface and before.diver_count <= 0:
            out.append("death_surfacing_empty")
        if any(y == after.sub_y and abs(x - after.sub_x) <= 1 for x, y in near):
            out.append("death_bullet")
        if any(o[1] == after.sub_y and abs(o[0] - after.sub_x) <= 1 for o in after.e_fish + after.e_subs):
            out.append("death_enemy")
    return out


SEAQUEST = Adapter("seaquest", _seaquest_make, _seaquest_ref, _seaquest_ours, _seaquest_state, _seaquest_events,
                   gauge=lambda env: len(env.e_fish) + len(env.e_subs), fields=seaquest_fields)


# ---------------------------------------------------------------------------------------------------- lockstep
def _check(tag: str, adapter: Adapter, refs: Sequence[Any], state: State, obs: torch.Tensor,
           rewards: Sequence[float] | None = None, reward: torch.Tensor | None = None,
           terms: Sequence[bool] | None = None, terminal: torch.Tensor | None = None) -> None:
    rows = _rows(adapter.fields(state))
    obs_np = obs.cpu().numpy()
    for i, ref in enumerate(refs):
        want, got = adapter.ref_tuple(ref), adapter.our_tuple(rows, i)
        assert got == want, f"{tag} env {i}: state differs\n ours {got}\n  ref {want}"
        grid = ref.state()
        assert np.array_equal(obs_np[i], grid), f"{tag} env {i}: observation differs at {np.argwhere(obs_np[i] != grid)}"
        if rewards is not None:
            assert reward is not None and terminal is not None and terms is not None
            assert float(reward[i]) == float(rewards[i]), f"{tag} env {i}: reward {float(reward[i])} != {rewards[i]}"
            assert bool(terminal[i]) == bool(terms[i]), f"{tag} env {i}: terminal {bool(terminal[i])} != {terms[i]}"


def clone(env: Any) -> Any:
    """A copy of a reference env that shares nothing mutable with it (its lists of lists copied two levels
    deep, its stand-in copied): what ``copy.deepcopy`` gives, several times faster."""
    new = object.__new__(type(env))
    new.__dict__ = {k: [list(x) if isinstance(x, list) else x for x in v] if isinstance(v, list) else v
                    for k, v in env.__dict__.items()}
    new.random = copy.copy(env.random)
    return new


def _ref_step(ref: Any, row: np.ndarray, action: int) -> tuple[float, bool]:
    ref.random.load(row)
    r, t = ref.act(int(action))
    return float(r), bool(t)


def step_both(game: Any, adapter: Adapter, refs: list[Any], state: State, actions: torch.Tensor, u: torch.Tensor,
              tag: str, counts: dict[str, int] | None = None) -> tuple[State, torch.Tensor, torch.Tensor]:
    """One step of the batched game and of every reference env; asserts they agree."""
    u_np = u.cpu().numpy()
    before = [clone(r) for r in refs] if counts is not None else None
    out = [_ref_step(ref, u_np[i], int(actions[i])) for i, ref in enumerate(refs)]
    nxt, reward, terminal = game.step(state, actions, u)
    _check(tag, adapter, refs, nxt, game.observe(nxt), [o[0] for o in out], reward, [o[1] for o in out], terminal)
    if counts is not None and before is not None:
        for b, a, act, (r, t) in zip(before, refs, actions.tolist(), out, strict=True):
            for ev in adapter.events(b, a, act, r, t):
                counts[ev] = counts.get(ev, 0) + 1
            counts["max_gauge"] = max(counts.get("max_gauge", 0), adapter.gauge(a))
    return nxt, reward, terminal


def every_action(game: Any, adapter: Adapter, refs: Sequence[Any], state: State, u: torch.Tensor, tag: str) -> None:
    """Each of the six actions from ``state`` (the batch tiled six times) against copies of the references."""
    n, dev = u.shape[0], u.device
    tiled = {k: v.repeat_interleave(6, 0) for k, v in state.items()}
    actions = torch.arange(6, device=dev).repeat(n)
    copies = [clone(r) for r in refs for _ in range(6)]
    step_both(game, adapter, copies, tiled, actions, u.repeat_interleave(6, 0), f"{tag} (every action)")


def lockstep(game: Any, adapter: Adapter, n_envs: int, steps: int, seed: int = 0, *,
             policy: Callable[[int, Sequence[Any], np.random.Generator], np.ndarray] | None = None,
             start: Callable[[Any, np.random.Generator], None] | None = None,
             all_actions_every: int = 1, max_episode_steps: int | None = None,
             device: str = "cpu") -> dict[str, int]:
    """``n_envs`` games stepped ``steps`` times beside the reference, resetting where an episode ends.

    ``policy(t, refs, rng)`` gives the actions (default: uniform over the six); ``start(env, rng)`` edits each
    reference env after every reset (a scripted start state, carried over to ours); ``max_episode_steps`` cuts
    episodes short (a new start). Every ``all_actions_every``-th step (0: never) also checks all six actions.
    Returns counts of the adapter's events, of ``episodes`` (ended by the game) and ``cut`` (cut short)."""
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    streams = SeedStreams(list(range(seed * 1000, seed * 1000 + n_envs)), _PURPOSE, dev)
    refs = [adapter.make(game.ramping) for _ in range(n_envs)]
    counts: dict[str, int] = {"episodes": 0, "cut": 0}
    length = np.zeros(n_envs, dtype=np.int64)

    def fresh(mask: np.ndarray, state: State | None) -> State:
        u = streams.uniform(game.draws_per_reset, dtype=torch.float64)
        u_np = u.cpu().numpy()
        new = game.reset(u)
        for i in np.flatnonzero(mask):
            refs[i].random.load(u_np[i])
            refs[i].reset()
            if start is not None:
                start(refs[i], rng)
        if start is not None:
            new = adapter.to_state(refs, dev, game)
        if state is not None:
            m = torch.as_tensor(mask, device=dev)
            new = {k: torch.where(m.view(-1, *([1] * (v.dim() - 1))), new[k], v) for k, v in state.items()}
        return new

    state = fresh(np.ones(n_envs, dtype=bool), None)
    _check("first reset", adapter, refs, state, game.observe(state))
    for t in range(steps):
        u = streams.uniform(game.draws_per_step, dtype=torch.float64)
        if all_actions_every and t % all_actions_every == 0:
            every_action(game, adapter, refs, state, u, f"step {t}")
        acts = rng.integers(0, 6, n_envs) if policy is None else policy(t, refs, rng)
        actions = torch.as_tensor(acts, dtype=torch.int64, device=dev)
        state, _, terminal = step_both(game, adapter, refs, state, actions, u, f"step {t}", counts)
        ended = terminal.cpu().numpy()
        length += 1
        cut = ~ended & (length >= (max_episode_steps or steps + 1))
        done = ended | cut
        if done.any():
            counts["episodes"] += int(ended.sum())
            counts["cut"] += int(cut.sum())
            length[done] = 0
            state = fresh(done, state)
            _check(f"reset after step {t}", adapter, refs, state, game.observe(state))
    return counts


def check_stand_still(game: Any, n_envs: int = 8, steps: int = 300, seed: int = 0) -> int:
    """Along random trajectories (ended games restarted), the odd envs of every visited state are marked
    terminal and stepped once: each must come back unchanged, terminal, with reward 0, while the even ones
    step as they do unmarked. Returns how many marked (live) states would have changed unmarked."""
    streams = SeedStreams(list(range(n_envs)), _PURPOSE + 1)
    g = torch.Generator().manual_seed(seed)
    state = game.reset(streams.uniform(game.draws_per_reset, dtype=torch.float64))
    marked = torch.arange(n_envs) % 2 == 1
    busy = 0
    for _ in range(steps):
        u = streams.uniform(game.draws_per_step, dtype=torch.float64)
        actions = torch.randint(0, 6, (n_envs,), generator=g)
        frozen = dict(state, terminal=state["terminal"] | marked)
        nxt, reward, terminal = game.step(frozen, actions, u)
        plain, plain_reward, plain_terminal = game.step(state, actions, u)
        for k, v in nxt.items():
            assert torch.equal(v[marked], frozen[k][marked]), f"a terminal game changed its {k}"
            assert torch.equal(v[~marked], plain[k][~marked]), f"marking others terminal changed {k}"
        assert not reward[marked].any() and terminal[marked].all()
        assert torch.equal(reward[~marked], plain_reward[~marked])
        assert torch.equal(terminal[~marked], plain_terminal[~marked])
        moved = torch.zeros(n_envs, dtype=torch.bool)
        for k, v in plain.items():
            moved |= (v != state[k]).flatten(1).any(1) if v.dim() > 1 else v != state[k]
        busy += int((moved & marked & ~state["terminal"]).sum())
        fresh = game.reset(streams.uniform(game.draws_per_reset, dtype=torch.float64))
        state = {k: torch.where(plain_terminal.view(-1, *([1] * (v.dim() - 1))), fresh[k], v)
                 for k, v in plain.items()}
    return busy
