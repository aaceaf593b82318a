"""MinAtar Seaquest as batched torch dynamics (see :mod:`moerl.rl.envs.minatar.base` for the interface).

The rules, as this module implements them (the ``minatar`` package's game logic, without sticky actions):

* **The submarine** is two cells: its front, where it is, and its back, the cell behind it given the way it
  faces. It starts at the surface (row 0), column 5, facing left. ``left``/``right`` move it one column
  (within 0-9) and turn it that way; ``up``/``down`` move it one row within rows 0-8. ``fire``, when the gun
  has cooled down (a cooldown at 0; a shot restarts it at 5, and it drops by one each step while above 0),
  launches a torpedo from the submarine's cell heading the way it faces; firing replaces moving.
* **Enemies** are fish or enemy submarines, in rows 1-8. An enemy spawn timer restarts at the spawn interval
  (20 at the start) each time it finds itself at 0, and drops by one a step otherwise; a spawn picks a side
  (1/2: enters at column 0 heading right, else at column 9 heading left), a kind (1/3: a submarine, else a
  fish) and a row (uniform over 1-8), and is cancelled if some enemy in that row heads the other way. Every
  enemy keeps its own move countdown, set to the move interval (5 at the start) when it spawns: a step that
  finds it at 0 moves the enemy one cell and restarts it at the current interval, any other step lowers it
  by one. Enemies leaving the board vanish. Each enemy submarine also has a gun countdown, 10 at spawn: a step
  that finds it at 0 fires a bullet from the submarine's cell (after its move) and restarts it at 10, any
  other step lowers it by one. Enemy bullets move one cell a step the way their submarine faced.
* **Divers** spawn every 30 steps (a timer like the enemies', first spawn at step 30), with a random side
  and row as enemies, and move one cell every 6 steps (countdown 5). The submarine collects a diver by
  sharing its cell (before or after the diver's move) while it carries fewer than 6; collected divers leave.
* **Oxygen** starts at 200 and drops by one each step ending below the surface; a step that starts with it
  at 0 or less ends the episode. **Surfacing** (a step ending in row 0 after having been below): with no
  diver aboard the episode ends; otherwise oxygen is refilled to 200, one diver leaves, and with all 6 aboard
  the player instead scores ``oxygen * 10 // 200`` and all six leave: this leaves the diver count at -1
  (as the package does: from then on surfacing without divers no longer ends the episode, and each surfacing
  lowers the count by one more, until divers collected bring it back to 0). With ``ramping`` (on by default)
  each surfacing also makes the game harder while it can: the enemy spawn interval drops by one (down to 1)
  and, on every second surfacing (odd ramp index), the enemies' move interval drops by one (down to 2).
* **Order within a step**: enemy spawn, diver spawn, the action; then torpedoes (newest first) move one cell
  and each one on the board strikes the oldest fish in its cell, else the oldest enemy submarine (+1 each,
  both removed); divers (newest first: a diver picked up while the submarine has room, else its countdown
  and move, then a second chance to be picked up); enemy submarines then fish (each: touching the submarine
  ends the episode, before or after its move; an enemy that moves onto a torpedo, newest enemy first and
  the oldest torpedo in the cell, destroys it and is destroyed, +1; submarines fire as above, even one that
  just left the board or was destroyed by its move); enemy bullets touching the submarine before or after
  their move end the episode; then the timers, oxygen and surfacing. An episode that ends still completes
  its step; a step of an environment already terminal changes nothing and gives no reward.
* **Observation** channels: submarine front; submarine back; torpedoes; trails (the cell behind each enemy
  and diver, when on the board); enemy bullets; fish; enemy submarines; the oxygen gauge (row 9, the first
  ``oxygen * 10 // 200`` columns); the diver gauge (row 9, one cell per diver aboard, ending at column 8);
  divers.

Fixed slots: the package keeps lists; here torpedoes and divers are 2 slots each, kept in list order (slot 0
the oldest): a torpedo lives at most 9 steps and shots are 5 steps apart, a diver at most 59 steps and
divers spawn 30 steps apart, so 2 of each can be alive. Enemies are ``max_enemies`` slots in any order, each
with its spawn number (the list order): at most 3 are ever alive without ramping (a 59-step life, a spawn
every 20 steps), at most 34 with it (an enemy that only ever moves every 3 steps lives 29 steps and one spawn
happens per step at most; an older one lived through a move interval above 2, while spawns were at least 15
steps apart, so at most 5 of those); the default is 40 with ramping, 4 without. Enemy bullets are two boolean
grids (heading right, heading left): they never interact with anything but the submarine, so two in one cell
heading one way are one. Should a spawn ever find no free slot, it is dropped and ``overflow`` set (not
reachable with the default sizes; the tests check it stays clear).

Spawn numbers stay small: after a step that leaves a game's next number above 64, that game's numbers are
renumbered so that its oldest live enemy has 0 (the order is kept, which is all they are for; a game's
numbers depend on its own history only). An enemy moves at least once every 6 steps (its countdown
restarts at the move interval, at most 5, and the interval never grows) and leaves the board at its 10th
move, so it lives at most 60 steps; with one spawn per step at most, the live enemies' numbers and the next
one are all within 0-61 after a renumbering, so at most 64 when a step starts and 65 within it: bytes, and
under 127 as the strike and meet orders below need.

Random draws, ``draws_per_step = 5`` per environment (``draws_per_reset = 0``): slots 0-2 the enemy spawn's
side (``u < 1/2``: from the left, heading right), kind (``u < 1/3``: a submarine) and row (``1 + floor(8 u)``),
used on steps that spawn an enemy (all three, even when the spawn is cancelled); slots 3-4 the diver spawn's
side and row, used on steps that spawn a diver.

**Layout** (for speed: on one CPU thread the time goes to the number of tensor operations far more than to
their size): the state is a few packed tensors, not one per field, so that a spawn writes all of an enemy's
fields in one select and :func:`~moerl.rl.envs.minatar.base.put_rows_` and :meth:`Seaquest.reset` touch
six tensors (torpedoes and divers share one, so that a step appends to both, and compacts both, in one
pass). :func:`fields` gives the named fields (views). Packed tensors are stored slot-major (their memory is
``(fields, slots, N)``; the state tensor is a permuted view with N leading), so one field of all slots is a
contiguous ``(slots, N)`` block and a reduction over the slots (``amax`` over the first dimension) runs
along contiguous rows of N; they hold bytes. ``torch.where`` on those blocks is avoided (hundreds of
microseconds on ``(40, 1024)``; selections are arithmetic), and so are comparisons of them with a Python
scalar (several times slower than with a ``(1, N)`` row of the same dtype) and arithmetic mixing bools with
bytes (bool masks enter as byte views). Lookup tables replace chains of small operations: the submarine's
move (with the enemy bullets' cells that hit it there), oxygen and surfacing, and the observation's marks.
:meth:`Seaquest.step` and :meth:`Seaquest.observe` make their outputs first (ordinary tensors) and do all
the work in ``torch.inference_mode()``, writing into them, which makes each of the many small operations
cheaper. On the CPU a step works only on the enemy slots up to the last one live in any environment (plus
one for a spawn; the rest are dead and stay as they are), which it reads back from the tensors; likewise it
skips the masks that keep ended games still when none has ended, the difficulty ramp when no game surfaces,
and renumbering when no game needs it. Any memory layout of the state is accepted (the results are the
same); only the speed depends on it.
"""

from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State

SPEC = GameSpec(
    name="seaquest",
    channels=("sub_front", "sub_back", "friendly_bullet", "trail", "enemy_bullet", "enemy_fish", "enemy_sub",
              "oxygen_guage", "diver_guage", "diver"),
    minimal_actions=(0, 1, 2, 3, 4, 5),
)

RAMP_ENEMY_SLOTS = 40
FLAT_ENEMY_SLOTS = 4
MAX_ENEMY_SLOTS = 127  # slot ranks are bytes
_RENUMBER_AT = 64  # spawn numbers are renumbered after a step where some game's next one passes this
TORPEDO_SLOTS = 2
DIVER_SLOTS = 2
MAX_OXYGEN = 200
MAX_DIVERS = 6
INIT_SPAWN_INTERVAL = 20
DIVER_SPAWN_INTERVAL = 30
INIT_MOVE_INTERVAL = 5
SHOT_COOLDOWN = 5
ENEMY_SHOT_INTERVAL = 10
DIVER_MOVE_INTERVAL = 5
(_FRONT, _BACK, _TORPEDO, _TRAIL, _EBULLET, _FISH, _ESUB, _OXYGEN, _DIVER_GAUGE, _DIVER) = range(10)

#: The fields of ``state["sub"]`` (int64): the submarine, the divers aboard and the clocks.
SUB_FIELDS = ("x", "y", "facing_right", "oxygen", "divers", "shot_timer", "surfaced", "e_spawn_interval",
              "e_spawn_timer", "d_spawn_timer", "move_interval", "ramp_index", "next_seq")
_SUB_START = (5, 0, 0, MAX_OXYGEN, 0, 0, 1, INIT_SPAWN_INTERVAL, INIT_SPAWN_INTERVAL, DIVER_SPAWN_INTERVAL,
              INIT_MOVE_INTERVAL, 0, 0)
#: The fields of ``state["enemies"]`` (int8) and of ``state["objects"]`` (int8: the torpedoes' slots 0-1, without a
#: countdown, and the divers' slots 2-3, each pair in list order).
ENEMY_FIELDS = ("e_alive", "e_x", "e_y", "e_right", "e_sub", "e_timer", "e_gun", "e_seq")
TORPEDO_FIELDS = ("t_alive", "t_x", "t_y", "t_right")
DIVER_FIELDS = ("d_alive", "d_x", "d_y", "d_right", "d_timer")
OBJECT_FIELDS = ("alive", "x", "y", "right", "timer")
_FLAGS = ("e_alive", "e_right", "e_sub", "t_alive", "t_right", "d_alive", "d_right")
#: Where the observation paints what is not drawn: a cell of the oxygen gauge's row, written after painting.
_SINK = _OXYGEN * GRID * GRID + (GRID - 1) * GRID
_CELLS = GRID * GRID
_I8, _U8, _I64 = torch.int8, torch.uint8, torch.int64
_CONSTS: dict[tuple, dict[str, torch.Tensor]] = {}
_TABLES: dict[torch.device, dict[str, torch.Tensor]] = {}
# The observation's marks table: sections by object (keys in each: see ``_tables``) -> two cells to set.
_MARK_SUB = 0  # (row * 10 + column) * 2 + facing right
_MARK_TORPEDO = _MARK_SUB + 2 * _CELLS  # (alive * 10 + row) * 12 + column + 1
_MARK_DIVER = _MARK_TORPEDO + 2 * GRID * (GRID + 2)  # ((alive * 2 + right) * 10 + row) * 12 + column + 1
_MARK_ENEMY = _MARK_DIVER + 4 * GRID * (GRID + 2)  # (((alive * 2 + sub) * 2 + right) * 10 + row) * 12 + col + 1
_MARK_KEYS = _MARK_ENEMY + 8 * GRID * (GRID + 2)


def _device_tables(device: torch.device) -> dict[str, torch.Tensor]:
    """The lookup tables (:func:`_tables`) on ``device``, made once per device: they do not depend on N, and
    making them takes ~0.1 s (Python loops), which a suite whose games' batch sizes change from step to step
    (MTRL: the environments in each game) must not pay per batch size."""
    if device not in _TABLES:
        _TABLES[device] = {name: value.to(device) for name, value in _tables().items()}
    return _TABLES[device]


def _consts(n: int, k: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Constant tensors for N = ``n`` environments and ``k`` enemy slots (made once; a few kept), with the
    lookup tables of :func:`_device_tables`."""
    key = (n, k, device)
    if key not in _CONSTS:
        if len(_CONSTS) >= 16:
            _CONSTS.clear()
        cols = torch.arange(_CELLS, device=device) % GRID

        def row(value: int, dtype: torch.dtype = _I8) -> torch.Tensor:
            return torch.full((n,), value, dtype=dtype, device=device)

        _CONSTS[key] = {
            # rows of N (comparisons of (slots, N) blocks with (1, N) rows are fast, with scalars slow)
            "zero": row(0)[None], "ten": row(GRID, _U8)[None], "one": row(1), "five": row(DIVER_MOVE_INTERVAL),
            "gun": row(ENEMY_SHOT_INTERVAL),
            # (k, N): k - slot, whose largest value over the free slots marks the first free slot
            "first": torch.arange(k, 0, -1, dtype=_I8, device=device)[:, None].expand(k, n).contiguous(),
            "slot": torch.arange(2, dtype=_I8, device=device)[None, :, None].expand(2, 2, n).contiguous(),
            # the draws: sides and kind (slots 0, 1, 3) are u < these; a spawn column is 9 * (1 - side)
            "draws": torch.tensor([[0.5, 1 / 3, 0.0, 0.5, 0.0]], dtype=torch.float64, device=device),
            "nine": torch.full((1, 5), GRID - 1, dtype=_I8, device=device),
            # the submarine's key in the move tables: x * 2 + y * 20 + facing right (+ 200 * action)
            "move_key": torch.tensor([[2], [2 * GRID], [1]], device=device),
            # bullet grids (right, left) moving one cell: the right grid's column 0 and the left's 9 empty
            "shift_keep": torch.cat([cols != 0, cols != GRID - 1]).to(_U8)[None],
            "ones": torch.ones(n, 2 * (1 + TORPEDO_SLOTS + DIVER_SLOTS + k), dtype=_U8, device=device),
            # the observation's keys of the objects' and enemies' slots (see ``_tables``; float32, exact for these
            # small integers and faster than int64): weights, and offsets after the submarine's key (0)
            "slot_key": torch.tensor([[(GRID + 2) * GRID] * 2 + [2 * (GRID + 2) * GRID] * 2 + [4 * (GRID + 2) * GRID] * k,
                                      [1] * (4 + k), [GRID + 2] * (4 + k),
                                      [0] * 2 + [(GRID + 2) * GRID] * (2 + k), [0] * 4 + [2 * (GRID + 2) * GRID] * k],
                                     dtype=torch.float32, device=device)[:, :, None],
            "slot_base": torch.tensor([[0] + [_MARK_TORPEDO + 1] * 2 + [_MARK_DIVER + 1] * 2 + [_MARK_ENEMY + 1] * k],
                                      dtype=torch.float32, device=device),
            **_device_tables(device),
        }
    return _CONSTS[key]


def _move_tables() -> dict[str, torch.Tensor]:
    """The submarine after an action, by ``((action * 10 + row) * 10 + column) * 2 + facing right``: ``moved``
    (4, 1200) int64 rows column, row, facing right and ``row * 8 + 1`` (its part of the surfacing key, see
    :func:`_surface_table`); ``moved8`` (4, 1200) int8 column, row, facing right and cell; ``touch`` (1200, 4)
    the cells of the two enemy bullet grids ``(N, 200)`` that hit it: heading right, at its cell or the one
    to the left (moving in), heading left, at its cell or the one to the right (repeats where none)."""
    moves = ((0, 0, -1), (-1, 0, 0), (0, -1, -1), (1, 0, 1), (0, 1, -1), (0, 0, -1))  # column, row, facing after
    out = torch.zeros(5, len(moves) * GRID * GRID * 2, dtype=torch.int64)
    touch = torch.zeros(out.shape[1], 4, dtype=torch.int64)
    for action, (dx, dy, face) in enumerate(moves):
        for row in range(GRID):
            for col in range(GRID):
                for right in range(2):
                    x, y = min(max(col + dx, 0), GRID - 1), min(max(row + dy, 0), GRID - 2)
                    key = ((action * GRID + row) * GRID + col) * 2 + right
                    cell = y * GRID + x
                    out[:, key] = torch.tensor([x, y, right if face < 0 else face, y * 8 + 1, cell])
                    touch[key] = torch.tensor([cell, cell - (x > 0), _CELLS + cell, _CELLS + cell + (x < GRID - 1)])
    return {"moved": out[:4].contiguous(), "moved8": out[[0, 1, 2, 4]].to(_I8), "touch": touch}


def _surface_table() -> torch.Tensor:
    """Oxygen and surfacing by ``(live * 2 + surfaced) * 80 + row * 8 + divers aboard + 1`` (the row after the
    action; divers clamped to -1..6: below 0 all count alike): ``(6, 320)`` int64 rows: what oxygen becomes
    as ``oxygen * keep + set`` (keep 0, set 200 on surfacing; keep 1, set -1 a step ending below), keep,
    1000 where the step ends the game by surfacing with no diver (so that ``this >= oxygen`` also covers
    oxygen at 0 or less), the change of the divers aboard, surfaced after, and 1 where all six pay out."""
    out = torch.zeros(6, 2, 2, GRID, 8, dtype=torch.int64)
    for live in range(2):
        for surfaced in range(2):
            for row in range(GRID):
                for divers in range(-1, 7):
                    below = live and row > 0
                    arrives = live and row == 0 and not surfaced
                    surfaces = arrives and divers != 0
                    full = surfaces and divers == MAX_DIVERS
                    out[:, live, surfaced, row, divers + 1] = torch.tensor([
                        MAX_OXYGEN if surfaces else -int(below), 0 if surfaces else 1,
                        1000 if arrives and divers == 0 else 0, (-MAX_DIVERS - 1 if full else -1) if surfaces else 0,
                        int((surfaced or surfaces) and not below), int(full)])
    return out.view(6, -1)


def _tables() -> dict[str, torch.Tensor]:
    """The observation's and the submarine's lookup tables (see :meth:`Seaquest.observe`, :func:`_move_tables`)."""
    cells = torch.full((_MARK_KEYS, 2), _SINK, dtype=torch.int64)

    def put(key: int, slot: int, channel: int, row: int, col: int) -> None:
        if 0 <= col < GRID:
            cells[key, slot] = channel * _CELLS + row * GRID + col

    for row in range(GRID):
        for col in range(-1, GRID + 1):
            for right in range(2):
                back = col - (1 if right else -1)
                if 0 <= col < GRID:
                    put(_MARK_SUB + (row * GRID + col) * 2 + right, 0, _FRONT, row, col)
                    put(_MARK_SUB + (row * GRID + col) * 2 + right, 1, _BACK, row, back)
                key = row * (GRID + 2) + col + 1
                put(_MARK_TORPEDO + (GRID + 2) * GRID + key, 0, _TORPEDO, row, col)  # alive
                put(_MARK_DIVER + (2 + right) * (GRID + 2) * GRID + key, 0, _DIVER, row, col)
                put(_MARK_DIVER + (2 + right) * (GRID + 2) * GRID + key, 1, _TRAIL, row, back)
                for sub in range(2):
                    enemy = _MARK_ENEMY + (4 + sub * 2 + right) * (GRID + 2) * GRID + key
                    put(enemy, 0, _FISH + sub, row, col)
                    put(enemy, 1, _TRAIL, row, back)
    # the two gauges' row 9 (oxygen, divers) by ``oxygen * 12 + divers aboard + 1`` (clamped to 0..200, -1..10)
    gauges = torch.zeros(MAX_OXYGEN + 1, GRID + 2, 2, GRID, dtype=torch.uint8)
    for oxygen in range(MAX_OXYGEN + 1):
        gauges[oxygen, :, 0, :oxygen * 10 // MAX_OXYGEN] = 1
    for aboard in range(-1, GRID + 1):
        gauges[:, aboard + 1, 1, max(0, GRID - 1 - aboard):GRID - 1] = 1
    return {**_move_tables(), "surface": _surface_table(), "marks": cells, "gauges": gauges.view(-1, 2 * GRID),
            # the submarine's key (x, y, facing right) and the gauges' (oxygen, divers aboard, both clamped) as
            # ``sub_bias + sub_key @ clamp(fields 0-4)`` in float32
            "sub_key": torch.tensor([[2.0, GRID * 2, 1, 0, 0], [0, 0, 0, GRID + 2, 1]]),
            "sub_bias": torch.tensor([[0.0], [1]]),
            "sub_low": torch.tensor([[0], [0], [0], [0], [-1]]),
            "sub_high": torch.tensor([[GRID - 1], [GRID - 1], [1], [MAX_OXYGEN], [GRID]])}


def _packed(shape: tuple[int, ...], n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An ``(N, *shape)`` zero tensor stored as ``(*shape, N)``."""
    return torch.zeros(*shape, n, dtype=dtype, device=device).movedim(-1, 0)


def _rows(packed: torch.Tensor) -> torch.Tensor:
    """The slot-major block ``(*shape, N)`` of an ``(N, *shape)`` packed state tensor (a view)."""
    return packed.movedim(0, -1)


def fields(state: State) -> State:
    """The named fields of a Seaquest state, each a view of its packed tensor (writing one writes the state):
    the submarine and clocks ``x``, ``y``, ``facing_right`` (0/1), ``oxygen``, ``divers`` (aboard),
    ``shot_timer``, ``surfaced`` (0/1), ``e_spawn_interval``, ``e_spawn_timer``, ``d_spawn_timer``,
    ``move_interval``, ``ramp_index``, ``next_seq`` ``(N,)`` int64; enemies ``e_alive``, ``e_x``, ``e_y``,
    ``e_right``, ``e_sub``, ``e_timer``, ``e_gun``, ``e_seq`` ``(N, max_enemies)``; torpedoes ``t_alive``,
    ``t_x``, ``t_y``, ``t_right`` and divers ``d_alive``, ``d_x``, ``d_y``, ``d_right``, ``d_timer``
    ``(N, 2)``, in list order (flags as bool, numbers as int8); enemy bullets ``b_right``, ``b_left``
    ``(N, 10, 10)`` bool; ``terminal`` and ``overflow`` ``(N,)`` bool."""
    out = {name: state["sub"][:, i] for i, name in enumerate(SUB_FIELDS)}
    for key, names, slots in (("enemies", ENEMY_FIELDS, slice(None)), ("objects", TORPEDO_FIELDS, slice(0, 2)),
                              ("objects", DIVER_FIELDS, slice(2, 4))):
        for i, name in enumerate(names):
            value = state[key][:, i, slots]
            out[name] = value.view(torch.bool) if name in _FLAGS else value
    out["b_right"], out["b_left"] = state["bullets"].unbind(1)
    out["terminal"], out["overflow"] = state["terminal"], state["overflow"]
    return out


def _width(alive: torch.Tensor) -> int:
    """How many enemy slots, from the first, a step must work on: up to the last live one in any environment
    (``alive`` ``(k, N)`` int8), plus one for a spawn. All of them off the CPU
    (reading the number back would wait for the device)."""
    k = alive.shape[0]
    if alive.device.type != "cpu":
        return k
    used = alive.amax(1).tolist()
    last = next((i for i in range(k - 1, -1, -1) if used[i]), -1)
    return min(k, last + 2)


def _compact(block: torch.Tensor, out: torch.Tensor) -> None:
    """Pairs of slots ``(fields, pairs, 2, N)`` (field 0 ``alive``) in list order again after removals, into
    ``out``: where only the second of a pair is live, the two swap (which also leaves the right alive flags)."""
    shift = block[0, :, 1] > block[0, :, 0]
    d = (block[:, :, 1] - block[:, :, 0]) * shift.view(_I8)
    torch.add(block, torch.stack([d, -d], 2), out=out)


class Seaquest:
    """N Seaquest games in tensors (rules, slot sizes, random slots and layout in the module docstring).

    State keys, leading dimension N: ``sub`` ``(N, 13)`` int64 (the fields :data:`SUB_FIELDS`); ``enemies``
    ``(N, 8, max_enemies)`` int8 (:data:`ENEMY_FIELDS`: alive, column, row, heading right, a submarine (else
    a fish), move countdown, gun countdown, spawn number); ``objects`` ``(N, 5, 4)`` int8
    (:data:`OBJECT_FIELDS`: alive, column, row, heading right, move countdown; slots 0-1 the torpedoes,
    :data:`TORPEDO_FIELDS`, with no countdown, slots 2-3 the divers, :data:`DIVER_FIELDS`, each pair in list
    order); ``bullets`` ``(N, 2, 10, 10)`` bool (heading right, heading left; row, column); ``terminal``,
    ``overflow`` ``(N,)`` bool. :func:`fields` names them all. A dead slot's fields are whatever a step left
    there (only alive counts).

    Args:
        ramping: MinAtar's difficulty ramp (on by default, as in the package).
        max_enemies: enemy slots (up to 127); default 40 with ramping, 4 without (enough for every reachable
            state, see the module docstring). Fewer may overflow in long, ramped games.
    """

    spec = SPEC
    draws_per_reset = 0
    draws_per_step = 5

    def __init__(self, ramping: bool = True, max_enemies: int | None = None) -> None:
        self.ramping = bool(ramping)
        self.max_enemies = int(max_enemies or (RAMP_ENEMY_SLOTS if self.ramping else FLAT_ENEMY_SLOTS))
        if not 1 <= self.max_enemies <= MAX_ENEMY_SLOTS:
            raise ValueError(f"max_enemies must be in 1..{MAX_ENEMY_SLOTS}, not {self.max_enemies}")

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device
        no = torch.zeros(2, n, dtype=torch.bool, device=dev)
        return {
            "sub": torch.tensor(_SUB_START, dtype=_I64, device=dev)[:, None].expand(len(_SUB_START), n).clone().t(),
            "enemies": _packed((len(ENEMY_FIELDS), self.max_enemies), n, _I8, dev),
            "objects": _packed((len(OBJECT_FIELDS), TORPEDO_SLOTS + DIVER_SLOTS), n, _I8, dev),
            "bullets": torch.zeros(n, 2, GRID, GRID, dtype=torch.bool, device=dev),
            "terminal": no[0], "overflow": no[1],
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        # The outputs are made here, ordinary tensors, and written in inference mode, where the many small
        # tensor operations in between cost less (see the module docstring).
        n, dev = action.shape[0], action.device
        _consts(n, self.max_enemies, dev)  # made outside inference mode: kept for later calls
        out = {"sub": torch.empty(len(SUB_FIELDS), n, dtype=_I64, device=dev),
               "enemies": torch.empty(len(ENEMY_FIELDS), self.max_enemies, n, dtype=_I8, device=dev),
               "objects": torch.empty(len(OBJECT_FIELDS), 2, 2, n, dtype=_I8, device=dev),
               "bullets": torch.empty(n, 2 * _CELLS, dtype=_U8, device=dev),
               "terminal": torch.empty(n, dtype=torch.bool, device=dev),
               "overflow": torch.empty(n, dtype=torch.bool, device=dev),
               "reward": torch.empty(n, dtype=torch.float32, device=dev)}
        with torch.inference_mode():
            self._advance(state, action, u, out)
        nxt = {"sub": out["sub"].t(), "enemies": out["enemies"].permute(2, 0, 1),
               "objects": out["objects"].view(len(OBJECT_FIELDS), 4, n).permute(2, 0, 1),
               "bullets": out["bullets"].view(torch.bool).view(n, 2, GRID, GRID), "terminal": out["terminal"],
               "overflow": out["overflow"]}
        return nxt, out["reward"], out["terminal"]

    def _advance(self, state: State, action: torch.Tensor, u: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        """One step, written into ``out`` (see :meth:`step`). A terminal game stands still because every change
        below is gated on ``live`` (no action, no spawn, nothing moves), not by a selection at the end. Written
        for few tensor operations (see the module docstring): masks stay bool, int8 blocks take bool factors
        directly, in-place where the tensor is new."""
        n, dev = action.shape[0], action.device
        c = _consts(n, self.max_enemies, dev)
        zero, b8 = c["zero"], torch.bool
        sub = _rows(state["sub"])
        (x, y, facing, oxygen, aboard, shot_timer, surfaced, e_interval, e_clock, d_clock, move_interval, ramp_index,
         next_seq) = sub.unbind(0)
        ended = state["terminal"]
        live = ~ended
        # On the CPU, when no game has ended (as where a caller resets them before stepping), the masks by
        # ``live`` are skipped: they would change nothing.
        gated = dev.type != "cpu" or bool(ended.any())
        u = u.to(torch.float64)
        side = (u < c["draws"]).view(_I8)  # (N, 5): 0 the enemy enters from the left, 1 it is a sub, 3 the diver..
        spawn_x = torch.addcmul(c["nine"], c["nine"], side, value=-1)  # .. and their columns (0 and 3)
        rows = (u * 8).to(_I8).add_(1)  # (N, 5): 2 the enemy's row, 4 the diver's (truncation is floor here)
        mi8 = move_interval.to(_I8)

        # The submarine moves (firing replaces moving: the torpedo below starts where it is).
        if gated:
            action = action * live
        key = (sub[:3] * c["move_key"]).sum(0).add_(action, alpha=2 * _CELLS)
        x, y, facing, surface_key = c["moved"].index_select(1, key).unbind(0)
        x8, y8, facing8, sub_cell = c["moved8"].index_select(1, key)[:, None].unbind(0)  # (1, N) each

        # Enemy spawn (its three draws are taken whenever it is due, even if cancelled) into the first free slot.
        # The next state's enemies are a copy updated in place; slots from k on are dead and stay as they are.
        enemies = out["enemies"]
        enemies.copy_(_rows(state["enemies"]))
        k = _width(enemies[0])
        block = enemies[:, :k]
        alive8, ex, ey, eright, esub, etimer, egun, eseq = block.unbind(0)
        alive = alive8.view(b8)
        row = rows[:, 2]
        due = (e_clock == 0) & live if gated else e_clock == 0
        clash = (alive & (ey == row[None]) & (eright != side[:, 0][None])).amax(0)
        rank = c["first"][:k] & (alive8 - 1)  # k - slot where free, else 0
        best = rank.amax(0)
        spawn = due & ~clash
        room = best != 0
        overflow = state["overflow"] | (spawn & ~room)
        spawn = spawn & room
        new = (rank == best[None]) & spawn[None]
        values = torch.stack([c["one"], spawn_x[:, 0], row, side[:, 0], side[:, 1], mi8, c["gun"], next_seq.to(_I8)])
        block.addcmul_(new.view(_I8)[None], values[:, None] - block)
        alive = alive.clone()  # the flags are worked on apart and written back at the end
        next_seq = next_seq + spawn
        e_clock = torch.where(due, e_interval, e_clock)

        # The action's torpedo and the diver spawn, each appended after the live ones of its pair (list order).
        objects = _rows(state["objects"]).view(len(OBJECT_FIELDS), 2, 2, n)  # (fields, torpedoes/divers, 2, N)
        due = (d_clock == 0) & live if gated else d_clock == 0
        fire = (action == 5) & (shot_timer == 0)
        adds = torch.stack([fire, due])
        torch.bitwise_or(overflow, (adds & objects[0, :, 1].view(b8)).amax(0), out=out["overflow"])
        put = (c["slot"] == objects[0].sum(1, dtype=_I8)[:, None]) & adds[:, None]
        values = torch.stack([c["one"], c["one"], x8[0], spawn_x[:, 3], y8[0], rows[:, 4], facing8[0], side[:, 3],
                              c["zero"][0], c["five"]]).view(len(OBJECT_FIELDS), 2, 1, n)
        objects = torch.addcmul(objects, put.view(_I8)[None], values - objects)
        d_clock = torch.where(due, DIVER_SPAWN_INTERVAL, d_clock)
        shot_timer = torch.where(fire, SHOT_COOLDOWN, shot_timer)

        # Torpedoes move; newest first, each on the board strikes the oldest fish, else the oldest sub, in its
        # cell. Strike order (bytes): fish 255 - seq, subs 127 - seq; the largest is the victim. A torpedo
        # off the board or not flying aims at cell -1, where no enemy is.
        t_alive, t_x, t_y, t_right, t_timer = objects[:, 0].unbind(0)
        flying = t_alive.view(b8) & live[None] if gated else t_alive.view(b8)
        t_x = t_x + flying.view(_I8) * (t_right + t_right - 1)
        flying = flying & (t_x.view(_U8) < GRID)  # -1 is 255 as a byte
        t_cell = t_y * GRID + t_x
        target = torch.where(flying, t_cell, -1)[:, None]  # (2, 1, N)
        e_cell = ey * GRID + ex
        esub_u, eseq_u = esub.view(_U8), eseq.view(_U8)
        meet_order = esub_u * 128 + eseq_u + 1  # (for the meets below) subs first, then the newest
        order = -meet_order  # 256 - it as bytes: 255 - seq for fish, 127 - seq for subs
        tops: list[torch.Tensor] = []
        for j in reversed(range(TORPEDO_SLOTS)):
            there = alive & (e_cell == target[j])
            score = order * there.view(_U8)
            top = score.amax(0, keepdim=True)
            alive = alive ^ (there & (score == top))
            tops.append(top)
        hit = torch.cat(tops[::-1]) != 0
        t_alive = (flying & ~hit) | (t_alive.view(b8) & ended[None]) if gated else flying & ~hit
        reward = hit.sum(0)

        # Divers, newest first: picked up (room permitting) before or after their move.
        # Each diver is picked up if it is in the submarine's cell before its move, or moves into it (a diver
        # picked up before its move would have moved only where it is gone anyway); the newest (slot 1) first,
        # so with room for one only, slot 0 is picked when slot 1 is not. A diver left swims: its countdown
        # drops, or it moves and its countdown restarts (what is left in a freed slot does not matter).
        d_alive, d_x, d_y, d_right, d_timer = objects[:, 1].unbind(0)
        swimming = d_alive.view(b8) & live[None] if gated else d_alive.view(b8)
        stepped = d_x + d_right + d_right - 1
        leaves = stepped.view(_U8) >= GRID
        moves = swimming & (d_timer == zero)
        there = (d_x == x8) | (moves & (stepped == x8) & ~leaves)
        found = swimming & there & (d_y == y8)
        room = aboard < MAX_DIVERS
        picks = found & room[None]
        picks[0] &= (aboard < MAX_DIVERS - 1) | ~found[1]
        aboard = aboard + picks.sum(0)
        d_timer = d_timer - swimming.view(_I8) + moves.view(_I8) * (DIVER_MOVE_INTERVAL + 1)
        d_x = d_x + moves.view(_I8) * (stepped - d_x)
        d_alive = d_alive.view(b8) & ~(picks | (moves & leaves))

        # Enemies (subs, then fish): touch before and after the move, move, meet torpedoes, subs fire.
        acting = alive & live[None] if gated else alive
        touch = acting & (e_cell == sub_cell)
        moves = acting & (etimer == zero)
        step = moves.view(_I8) * (eright + eright - 1)
        etimer -= acting.view(_I8)
        etimer.addcmul_(moves.view(_I8), (mi8 + 1)[None])
        ex += step
        e_cell = e_cell + step
        gone = moves & (ex.view(_U8) >= c["ten"])  # -1 is 255 as a byte
        stays = moves ^ gone  # (gone is within moves, moves within acting, acting within alive)
        meets = stays & (e_cell != sub_cell)
        terminal = ended | (touch | (stays ^ meets)).amax(0)
        shooting = acting & esub.view(b8)
        shoots = shooting & (egun == zero)
        egun -= shooting.view(_I8)
        egun.add_(shoots.view(_I8), alpha=ENEMY_SHOT_INTERVAL + 1)
        shoots = shoots & ~gone  # even a sub destroyed below fires; one past the edge never reaches the board
        alive = alive ^ gone
        order = meet_order
        target = torch.where(t_alive, t_cell, -1)[:, None]
        tops = []
        for j in range(TORPEDO_SLOTS):
            there = meets & alive & (e_cell == target[j])
            score = order * there.view(_U8)
            top = score.amax(0, keepdim=True)
            alive = alive ^ (there & (score == top))
            tops.append(top)
        hit = torch.cat(tops) != 0
        t_alive = t_alive & ~hit
        reward = reward + hit.sum(0)

        # Enemy bullets, (N, 200) bytes (right grid, left grid): the new ones join; all touch the submarine
        # before or after moving one cell (in place: fresh (N, 200) tensors cost more than the operations).
        old = state["bullets"].reshape(n, 2 * _CELLS).view(_U8)
        # An enemy's cell is in 9..90: the right grid's cell, or the left grid's (+100) for one heading left.
        where = torch.addcmul(e_cell, eright, eright, value=-_CELLS).t().long().add_(_CELLS)
        grid = old.clone()
        grid.scatter_reduce_(1, where, shoots.view(_U8).t(), reduce="amax")
        terminal = terminal | grid.gather(1, c["touch"].index_select(0, key)).amax(1).view(b8)
        after = out["bullets"]
        after[:, 1:_CELLS] = grid[:, :_CELLS - 1]
        after[:, _CELLS:-1] = grid[:, _CELLS + 1:]
        after &= c["shift_keep"]
        if gated:  # a terminal game keeps its bullets
            after.sub_(old).mul_(live.view(_U8)[:, None]).add_(old)

        # Clocks, oxygen, surfacing (from :func:`_surface_table`; the ramp only where some game surfaces).
        clocks = torch.stack([e_clock, d_clock, shot_timer])
        surface_key = (surface_key + aboard.clamp(-1, MAX_DIVERS)).add_(surfaced, alpha=2 * 40)
        if gated:
            live64 = live.long()
            clocks = clocks - clocks.clamp(max=live64)
            surface_key.add_(live64, alpha=2 * 80)
        else:
            clocks = clocks - clocks.clamp(max=1)
            surface_key.add_(2 * 80)
        o_set, o_keep, ends, d_aboard, surfaced, full = c["surface"].index_select(1, surface_key).unbind(0)
        torch.bitwise_or(terminal, ends >= oxygen, out=out["terminal"])
        reward = torch.addcmul(reward, full, oxygen.div(MAX_OXYGEN // 10, rounding_mode="floor"))
        aboard = aboard + d_aboard
        oxygen = torch.addcmul(o_set, oxygen, o_keep)
        if self.ramping and (dev.type != "cpu" or int(o_keep.amin()) == 0):
            ramps = (o_keep == 0) & ((e_interval > 1) | (move_interval > 2))
            move_interval = move_interval - (ramps & (move_interval > 2) & (ramp_index % 2 == 1)) * 1
            e_interval = e_interval - (ramps & (e_interval > 1)) * 1
            ramp_index = ramp_index + ramps

        # A game's spawn numbers are renumbered from its oldest live enemy (0) when its next one passes
        # _RENUMBER_AT (the CPU skips the work when none does); a terminal game keeps its own.
        if dev.type != "cpu" or int(next_seq.max()) > _RENUMBER_AT:
            first = (torch.minimum(eseq_u.masked_fill(~alive, 255).amin(0), next_seq.to(_U8))
                     * (live & (next_seq > _RENUMBER_AT)))
            eseq_u -= first[None]
            next_seq = next_seq - first
        alive8.copy_(alive)

        torch.stack([x, y, facing, oxygen, aboard, clocks[2], surfaced, e_interval, clocks[0], clocks[1],
                     move_interval, ramp_index, next_seq], out=out["sub"])
        _compact(torch.stack([t_alive.view(_I8), d_alive.view(_I8), t_x, d_x, t_y, d_y, t_right, d_right, t_timer,
                              d_timer]).view(len(OBJECT_FIELDS), 2, 2, n), out["objects"])
        out["reward"].copy_(reward)

    def observe(self, state: State) -> torch.Tensor:
        """The grids, built channels-first and returned as a channels-last view (a network's
        ``permute(0, 3, 1, 2)`` back to channels-first is then free). Each object (the submarine, torpedoes,
        divers, enemies) makes a key of its fields, a table gives the cells it sets (itself and its trail or
        back, or the sink for none), and one scatter sets them all; the bullets are copied, and a second table
        gives the gauges' row. Like :meth:`step`, it writes its output (made first) in inference mode."""
        n, dev = state["terminal"].shape[0], state["terminal"].device
        c = _consts(n, self.max_enemies, dev)
        obs = torch.zeros(n, SPEC.num_channels * _CELLS, dtype=_U8, device=dev)
        with torch.inference_mode():
            self._paint(state, obs, c)
        return obs.view(torch.bool).view(n, SPEC.num_channels, GRID, GRID).permute(0, 2, 3, 1)

    def _paint(self, state: State, obs: torch.Tensor, c: dict[str, torch.Tensor]) -> None:
        n = obs.shape[0]
        sub = _rows(state["sub"])
        every = _rows(state["enemies"])
        k = _width(every[0])
        sub_keys = torch.addmm(c["sub_bias"], c["sub_key"], sub[:5].clamp(c["sub_low"], c["sub_high"]).float())
        slots = torch.cat([_rows(state["objects"]), every[:5, :k]], 1).float()  # (5, 4 + k, N)
        keys = torch.cat([sub_keys[:1].t(), slots.mul_(c["slot_key"][:, :4 + k]).sum(0).t()], 1)
        marks = c["marks"].index_select(0, keys.add_(c["slot_base"][:, :5 + k]).long().view(-1)).view(n, -1)
        obs.scatter_(1, marks, c["ones"][:, :marks.shape[1]])
        bullets = state["bullets"].reshape(n, 2, _CELLS).view(_U8)
        torch.bitwise_or(bullets[:, 0], bullets[:, 1], out=obs[:, _EBULLET * _CELLS:(_EBULLET + 1) * _CELLS])
        grids = obs.view(n, SPEC.num_channels, GRID, GRID)  # the gauges' row (over the sink)
        grids[:, _OXYGEN:_DIVER_GAUGE + 1, GRID - 1] = c["gauges"].index_select(0, sub_keys[1].long()).view(n, 2, GRID)
