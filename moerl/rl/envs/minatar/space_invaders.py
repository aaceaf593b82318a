"""MinAtar's SpaceInvaders as batched torch dynamics (see :mod:`moerl.rl.envs.minatar.base` for the interface).

The rules, in our words:

* **Objects.** The player's cannon on the bottom row (row 9) at column ``pos`` (5 at the start); a block of
  aliens (a 10x10 map, rows 0 to 3 by columns 2 to 7 at the start) moving together in a horizontal direction
  (left at the start); the player's bullets and the aliens' bullets (two 10x10 maps). Timers: the cannon's
  cool-down (0 at the start), the aliens' move timer and shot timer, and the aliens' move interval (12 at the
  start; the *ramp*).
* **Actions.** Fire, when the cool-down is 0, puts a bullet on the cannon's cell and sets the cool-down to 5;
  fire during the cool-down does nothing. Left and right move the cannon one column (clipped). Up, down and
  no-op do nothing.
* **Order of a step.** (1) the action; (2) the player's bullets move up one row (those on row 0 leave the
  grid); (3) the aliens' bullets move down one row (those on row 9 leave), and one landing on the cannon ends
  the episode, as does an alien on the cannon's cell; (4) when the move timer is 0 the aliens move: the timer
  restarts at the smaller of the number of aliens and the move interval; if an alien touches the wall the
  block is heading for, the direction reverses and the block moves down one row instead (ending the episode
  if an alien was already on the bottom row; the grid wraps, so such an alien reappears on row 0), else the
  block moves one column in its direction; an alien then on the cannon's cell ends the episode; (5) when the
  shot timer is 0 it restarts at 10 and the alien nearest the cannon fires: of the columns holding aliens,
  the one closest to the cannon's column (the left one on a tie), its lowest alien, whose cell gets an alien
  bullet; (6) every alien sharing a cell with a player's bullet is destroyed with that bullet (reward +1
  each); (7) the cool-down (if positive), the move timer and the shot timer count down by one; (8) when no
  alien is left, a fresh block appears in the starting cells (keeping the current direction and timers),
  and with ramping on the move interval drops by one (down to 6) and the ramp index rises.
* **Reward** +1 per alien destroyed; **termination** when an alien bullet or an alien reaches the cannon, or
  the block must move down while an alien is on the bottom row. A game that has ended stays as it is (no
  reward, still terminal) if stepped again. The game draws no random numbers at all.
"""

from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State

SPEC = GameSpec(
    name="space_invaders",
    channels=("cannon", "alien", "alien_left", "alien_right", "friendly_bullet", "enemy_bullet"),
    minimal_actions=(0, 1, 3, 5),
)
SHOT_COOL_DOWN = 5
ENEMY_MOVE_INTERVAL = 12
ENEMY_SHOT_INTERVAL = 10
#: The fastest the move interval ramps to.
MIN_MOVE_INTERVAL = 6
_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """On ``device`` (made once per device): the shooter's column ranking, ``(cannon column, column)`` ->
    distance * 10 + column (nearest first, the left one on a tie), and the cells of a fresh wave ``(1, 100)``
    uint8."""
    if device not in _CONSTANTS:
        cols = torch.arange(GRID, device=device)
        rank = (cols[None, :] - cols[:, None]).abs() * GRID + cols[None, :]
        wave = torch.zeros(GRID, GRID, dtype=torch.uint8, device=device)
        wave[0:4, 2:8] = 1
        _CONSTANTS[device] = (rank, wave.view(1, GRID * GRID))
    return _CONSTANTS[device]


def _cells(grid: torch.Tensor) -> torch.Tensor:
    """``(N, 10, 10)`` -> ``(N, 100)`` (a view when contiguous)."""
    return grid.reshape(grid.shape[0], GRID * GRID)


def _columns(grid: torch.Tensor) -> torch.Tensor:
    """``(N, 10)``: which columns of ``(N, 10, 10)`` bool grids hold a cell (an OR of rows in halves: a
    reduction over the middle dimension is several times slower on CPU)."""
    half = grid[:, :5] | grid[:, 5:]
    return half[:, 0] | half[:, 1] | half[:, 2] | half[:, 3] | half[:, 4]


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per environment, bool grid ``a`` ``(N, 100)`` where ``mask`` ``(N,)``, else ``b``: in uint8 arithmetic,
    several times faster on CPU than ``torch.where`` or broadcast logic on bool tensors."""
    a8, b8 = a.view(torch.uint8), b.view(torch.uint8)
    return (b8 ^ ((a8 ^ b8) * mask.view(torch.uint8)[:, None])).view(torch.bool)


class SpaceInvaders:
    """N SpaceInvaders games (see the module docstring for the rules).

    State keys: ``pos``, ``alien_dir`` (-1 left, +1 right), ``move_interval``, ``move_timer``, ``shot_timer``
    (the aliens'), ``cool_down`` (the cannon's), ``ramp_index`` int64 ``(N,)``; ``terminal`` bool ``(N,)``;
    ``aliens``, ``f_bullets``, ``e_bullets`` bool ``(N, 10, 10)``.

    Draws: none (the game is deterministic); ``u`` is ``(N, 0)``.
    """

    spec = SPEC
    draws_per_reset = 0
    draws_per_step = 0

    def __init__(self, ramping: bool = True) -> None:
        self.ramping = ramping

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device

        def full(value: int) -> torch.Tensor:
            return torch.full((n,), value, dtype=torch.int64, device=dev)

        aliens = torch.zeros(n, GRID, GRID, dtype=torch.bool, device=dev)
        aliens[:, 0:4, 2:8] = True
        return {
            "pos": full(5),
            "alien_dir": full(-1),
            "move_interval": full(ENEMY_MOVE_INTERVAL),
            "move_timer": full(ENEMY_MOVE_INTERVAL),
            "shot_timer": full(ENEMY_SHOT_INTERVAL),
            "cool_down": full(0),
            "ramp_index": full(0),
            "terminal": torch.zeros(n, dtype=torch.bool, device=dev),
            "aliens": aliens,
            "f_bullets": torch.zeros_like(aliens),
            "e_bullets": torch.zeros_like(aliens),
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        pos, dev = state["pos"], state["pos"].device
        n = pos.shape[0]
        rows = torch.arange(n, device=dev)
        action = action.to(dev)
        ended = state["terminal"]
        # the grids as (N, 100) cells, row-major: cell r * 10 + c
        aliens = _cells(state["aliens"])
        interval, alien_dir = state["move_interval"], state["alien_dir"]
        rank, wave = _constants(dev)

        # (1) the action
        fire = (action == 5) & (state["cool_down"] == 0)
        cool_down = torch.where(fire, SHOT_COOL_DOWN, state["cool_down"])
        pos = (pos - (action == 1).long() + (action == 3).long()).clamp(0, GRID - 1)

        # (2), (3) bullets move a row (a bullet fired now starts on row 9, so it is on row 8 after the move)
        f_bullets = torch.zeros_like(aliens)
        f_bullets[:, :-GRID] = _cells(state["f_bullets"])[:, GRID:]
        below = (GRID - 2) * GRID + pos
        f_bullets[rows, below] = f_bullets[rows, below] | fire
        e_bullets = torch.zeros_like(aliens)
        e_bullets[:, GRID:] = _cells(state["e_bullets"])[:, :-GRID]
        cannon = (GRID - 1) * GRID + pos
        terminal = e_bullets[rows, cannon] | aliens[rows, cannon]

        # (4) the aliens move: a flat roll of the cells by -1 or +1 is a move left or right (the column that
        # wraps round is empty: the block is not at that wall), by +10 a move down (row 9 wraps to row 0)
        move = state["move_timer"] == 0
        count = aliens.view(torch.uint8).sum(1, dtype=torch.int32).long()
        move_timer = torch.where(move, torch.minimum(count, interval), state["move_timer"])
        wall = torch.where(alien_dir < 0, 0, GRID - 1)
        at_wall = aliens.view(n, GRID, GRID)[rows, :, wall].any(1)
        down = move & at_wall
        sideways = move & ~at_wall
        terminal = terminal | (down & aliens[:, -GRID:].any(1))
        alien_dir = torch.where(down, -alien_dir, alien_dir)
        aliens = _select(sideways & (alien_dir < 0), aliens.roll(-1, 1),
                         _select(sideways & (alien_dir > 0), aliens.roll(1, 1), aliens))
        aliens = _select(down, aliens.roll(GRID, 1), aliens)
        terminal = terminal | aliens[rows, cannon]

        # (5) the alien nearest the cannon fires: the nearest column holding aliens (the left one on a tie),
        # its lowest alien
        shoot = state["shot_timer"] == 0
        shot_timer = torch.where(shoot, ENEMY_SHOT_INTERVAL, state["shot_timer"])
        occupied = _columns(aliens.view(n, GRID, GRID))
        col = torch.where(occupied, rank.index_select(0, pos), GRID * GRID).argmin(1)
        in_col = aliens.view(n, GRID, GRID)[rows, :, col]  # (N, rows)
        row = (in_col * torch.arange(1, GRID + 1, device=dev)).amax(1) - 1  # -1: the column is empty
        shooter = row.clamp(min=0) * GRID + col
        e_bullets[rows, shooter] = e_bullets[rows, shooter] | (shoot & (row >= 0))

        # (6) hits
        hits = aliens & f_bullets
        reward = hits.view(torch.uint8).sum(1, dtype=torch.int32).long()
        aliens = aliens ^ hits
        f_bullets = f_bullets ^ hits

        # (7) timers, (8) a new wave (moves keep the number of aliens: count - reward are left)
        cool_down = cool_down - (cool_down > 0).long()
        cleared = count == reward
        aliens = (aliens.view(torch.uint8) | (wave * cleared.view(torch.uint8)[:, None])).view(torch.bool)
        faster = cleared & (interval > MIN_MOVE_INTERVAL) if self.ramping else torch.zeros_like(cleared)

        def keep(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
            """An ended game stays as it is."""
            if new.dim() == 1:
                return torch.where(ended, old, new)
            return _select(ended, _cells(old), new).view(n, GRID, GRID)

        nxt = {
            "pos": keep(pos, state["pos"]),
            "alien_dir": keep(alien_dir, state["alien_dir"]),
            "move_interval": keep(interval - faster.long(), interval),
            "move_timer": keep(move_timer - 1, state["move_timer"]),
            "shot_timer": keep(shot_timer - 1, state["shot_timer"]),
            "cool_down": keep(cool_down, state["cool_down"]),
            "ramp_index": keep(state["ramp_index"] + faster.long(), state["ramp_index"]),
            "terminal": ended | terminal,
            "aliens": keep(aliens, state["aliens"]),
            "f_bullets": keep(f_bullets, state["f_bullets"]),
            "e_bullets": keep(e_bullets, state["e_bullets"]),
        }
        return nxt, torch.where(ended, 0, reward).float(), ended | terminal

    def observe(self, state: State) -> torch.Tensor:
        """The grids, built channels-first and returned as a channels-last view (a network's
        ``permute(0, 3, 1, 2)`` back to channels-first is then free; stacking bool grids on the last
        dimension is several times slower on CPU)."""
        pos = state["pos"]
        n = pos.shape[0]
        aliens = _cells(state["aliens"])
        obs = torch.zeros(n, 6, GRID * GRID, dtype=torch.bool, device=pos.device)
        obs[torch.arange(n, device=pos.device), 0, (GRID - 1) * GRID + pos] = True
        obs[:, 1] = aliens
        left = (state["alien_dir"] < 0).view(torch.uint8)[:, None]
        obs[:, 2] = (aliens.view(torch.uint8) * left).view(torch.bool)
        obs[:, 3] = aliens ^ obs[:, 2]
        obs[:, 4] = _cells(state["f_bullets"])
        obs[:, 5] = _cells(state["e_bullets"])
        return obs.view(n, 6, GRID, GRID).permute(0, 2, 3, 1)
