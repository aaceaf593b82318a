"""MinAtar Asterix as batched torch dynamics (see :mod:`moerl.rl.envs.minatar.base` for the interface).

The rules, as this module implements them (the ``minatar`` package's game logic, without sticky actions):

* **Board.** The player is one cell, starting at column 5, row 5; it moves one cell per step left, right, up
  or down (``fire`` and ``noop`` do nothing), kept inside columns 0-9 and rows 1-8. Rows 1-8 each hold at
  most one *entity*, an enemy or a piece of gold, travelling left or right; row 0 and row 9 stay empty.
* **Spawning.** A spawn timer counts down from the spawn interval (10 at the start); a step that starts
  with it at 0 spawns an entity and restarts it at the interval. The entity enters at column 0 heading right
  with probability 1/2 (else at column 9 heading left), is gold with probability 1/3 (else an enemy), and
  takes a row drawn uniformly among the rows that are free; with no free row nothing spawns (its direction
  and kind are drawn all the same).
* **Order within a step.** Spawn, then the player's move, then contact: an entity on the player's cell is
  collected if gold (+1, the entity disappears) and ends the episode if an enemy (the step still completes).
  Then, if the move timer is at 0, it restarts at the move interval (5 at the start) and every entity moves
  one cell in its direction, disappearing past the edge; contact is checked again after this move. Both
  timers then count down by one.
* **Difficulty ramp** (the ``ramping`` flag, on by default): while the spawn interval or the move interval
  is above 1, a ramp timer counts down from 100 by one a step; one step after it goes below 0 it restarts at
  100, the spawn interval drops by one (while above 1), the move interval drops by one on every second ramp
  (the odd ones, while above 1) and the ramp index grows by one. So enemies get more frequent and faster.
* **Observation** channels: the player; enemies; each entity's *trail*, the cell behind it (where it came
  from), when that cell is on the board; gold.
* **End.** Only contact with an enemy ends an episode (there is no time limit inside the game); a step of an
  environment already terminal changes nothing and gives no reward.

Random draws, ``draws_per_step = 3`` per environment (``draws_per_reset = 0``: a reset is deterministic):
slot 0, the spawned entity's direction (``u < 1/2``: enters at column 0 heading right); slot 1, its kind
(``u < 1/3``: gold); slot 2, its row (``floor(u * free_rows)``, indexing the free rows from the top). All three
are used only on a step that spawns (slot 2 only when a row is free).

Speed (one CPU thread, about a thousand environments, where the time goes to the number of tensor operations
far more than to their size): the slot tensors are stored slot-major (an ``(N, 8)`` state tensor is the
transpose of a contiguous ``(8, N)`` one, so a reduction over the slots runs along contiguous rows of N) and
the columns are bytes; a terminal game stands still because every change is gated on it being live (no
selection of every field at the end); the observation is one table lookup (a row of four channels per entity slot) and one write. Any memory layout
and integer dtype of the state is accepted (the results are the same); only the speed depends on it.
"""


from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State

SPEC = GameSpec(name="asterix", channels=("player", "enemy", "trail", "gold"), minimal_actions=(0, 1, 2, 3, 4))

#: Rows 1..8 each hold one entity slot.
SLOTS = 8
RAMP_INTERVAL = 100
INIT_SPAWN_INTERVAL = 10
INIT_MOVE_INTERVAL = 5
_PLAYER, _ENEMY, _TRAIL, _GOLD = range(4)
_CELLS = GRID * GRID
_CONSTS: dict[tuple, dict[str, torch.Tensor]] = {}
_ROWS: dict[torch.device, torch.Tensor] = {}


def _rows_table(device: torch.device) -> torch.Tensor:
    """The observation's rows by entity-slot key (below), made once per device: it does not depend on N, and a
    suite whose games' batch sizes change from step to step (MTRL) must not rebuild it per batch size."""
    if device not in _ROWS:
        # A row of the observation (its four channels' cells, channels-first) by the key of the entity slot in
        # it, ``((alive * 2 + gold) * 2 + right) * 12 + column + 1`` (a column in -1..10); key 0, a dead slot,
        # also stands for rows 0 and 9. The player is set apart.
        rows = torch.zeros(2, 2, 2, GRID + 2, 4, GRID, dtype=torch.uint8)
        for gold in range(2):
            for right in range(2):
                for col in range(GRID):
                    rows[1, gold, right, col + 1, _GOLD if gold else _ENEMY, col] = 1
                    back = col - (1 if right else -1)
                    if 0 <= back < GRID:
                        rows[1, gold, right, col + 1, _TRAIL, back] = 1
        _ROWS[device] = rows.view(-1, 4 * GRID).to(device)
    return _ROWS[device]


def _consts(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Constant tensors for N = ``n`` environments (made once; a few kept)."""
    key = (n, device)
    if key not in _CONSTS:
        if len(_CONSTS) >= 16:
            _CONSTS.clear()
        _CONSTS[key] = {
            "rows": _rows_table(device),
            "edge": torch.zeros(n, 1, dtype=torch.int64, device=device),
            "slot_rows": torch.arange(1, SLOTS + 1, device=device)[:, None].expand(SLOTS, n).contiguous(),
            # per action (MinAtar's full set): column move, row move
            "moves": torch.tensor([[0, 0], [-1, 0], [0, -1], [1, 0], [0, 1], [0, 0]], device=device),
            "player": torch.arange(n, device=device) * (4 * _CELLS) + _PLAYER * GRID,
        }
    return _CONSTS[key]


class Asterix:
    """N Asterix games in tensors (rules and random slots in the module docstring).

    State keys, leading dimension N: ``x``/``y`` the player (int64); ``alive``, ``ex``, ``right``, ``gold``
    ``(N, 8)``: entity slot i lives in row i + 1 (bool, int8 column, bool heading right, bool gold; stored
    slot-major); ``spawn_interval``, ``spawn_timer``, ``move_interval``, ``move_timer``, ``ramp_timer``,
    ``ramp_index`` (int64); ``terminal`` (bool). A dead slot's column and flags are left as they were.
    """

    spec = SPEC
    draws_per_reset = 0
    draws_per_step = 3

    def __init__(self, ramping: bool = True) -> None:
        self.ramping = bool(ramping)

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device
        scalars = torch.tensor([5, 5, INIT_SPAWN_INTERVAL, INIT_SPAWN_INTERVAL, INIT_MOVE_INTERVAL, INIT_MOVE_INTERVAL,
                                RAMP_INTERVAL, 0], device=dev)[:, None].expand(8, n).clone()
        flags = torch.zeros(4, SLOTS, n, dtype=torch.bool, device=dev)
        return {
            "x": scalars[0], "y": scalars[1],
            "alive": flags[0].t(), "ex": torch.zeros(SLOTS, n, dtype=torch.int8, device=dev).t(),
            "right": flags[1].t(), "gold": flags[2].t(),
            "spawn_interval": scalars[2], "spawn_timer": scalars[3],
            "move_interval": scalars[4], "move_timer": scalars[5],
            "ramp_timer": scalars[6], "ramp_index": scalars[7],
            "terminal": flags[3, 0],
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        # Slot tensors are worked on slot-major, (8, N); a terminal game stands still because every change
        # is gated on ``live``.
        n, dev = action.shape[0], action.device
        c = _consts(n, dev)
        ended = state["terminal"]
        live = ~ended
        alive, ex, right, gold = state["alive"].t(), state["ex"].t(), state["right"].t(), state["gold"].t()
        u = u.to(torch.float64)

        # Spawn: the k-th free row (k drawn) gets the new entity.
        spawn = (state["spawn_timer"] == 0) & live
        free = ~alive
        k = torch.floor(u[:, 2] * free.sum(0)).long()
        new = free & (free.cumsum(0) == (k + 1)[None]) & spawn[None]
        new_right = u[:, 0] < 0.5
        alive = alive | new
        ex = ex + new * (((~new_right) * (GRID - 1)).to(ex.dtype)[None] - ex)
        right = right ^ ((right ^ new_right[None]) & new)
        gold = gold ^ ((gold ^ (u[:, 1] < 1 / 3)[None]) & new)
        spawn_timer = torch.where(spawn, state["spawn_interval"], state["spawn_timer"])

        # The player's move.
        move = c["moves"][action * live]
        x = (state["x"] + move[:, 0]).clamp_(0, GRID - 1)
        y = (state["y"] + move[:, 1]).clamp_(1, SLOTS)
        here = (c["slot_rows"] == y[None]) & (ex == x[None])

        # Contact before the entities move.
        touch = alive & here
        got = touch & gold
        reward = got.sum(0)
        terminal = ended | (touch ^ got).amax(0)
        alive = alive ^ got

        # The entities move when the move timer is up; contact again.
        moves = (state["move_timer"] == 0) & live
        move_timer = torch.where(moves, state["move_interval"], state["move_timer"])
        moving = alive & moves[None]
        ex = ex + moving * (right.to(ex.dtype) * 2 - 1)
        alive = alive & ~(moving & ((ex < 0) | (ex >= GRID)))
        touch = moving & alive & (c["slot_rows"] == y[None]) & (ex == x[None])
        got = touch & gold
        reward = reward + got.sum(0)
        terminal = terminal | (touch ^ got).amax(0)
        alive = alive ^ got

        step = live.long()
        spawn_timer = spawn_timer - step
        move_timer = move_timer - step
        spawn_interval, move_interval = state["spawn_interval"], state["move_interval"]
        ramp_timer, ramp_index = state["ramp_timer"], state["ramp_index"]
        if self.ramping:
            ramps = ((spawn_interval > 1) | (move_interval > 1)) & live
            due = ramps & (ramp_timer < 0)
            move_interval = move_interval - (due & (move_interval > 1) & (ramp_index % 2 == 1)).long()
            spawn_interval = spawn_interval - (due & (spawn_interval > 1)).long()
            ramp_index = ramp_index + due
            ramp_timer = torch.where(due, RAMP_INTERVAL, ramp_timer - ramps.long())

        nxt = {
            "x": x, "y": y, "alive": alive.t(), "ex": ex.t(), "right": right.t(), "gold": gold.t(),
            "spawn_interval": spawn_interval, "spawn_timer": spawn_timer,
            "move_interval": move_interval, "move_timer": move_timer,
            "ramp_timer": ramp_timer, "ramp_index": ramp_index, "terminal": terminal,
        }
        return nxt, reward.to(torch.float32), terminal

    def observe(self, state: State) -> torch.Tensor:
        """The grids, returned as a channels-last view of ``(N, row, channel, column)`` bytes: each row (its
        four channels) looked up by the key of its entity slot (one ``index_select`` writes them all), then the
        player's cell set through a flat index."""
        n = state["x"].shape[0]
        c = _consts(n, state["x"].device)
        key = ((state["alive"] * 2 + state["gold"]) * 2 + state["right"]) * (GRID + 2) + state["ex"] + 1
        key = torch.cat([c["edge"], key, c["edge"]], 1)  # rows 0 and 9 hold nothing
        obs = torch.empty(n, GRID, 4, GRID, dtype=torch.uint8, device=state["x"].device)
        torch.index_select(c["rows"], 0, key.view(-1), out=obs.view(n * GRID, 4 * GRID))
        obs.view(-1)[c["player"] + state["y"] * (4 * GRID) + state["x"]] = 1
        return obs.view(torch.bool).permute(0, 1, 3, 2)
