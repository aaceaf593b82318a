"""Trainer families: what ``moerl train --env X`` runs depends on what X is.

Three families share one CLI:

* ``moe-dqn`` (seed 001): Gymnasium ids and moerl's RL task suites -> MoE DQN on SB3.
* ``routing`` (seed 002): multi-task supervised datasets -> routing networks and their baselines.
* ``masked-experts`` (seed 000): vision suites -> masked-expert models and PackNet.

A family module defines ``FAMILY = Family(...)``. The CLI asks each family in turn whether it
knows the env name; the first that does trains it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moerl.core.errors import ConfigError, choice_error

if TYPE_CHECKING:
    from moerl.runs.console import Console

#: Modules that define a ``FAMILY``; the order is the order of lookup.
FAMILY_MODULES: tuple[str, ...] = (
    "moerl.rl.experiment",
    "moerl.routing.experiment",
    "moerl.masked.experiment",
)


@dataclass
class TrainRequest:
    """Everything ``moerl train`` was given (None = not given, use the config/default)."""

    env: str | None = None
    arch: str | None = None
    router: str | None = None
    algo: str | None = None
    experts: int | None = None
    topk: int | None = None
    mask: str | None = None
    timesteps: int | None = None
    epochs: int | None = None
    seed: int | None = None
    config: str | None = None
    logdir: str = "runs"
    device: str | None = None
    overrides: list[str] = field(default_factory=list)
    data_dir: str | None = None
    run_name: str | None = None
    progress: bool = True
    #: 0 ``--quiet``, 1 default, 2 ``--verbose`` (:mod:`moerl.runs.console`).
    verbosity: int = 1
    #: A run directory to continue from its last checkpoint (families that support it).
    resume: str | None = None
    #: Several seeds of one config (``--seeds 0-9``): moe-dqn only.
    seeds: str | None = None
    engine: str | None = None

    def flags(self) -> dict[str, Any]:
        """The config-setting flags the user gave (``--env``, ``--arch``, ...), by TrainRequest field name."""
        skip = {"logdir", "overrides", "progress", "verbosity", "config", "run_name", "resume"}
        return {k: v for k, v in self.__dict__.items() if k not in skip and v is not None}

    def console(self) -> Console:
        """The console this request asked for (``--quiet``, ``--verbose``, ``--no-progress``)."""
        from moerl.runs.console import Console

        return Console(self.verbosity, self.progress)


@dataclass(frozen=True)
class Family:
    """One kind of experiment reachable from ``moerl train``."""

    name: str
    description: str
    #: True when this family trains the given env name.
    matches: Callable[[str], bool]
    #: (name, description) rows for ``moerl envs``.
    list_envs: Callable[[], list[tuple[str, str]]]
    #: Validate, create the run directory, train, evaluate; return the run directory (one per seed with --seeds).
    train: Callable[[TrainRequest], Path | list[Path]]
    #: Reload a finished run and evaluate it; returns the numbers printed by ``moerl eval``.
    evaluate: Callable[[Path, dict[str, Any]], dict[str, Any]]
    #: CLI flag (TrainRequest field name) -> the config key it sets. A flag not listed is refused, so a
    #: flag either takes effect or is an error.
    flags: Mapping[str, str] = field(default_factory=dict)
    #: ``moerl eval`` options this family's ``evaluate`` reads; others are refused (see :func:`check_eval_options`).
    eval_options: frozenset[str] = frozenset({"seed", "device"})
    #: Continue an interrupted run (``moerl train --resume``); None when the family cannot yet.
    resume: Callable[[TrainRequest], Path | list[Path]] | None = None
    #: The paper's published result beside a run's config, for ``moerl report``: ``(the paper's dataset,
    #: {epoch: accuracy %})``, or None where the paper has no such row. None: the line has no paper table.
    paper_row: Callable[[Mapping[str, Any]], tuple[str, dict[int, int]] | None] | None = None
    #: ``moerl sweep``: resolve and validate one sweep point (base config file, keys) into a run config,
    #: and name its runs; None when the family has no sweeps.
    sweep_config: Callable[[str | None, Mapping[str, Any]], dict[str, Any]] | None = None
    run_label: Callable[[Mapping[str, Any]], str] | None = None


def families() -> list[Family]:
    """Import and return every registered family, in lookup order."""
    return [importlib.import_module(m).FAMILY for m in FAMILY_MODULES]


def family_by_name(name: str) -> Family:

    found = {f.name: f for f in families()}
    if name not in found:
        raise choice_error("family", name, found)
    return found[name]


def family_for_env(env: str) -> Family | None:
    for fam in families():
        if fam.matches(env):
            return fam
    return None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def reject_unused(request: TrainRequest, family: Family) -> None:
    """Raise a ConfigError when the user gave a flag that this family's config has no key for."""

    for key in request.flags():
        if key not in family.flags:
            raise ConfigError(
                f"option {_flag(key)} does not apply to env '{request.env}' (family {family.name}); "
                f"options it takes: {', '.join(_flag(o) for o in sorted(family.flags) if o != 'env')}"
            )


def check_eval_options(family: Family, options: Mapping[str, Any]) -> None:
    """Refuse ``moerl eval`` options that this family's evaluation would not read."""

    for key in sorted(options):
        if key not in family.eval_options:
            raise ConfigError(
                f"option {_flag(key)} does not apply to '{family.name}' runs; "
                f"options it takes: {', '.join(_flag(o) for o in sorted(family.eval_options))}"
            )


def check_resume_request(request: TrainRequest, allowed: Mapping[str, str]) -> None:
    """``--resume`` continues a run with its own config: refuse every flag but ``allowed``
    (flag -> what it does, e.g. ``{"epochs": "a new total"}``), and ``--set``, ``--config``, ``--run-name``."""

    for key in request.flags():
        if key not in allowed and key != "env":
            took = ", ".join(f"{_flag(k)} ({v})" for k, v in allowed.items())
            raise ConfigError(f"option {_flag(key)} cannot change a resumed run; with --resume only {took} apply")
    if request.overrides or request.config or request.run_name:
        raise ConfigError("--set, --config and --run-name cannot change a resumed run; it keeps its config.yaml")


def default_run_name(*parts: Any) -> str:
    """A readable run directory name from its defining parts, e.g. ``cartpole-crl_big_softmoe``."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in text)


#: Config keys that do not change what a run computes (left out of its id): the seed (named apart), where it
#: trains and where its data files lie.
NOT_IN_ID = ("seed", "device", "data_dir")


def config_id(config: Mapping[str, Any]) -> str:
    """8 hex digits identifying a resolved config (without the keys in :data:`NOT_IN_ID`).

    One function for ``moerl train`` (every family) and ``moerl sweep``, so the same config gets the same
    id wherever it is trained.
    """
    kept = {k: v for k, v in config.items() if k not in NOT_IN_ID}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]


def hashed_run_name(config: Mapping[str, Any], parts: tuple[Any, ...], seed: int | None) -> str:
    """``<readable parts>-<config id>_s<seed>``, e.g. ``cartpole-crl_big_softmoe-1a2b3c4d_s0``.

    Why a hash: two runs that differ in any setting (a learning rate, a budget) get different names instead
    of a silent ``-2`` suffix; the readable parts say what the run is, the id tells configs apart, and
    ``moerl runs`` shows which keys differ. ``seed=None`` leaves the seed suffix off (the batched engine
    adds one per seed).
    """
    name = f"{default_run_name(*parts)}-{config_id(config)}"
    return name if seed is None else f"{name}_s{seed}"

