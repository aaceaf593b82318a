"""MinAtar Freeway as batched torch dynamics (see :mod:`moerl.rl.envs.minatar.base` for the interface).

The rules, as this module implements them (the ``minatar`` package's game logic, without sticky actions):

* **Board.** The chicken lives in column 4 and starts at the bottom, row 9. Rows 1-8 are lanes with one car
  each; a car has a column, a direction (right or left), a speed class 1-5 and a countdown. A car of class k
  moves one cell every k + 1 steps: each step its countdown drops by one, and a step that finds it at 0
  moves the car instead and restarts the countdown at k. A car leaving one side reappears on the other.
* **The chicken** moves one row up (``up``) or down (``down``), within rows 0-9, only when its move
  cooldown is at 0; a move restarts the cooldown at 3, and the cooldown drops by one each step it is above 0.
  Other actions do nothing.
* **Crossing.** A step that leaves the chicken in row 0 pays +1, gives every car a new speed class and
  direction (positions kept), and puts the chicken back in row 9.
* **Cars** then update in lane order: a car in the chicken's row at column 4, before or after its move,
  sends the chicken back to row 9 (no penalty beyond the lost progress).
* **Time.** A counter starts at 2500 and drops by one each step; the episode ends on the step that takes it
  below 0 (the 2501st). Nothing else ends it; a step of an environment already terminal changes nothing.
* **Reset**: all cars at column 0, each with a fresh speed class and direction, countdown at its class;
  the chicken in row 9 with its cooldown at 3.
* **Observation** channels: the chicken; cars; then five trail channels, one per speed class: the cell
  behind each car (columns wrapping) is marked in the channel of its class.
* **No difficulty ramp**: ``ramping`` is accepted and ignored, as the package does.

Random draws, ``draws_per_reset = draws_per_step = 16`` per environment: slots 0-7, lane i's speed class
(``1 + floor(5 u)``); slots 8-15, lane i's direction (``u > 1/2``: right). A step uses them only when the
chicken crosses. (The package takes the direction as the sign of ``u - 1/2``; at exactly ``u = 1/2``, one
chance in 2**53 per draw, it would make a car of speed 0, which its own observation cannot draw; here that
car heads left.)
"""

from __future__ import annotations

import torch

from moerl.rl.envs.minatar.base import GRID, GameSpec, State

SPEC = GameSpec(name="freeway", channels=("chicken", "car", "speed1", "speed2", "speed3", "speed4", "speed5"),
                minimal_actions=(0, 2, 4))

LANES = 8
CHICKEN_COLUMN = 4
MOVE_COOLDOWN = 3
TIME_LIMIT = 2500
_CHICKEN, _CAR, _SPEED1 = 0, 1, 2


def _speeds(u: torch.Tensor) -> torch.Tensor:
    """Signed speeds ``(N, 8)`` from the 16 draw slots: class ``1 + floor(5 u)``, right (+) where ``u > 1/2``."""
    size = 1 + torch.floor(u[:, :LANES].to(torch.float64) * 5).to(torch.int64)
    return torch.where(u[:, LANES:2 * LANES] > 0.5, size, -size)


class Freeway:
    """N Freeway games in tensors (rules and random slots in the module docstring).

    State keys, leading dimension N: ``pos`` the chicken's row, ``cooldown``, ``time_left`` (int64);
    ``car_x``, ``car_timer``, ``car_speed`` ``(N, 8)`` int64 (lane i is row i + 1; the speed signed: + heads
    right, its size the class); ``terminal`` (bool).
    """

    spec = SPEC
    draws_per_reset = 2 * LANES
    draws_per_step = 2 * LANES

    def __init__(self, ramping: bool = True) -> None:
        self.ramping = bool(ramping)  # no ramp in Freeway: kept for the common interface

    def reset(self, u: torch.Tensor) -> State:
        n, dev = u.shape[0], u.device
        speed = _speeds(u)
        return {
            "pos": torch.full((n,), GRID - 1, dtype=torch.int64, device=dev),
            "cooldown": torch.full((n,), MOVE_COOLDOWN, dtype=torch.int64, device=dev),
            "time_left": torch.full((n,), TIME_LIMIT, dtype=torch.int64, device=dev),
            "car_x": torch.zeros(n, LANES, dtype=torch.int64, device=dev),
            "car_timer": speed.abs(),
            "car_speed": speed,
            "terminal": torch.zeros(n, dtype=torch.bool, device=dev),
        }

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        dev = action.device
        ready = state["cooldown"] == 0
        up, down = ready & (action == 2), ready & (action == 4)
        cooldown = torch.where(up | down, MOVE_COOLDOWN, state["cooldown"])
        pos = torch.where(up, (state["pos"] - 1).clamp(min=0),
                          torch.where(down, (state["pos"] + 1).clamp(max=GRID - 1), state["pos"]))

        # Crossing: +1, new car speeds, back to the bottom.
        crossed = pos == 0
        new_speed = _speeds(u)
        car_speed = torch.where(crossed[:, None], new_speed, state["car_speed"])
        car_timer = torch.where(crossed[:, None], new_speed.abs(), state["car_timer"])
        pos = torch.where(crossed, GRID - 1, pos)

        # Cars: only the car in the chicken's lane can hit it, at column 4 before or after its move.
        in_lane = torch.arange(1, LANES + 1, device=dev) == pos[:, None]
        hit = in_lane & (state["car_x"] == CHICKEN_COLUMN)
        moving = car_timer == 0
        car_x = torch.where(moving, torch.remainder(state["car_x"] + car_speed.sign(), GRID), state["car_x"])
        car_timer = torch.where(moving, car_speed.abs(), car_timer - 1)
        hit = hit | (in_lane & moving & (car_x == CHICKEN_COLUMN))
        pos = torch.where(hit.any(1), GRID - 1, pos)

        cooldown = cooldown - (cooldown > 0).long()
        time_left = state["time_left"] - 1
        terminal = state["terminal"] | (time_left < 0)

        done = state["terminal"]  # a terminal game stands still
        nxt = {"pos": pos, "cooldown": cooldown, "time_left": time_left, "car_x": car_x, "car_timer": car_timer,
               "car_speed": car_speed, "terminal": terminal}
        for key, value in nxt.items():
            old = state[key]
            nxt[key] = torch.where(done.view(-1, *([1] * (old.dim() - 1))), old, value)
        reward = (crossed & ~done).to(torch.float32)
        return nxt, reward, nxt["terminal"]

    def observe(self, state: State) -> torch.Tensor:
        pos, car_x, speed = state["pos"], state["car_x"], state["car_speed"]
        n, dev = pos.shape[0], pos.device
        c = SPEC.num_channels
        flat = torch.zeros(n * GRID * GRID * c, dtype=torch.bool, device=dev)
        env = torch.arange(n, device=dev)[:, None]
        lanes = torch.arange(1, LANES + 1, device=dev).expand(n, LANES)
        back = torch.remainder(car_x - speed.sign(), GRID)
        cells = [
            (env[:, 0], pos, torch.full_like(pos, CHICKEN_COLUMN), torch.full_like(pos, _CHICKEN)),
            (env, lanes, car_x, torch.full_like(car_x, _CAR)),
            (env, lanes, back, _SPEED1 - 1 + speed.abs()),
        ]
        for e, r, col, ch in cells:
            flat.index_fill_(0, (((e * GRID + r) * GRID + col) * c + ch).reshape(-1), True)
        return flat.view(n, GRID, GRID, c)
