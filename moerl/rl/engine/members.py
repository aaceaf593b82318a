"""The members of one batch (suite, seed, settings): what they may hold each their own, checked once for
every batched engine.

Why shared: :class:`~moerl.rl.engine.batched_dqn.BatchedDQN` and :class:`~moerl.rl.engine.batched_ppo.BatchedPPO`
batch members the same way: one network shape and one step structure, with a named list of settings each
member may set (``PER_MEMBER`` of each engine), refused in one line otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

from moerl.core.errors import ConfigError
from moerl.rl.spec import SuiteSpec

H = TypeVar("H")


def check_member_settings(specs: list[SuiteSpec], hps: list[H], num_seeds: int, per_member: Sequence[str],
                          section: str) -> list[H]:
    """One suite spec and one settings object (a dataclass) per member, agreeing on every field outside
    ``per_member`` (members share the network shape and the step structure); else the one-line
    :class:`ConfigError` naming the setting as ``<section>.<key>``."""
    if len(specs) != num_seeds or len(hps) != num_seeds:
        raise ConfigError(f"one suite and one {section} config per member: {len(specs)} suites and {len(hps)} "
                          f"configs for {num_seeds} seeds")
    for f in fields(hps[0]):  # type: ignore[arg-type]
        values = {repr(getattr(hp, f.name)) for hp in hps}
        if f.name not in per_member and len(values) > 1:
            raise ConfigError(f"the members of one batch must share {section}.{f.name} (got "
                              f"{', '.join(sorted(values))}); members may differ in "
                              f"{', '.join(section + '.' + k for k in per_member)}")
    return hps


def check_distinct_members(specs: list[SuiteSpec], hps: Sequence[Any], seeds: list[int]) -> None:
    """No two members of a batch may be the same run: the same seed with the same settings."""
    seen: set[tuple[Any, ...]] = set()
    for spec, hp, seed in zip(specs, hps, seeds, strict=True):
        key = (seed, spec.mode, str(spec.order), spec.block_steps, spec.cycles, spec.fixed_task,
               tuple(spec.task_probs), tuple(spec.episode_limits), repr(hp))
        if key in seen:
            raise ConfigError(f"two members of one batch are the same run (seed {seed}, the same settings); "
                              "a seed repeats only across members of different configs")
        seen.add(key)
