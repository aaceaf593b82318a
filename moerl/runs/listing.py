"""``moerl runs [DIR ...]``: every run below some folders, in one table, without opening a file.

Why: a run's name says what it is (``<env>_<arch>[_<router>]-<config id>_s<seed>``), but not how it ended,
how it differs from its neighbours or what it scored. This table reads each run's ``status.json``,
``config.yaml`` and ``results.json`` and shows, per run: its family (with its algorithm where that is not
DQN: ``moe-dqn (ppo)``), its status (``finished``, ``running``, ``interrupted``, ``killed`` for a process that
died without a word, ``failed``, ``damaged`` for a status.json or a finished run's results.json that moerl
cannot read, with what is wrong in the last column), the config keys that differ between the listed runs of
its family (seed, device and data location left out: the name has the seed, the others do not change what a
run computes; so are the router keys its network never reads), and its final numbers. Every family is
listed; folders and files that are not runs are named on one line, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moerl.core.config import flatten
from moerl.core.errors import ConfigError
from moerl.nn.choices import ROUTED_ARCHS, ROUTER_ONLY_KEYS
from moerl.runs.kinds import not_in_id
from moerl.runs.results_check import results_problem
from moerl.runs.rundir import RESULTS_FILE, STATUS_FILE, RunDir, find_run_dirs, run_state
from moerl.runs.tables import markdown_table

#: The status column's word for each :func:`~moerl.runs.rundir.run_state`; ``damaged``: a status.json or a
#: finished run's results.json that moerl cannot read (the final column says what is wrong).
STATUS_WORDS = {"crashed": "killed", "missing": "no status", "corrupt": "damaged"}
#: Most characters of the differing-keys cell (a run of another shape would otherwise flood the table).
MAX_DIFF_CHARS = 160


@dataclass
class RunRow:
    """One run as the table shows it."""

    path: str
    family: str
    status: str
    config: dict[str, Any]
    final: str


def final_numbers(family: str, results: dict[str, Any]) -> str:
    """The headline numbers of a finished run's ``results.json`` as a short text ("-" when there are none).

    MoE DQN: average performance (continual suites) and the mean normalised final return, else the mean raw
    return; routing: test accuracy; masked experts: the test split's headline accuracy.
    """
    parts: list[str] = []
    if family == "moe-dqn":
        continual = results.get("continual") or {}
        if continual.get("average_performance") is not None:
            parts.append(f"avg perf {continual['average_performance']:.3f}")
        final = (results.get("final_eval") or {}).values()
        norms = [t["normalized"] for t in final if t.get("normalized") is not None]
        if norms:
            parts.append(f"final norm {sum(norms) / len(norms):.3f}")
        elif final:
            parts.append(f"final return {sum(t['mean_return'] for t in final) / len(final):.1f}")
    elif family == "routing" and results.get("test_accuracy") is not None:
        parts.append(f"test acc {results['test_accuracy']:.3f}")
    elif family == "masked-experts":
        key = results.get("headline_metric", "mean_accuracy")
        value = (results.get("test") or {}).get(key)
        if value is not None:
            parts.append(f"test acc {value:.3f}")
    return ", ".join(parts) or "-"


def read_row(path: str) -> RunRow:
    """The table row of one run directory (it has a ``status.json``; every other file may be missing)."""
    run = RunDir(path)
    status = run.read_status()
    state = run_state(status)
    family = str(status.get("family", "?"))
    try:
        config = flatten(run.read_config())
    except ConfigError:
        config = {}
    config = {k: v for k, v in config.items() if k not in _unread(config)}
    label = family  # the RL line's other algorithms are listed apart: their own keys differ
    if family == "moe-dqn" and config.get("algo") not in (None, "dqn"):
        label = f"{family} ({config['algo']})"
    final = "-"
    if state == "corrupt":
        final = str(status.get("error") or f"unreadable {STATUS_FILE}")
    elif state == "finished":
        final, damage = _finished_numbers(run, family)
        state = "corrupt" if damage else state
    return RunRow(path, label, STATUS_WORDS.get(state, state), config, final)


def _unread(config: dict[str, Any]) -> set[str]:
    """The router keys of ``config`` its network never reads: all of them without a router (dense, wide), the
    other routers' own keys with one."""
    if "network.arch" not in config:
        return set()
    if config["network.arch"] not in ROUTED_ARCHS:
        return {"network.router", *(f"network.{k}" for keys in ROUTER_ONLY_KEYS.values() for k in keys)}
    return {f"network.{k}" for router, keys in ROUTER_ONLY_KEYS.items() if router != config.get("network.router")
            for k in keys}


def _finished_numbers(run: RunDir, family: str) -> tuple[str, bool]:
    """A finished run's final numbers, or what is wrong with its results.json and True (damaged): the
    same check as ``moerl report`` (:func:`~moerl.runs.results_check.results_problem`), so the two agree."""
    try:
        results = run.read_json(RESULTS_FILE)
    except (OSError, ValueError) as exc:
        return f"{RESULTS_FILE} is missing or not JSON ({type(exc).__name__})", True
    problem = results_problem(family, results)
    if problem is not None:
        return f"{RESULTS_FILE} {problem}", True
    return final_numbers(family, results), False


def differing_keys(rows: Sequence[RunRow]) -> list[str]:
    """Config keys whose values are not the same in every run of ``rows`` that has them (a key only some runs
    have, such as a router's own keys, is compared among those: the runs without it never read it)."""
    keys = sorted({k for row in rows for k in row.config if not not_in_id(k)})
    return [k for k in keys if len({repr(row.config[k]) for row in rows if k in row.config}) > 1]


def list_runs(paths: Sequence[str]) -> tuple[list[RunRow], list[tuple[str, str]]]:
    """Every run below ``paths`` (a run directory counts as itself) and ``(path, reason)`` for what is not one."""
    rows: list[RunRow] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for given in paths:
        if not Path(given).exists():
            skipped.append((given, "does not exist"))
            continue
        found, not_runs = find_run_dirs(Path(given))
        skipped.extend(not_runs)
        for path in found:
            if not (Path(path) / "status.json").is_file():
                skipped.append((path, "not a run directory (no status.json)"))
            elif Path(path).resolve() not in seen:
                seen.add(Path(path).resolve())
                rows.append(read_row(path))
    return rows, skipped


def _cell(row: RunRow, keys: list[str]) -> str:
    text = " ".join(f"{k}={row.config[k]}" for k in keys if k in row.config) or "-"
    return text if len(text) <= MAX_DIFF_CHARS else text[: MAX_DIFF_CHARS - 3] + "..."


def runs_table(rows: Sequence[RunRow]) -> str:
    """The Markdown table: run, family, status, differing config keys (within its family), final numbers."""
    by_family: dict[str, list[RunRow]] = {}
    for row in rows:
        by_family.setdefault(row.family, []).append(row)
    diff = {family: differing_keys(members) for family, members in by_family.items()}
    body = [[row.path, row.family, row.status, _cell(row, diff[row.family]), row.final] for row in rows]
    return markdown_table(["run", "family", "status", "differs", "final"], body)


def runs_report(paths: Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
    """``moerl runs``: the table with a count per status, and what was skipped; ConfigError when no run is found."""
    rows, skipped = list_runs(paths)
    if not rows:
        raise ConfigError(f"no run directory below {', '.join(paths)}"
                          + "".join(f"; {p}: {why}" for p, why in skipped))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    tail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{runs_table(rows)}\n\n{len(rows)} run{'s' if len(rows) != 1 else ''}: {tail}", skipped
