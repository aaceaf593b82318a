"""The ``minatar`` reference games as the oracle of moerl's batched Breakout and SpaceInvaders.

How the two sides get the same randomness: a reference game draws from ``env.random`` (a numpy
``RandomState``); the tests replace it with :class:`UniformStandIn`, which answers each call with the next of
the float64 uniforms fed to it, mapped as the batched games map them (``floor(u * n)`` for an integer in
``[0, n)``, ``u < p`` for a Bernoulli). The tests feed it exactly the slots the batched game consumes for that
reset or step, in the order the game's calls happen, and check afterwards that every slot was used and no
call asked for more: so a draw added, dropped or reordered on either side fails loudly.

Nothing here copies the reference's code: the tests only drive it through its public ``act``/``reset``/
``state`` and read or set its attributes to compare (or align) hidden state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.base import FULL_ACTIONS, State, where_state


class UniformStandIn:
    """A stand-in for ``numpy.random.RandomState`` fed with uniforms: each call uses the next one."""

    def __init__(self) -> None:
        self._queue: list[float] = []
        self.calls = 0

    def feed(self, uniforms: Sequence[float] | np.ndarray | torch.Tensor) -> None:
        assert not self._queue, f"{len(self._queue)} uniform(s) of the previous call were not used"
        self._queue = [float(v) for v in uniforms]

    @property
    def left(self) -> int:
        return len(self._queue)

    def _next(self) -> float:
        assert self._queue, "the reference drew more random numbers than the batched game's slots"
        self.calls += 1
        return self._queue.pop(0)

    def rand(self, *shape: int) -> float:
        assert not shape, "only scalar draws are mapped"
        return self._next()

    def randint(self, low: int, high: int | None = None, size: Any = None) -> int:
        assert size is None, "only scalar draws are mapped"
        if high is None:
            low, high = 0, low
        return low + math.floor(self._next() * (high - low))

    def choice(self, a: Any, size: Any = None, replace: bool = True, p: Any = None) -> Any:
        assert size is None and p is None, "only uniform scalar choices are mapped"
        options = list(range(a)) if isinstance(a, int) else list(a)
        return options[math.floor(self._next() * len(options))]


def make_reference(module: Any, ramping: bool) -> tuple[Any, UniformStandIn]:
    """A reference game of ``module`` (e.g. ``minatar.environments.breakout``) drawing from a stand-in."""
    env = module.Env(ramping=ramping)
    stand_in = UniformStandIn()
    env.random = stand_in
    return env, stand_in


def reset_reference(env: Any, stand_in: UniformStandIn, u: torch.Tensor) -> None:
    stand_in.feed(u)
    env.reset()
    assert stand_in.left == 0, f"the reference reset used {len(u) - stand_in.left} of {len(u)} slots"


def act_reference(env: Any, stand_in: UniformStandIn, action: int, u: torch.Tensor) -> tuple[float, bool]:
    stand_in.feed(u)
    reward, terminal = env.act(int(action))
    assert stand_in.left == 0, f"the reference step used {len(u) - stand_in.left} of {len(u)} slots"
    return float(reward), bool(terminal)


def row(state: State, i: int) -> dict[str, np.ndarray]:
    """Environment ``i``'s state as numpy values."""
    return {key: value[i].cpu().numpy() for key, value in state.items()}


def assert_same_state(ours: dict[str, np.ndarray], ref: dict[str, Any], where: str) -> None:
    assert ours.keys() == ref.keys(), (sorted(ours), sorted(ref))
    for key in ours:
        theirs = np.asarray(ref[key]).astype(ours[key].dtype)
        if not np.array_equal(ours[key], theirs):  # the fast check first; the slow one for its message
            np.testing.assert_array_equal(ours[key], theirs, err_msg=f"{where}: state key {key}")


def assert_same_obs(ours: np.ndarray, ref: np.ndarray, where: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (where, ours.shape, ref.shape, ours.dtype)
    if not np.array_equal(ours, ref):
        np.testing.assert_array_equal(ours, ref, err_msg=where)


def random_actions(streams: SeedStreams) -> torch.Tensor:
    """One action of the full set per environment, uniformly."""
    return streams.integers(len(FULL_ACTIONS), 1)[:, 0]


def run_lockstep(game: Any, module: Any, read_reference: Callable[[Any], dict[str, Any]], n_envs: int,
                 steps: int, seed: int = 0, policy: Callable[[State], torch.Tensor] | None = None,
                 on_step: Callable[[State, State, torch.Tensor, torch.Tensor], None] | None = None,
                 start: Callable[[State], State] | None = None,
                 load_reference: Callable[[Any, dict[str, np.ndarray]], None] | None = None) -> dict[str, Any]:
    """``n_envs`` batched games and ``n_envs`` reference games side by side for ``steps`` steps, from the same
    resets, with the same actions (``policy``, else uniform over the full set) and draws, each resetting when
    its episode ends. Checks every step: observation, reward, terminal and the whole hidden state of every env.

    Returns ``{"returns": [...], "lengths": [...]}`` of the finished episodes. ``on_step(state, next_state,
    reward, terminal)`` sees every batched step (for the tests' counts of the events a trajectory reached).
    """
    streams = SeedStreams(range(seed * 1000, seed * 1000 + n_envs), purpose=7)
    refs = [make_reference(module, game.ramping) for _ in range(n_envs)]
    u = streams.uniform(game.draws_per_reset, dtype=torch.float64)
    state = game.reset(u)
    for i, (env, stand_in) in enumerate(refs):
        reset_reference(env, stand_in, u[i])
        assert_same_state(row(state, i), read_reference(env), "reset")
    if start is not None:
        assert load_reference is not None, "start needs load_reference"
        state = start(state)
        for i, (env, _) in enumerate(refs):
            load_reference(env, row(state, i))
            assert_same_state(row(state, i), read_reference(env), "start")
    returns, lengths = [], []
    ep_return, ep_length = np.zeros(n_envs), np.zeros(n_envs, dtype=np.int64)
    for t in range(steps):
        action = policy(state) if policy is not None else random_actions(streams)
        u = streams.uniform(game.draws_per_step, dtype=torch.float64)
        nxt, reward, terminal = game.step(state, action, u)
        obs = game.observe(nxt).numpy()
        for i, (env, stand_in) in enumerate(refs):
            r, done = act_reference(env, stand_in, int(action[i]), u[i])
            where = f"step {t} env {i} action {FULL_ACTIONS[int(action[i])]}"
            assert (float(reward[i]), bool(terminal[i])) == (r, done), where
            assert_same_obs(obs[i], env.state(), where)
            assert_same_state(row(nxt, i), read_reference(env), where)
        if on_step is not None:
            on_step(state, nxt, reward, terminal)
        ep_return += reward.numpy()
        ep_length += 1
        u_reset = streams.uniform(game.draws_per_reset, dtype=torch.float64)
        fresh = game.reset(u_reset)
        for i in np.flatnonzero(terminal.numpy()):
            returns.append(float(ep_return[i]))
            lengths.append(int(ep_length[i]))
            ep_return[i], ep_length[i] = 0, 0
            env, stand_in = refs[i]
            reset_reference(env, stand_in, u_reset[i])
        state = where_state(terminal, fresh, nxt)
    return {"returns": returns, "lengths": lengths}
