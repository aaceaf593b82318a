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

Random draws, ``draws_per_step = 5`` per environment (``draws_per_reset = 0``): slots 0-2 the enemy spawn's
side (``u < 1/2``: from the left, heading right), kind (``u < 1/3``: a submarine) and row (``1 + floor(8 u)``),
used on steps that spawn an enemy (all three, even when the spawn is cancelled); slots 3-4 the diver spawn's
side and row, used on steps that spawn a diver.
"""

from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State, uniform_to_int

SPEC = GameSpec(
    name="seaquest",
    channels=("sub_front", "sub_back", "friendly_bullet", "trail", "enemy_bullet", "enemy_fish", "enemy_sub",
              "oxygen_guage", "diver_guage", "diver"),
    minimal_actions=(0, 1, 2, 3, 4, 5),
)

RAMP_ENEMY_SLOTS = 40
FLAT_ENEMY_SLOTS = 4
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


def _step_dir(right: torch.Tensor) -> torch.Tensor:
    return torch.where(right, 1, -1)


def _on_board(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0) & (x < GRID)


def _compact2(cols: dict[str, torch.Tensor], alive_key: str) -> dict[str, torch.Tensor]:
    """Two slots in list order again after removals: where only the second is live, it moves to the first."""
    alive = cols[alive_key]
    shift = ~alive[:, 0] & alive[:, 1]
    out = {k: torch.stack([torch.where(shift, v[:, 1], v[:, 0]), v[:, 1]], 1) for k, v in cols.items()}
    out[alive_key] = torch.stack([alive[:, 0] | alive[:, 1], alive[:, 0] & alive[:, 1]], 1)
    return out


def _best(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: whether some slot has a positive ``score`` (int64), and the slot of the largest ``(N, 1)``."""
    value, slot = score.max(1, keepdim=True)
    return value[:, 0] > 0, slot


def _clear(flags: torch.Tensor, slot: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """``flags`` with ``flags[i, slot[i]]`` cleared in the rows of ``where`` (one gather and one scatter, not a
    pass over every slot)."""
    return flags.scatter(1, slot, flags.gather(1, slot) & ~where[:, None])


class Seaquest:
    """N Seaquest games in tensors (rules, slot sizes and random slots in the module docstring).

    State keys, leading dimension N, int64 unless said: the submarine ``x``, ``y``, ``facing_right`` (bool),
    ``oxygen``, ``divers`` (aboard), ``shot_timer``, ``surfaced`` (bool: at the surface since its last
    surfacing or the start); the clocks ``e_spawn_interval``, ``e_spawn_timer``, ``d_spawn_timer``,
    ``move_interval``, ``ramp_index``; torpedoes ``t_alive`` (bool), ``t_x``, ``t_y``, ``t_right`` (bool)
    ``(N, 2)`` in list order; divers ``d_alive`` (bool), ``d_x``, ``d_y``, ``d_right`` (bool), ``d_timer``
    ``(N, 2)`` in list order; enemies ``e_alive`` (bool), ``e_x``, ``e_y``, ``e_right`` (bool), ``e_sub``
    (bool: a submarine, else a fish), ``e_timer`` (move countdown), ``e_gun`` (gun countdown, submarines),
    ``e_seq`` (spawn number) ``(N, max_enemies)``, and ``next_seq``; enemy bullets ``b_right``, ``b_left``
    ``(N, 10, 10)`` bool grids (row, column); ``terminal`` and ``overflow`` (bool).

    Args:
        ramping: MinAtar's difficulty ramp (on by default, as in the package).
        max_enemies: enemy slots; default 40 with ramping, 4 without (enough for every reachable state, see
            the module docstring). Fewer run faster but may overflow in long, ramped games.
    """

    spec = SPEC
    draws_per_reset = 0
    draws_per_step = 5

    def __init__(self, ramping: bool = True, max_enemies: int | None = None) -> None:
        self.ramping = bool(ramping)
        self.max_enemies = int(max_enemies or (RAMP_ENEMY_SLOTS if self.ramping else FLAT_ENEMY_SLOTS))

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device

        def full(value: int, *shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
            return torch.full((n, *shape), value, dtype=dtype, device=dev)

        k, b = self.max_enemies, torch.bool
        return {
            "x": full(5), "y": full(0), "facing_right": full(False, dtype=b), "oxygen": full(MAX_OXYGEN),
            "divers": full(0), "shot_timer": full(0), "surfaced": full(True, dtype=b),
            "e_spawn_interval": full(INIT_SPAWN_INTERVAL), "e_spawn_timer": full(INIT_SPAWN_INTERVAL),
            "d_spawn_timer": full(DIVER_SPAWN_INTERVAL), "move_interval": full(INIT_MOVE_INTERVAL),
            "ramp_index": full(0),
            "t_alive": full(False, TORPEDO_SLOTS, dtype=b), "t_x": full(0, TORPEDO_SLOTS),
            "t_y": full(0, TORPEDO_SLOTS), "t_right": full(False, TORPEDO_SLOTS, dtype=b),
            "d_alive": full(False, DIVER_SLOTS, dtype=b), "d_x": full(0, DIVER_SLOTS), "d_y": full(0, DIVER_SLOTS),
            "d_right": full(False, DIVER_SLOTS, dtype=b), "d_timer": full(0, DIVER_SLOTS),
            "e_alive": full(False, k, dtype=b), "e_x": full(0, k), "e_y": full(0, k),
            "e_right": full(False, k, dtype=b), "e_sub": full(False, k, dtype=b), "e_timer": full(0, k),
            "e_gun": full(0, k), "e_seq": full(0, k), "next_seq": full(0),
            "b_right": full(False, GRID, GRID, dtype=b), "b_left": full(False, GRID, GRID, dtype=b),
            "terminal": full(False, dtype=b), "overflow": full(False, dtype=b),
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        # Speed notes: the enemy slots are many, so their updates are arithmetic, gathers and scatters rather
        # than torch.where (several times slower on CPU); a terminal game stands still because every change
        # below is gated on ``live`` (no action, no spawn, nothing moves), not by a selection at the end.
        dev = action.device
        n = action.shape[0]
        live = ~state["terminal"]
        action = torch.where(live, action, 0)
        long = torch.int64

        # Enemy spawn (its three draws are taken whenever it is due, even if cancelled) into the first free slot.
        due = (state["e_spawn_timer"] == 0) & live
        side, row = u[:, 0] < 0.5, 1 + uniform_to_int(u[:, 2], 8)
        e_alive, e_right, e_sub = state["e_alive"], state["e_right"], state["e_sub"]
        clash = (e_alive & (state["e_y"] == row[:, None]) & (e_right != side[:, None])).any(1)
        free = ~e_alive
        add = due & ~clash
        overflow = state["overflow"] | (add & ~free.any(1))
        add = add & free.any(1)
        slot = free.to(torch.uint8).argmax(1, keepdim=True)

        def put(field: torch.Tensor, value: torch.Tensor | int | bool) -> torch.Tensor:
            old = field.gather(1, slot)[:, 0]
            return field.scatter(1, slot, torch.where(add, value, old)[:, None])

        e_alive = put(e_alive, True)
        e_x = put(state["e_x"], torch.where(side, 0, GRID - 1))
        e_y = put(state["e_y"], row)
        e_right = put(e_right, side)
        e_sub = put(e_sub, u[:, 1] < 1 / 3)
        e_timer = put(state["e_timer"], state["move_interval"])
        e_gun = put(state["e_gun"], ENEMY_SHOT_INTERVAL)
        e_seq = put(state["e_seq"], state["next_seq"])
        next_seq = state["next_seq"] + add.long()
        e_spawn_timer = torch.where(due, state["e_spawn_interval"], state["e_spawn_timer"])

        # Diver spawn: appended after the live divers.
        due = (state["d_spawn_timer"] == 0) & live
        d_count = state["d_alive"].sum(1)
        overflow = overflow | (due & (d_count >= DIVER_SLOTS))
        put2 = (torch.arange(DIVER_SLOTS, device=dev) == d_count[:, None]) & due[:, None]
        side = (u[:, 3] < 0.5)[:, None]
        d_alive0 = state["d_alive"] | put2
        d_x0 = torch.where(put2, torch.where(side, 0, GRID - 1), state["d_x"])
        d_y = torch.where(put2, 1 + uniform_to_int(u[:, 4], 8)[:, None], state["d_y"])
        d_right = torch.where(put2, side, state["d_right"])
        d_timer0 = torch.where(put2, DIVER_MOVE_INTERVAL, state["d_timer"])
        d_spawn_timer = torch.where(due, DIVER_SPAWN_INTERVAL, state["d_spawn_timer"])

        # The action: fire (when cooled down) or move.
        x, y, facing = state["x"], state["y"], state["facing_right"]
        fire = (action == 5) & (state["shot_timer"] == 0)
        t_count = state["t_alive"].sum(1)
        overflow = overflow | (fire & (t_count >= TORPEDO_SLOTS))
        put2 = (torch.arange(TORPEDO_SLOTS, device=dev) == t_count[:, None]) & fire[:, None]
        t_alive0 = state["t_alive"] | put2
        t_x0 = torch.where(put2, x[:, None], state["t_x"])
        t_y = torch.where(put2, y[:, None], state["t_y"])
        t_right = torch.where(put2, facing[:, None], state["t_right"])
        shot_timer = torch.where(fire, SHOT_COOLDOWN, state["shot_timer"])
        left, right = action == 1, action == 3
        x = torch.where(left, (x - 1).clamp(min=0), torch.where(right, (x + 1).clamp(max=GRID - 1), x))
        facing = torch.where(left, False, torch.where(right, True, facing))
        y = torch.where(action == 2, (y - 1).clamp(min=0), torch.where(action == 4, (y + 1).clamp(max=GRID - 2), y))
        sub_cell = (y * GRID + x)[:, None]

        # Torpedoes, newest first: move, leave the board or strike the oldest fish, else oldest sub, in the cell.
        reward = torch.zeros(n, dtype=long, device=dev)
        e_cell = e_y * GRID + e_x
        strike_order = (~e_sub).long() * (1 << 40) + ((1 << 39) - e_seq)  # fish first, then the oldest
        t_alive, t_x = list(t_alive0.unbind(1)), list(t_x0.unbind(1))
        for j in reversed(range(TORPEDO_SLOTS)):
            flying = t_alive[j] & live
            tx = torch.where(flying, t_x[j] + torch.where(t_right[:, j], 1, -1), t_x[j])
            flying = flying & _on_board(tx)
            there = e_alive & (e_cell == (t_y[:, j] * GRID + tx)[:, None]) & flying[:, None]
            hit, victim = _best(strike_order * there)
            e_alive = _clear(e_alive, victim, hit)
            t_alive[j] = torch.where(live, flying & ~hit, t_alive[j])
            t_x[j] = tx
            reward = reward + hit.long()

        # Divers, newest first: picked up (room permitting) before or after their move.
        aboard = state["divers"]
        d_alive, d_x, d_timer = list(d_alive0.unbind(1)), list(d_x0.unbind(1)), list(d_timer0.unbind(1))
        for j in reversed(range(DIVER_SLOTS)):
            swimming = d_alive[j] & live
            pick = swimming & (d_x[j] == x) & (d_y[:, j] == y) & (aboard < MAX_DIVERS)
            aboard = aboard + pick.long()
            stay = swimming & ~pick
            moves = stay & (d_timer[j] == 0)
            d_timer[j] = torch.where(moves, DIVER_MOVE_INTERVAL, torch.where(stay, d_timer[j] - 1, d_timer[j]))
            d_x[j] = torch.where(moves, d_x[j] + torch.where(d_right[:, j], 1, -1), d_x[j])
            gone = moves & ~_on_board(d_x[j])
            pick_after = moves & ~gone & (d_x[j] == x) & (d_y[:, j] == y) & (aboard < MAX_DIVERS)
            aboard = aboard + pick_after.long()
            d_alive[j] = d_alive[j] & ~(pick | gone | pick_after)

        # Enemies (subs, then fish): touch before and after the move, move, meet torpedoes, subs fire.
        acting = e_alive & live[:, None]
        terminal = state["terminal"] | (acting & (e_cell == sub_cell)).any(1)
        moves = acting & (e_timer == 0)
        step = moves.long() * (e_right.long() * 2 - 1)
        e_timer = e_timer - acting.long() + moves.long() * (state["move_interval"][:, None] + 1)
        e_x = e_x + step
        e_cell = e_cell + step
        gone = moves & ~_on_board(e_x)
        touch = moves & ~gone & (e_cell == sub_cell)
        terminal = terminal | touch.any(1)
        meets = moves & ~gone & ~touch  # may run into a torpedo
        shooting = acting & e_sub
        shoots = shooting & (e_gun == 0)
        e_gun = e_gun - shooting.long() + shoots.long() * (ENEMY_SHOT_INTERVAL + 1)
        shoots = shoots & ~gone  # even a sub destroyed below fires; one past the edge never reaches the board
        e_alive = e_alive & ~gone
        meet_order = e_sub.long() * (1 << 40) + e_seq + 1  # subs first, then the newest
        for j in range(TORPEDO_SLOTS):
            there = meets & e_alive & (e_cell == (t_y[:, j] * GRID + t_x[j])[:, None]) & t_alive[j][:, None]
            hit, victim = _best(meet_order * there)
            e_alive = _clear(e_alive, victim, hit)
            t_alive[j] = t_alive[j] & ~hit
            reward = reward + hit.long()

        # Enemy bullets: the new ones join; all touch the submarine before or after moving one cell.
        env = torch.arange(n, device=dev)
        cell = (env[:, None] * (GRID * GRID) + e_cell.clamp(0, GRID * GRID - 1)).reshape(-1)
        grids = []
        for heading, old in ((e_right, state["b_right"]), (~e_right, state["b_left"])):
            count = torch.zeros(n * GRID * GRID, dtype=torch.uint8, device=dev)
            count.index_add_(0, cell, (shoots & heading).reshape(-1).to(torch.uint8))
            grids.append((count > 0).view(n, GRID, GRID) | old)
        b_right, b_left = grids
        terminal = terminal | b_right[env, y, x] | b_left[env, y, x]
        b_right = torch.nn.functional.pad(b_right[:, :, :-1], (1, 0))
        b_left = torch.nn.functional.pad(b_left[:, :, 1:], (0, 1))
        terminal = terminal | b_right[env, y, x] | b_left[env, y, x]
        keep = ~live[:, None, None]
        b_right = b_right & ~keep | state["b_right"] & keep
        b_left = b_left & ~keep | state["b_left"] & keep

        # Clocks, oxygen, surfacing.
        e_spawn_timer = e_spawn_timer - ((e_spawn_timer > 0) & live).long()
        d_spawn_timer = d_spawn_timer - ((d_spawn_timer > 0) & live).long()
        shot_timer = shot_timer - ((shot_timer > 0) & live).long()
        oxygen = state["oxygen"]
        terminal = terminal | (oxygen <= 0)
        below = y > 0
        oxygen = oxygen - (below & live).long()
        arrives = ~below & ~state["surfaced"] & live
        terminal = terminal | (arrives & (aboard == 0))
        surfaces = arrives & (aboard != 0)
        surfaced = torch.where(below & live, False, state["surfaced"] | surfaces)
        full = surfaces & (aboard == MAX_DIVERS)
        reward = reward + torch.where(full, torch.div(oxygen * 10, MAX_OXYGEN, rounding_mode="floor"), 0)
        aboard = torch.where(surfaces, torch.where(full, 0, aboard) - 1, aboard)
        oxygen = torch.where(surfaces, MAX_OXYGEN, oxygen)
        e_spawn_interval, move_interval, ramp_index = state["e_spawn_interval"], state["move_interval"], state["ramp_index"]
        if self.ramping:
            ramps = surfaces & ((e_spawn_interval > 1) | (move_interval > 2))
            move_interval = move_interval - (ramps & (move_interval > 2) & (ramp_index % 2 == 1)).long()
            e_spawn_interval = e_spawn_interval - (ramps & (e_spawn_interval > 1)).long()
            ramp_index = ramp_index + ramps.long()

        nxt = {
            "x": x, "y": y, "facing_right": facing, "oxygen": oxygen, "divers": aboard, "shot_timer": shot_timer,
            "surfaced": surfaced, "e_spawn_interval": e_spawn_interval, "e_spawn_timer": e_spawn_timer,
            "d_spawn_timer": d_spawn_timer, "move_interval": move_interval, "ramp_index": ramp_index,
            **_compact2({"t_alive": torch.stack(t_alive, 1), "t_x": torch.stack(t_x, 1), "t_y": t_y,
                         "t_right": t_right}, "t_alive"),
            **_compact2({"d_alive": torch.stack(d_alive, 1), "d_x": torch.stack(d_x, 1), "d_y": d_y,
                         "d_right": d_right, "d_timer": torch.stack(d_timer, 1)}, "d_alive"),
            "e_alive": e_alive, "e_x": e_x, "e_y": e_y, "e_right": e_right, "e_sub": e_sub,
            "e_timer": e_timer, "e_gun": e_gun, "e_seq": e_seq, "next_seq": next_seq,
            "b_right": b_right, "b_left": b_left, "terminal": terminal, "overflow": overflow,
        }
        return nxt, reward.to(torch.float32), terminal

    def observe(self, state: State) -> torch.Tensor:
        x, y = state["x"], state["y"]
        n, dev = x.shape[0], x.device
        c = SPEC.num_channels
        sink = n * GRID * GRID * c
        flat = torch.zeros(sink + 1, dtype=torch.bool, device=dev)
        env = torch.arange(n, device=dev)[:, None]

        def paint(row: torch.Tensor, col: torch.Tensor, channel: torch.Tensor | int, mask: torch.Tensor) -> None:
            idx = ((env * GRID + row) * GRID + col) * c + channel
            off = ~(mask & _on_board(col))  # painted into the sink (arithmetic: torch.where is slow on CPU)
            flat.index_fill_(0, (idx + (sink - idx) * off).reshape(-1), True)

        back = x - _step_dir(state["facing_right"])
        yes = torch.ones_like(state["terminal"])[:, None]
        paint(y[:, None], x[:, None], _FRONT, yes)
        paint(y[:, None], back[:, None], _BACK, yes)
        paint(state["t_y"], state["t_x"], _TORPEDO, state["t_alive"])
        e_alive, e_x, e_y = state["e_alive"], state["e_x"], state["e_y"]
        paint(e_y, e_x, _FISH + state["e_sub"].long(), e_alive)
        paint(e_y, e_x - state["e_right"].long() * 2 + 1, _TRAIL, e_alive)
        paint(state["d_y"], state["d_x"], _DIVER, state["d_alive"])
        paint(state["d_y"], state["d_x"] - _step_dir(state["d_right"]), _TRAIL, state["d_alive"])
        obs = flat[:-1].view(n, GRID, GRID, c)
        obs[..., _EBULLET] = state["b_right"] | state["b_left"]
        cols = torch.arange(GRID, device=dev)
        oxygen = torch.div(state["oxygen"].clamp(min=0) * 10, MAX_OXYGEN, rounding_mode="floor")
        obs[:, GRID - 1, :, _OXYGEN] = cols < oxygen[:, None]
        obs[:, GRID - 1, :, _DIVER_GAUGE] = (cols >= GRID - 1 - state["divers"][:, None]) & (cols < GRID - 1)
        return obs
