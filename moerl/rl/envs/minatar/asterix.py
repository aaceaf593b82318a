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
"""

from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State, uniform_to_int

SPEC = GameSpec(name="asterix", channels=("player", "enemy", "trail", "gold"), minimal_actions=(0, 1, 2, 3, 4))

#: Rows 1..8 each hold one entity slot.
SLOTS = 8
RAMP_INTERVAL = 100
INIT_SPAWN_INTERVAL = 10
INIT_MOVE_INTERVAL = 5
_PLAYER, _ENEMY, _TRAIL, _GOLD = range(4)


class Asterix:
    """N Asterix games in tensors (rules and random slots in the module docstring).

    State keys, leading dimension N: ``x``/``y`` the player (int64); ``alive``, ``ex``, ``right``, ``gold``
    ``(N, 8)``: entity slot i lives in row i + 1 (bool, int64 column, bool heading right, bool gold);
    ``spawn_interval``, ``spawn_timer``, ``move_interval``, ``move_timer``, ``ramp_timer``, ``ramp_index``
    (int64); ``terminal`` (bool).
    """

    spec = SPEC
    draws_per_reset = 0
    draws_per_step = 3

    def __init__(self, ramping: bool = True) -> None:
        self.ramping = bool(ramping)

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device

        def full(value: int) -> torch.Tensor:
            return torch.full((n,), value, dtype=torch.int64, device=dev)

        no = torch.zeros(n, SLOTS, dtype=torch.bool, device=dev)
        return {
            "x": full(5), "y": full(5),
            "alive": no, "ex": torch.zeros(n, SLOTS, dtype=torch.int64, device=dev), "right": no.clone(),
            "gold": no.clone(),
            "spawn_interval": full(INIT_SPAWN_INTERVAL), "spawn_timer": full(INIT_SPAWN_INTERVAL),
            "move_interval": full(INIT_MOVE_INTERVAL), "move_timer": full(INIT_MOVE_INTERVAL),
            "ramp_timer": full(RAMP_INTERVAL), "ramp_index": full(0),
            "terminal": torch.zeros(n, dtype=torch.bool, device=dev),
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        dev = action.device
        alive, ex, right, gold = state["alive"], state["ex"], state["right"], state["gold"]
        rows = torch.arange(1, SLOTS + 1, device=dev)

        # Spawn: the k-th free row (k drawn) gets the new entity.
        spawn = state["spawn_timer"] == 0
        free = ~alive
        n_free = free.sum(1)
        k = uniform_to_int(u[:, 2], n_free)
        new = free & (free.cumsum(1) - 1 == k[:, None]) & spawn[:, None]
        new_right = (u[:, 0] < 0.5)[:, None]
        alive = alive | new
        ex = torch.where(new, torch.where(new_right, 0, GRID - 1), ex)
        right = torch.where(new, new_right, right)
        gold = torch.where(new, (u[:, 1] < 1 / 3)[:, None], gold)
        spawn_timer = torch.where(spawn, state["spawn_interval"], state["spawn_timer"])

        # The player's move.
        x = torch.where(action == 1, (state["x"] - 1).clamp(min=0),
                        torch.where(action == 3, (state["x"] + 1).clamp(max=GRID - 1), state["x"]))
        y = torch.where(action == 2, (state["y"] - 1).clamp(min=1),
                        torch.where(action == 4, (state["y"] + 1).clamp(max=SLOTS), state["y"]))
        on_row = rows == y[:, None]

        # Contact before the entities move.
        touch = alive & on_row & (ex == x[:, None])
        reward = (touch & gold).sum(1)
        terminal = state["terminal"] | (touch & ~gold).any(1)
        alive = alive & ~(touch & gold)

        # The entities move when the move timer is up; contact again.
        move = state["move_timer"] == 0
        move_timer = torch.where(move, state["move_interval"], state["move_timer"])
        moving = alive & move[:, None]
        ex = torch.where(moving, ex + torch.where(right, 1, -1), ex)
        alive = alive & ~(moving & ((ex < 0) | (ex >= GRID)))
        touch = moving & alive & on_row & (ex == x[:, None])
        reward = reward + (touch & gold).sum(1)
        terminal = terminal | (touch & ~gold).any(1)
        alive = alive & ~(touch & gold)

        spawn_timer = spawn_timer - 1
        move_timer = move_timer - 1
        spawn_interval, move_interval = state["spawn_interval"], state["move_interval"]
        ramp_timer, ramp_index = state["ramp_timer"], state["ramp_index"]
        if self.ramping:
            ramps = (spawn_interval > 1) | (move_interval > 1)
            due = ramps & (ramp_timer < 0)
            move_interval = move_interval - (due & (move_interval > 1) & (ramp_index % 2 == 1)).long()
            spawn_interval = spawn_interval - (due & (spawn_interval > 1)).long()
            ramp_index = ramp_index + due.long()
            ramp_timer = torch.where(due, RAMP_INTERVAL, torch.where(ramps, ramp_timer - 1, ramp_timer))

        done = state["terminal"]  # a terminal game stands still
        nxt = {
            "x": x, "y": y, "alive": alive, "ex": ex, "right": right, "gold": gold,
            "spawn_interval": spawn_interval, "spawn_timer": spawn_timer,
            "move_interval": move_interval, "move_timer": move_timer,
            "ramp_timer": ramp_timer, "ramp_index": ramp_index, "terminal": terminal,
        }
        for key, value in nxt.items():
            old = state[key]
            nxt[key] = torch.where(done.view(-1, *([1] * (old.dim() - 1))), old, value)
        reward = torch.where(done, 0, reward).to(torch.float32)
        return nxt, reward, nxt["terminal"]

    def observe(self, state: State) -> torch.Tensor:
        x, y, alive, ex, right = state["x"], state["y"], state["alive"], state["ex"], state["right"]
        n, dev = x.shape[0], x.device
        c = SPEC.num_channels
        flat = torch.zeros(n * GRID * GRID * c + 1, dtype=torch.bool, device=dev)  # last: a sink for masked cells
        env = torch.arange(n, device=dev)[:, None]
        rows = torch.arange(1, SLOTS + 1, device=dev).expand(n, SLOTS)
        back = ex - torch.where(right, 1, -1)
        kind = torch.where(state["gold"], _GOLD, _ENEMY)
        cells = [
            (env, y[:, None], x[:, None], torch.full_like(x[:, None], _PLAYER), torch.ones_like(alive[:, :1])),
            (env, rows, ex, kind, alive),
            (env, rows, back, torch.full_like(back, _TRAIL), alive & (back >= 0) & (back < GRID)),
        ]
        for e, r, col, ch, mask in cells:
            idx = ((e * GRID + r) * GRID + col) * c + ch
            flat.index_fill_(0, torch.where(mask, idx, flat.numel() - 1).reshape(-1), True)
        return flat[:-1].view(n, GRID, GRID, c)
