"""What ``moerl report`` reads: finished MoE DQN run directories, loaded from their files and grouped by config.

Only plain files are read (``config.yaml``, ``status.json``, ``results.json``, ``schedule.json``, ``eval.csv``,
``eval_usage.csv``, ``metrics.csv``), never TensorBoard events, so a report does not depend on an event-log
reader and says exactly which file is missing. Runs written before ``eval_usage.csv`` and ``metrics.csv``
existed still load; the report then says what it cannot show.

Runs whose configs are equal except for the seed (and keys that do not change what is trained: device,
checkpointing, log cadence, reference-run paths) form one *group*: the seeds of one variant. A group's
label is ``arch/router`` (``dense`` and ``wide`` have no router), plus the config keys that tell it apart
from another group of the same env and label (e.g. ``[env_kwargs.order=reverse]``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moerl.core.config import flatten
from moerl.core.errors import ConfigError
from moerl.rl.batch_engines import PLAIN_IDS
from moerl.runs.kinds import NOT_IN_ID_AT_DEFAULT, without_not_in_id
from moerl.runs.results_check import results_problem
from moerl.runs.rundir import RESULTS_FILE, RunDir
from moerl.runs.rundir import find_run_dirs as expand_run_folders

#: Config keys that do not change what a run trains, so runs differing only there are seeds of one variant.
IGNORED_KEYS = ("seed", "device", "checkpoint.every", "logging.log_interval", "eval.reference_runs")
#: Archs without a router: their ``network.router`` is never read.
ROUTERLESS = ("dense", "wide")
DORMANT_KEY = "moe/dormant/tau0.1/all"


def variant_label(arch: str, router: str | None) -> str:
    """How reports name a variant: ``dense``, ``wide`` (no router), or ``arch/router`` (``big/softmoe``)."""
    return arch if arch in ROUTERLESS or router is None else f"{arch}/{router}"


def suite_variant(env: str, arch: str, router: str | None) -> str:
    """``cartpole: big/softmoe``: a variant within its suite, the suite being the env name's first word
    (``cartpole-crl`` and ``CartPole-v1`` are ``cartpole``). Cost and memory tables key rows by it: parameters
    and step costs differ between suites (observation sizes, tasks), so rows never mix them."""
    return f"{env.split('-')[0].lower()}: {variant_label(arch, router)}"
#: Keys in which a single-task reference run may differ from the continual run it serves (a pinned task has
#: no schedule, so the schedule's keys do not matter; one reference serves every task order).
REFERENCE_FREE_KEYS = ("env_kwargs.fixed_task", "timesteps", "dqn.buffer_size", "env_kwargs.order",
                       "env_kwargs.block_steps", "env_kwargs.cycles")


@dataclass
class Run:
    """One finished run: its config and results, and its per-step files (None when the file is absent)."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    schedule: list[dict[str, Any]]
    block_steps: int | None
    eval_rows: list[dict[str, Any]] | None
    usage_rows: list[dict[str, Any]] | None
    metric_rows: list[dict[str, Any]] | None

    @property
    def env(self) -> str:
        return str(self.results.get("env", self.config.get("env", "?")))

    @property
    def arch(self) -> str:
        return str(self.results.get("arch") or self.config.get("network", {}).get("arch", "?"))

    @property
    def router(self) -> str | None:
        return None if self.arch in ROUTERLESS else self.results.get("router")

    @property
    def algo(self) -> str:
        """``dqn`` (its results and configs name no algorithm) or the one they name (``ppo``)."""
        return str(self.results.get("algo") or self.config.get("algo") or "dqn")

    @property
    def seed(self) -> int:
        return int(self.results.get("seed", self.config.get("seed", 0)))

    @property
    def fixed_task(self) -> Any:
        return (self.config.get("env_kwargs") or {}).get("fixed_task")

    @property
    def setting(self) -> str:
        """``crl`` (a schedule of more than one block), ``mtrl`` (several tasks at once) or ``single``."""
        if self.fixed_task is not None or len(self.results.get("final_eval", {})) <= 1:
            return "single"
        return "crl" if len(self.schedule) > 1 else "mtrl"

    @property
    def order(self) -> tuple[str, ...]:
        """The CRL task order (task names of the schedule's blocks); empty outside CRL."""
        return tuple(str(b["task_name"]) for b in self.schedule)

    @property
    def dormant_key(self) -> str:
        """The ``metrics.csv`` key of the tau=0.1 dormant fraction over all hidden neurons: DQN's Q-network
        (:data:`DORMANT_KEY`); for PPO the policy's (``moe/actor/...``; ``moe/shared/...`` when one network
        serves actor and critic): the network that acts. The critic's series are in ``metrics.csv`` beside it."""
        if self.algo == "dqn":
            return DORMANT_KEY
        shared = (self.config.get(self.algo) or {}).get("shared_network")
        return DORMANT_KEY.replace("moe/", "moe/shared/" if shared else "moe/actor/", 1)

    def final_dormant(self) -> float | None:
        """The last tau=0.1 dormant fraction over all hidden neurons in ``metrics.csv`` (None without it)."""
        series = self.metric_series(self.dormant_key)
        return series[-1][1] if series else None

    def metric_series(self, key: str) -> list[tuple[int, float]]:
        return sorted((int(r["step"]), float(r["value"])) for r in (self.metric_rows or []) if r["key"] == key)


@dataclass
class Group:
    """The seeds of one variant: runs whose configs differ only in :data:`IGNORED_KEYS`."""

    key: str
    runs: list[Run]
    label: str = ""
    tasks: list[str] = field(default_factory=list)

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def env(self) -> str:
        return self.first.env

    @property
    def setting(self) -> str:
        return self.first.setting

    @property
    def base_label(self) -> str:
        run = self.first
        label = variant_label(run.arch, run.router)
        return label if run.algo == "dqn" else f"{label} ({run.algo})"

    @property
    def is_dense(self) -> bool:
        return self.first.arch == "dense"


def config_key(config: dict[str, Any]) -> str:
    """What makes two runs the same variant: the flattened config without :data:`IGNORED_KEYS`."""
    flat = {k: v for k, v in without_not_in_id(flatten(config)).items()
            if not any(k == i or k.startswith(f"{i}.") for i in IGNORED_KEYS)}
    if flat.get("network.arch") in ROUTERLESS:  # a dense network's router setting is never read
        flat = {k: v for k, v in flat.items() if k not in ("network.router", "network.topk")}
    return json.dumps(flat, sort_keys=True, default=str)


#: Per CSV file the report reads: the columns it reads and how each must parse (rows are kept as text; the
#: figures and tables convert them). ``_optional_float``: a number or empty (no bounds, no normalised score).
def _optional_float(text: str) -> float | None:
    return None if text == "" else float(text)


CSV_COLUMNS: dict[str, dict[str, Callable[[str], Any]]] = {
    "eval.csv": {"step": int, "task": str, "mean_return": float, "normalized": _optional_float},
    "eval_usage.csv": {"step": int, "task": str, "layer": str, "expert": int, "usage": float},
    "metrics.csv": {"step": int, "key": str, "value": float},
}


def _read_csv(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _csv_problem(name: str, rows: list[dict[str, Any]]) -> str | None:
    """What is damaged in the rows of the run's CSV file ``name`` (see :data:`CSV_COLUMNS`), or None.

    Why here: the figures combine every run's rows, so a short row or a word where a number belongs must be
    found, and named, while the run is loaded, not as a traceback from the plotting code.
    """
    for line, row in enumerate(rows, start=2):
        for column, parse in CSV_COLUMNS[name].items():
            value = row.get(column)
            if value is None:
                return f"{name} line {line} has no '{column}' (a short row or a missing column)"
            try:
                parse(value)
            except ValueError:
                return f"{name} line {line} has '{value[:40]}' for '{column}', not a number"
    return None


def _read_schedule(run: RunDir) -> tuple[list[dict[str, Any]], int | None]:
    """``schedule.json``'s blocks and block length (none for runs written before it existed); ConfigError
    when it is there but damaged (the CRL figures and forward transfer read every block)."""
    if not (run.path / "schedule.json").is_file():
        return [], None
    try:
        sched = run.read_json("schedule.json")
        blocks, block_steps = list(sched.get("schedule") or []), sched.get("block_steps")
        for block in blocks:
            str(block["task_name"])
            int(block["start_step"])
        if block_steps is not None:
            int(block_steps)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(f"schedule.json is damaged ({type(exc).__name__})") from None
    return blocks, block_steps


def load_run(run: RunDir) -> Run:
    """A finished run's files; ConfigError (what is damaged) when the report cannot read them: a
    ``results.json`` without what the tables read (:func:`~moerl.runs.results_check.results_problem`),
    a damaged ``schedule.json`` or CSV row (:data:`CSV_COLUMNS`)."""
    try:
        results = run.read_json(RESULTS_FILE)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{RESULTS_FILE} is missing or corrupt ({type(exc).__name__})") from None
    problem = results_problem("moe-dqn", results)
    if problem is not None:
        raise ConfigError(f"{RESULTS_FILE} {problem}")
    try:
        config = run.read_config()
    except ConfigError:
        config = {}
    schedule, block_steps = _read_schedule(run)
    try:
        rows = {name: _read_csv(run.path / name) for name in CSV_COLUMNS}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"a CSV file of the run is unreadable ({type(exc).__name__})") from None
    for name, found in rows.items():
        problem = _csv_problem(name, found or [])
        if problem is not None:
            raise ConfigError(problem)
    _rename_plain_task(results, rows)
    return Run(run.path, config, results, schedule, block_steps, rows["eval.csv"], rows["eval_usage.csv"],
               rows["metrics.csv"])


def _rename_plain_task(results: dict[str, Any], rows: dict[str, list[dict[str, Any]] | None]) -> None:
    """A batched run on a plain Gymnasium id written before such runs named their task by the id (as the SB3
    path does: :func:`~moerl.rl.batch_engines.task_names`) named it by the suite task that reproduces it
    (``cartpole-default``); read it under the id, so that runs of both engines and of any age share a column.
    Its TensorBoard tags keep the old name (:func:`plain_task_aliases` gives it to readers of tags)."""
    env = str(results.get("env", ""))
    old = PLAIN_IDS.get(env)
    final = results.get("final_eval")
    if old is None or not isinstance(final, dict) or old not in final:
        return
    results["final_eval"] = {(env if task == old else task): value for task, value in final.items()}
    for name in ("eval.csv", "eval_usage.csv"):
        for row in rows.get(name) or []:
            if row.get("task") == old:
                row["task"] = env


def plain_task_aliases(task: str) -> list[str]:
    """The names a plain Gymnasium id's task had in TensorBoard tags before both engines named it by the id:
    the suite task reproducing it (batched runs) and ``main`` (the SB3 path's training returns)."""
    return [name for name in (PLAIN_IDS.get(task), "main") if name is not None]


def load_runs(paths: list[str], required: bool = True) -> tuple[list[Run], list[tuple[str, str]]]:
    """``(runs, skipped)``: every finished moe-dqn run among ``paths``, and ``(path, reason)`` for the rest:
    not a finished run, another family, a corrupt results file, the same run given twice, or a repeat of a
    (config, seed) pair already taken (a command run twice, a copied folder, two sweeps on one logdir): a
    report is over distinct (config, seed) pairs, so a repeat never counts as another seed. ConfigError when
    no run is left (``required``; else an empty list).
    """
    out: list[Run] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    taken: dict[tuple[str, int], str] = {}
    expanded: list[str] = []
    for p in paths:
        found, not_runs = expand_run_folders(Path(p))
        expanded.extend(found)
        skipped.extend(not_runs)
    again: dict[Path, list[str]] = {}  # a run given more than once: named once, with the count
    for p in expanded:
        key = Path(p).resolve()
        if key in seen:
            again.setdefault(key, []).append(p)
            continue
        seen.add(key)
        try:
            run = RunDir.open_finished(p)
        except ConfigError as exc:
            skipped.append((p, str(exc)))
            continue
        if run.read_status().get("family") != "moe-dqn":
            skipped.append((p, "not a moe-dqn run ('moerl report' summarises MoE DQN and MoE PPO runs)"))
            continue
        try:
            loaded = load_run(run)
        except ConfigError as exc:
            skipped.append((p, str(exc)))
            continue
        pair = (config_key(loaded.config) if loaded.config else str(loaded.path), loaded.seed)
        if pair in taken:
            skipped.append((p, f"the same config and seed ({loaded.seed}) as {taken[pair]}: a repeat, counted once"))
            continue
        taken[pair] = p
        out.append(loaded)
    for paths in again.values():
        times = f"{len(paths)} more time{'s' if len(paths) > 1 else ''}"
        skipped.append((paths[0], f"the same run was given before ({times}; counted once)"))
    if not out and required:
        raise ConfigError("no finished moe-dqn run among the given paths: "
                          + "; ".join(f"{p}: {why}" for p, why in skipped))
    return out, skipped


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by :func:`config_key`, in the order first seen, each with a unique label per env."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = config_key(run.config) if run.config else json.dumps(
            [run.env, run.arch, run.router, run.fixed_task], default=str)
        groups.setdefault(key, Group(key, [])).runs.append(run)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.seed)
        g.tasks = list(dict.fromkeys(t for r in g.runs for t in r.results["final_eval"]))
    out = list(groups.values())
    for env in dict.fromkeys(g.env for g in out):
        relabel([g for g in out if g.env == env])
    return out


#: Config keys named first when a label must tell two groups of one arch/router apart.
LABEL_PRIORITY = ("env_kwargs.order", "engine", "timesteps", "network.experts", "network.hidden", "network.tokens",
                  "network.topk", "env_kwargs.fixed_task")


def relabel(groups: list[Group]) -> None:
    """Give each group ``arch/router`` plus the fewest config keys that tell it from the other groups of
    ``groups`` with the same ``arch/router`` (labels are unique within ``groups``)."""
    for g in groups:
        g.label = g.base_label + _distinguishing(g, [h for h in groups if h is not g and h.base_label == g.base_label])


def context_key(group: Group) -> str:
    """What a group was trained *under*, as opposed to which network it trained: its config key without the
    ``network.*`` keys (env, task order, budget, algorithm settings). Variants are compared with the dense
    baseline of the same context only."""
    if not group.first.config:
        return ""
    return json.dumps({k: v for k, v in json.loads(group.key).items() if not k.startswith("network.")},
                      sort_keys=True, default=str)


def _distinguishing(group: Group, rivals: list[Group]) -> str:
    """`` [k=v, ...]``: the fewest config keys (by :data:`LABEL_PRIORITY`, then by name) that tell ``group``
    from each rival; empty without rivals."""
    if not rivals or not group.first.config:
        return ""
    mine = json.loads(group.key)
    chosen: list[str] = []
    for rival in rivals:
        theirs = json.loads(rival.key) if rival.first.config else {}
        differ = [k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)]
        if not differ or any(k in chosen for k in differ):
            continue
        chosen.append(min(differ, key=lambda k: (LABEL_PRIORITY.index(k) if k in LABEL_PRIORITY
                                                 else len(LABEL_PRIORITY), k)))
    # A key left out of the config key at its default (NOT_IN_ID_AT_DEFAULT) shows that default.
    return " [" + ", ".join(f"{k}={mine.get(k, NOT_IN_ID_AT_DEFAULT.get(k, '-'))}" for k in chosen) + "]" if chosen else ""


def references_for(group: Group, groups: list[Group]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Single-task reference eval rows for ``group``'s forward transfer, per seed of ``group``: task -> rows.

    A reference is a given run of the same variant and env trained on one task only
    (``env_kwargs.fixed_task``); the run of the same seed is preferred, else the first seed. Runs whose
    config names ``eval.reference_runs`` use those directories instead (the sweep's own references).
    """
    mine = json.loads(group.key) if group.first.config else None
    refs: dict[str, list[Run]] = {}
    for other in groups:
        run = other.first
        if run.fixed_task is None or mine is None or not run.config or run.env != group.env:
            continue
        theirs = json.loads(other.key)
        if ({k: v for k, v in theirs.items() if k not in REFERENCE_FREE_KEYS}
                != {k: v for k, v in mine.items() if k not in REFERENCE_FREE_KEYS}):
            continue
        task = run.fixed_task
        if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
            names = list(run.results["final_eval"])
            task = names[int(task)] if int(task) < len(names) else str(task)
        refs.setdefault(str(task), []).extend(other.runs)
    out: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for run in group.runs:
        per_task: dict[str, list[dict[str, Any]]] = {}
        for task, path in ((run.config.get("eval") or {}).get("reference_runs") or {}).items():
            rows = _reference_rows(Path(path))
            if rows:
                per_task[str(task)] = rows
        for task, candidates in refs.items():
            if task in per_task:
                continue
            same = [c for c in candidates if c.seed == run.seed] or candidates
            if same[0].eval_rows:
                per_task[task] = same[0].eval_rows
        if per_task:
            out[run.seed] = per_task
    return out


def _reference_rows(path: Path) -> list[dict[str, Any]] | None:
    """The eval.csv rows of a reference run named by a run's config, or None when they are missing or
    damaged (its forward transfer is then reported as missing, as for a run without a reference)."""
    try:
        rows = _read_csv(path / "eval.csv")
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None if rows is None or _csv_problem("eval.csv", rows) is not None else rows
