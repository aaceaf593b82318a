"""Kinds of run (families): what ``moerl train --env X`` runs depends on what X is.

One family per research line shares one CLI:

* ``moe-dqn`` (seed 001, :mod:`moerl.rl`): Gymnasium ids and moerl's RL task suites -> MoE DQN.
* ``routing`` (seed 002, :mod:`moerl.routing`): multi-task supervised datasets -> routing networks and baselines.
* ``masked-experts`` (seed 000, :mod:`moerl.masked`): vision suites -> masked-expert models and PackNet.

A line's ``experiment`` module defines ``FAMILY = Family(...)``, named here by a string, so this module
imports no line. The CLI asks each family in turn whether it knows the env name; the first that does owns
the rest of the command line: its :attr:`Family.options` are the flags ``moerl train`` then takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moerl.core.errors import ConfigError, choice_error
from moerl.runs.rundir import RunDir

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
    """Everything ``moerl train`` was given: the flags every line shares, and the line's own
    (:attr:`options`, by option name; a flag not given is absent: the config or the default decides)."""

    env: str | None = None
    config: str | None = None
    logdir: str = "runs"
    overrides: list[str] = field(default_factory=list)
    run_name: str | None = None
    progress: bool = True
    #: 0 ``--quiet``, 1 default, 2 ``--verbose`` (:mod:`moerl.runs.console`).
    verbosity: int = 1
    #: A run directory to continue from its last checkpoint (families that support it).
    resume: str | None = None
    #: The line's own flags (``--arch big`` -> ``{"arch": "big"}``), as its :class:`Option` s parsed them.
    options: dict[str, Any] = field(default_factory=dict)

    def flags(self) -> dict[str, Any]:
        """The config-setting flags the user gave: ``env`` and the line's options."""
        given = {k: v for k, v in self.options.items() if v is not None}
        return {"env": self.env, **given} if self.env is not None else given

    def option(self, name: str) -> Any:
        """The value of the line's option ``name``, or None when it was not given."""
        return self.options.get(name)

    def with_options(self, **changes: Any) -> TrainRequest:
        """A copy with some options set (None: not given)."""
        return dataclasses.replace(self, options={**self.options, **changes})

    def console(self) -> Console:
        """The console this request asked for (``--quiet``, ``--verbose``, ``--no-progress``)."""
        from moerl.runs.console import Console

        return Console(self.verbosity, self.progress)


@dataclass(frozen=True)
class Option:
    """One flag of ``moerl train`` that a line takes (``--<flag>``, dashes for underscores).

    ``key``: the config key it sets; its value is parsed by that key's type in the line's config dataclass
    (see :func:`config_options`). ``key=None``: the line reads it itself (``--seeds``), as text.
    """

    flag: str
    help: str
    key: str | None = None
    parse: Callable[[str], Any] = str

    @property
    def cli(self) -> str:
        return "--" + self.flag.replace("_", "-")


def config_options(config_cls: type, keys: Mapping[str, str], helps: Mapping[str, str],
                   extra: tuple[Option, ...] = ()) -> tuple[Option, ...]:
    """A line's options, generated from its config dataclass: one per ``flag -> config key`` of ``keys``,
    parsed by the key's type and with its default in the help (so neither can drift from the schema), plus
    ``extra`` options the line reads itself. A key the dataclass lacks is a programming error (raised)."""
    defaults = config_cls()
    out = []
    for flag, key in keys.items():
        tp, default = _field(config_cls, defaults, key)
        shown = "none" if default is None else default
        out.append(Option(flag, f"{helps[flag]} (config key {key}; default: {shown})", key, _parser_for(tp, flag)))
    return (*out, *extra)


def _field(cls: type, instance: Any, dotted: str) -> tuple[Any, Any]:
    """The type and default value of the dataclass field at ``dotted`` (``network.arch``)."""
    tp: Any = cls
    for part in dotted.split("."):
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise KeyError(f"{cls.__name__} has no config key '{dotted}'")
        tp, instance = hints[part], getattr(instance, part)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return (args[0] if len(args) == 1 else tp), instance


def _parser_for(tp: Any, flag: str) -> Callable[[str], Any]:
    if tp is bool:
        return _parse_bool
    if tp in (int, float):
        def parse(text: str) -> Any:
            try:
                return tp(text)
            except ValueError:
                kind = "an integer" if tp is int else "a number"
                raise argparse.ArgumentTypeError(f"'{text}' is not {kind}") from None
        return parse
    return str


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not true or false")


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
    #: The line's own ``moerl train`` flags (beside the shared ``--env``, ``--config``, ``--set``, ...): the
    #: CLI parses the rest of the command line with these alone, so a flag either takes effect or is refused.
    options: tuple[Option, ...] = ()
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
    #: The flat names a sweep file may use for config keys (``arch`` for ``network.arch``), as config files do.
    config_aliases: Mapping[str, str] = field(default_factory=dict)
    #: ``moerl sweep`` groups: equal keys for configs whose runs may share one batch (None: trains alone);
    #: train one group (members ``{"name", "seeds", "config"}``, a logdir, a device); its core seconds here.
    group_key: Callable[[Mapping[str, Any]], str | None] | None = None
    train_group: Callable[[Sequence[Mapping[str, Any]], str, str | None], list[Path]] | None = None
    estimate_group: Callable[[Sequence[Mapping[str, Any]]], float] | None = None


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


class _LineParser(argparse.ArgumentParser):
    """The line's flags: a bad value or a flag it does not take is a ConfigError (one line, exit 2)."""

    def __init__(self, family: Family, env: str | None):
        super().__init__(prog=f"moerl train --env {env or '...'}", add_help=False, allow_abbrev=False)
        self.family, self.env = family, env
        for option in family.options:
            self.add_argument(option.cli, dest=option.flag, type=option.parse, help=option.help, metavar="VALUE")

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{message} (family {self.family.name})")


def parse_options(family: Family, args: list[str], env: str | None, resumed: bool = False) -> dict[str, Any]:
    """The line's options among ``args`` (what the shared flags left), by option name, given ones only.

    A flag the line does not take is refused with the flags it takes: the line owns its flags, so nothing
    given is silently ignored. ``resumed``: the request continues a run (``--resume``), which keeps its
    config, so the refusal says that rather than naming an env the user did not give.
    """
    parser = _LineParser(family, env)
    known, unknown = parser.parse_known_args(args)
    if unknown:
        flag = next((a.split("=")[0] for a in unknown if a.startswith("-")), unknown[0])
        if resumed:
            raise ConfigError(f"{'option ' if flag.startswith('-') else 'argument '}{flag} cannot change a "
                              f"resumed run ({family.name}); it keeps its config.yaml")
        taken = ", ".join(o.cli for o in sorted(family.options, key=lambda o: o.flag))
        what = f"option {flag} does not apply" if flag.startswith("-") else f"unexpected argument '{flag}'"
        raise ConfigError(f"{what} to env '{env}' (family {family.name}); options it takes: {taken}")
    return {k: v for k, v in vars(known).items() if v is not None}


def options_help(family: Family) -> str:
    """The ``--help`` section of the line's own flags."""
    parser = _LineParser(family, None)
    formatter = parser._get_formatter()
    formatter.start_section(f"options of {family.name} runs")
    formatter.add_arguments(parser._actions)
    formatter.end_section()
    return formatter.format_help()


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
    (flag -> what it does, e.g. ``{"epochs": "a new total"}``), and ``--set``, ``--config``, ``--run-name``.

    ``--env`` is accepted only when it names the env the run trains (a no-op): any other would be ignored,
    so it is refused naming both. Reads only; every family calls this before it writes anything.
    """
    if request.env is not None:
        _check_resumed_env(request)
    for key in request.flags():
        if key not in allowed and key != "env":
            took = ", ".join(f"{_flag(k)} ({v})" for k, v in allowed.items())
            raise ConfigError(f"option {_flag(key)} cannot change a resumed run; with --resume only {took} apply")
    if request.overrides or request.config or request.run_name:
        raise ConfigError("--set, --config and --run-name cannot change a resumed run; it keeps its config.yaml")


def _check_resumed_env(request: TrainRequest) -> None:
    assert request.resume is not None
    own = RunDir(request.resume).read_config().get("env")
    if request.env != own:
        raise ConfigError(f"option --env {request.env} cannot change a resumed run; it trains {own!r} (its "
                          "config.yaml); leave --env out, or train a new run")


def default_run_name(*parts: Any) -> str:
    """A readable run directory name from its defining parts, e.g. ``cartpole-crl_big_softmoe``."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in text)


#: Config keys (dotted for nested ones) that do not change what a run computes, left out of its id: the seed
#: (named apart), where it trains, where its data files lie, and how its arithmetic is carried out (compiled
#: updates, experts computed only where routed: both change float rounding only, like the device).
NOT_IN_ID = ("seed", "device", "data_dir", "compile", "network.expert_compute")
#: Dotted keys left out of the id (and of a report's variant key) while at this default value: keys added after
#: runs were named, so that those runs keep their ids; a non-default value is part of the id.
NOT_IN_ID_AT_DEFAULT: dict[str, Any] = {"network.torso": "mlp", "dqn.optimizer": "adam", "ppo.anneal_clip": False,
                                        "ppo.shared_network": False}


def not_in_id(key: str) -> bool:
    """Whether a flattened config key (``"network.expert_compute"``) is one of :data:`NOT_IN_ID` or below one."""
    return any(key == k or key.startswith(f"{k}.") for k in NOT_IN_ID)


def without_not_in_id(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flattened config without the :data:`NOT_IN_ID` keys and the :data:`NOT_IN_ID_AT_DEFAULT` keys at their
    default: what makes two runs the same config."""
    return {k: v for k, v in flat.items()
            if not not_in_id(k) and (k not in NOT_IN_ID_AT_DEFAULT or v != NOT_IN_ID_AT_DEFAULT[k])}


def config_id(config: Mapping[str, Any]) -> str:
    """8 hex digits identifying a resolved config (without the keys in :data:`NOT_IN_ID`).

    One function for ``moerl train`` (every family) and ``moerl sweep``, so the same config gets the same
    id wherever it is trained.
    """
    kept = {k: v for k, v in config.items() if k not in NOT_IN_ID}
    dropped = [(k, None) for k in NOT_IN_ID if "." in k] + list(NOT_IN_ID_AT_DEFAULT.items())
    for dotted, default in dropped:
        section, _, key = dotted.partition(".")
        inner = kept.get(section)
        if isinstance(inner, Mapping) and key in inner and (default is None or inner[key] == default):
            kept[section] = {k: v for k, v in inner.items() if k != key}
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

