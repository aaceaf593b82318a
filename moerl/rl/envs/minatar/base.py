"""The interface of a batched MinAtar game: N environments in tensors, randomness passed in as uniforms.

Why uniforms in, not a generator inside: the caller draws them from per-seed counter streams
(:class:`~moerl.core.seed_streams.SeedStreams`), so an environment's episodes depend on its own stream only,
never on how many environments run beside it; and the tests feed the very same numbers to the ``minatar``
reference (through a stand-in for its ``numpy.random.RandomState``) to check one step against it exactly.

Conventions every game follows:

* **State** is a dict of tensors, each with leading dimension N (integers as int64 or, where a game gains
  speed from it, a smaller integer dtype; flags as bool; never Python objects or lists of variable length: a
  variable number of objects, bullets or enemies, is a fixed-size grid or a fixed number of slots with an
  ``alive`` mask). A game may pack several fields into one tensor (fewer tensors, fewer operations) and
  store a tensor in any memory layout (e.g. slot-major: an ``(N, k)`` tensor as the transpose of a ``(k, N)``
  one); its docstring says how.
* **Actions** are indices into :data:`FULL_ACTIONS` (MinAtar's full set of six); a game's minimal set is
  :attr:`GameSpec.minimal_actions` (the suites map an agent's action index through it).
* **Random numbers**: a step consumes exactly :attr:`BatchedGame.draws_per_step` float64 uniforms in [0, 1)
  per environment, a reset :attr:`BatchedGame.draws_per_reset`; each slot has one fixed meaning (documented
  by the game), used or not in a given step. A uniform ``u`` becomes an integer in ``[0, n)`` as
  ``floor(u * n)`` in float64 (:func:`uniform_to_int`), a Bernoulli(p) as ``u < p``: the stand-in gives the
  reference the same mappings, so both sides decide alike.
* **Ownership**: :meth:`BatchedGame.step` and :meth:`BatchedGame.reset` return tensors of their own (never
  the input state's, never a cached constant), so a caller may write into them: :func:`put_rows_` restarts
  the environments that ended in place (tested for every game).
* **Observation**: ``(N, 10, 10, C)`` bool, the game's channels in :attr:`GameSpec.channels` order (MinAtar's),
  possibly a permuted view of memory laid out otherwise (channels-first, say).
* **Difficulty ramping** (MinAtar's default: enemies speed up as the game goes on) is a constructor flag;
  **sticky actions** are not the game's business (:func:`sticky`, applied by the suites).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

#: MinAtar's full action set, in its order.
FULL_ACTIONS = ("noop", "left", "up", "right", "down", "fire")
GRID = 10

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GameSpec:
    """Plain data of one game: its name, observation channels and minimal action set."""

    name: str
    channels: tuple[str, ...]
    #: Indices into :data:`FULL_ACTIONS` of the game's minimal action set, in MinAtar's order.
    minimal_actions: tuple[int, ...]

    @property
    def num_channels(self) -> int:
        return len(self.channels)


class BatchedGame(Protocol):
    """N environments of one game (see the module docstring for the conventions)."""

    spec: GameSpec
    ramping: bool
    draws_per_reset: int
    draws_per_step: int

    def reset(self, u: torch.Tensor) -> State:
        """A fresh state for each of N environments from uniforms ``u`` ``(N, draws_per_reset)`` float64."""
        ...

    def step(self, state: State, action: torch.Tensor, u: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        """One step of every environment: ``action`` ``(N,)`` int64 in the full set, ``u`` ``(N,
        draws_per_step)`` float64 -> (next state, reward ``(N,)`` float32, terminal ``(N,)`` bool). A
        terminal environment's next state is whatever the rules leave; the caller resets it."""
        ...

    def observe(self, state: State) -> torch.Tensor:
        """``(N, 10, 10, C)`` bool grids of ``state``."""
        ...


def uniform_to_int(u: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """``floor(u * n)`` in float64: an integer in ``[0, n)`` from a uniform in [0, 1) (int64)."""
    return torch.floor(u.to(torch.float64) * n).to(torch.int64)


def where_state(mask: torch.Tensor, a: State, b: State) -> State:
    """Per environment, ``a``'s state where ``mask`` ``(N,)`` is true, else ``b``'s (same keys and shapes)."""
    out = {}
    ones: dict[tuple[torch.dtype, int], torch.Tensor] = {}  # all bits set where ``mask``, else 0
    for key, value in a.items():
        other = b[key]
        dim, dtype = value.dim(), value.dtype
        if dim == 1 or dtype != other.dtype or dtype.is_floating_point or dtype.is_complex:
            out[key] = torch.where(mask if dim == 1 else mask.view(-1, *([1] * (dim - 1))), value, other)
            continue
        # Per-environment grids and slots: ``b ^ ((a ^ b) & ones)`` in integers (bools as bytes), several
        # times faster on CPU than torch.where (hundreds of microseconds on a (1024, 40) tensor); the result
        # keeps the inputs' memory layout.
        if dtype == torch.bool:
            value, other = value.view(torch.uint8), other.view(torch.uint8)
        m = ones.get((value.dtype, dim))
        if m is None:
            m = ones[value.dtype, dim] = (-mask.to(value.dtype)).view(-1, *([1] * (dim - 1)))
        x = value ^ other
        x &= m
        x ^= other
        out[key] = x.view(torch.bool) if dtype == torch.bool else x
    return out


def put_rows_(state: State, rows: torch.Tensor, fresh: State) -> State:
    """Write ``fresh`` (the states of ``len(rows)`` environments) into ``state`` at ``rows`` ``(M,)`` int64, in
    place; returns ``state``. Why: a step ends only a few of N episodes, and a restart that writes their rows
    touches M rows where :func:`where_state` (a fresh state for all N, then a selection) passes over every
    tensor of all N several times; ``state`` must be the caller's own (a step's or reset's output). A step
    may return its state's own ``terminal`` tensor as its third value: read or copy it before a restart."""
    for key, value in state.items():
        value.index_copy_(0, rows, fresh[key])
    return state


def sticky(action: torch.Tensor, last_action: torch.Tensor, u: torch.Tensor, prob: float) -> torch.Tensor:
    """MinAtar's sticky actions: the previous action again with probability ``prob`` (``u < prob``)."""
    return torch.where(u < prob, last_action, action)
