"""One random stream per seed, drawn for every seed at once: a counter-based generator in plain torch ops.

Why not ``torch.Generator``: a batch of S seeds drawing from one generator mixes them (seed 3's numbers
depend on how many seeds run beside it), and S generators cost S kernel launches per draw, which is the
overhead the batched engine exists to remove. A counter-based generator has neither problem: the k-th
number of seed ``s`` is a fixed function ``hash(key(s, purpose), k)``, computed for all seeds in one
vectorised expression, on any device. So a seed gives the same numbers alone or inside any batch, and
the same (seeds, purpose) always gives the same numbers.

The hash is SplitMix64's output function (Steele, Lea and Flood 2014; the seeding generator of
``java.util.SplittableRandom`` and of xoshiro), which passes BigCrush when fed a counter. It needs
wrapping 64-bit multiplication, which torch's int64 arithmetic does on CPU and CUDA; a test checks the
numbers against a pure-Python reference, so a platform where it does not would fail loudly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic on signed integers)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic)."""
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def splitmix64(key: int, counter: int) -> int:
    """Pure-Python reference of one number of the stream (tests compare the torch version with it)."""
    z = (key + (counter + 1) * _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, purpose: int) -> int:
    """The key of seed ``seed``'s stream for ``purpose`` (distinct purposes give unrelated streams)."""
    return splitmix64(splitmix64(int(seed), 0) ^ (int(purpose) * _M2 & _MASK64), 0)


class SeedStreams:
    """S independent streams (one per seed) advanced in lockstep.

    Every draw of shape ``shape`` returns ``(S, *shape)`` numbers and advances the shared counter by
    ``prod(shape)``: seed i's numbers depend on its seed, the purpose and the sequence of draw shapes only.
    """

    def __init__(self, seeds: Sequence[int], purpose: int, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        keys = [_signed(stream_key(s, purpose)) for s in seeds]
        self.keys = torch.tensor(keys, dtype=torch.int64, device=self.device)
        self.counter = 0

    def bits(self, *shape: int) -> torch.Tensor:
        """``(S, *shape)`` int64 tensors of 64 random bits each."""
        n = 1
        for d in shape:
            n *= d
        if n == 0:  # nothing to draw (a game with no draws per reset, say): no work, the counter stays
            return torch.empty(len(self.keys), *shape, dtype=torch.int64, device=self.device)
        idx = torch.arange(self.counter + 1, self.counter + 1 + n, dtype=torch.int64, device=self.device)
        self.counter += n
        z = self.keys[:, None] + idx[None, :] * _signed(_GOLDEN)
        return _mix(z).reshape(len(self.keys), *shape)

    def uniform(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(S, *shape)`` uniform numbers in [0, 1): 24 random bits for float32, 53 for float64."""
        mantissa = 53 if dtype == torch.float64 else 24
        if 0 in shape:
            return torch.empty(len(self.keys), *shape, dtype=dtype, device=self.device)
        return _shr(self.bits(*shape), 64 - mantissa).to(dtype) * (2.0 ** -mantissa)

    def integers(self, high: torch.Tensor | int, *shape: int) -> torch.Tensor:
        """``(S, *shape)`` integers in ``[0, high)``; ``high`` an int or broadcastable to ``(S, *shape)``.

        Multiply-shift on 32 random bits (Lemire 2019 without the rejection step): the bias is below
        ``high / 2**32``, about 2e-5 for a replay buffer of 100k rows.
        """
        r = _shr(self.bits(*shape), 32)
        return (r * torch.as_tensor(high, dtype=torch.int64, device=self.device)) >> 32

    def state_dict(self) -> dict[str, int]:
        return {"counter": self.counter}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.counter = int(state["counter"])
