"""MinAtar's Breakout as batched torch dynamics (see :mod:`moerl.rl.envs.minatar.base` for the interface).

The rules, in our words:

* **Objects.** A paddle on the bottom row (row 9) at a column ``pos`` (4 at the start); a ball at a cell
  ``(ball_y, ball_x)`` moving along one of four diagonals (direction codes as MinAtar numbers them: 0 up-left,
  1 up-right, 2 down-right, 3 down-left; "up" is towards row 0); the cell the ball was in one step earlier
  (the *trail*, which shows the direction); a 10x10 map of bricks, three full rows (rows 1 to 3) at the start;
  and a ``strike`` flag, set while the ball is in contact with a brick.
* **Start.** The ball starts on row 3, in the left column moving down-right or in the right column moving
  down-left, with equal probability (the only random event of the game: draw slot 0 of a reset,
  ``floor(2u)``: 0 left, 1 right); the trail starts on the ball.
* **Actions.** Left and right move the paddle one column (clipped to the grid); every other action leaves it.
  The paddle moves before the ball.
* **Ball.** The ball's target is the diagonal neighbour in its direction. Past a side wall, the target column
  is clipped back into the grid and the horizontal direction reverses. Then exactly one of:

  - *ceiling*: the target row is above row 0: the ball stays on row 0 and the vertical direction reverses;
  - *brick*: a brick occupies the target. If the ball was not already in contact, the brick is destroyed
    (reward +1), the ball keeps its old row (it moves sideways only) and its vertical direction reverses.
    If it was in contact (it bounced off a brick the step before), it passes into the brick's cell, leaving
    the brick in place. Either way it is in contact after this step;
  - *bottom*: the target is on row 9. If no brick is left, three fresh rows of bricks appear (rows 1 to 3).
    If the paddle is under the ball's current column, the ball bounces straight back up (vertical direction
    reverses, row kept); else if the paddle is under the target column, the ball is sent back the way it
    came (both directions reverse, row kept); else the ball falls onto row 9 and the episode ends.

  Contact ends whenever the ball does not hit a brick. The ball then moves to its (possibly adjusted) target
  and the trail to its old cell.
* **Reward** +1 per brick destroyed; **termination** when the ball falls past the paddle. A game that has
  ended stays as it is (no reward, still terminal) if stepped again. No difficulty ramping (the flag exists
  for the common interface and changes nothing), and no randomness after a reset.
"""

from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State, uniform_to_int

SPEC = GameSpec(name="breakout", channels=("paddle", "ball", "trail", "brick"), minimal_actions=(0, 1, 3))

#: Direction code -> (dx, dy), and (dy > 0, dx > 0) -> direction code.
_DX = (-1, 1, 1, -1)
_DY = (-1, -1, 1, 1)
_CODE = ((0, 1), (3, 2))
_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The direction tables on ``device`` (made once per device)."""
    if device not in _TABLES:
        _TABLES[device] = (torch.tensor(_DX, device=device), torch.tensor(_DY, device=device),
                           torch.tensor(_CODE, device=device))
    return _TABLES[device]


class Breakout:
    """N Breakout games (see the module docstring for the rules).

    State keys: ``pos``, ``ball_x``, ``ball_y``, ``ball_dir`` (MinAtar's code), ``last_x``, ``last_y`` (the
    trail) int64 ``(N,)``; ``strike``, ``terminal`` bool ``(N,)``; ``bricks`` bool ``(N, 10, 10)``.

    Draws: reset slot 0 is the ball's starting side; a step draws nothing.
    """

    spec = SPEC
    draws_per_reset = 1
    draws_per_step = 0

    def __init__(self, ramping: bool = True) -> None:
        #: Breakout has no difficulty ramp: kept for the common interface only.
        self.ramping = ramping

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device
        right = uniform_to_int(u[:, 0], 2) == 1
        ball_x = torch.where(right, GRID - 1, 0)
        ball_y = torch.full((n,), 3, dtype=torch.int64, device=dev)
        bricks = torch.zeros(n, GRID, GRID, dtype=torch.bool, device=dev)
        bricks[:, 1:4] = True
        return {
            "pos": torch.full((n,), 4, dtype=torch.int64, device=dev),
            "ball_x": ball_x,
            "ball_y": ball_y,
            "ball_dir": torch.where(right, 3, 2),
            "last_x": ball_x.clone(),
            "last_y": ball_y.clone(),
            "strike": torch.zeros(n, dtype=torch.bool, device=dev),
            "terminal": torch.zeros(n, dtype=torch.bool, device=dev),
            "bricks": bricks,
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        pos, dev = state["pos"], state["pos"].device
        n = pos.shape[0]
        rows = torch.arange(n, device=dev)
        action = action.to(dev)
        ended = state["terminal"]  # an ended game stays as it is: every change below is masked by ~ended
        pos = (pos - (action == 1).long() + (action == 3).long()).clamp(0, GRID - 1)
        x, y, code = state["ball_x"], state["ball_y"], state["ball_dir"]
        dx_of, dy_of, code_of = _tables(dev)
        dx, dy = dx_of[code], dy_of[code]

        nx, ny = x + dx, y + dy
        side = (nx < 0) | (nx > GRID - 1)
        nx = nx.clamp(0, GRID - 1)
        dx = torch.where(side, -dx, dx)

        ceiling = ny < 0
        ny = ny.clamp(0, GRID - 1)  # the upper bound only matters for ended games (whose ball is on row 9)
        dy = torch.where(ceiling, -dy, dy)

        # bricks as (N, 100) cells; one cell per env changes at most (index_put, not a grid-wide select)
        cells = state["bricks"].reshape(n, GRID * GRID)
        target = ny * GRID + nx
        brick = ~ceiling & cells[rows, target]
        smash = brick & ~state["strike"] & ~ended
        cells = cells.clone()
        cells[rows, target] = brick & ~smash
        ny = torch.where(smash, y, ny)
        dy = torch.where(smash, -dy, dy)

        bottom = ~ceiling & ~brick & (ny == GRID - 1)
        refill = bottom & ~ended & (cells.view(torch.uint8).sum(1, dtype=torch.int32) == 0)
        cells.view(torch.uint8)[:, GRID:4 * GRID] |= refill.view(torch.uint8)[:, None]  # rows 1 to 3
        straight = bottom & (x == pos)
        back = bottom & ~straight & (nx == pos)
        dy = torch.where(straight | back, -dy, dy)
        dx = torch.where(back, -dx, dx)
        ny = torch.where(straight | back, y, ny)
        terminal = ended | (bottom & ~straight & ~back)

        def keep(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
            return torch.where(ended, old, new)

        nxt = {"pos": keep(pos, state["pos"]), "ball_x": keep(nx, x), "ball_y": keep(ny, y),
               "ball_dir": keep(code_of[(dy > 0).long(), (dx > 0).long()], code),
               "last_x": keep(x, state["last_x"]), "last_y": keep(y, state["last_y"]),
               "strike": keep(brick, state["strike"]), "terminal": terminal,
               "bricks": cells.view(n, GRID, GRID)}
        return nxt, smash.float(), terminal

    def observe(self, state: State) -> torch.Tensor:
        """The grids, built channels-first and returned as a channels-last view (a network's
        ``permute(0, 3, 1, 2)`` back to channels-first is then free; stacking bool grids on the last
        dimension is several times slower on CPU)."""
        pos = state["pos"]
        n = pos.shape[0]
        rows = torch.arange(n, device=pos.device)
        obs = torch.zeros(n, 4, GRID * GRID, dtype=torch.bool, device=pos.device)
        obs[rows, 0, (GRID - 1) * GRID + pos] = True
        obs[rows, 1, state["ball_y"] * GRID + state["ball_x"]] = True
        obs[rows, 2, state["last_y"] * GRID + state["last_x"]] = True
        obs[:, 3] = state["bricks"].reshape(n, GRID * GRID)
        return obs.view(n, 4, GRID, GRID).permute(0, 2, 3, 1)
