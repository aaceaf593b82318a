"""Seeding without hidden global state.

Rules (see the README's "Seeds" section):

* a *run* is seeded once, at its start (MoE DQN: SB3's ``set_random_seed``; the supervised learners
  own their streams below);
* *constructors* never reseed the global generators: an object that takes a ``seed`` initialises its
  parameters inside :func:`seeded` (the global torch state is saved, seeded, and restored afterwards), so
  what it builds depends on its own seed only, never on what was built before it;
* an object that draws random numbers while it trains keeps its own stream (:class:`TorchStream`), so two
  learners built in either order, or interleaved, give the same results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any

import numpy as np
import torch


def check_seed(seed: int) -> int:
    """A seed must be an integer in [0, 2**32 - 1] (numpy's range); one-line error otherwise."""
    from moerl.core.errors import ConfigError

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= 2**32 - 1:
        raise ConfigError(f"seed must be an integer in [0, 4294967295], got {seed!r}")
    return int(seed)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's global generators seeded by ``seed``, then restore them as they were.

    ``torch.nn`` initialisers draw from the global generator; wrapping construction in this context makes
    the parameters a function of ``seed`` alone and leaves the caller's random stream untouched.
    """
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(check_seed(seed))
        yield


class TorchStream:
    """A private torch random stream that a learner swaps in while it trains.

    Inside ``with stream:`` torch's global CPU (and CUDA) generators hold this stream's state; on exit the
    stream's new state is kept and the caller's state is restored. Code in the body can use ordinary torch
    randomness (dropout, ``torch.rand``), and the learner's results do not depend on anything else that
    draws random numbers before, after or between its calls.
    """

    def __init__(self, seed: int) -> None:
        with seeded(seed):
            self._cpu = torch.get_rng_state()
            self._cuda = [torch.cuda.get_rng_state(d) for d in _cuda_devices()]
        self._fork: AbstractContextManager[object] | None = None

    def __enter__(self) -> TorchStream:
        self._fork = torch.random.fork_rng(devices=_cuda_devices())
        self._fork.__enter__()
        torch.set_rng_state(self._cpu)
        for d, state in zip(_cuda_devices(), self._cuda, strict=False):
            torch.cuda.set_rng_state(state, d)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cpu = torch.get_rng_state()
        self._cuda = [torch.cuda.get_rng_state(d) for d in _cuda_devices()]
        assert self._fork is not None
        self._fork.__exit__(exc_type, exc, tb)
        self._fork = None

    def state_dict(self) -> dict[str, object]:
        """The stream's position; inside ``with stream:`` the live one (a checkpoint taken mid-training)."""
        if self._fork is not None:
            return {"cpu": torch.get_rng_state(), "cuda": [torch.cuda.get_rng_state(d) for d in _cuda_devices()]}
        return {"cpu": self._cpu, "cuda": self._cuda}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Continue from ``state``; inside ``with stream:`` the live generators move there at once."""
        self._cpu = state["cpu"]  # type: ignore[assignment]
        self._cuda = list(state.get("cuda", []))  # type: ignore[call-overload]
        if self._fork is not None:
            torch.set_rng_state(self._cpu)
            for d, cuda in zip(_cuda_devices(), self._cuda, strict=False):
                torch.cuda.set_rng_state(cuda, d)


#: The most seeds one ``--seeds`` may name.
MAX_SEEDS = 65_536


def parse_seeds(spec: str) -> list[int]:
    """``"0-9"``, ``"0,3,7"`` or ``"0-3,10-12"`` -> the seeds, in order; one-line error otherwise.

    Shared by ``moerl train --seeds``, sweep files and the vision grid's ``--seeds``."""
    from moerl.core.errors import ConfigError

    seeds: list[int] = []
    bad = ConfigError(f"--seeds '{spec}' is not a list or range of seeds, e.g. 0-9 or 0,3,7 or 0-3,10-12")
    for part in str(spec).split(","):
        part = part.strip()
        lo_text, dash, hi_text = part.partition("-") if "-" in part[1:] else (part, "", "")
        try:
            lo, hi = int(lo_text), int(hi_text) if dash else int(lo_text)
        except ValueError:
            raise bad from None
        if hi < lo:
            raise bad
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:  # checked before the list grows: repeats cannot exhaust memory
            raise ConfigError(f"--seeds '{spec}' names more than {MAX_SEEDS:,} seeds")
        seeds.extend(range(lo, hi + 1))
    return check_seeds(seeds, f"--seeds '{spec}'")


def check_seeds(seeds: Sequence[Any], what: str, distinct: bool = True) -> list[int]:
    """Each seed valid (:func:`check_seed`), none twice, at most :data:`MAX_SEEDS`: the rules of ``--seeds``,
    for the parsed flag and the Python API's ``seeds=`` alike (``what`` names the value in the message).
    ``distinct=False``: a seed may repeat (members of several configs in one batch: the caller checks that
    no two members are the same run)."""
    from moerl.core.errors import ConfigError

    out = [check_seed(seed) for seed in seeds]
    if distinct and len(set(out)) != len(out):
        raise ConfigError(f"{what} names a seed twice")
    if len(out) > MAX_SEEDS:
        raise ConfigError(f"{what} names more than {MAX_SEEDS:,} seeds")
    return out


def api_seeds(seeds: str | Sequence[int], distinct: bool = True) -> list[int]:
    """The ``seeds=`` of a Python API object: a list of integer seeds, or text read as ``--seeds`` reads it.

    Why: the API must accept exactly what the CLI accepts. A string is the CLI's spec (``"0-9"``; ``"12"`` is
    seed 12, never the characters '1' and '2'); a sequence must hold distinct integers (no ``1.5`` made 1)
    and at least one seed (a numpy array is read as its list); anything else is refused with one line.
    """
    from moerl.core.errors import ConfigError

    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if isinstance(seeds, np.ndarray):
        seeds = seeds.tolist()
    if not isinstance(seeds, Sequence):
        raise ConfigError(f"seeds must be a list of integer seeds or a --seeds text such as '0-9', got {seeds!r}")
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed, e.g. [0, 1, 2] or '0-9'")
    given = list(seeds)
    return check_seeds(given, f"seeds {given!r}", distinct)
