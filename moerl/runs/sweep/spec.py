"""A sweep file: a grid of MoE DQN configs times a seed list, expanded into jobs with stable ids.

Why a file and not a shell loop: a study is hundreds of runs, and each must be found again after a crash, a
relaunch or a move to a cluster. The file is plain YAML over the one config schema (the keys of ``moerl
train --config`` files, dotted for nested sections, or the CLI's flat names ``env``, ``arch``, ``router``,
``experts``, ``topk``, ``timesteps``, ``engine``)::

    config: dqn/big-softmoe        # optional base config (a file or a shipped name)
    base: {timesteps: 20000}       # keys every run gets
    settings:                      # optional: a list of key sets, each combined with everything below
      - {env: cartpole-mtrl}
      - {env: cartpole-crl, env_kwargs: {order: reverse}}
    grid:                          # every combination of these values
      dqn.learning_rate: [0.001, 0.0003]
    variants:                      # each entry is combined with every grid point (non-product grids)
      - {arch: dense}
      - {arch: big, router: softmoe}
      - {arch: big, router: hardcoded}
    seeds: 0-9                     # a list, a range "0-9" or "0,3,7"
    engine: batched                # batched (default): the seeds of a config train together; sb3: one by one
    logdir: runs/my-study          # default: runs/<file name without .yaml>

The parts of a run combine key by key, later over earlier: base < setting < grid point < variant (a
variant's ``dqn: {gamma: 0.9}`` changes ``dqn.gamma`` and keeps the base's other ``dqn`` keys). Within one
mapping a key is given once: ``dqn: {learning_rate: ..}`` beside ``dqn.learning_rate`` (or ``arch`` beside
``network.arch``) is refused, as config files refuse it.

A *config* is one setting x grid point x variant, resolved and validated (a bad key or value is refused before
anything runs). Its id is a hash of the resolved config without seed and device, so the same point gets
the same directory on every launch and every machine: ``<logdir>/<env>_<arch>[_<router>]-<id>_s<seed>``.
A *job* is what one process trains: all seeds of a config with the batched engine, one seed with sb3.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moerl.core.config import dotted_keys, load_yaml
from moerl.core.errors import ConfigError
from moerl.runs.kinds import NOT_IN_ID, Family, config_id, family_by_name
from moerl.runs.rundir import check_outside_runs

__all__ = ["NOT_IN_ID", "Sweep", "SweepJob", "config_id", "load_sweep"]

SWEEP_KEYS = ("config", "base", "settings", "grid", "variants", "seeds", "engine", "logdir", "name")
SWEEP_ENGINES = ("batched", "sb3")
#: The kind of run a sweep file holds: MoE DQN runs (the routing and masked-expert lines have their own
#: grids, ``scripts/routing_seeds.py`` and ``moerl.masked.grid``).
SWEEP_FAMILY = "moe-dqn"


@dataclass(frozen=True)
class SweepJob:
    """One process's work: ``seeds`` of one resolved config, each into ``<logdir>/<name>_s<seed>``."""

    config_id: str
    name: str
    config: dict[str, Any]
    seeds: tuple[int, ...]
    engine: str
    logdir: str

    @property
    def job_id(self) -> str:
        return self.name if self.engine == "batched" else f"{self.name}_s{self.seeds[0]}"

    def run_dir(self, seed: int) -> Path:
        return Path(self.logdir) / f"{self.name}_s{seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepJob:
        return cls(**{**data, "seeds": tuple(data["seeds"])})


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: its jobs, in a stable order, and where they write."""

    name: str
    logdir: str
    engine: str
    jobs: tuple[SweepJob, ...]

    @property
    def runs(self) -> int:
        return sum(len(job.seeds) for job in self.jobs)


def _as_mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: '{key}' must be a mapping of config keys to values, got {type(value).__name__}")
    return dict(value)


def _axis(data: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    """A list of key sets (``variants``, ``settings``); ``[{}]`` when absent."""
    axis = data.get(key) or [{}]
    if not isinstance(axis, list) or not all(isinstance(v, Mapping) for v in axis):
        raise ConfigError(f"{where}: '{key}' must be a list of mappings of config keys to values")
    return axis


def _keys(family: Family, part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One mapping of config keys as ``{dotted key: value}`` (a key given twice, nested and dotted or by
    its flat name, is refused). Why dotted: the parts of a run (base < setting < grid point < variant)
    then combine key by key, so a variant's ``dqn: {gamma: ..}`` overrides ``dqn.gamma`` alone instead of
    dropping the base's other ``dqn`` keys."""
    return dotted_keys(part, family.config_aliases, where)


def _grid_points(grid: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid key '{key}' needs a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def _resolve(family: Family, base_file: str | None, keys: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Defaults < base config file < ``keys``, validated by the family as ``moerl train`` validates a config."""
    assert family.sweep_config is not None
    try:
        return family.sweep_config(base_file, keys)
    except ConfigError as exc:
        shown = ", ".join(f"{k}={v}" for k, v in keys.items())
        raise ConfigError(f"{where}: the run ({shown}) is not a valid config: {exc}") from None


def _sweep_name(data: Mapping[str, Any], path: Path) -> str:
    """The sweep's ``name`` (default: the file's name without ``.yaml``), held to the run-name rule: it is
    the folder of the default logdir (``runs/<name>``), so ``../x`` or a name with shell metacharacters would
    put or name the runs where nobody looks."""
    from moerl.runs.rundir import check_run_name

    if data.get("name") is not None:
        return check_run_name(str(data["name"]), f"sweep file '{path}': sweep name")
    try:
        return check_run_name(path.stem, f"sweep file '{path}': sweep name")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (it is the file's name: set 'name:' in the file to give another)") from None


def load_sweep(path: str | Path, logdir: str | None = None) -> Sweep:
    """Parse and expand ``path``; every config is validated before anything is written."""
    from moerl.core.seeding import parse_seeds  # imports torch: a sweep file is read once, when used

    path = Path(path)
    where = f"sweep file '{path}'"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    data = load_yaml(path, "sweep file")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a YAML mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; valid keys: {', '.join(SWEEP_KEYS)}")
    engine = str(data.get("engine", "batched"))
    if engine not in SWEEP_ENGINES:
        raise ConfigError(f"{where}: engine '{engine}' is not one of {', '.join(SWEEP_ENGINES)}")
    if "seeds" not in data:
        raise ConfigError(f"{where} needs 'seeds' (e.g. seeds: 0-9)")
    seeds = parse_seeds(str(data["seeds"]) if not isinstance(data["seeds"], list)
                        else ",".join(str(s) for s in data["seeds"]))
    base = _as_mapping(data.get("base"), "base", where)
    grid = _as_mapping(data.get("grid"), "grid", where)
    variants = _axis(data, "variants", where)
    settings = _axis(data, "settings", where)
    family = family_by_name(SWEEP_FAMILY)
    assert family.sweep_config is not None and family.run_label is not None
    for key in ("seed", "engine", "device"):
        if any(key in part for part in (base, grid, *variants, *settings)):
            raise ConfigError(f"{where}: '{key}' is set by the sweep itself (top-level 'seeds'/'engine', "
                              f"'moerl sweep --device'), not per run")
    base = _keys(family, base, f"{where}: 'base'")
    settings = [_keys(family, s, f"{where}: 'settings' entry {i + 1}") for i, s in enumerate(settings)]
    variants = [_keys(family, v, f"{where}: 'variants' entry {i + 1}") for i, v in enumerate(variants)]
    name = _sweep_name(data, path)
    out = logdir or str(data.get("logdir") or Path("runs") / name)
    check_outside_runs(out, f"{where}: logdir")
    jobs: list[SweepJob] = []
    seen: dict[str, str] = {}
    points = [_keys(family, p, f"{where}: 'grid'") for p in _grid_points(grid, where)]
    for setting, point, variant in itertools.product(settings, points, variants):
        keys = {**base, **setting, **point, **variant, "engine": engine}
        config = _resolve(family, data.get("config"), keys, where)
        cid = config_id(config)
        run_name = family.run_label(config)
        if cid in seen:
            raise ConfigError(f"{where}: two grid entries give the same config ({seen[cid]} and "
                              f"{keys}); remove one (e.g. a router on a dense arch is not a new config)")
        seen[cid] = str(keys)
        if engine == "batched":
            jobs.append(SweepJob(cid, run_name, config, tuple(seeds), engine, out))
        else:
            jobs.extend(SweepJob(cid, run_name, config, (s,), engine, out) for s in seeds)
    return Sweep(name=name, logdir=out, engine=engine, jobs=tuple(jobs))
