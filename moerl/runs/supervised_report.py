"""The supervised families in ``moerl report``: masked-expert and routing runs, seeds summarised per config.

A finished run of these families has a ``results.json`` with its test numbers. Runs whose configs are equal
but for the seed (and keys that do not change what is trained: device, threads, data folder) are the seeds
of one *variant*; the report gives, per variant, each metric's mean and 95% Student-t interval over seeds,
plus each seed's value.

Why a t-interval and not rliable's bootstrap (used for the RL scores): these studies have about 3 seeds,
and a bootstrap over 3 values can only resample those 3, so its interval is far too narrow; the t-interval
widens with few seeds as it should (:func:`moerl.runs.seed_intervals.mean_ci_over_seeds`, the same
interval as the report's learning-curve bands).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moerl.core.config import flatten
from moerl.core.errors import ConfigError
from moerl.runs.rundir import RESULTS_FILE, RunDir
from moerl.runs.rundir import find_run_dirs as expand_run_folders
from moerl.runs.tables import markdown_table

#: Config keys that do not change what a run trains: runs differing only there are seeds of one variant.
IGNORED_KEYS = ("seed", "device", "threads", "data_dir")


def _routing(results: dict[str, Any]) -> dict[str, Any] | None:
    routing = results.get("test", {}).get("routing")
    return routing if routing and len(routing.get("utilisation", [])) > 1 else None


def _continual(results: dict[str, Any], kind: str, key: str) -> float | None:
    cont = (results.get("continual") or {}).get(kind)
    return None if cont is None else cont.get(key)


#: Per family: (column, how it is read from results.json, what it is). None: the run has no such number.
METRICS: dict[str, list[tuple[str, Callable[[dict[str, Any]], float | None], str]]] = {
    "masked-experts": [
        ("test accuracy", lambda r: r["test"][r["headline_metric"]],
         "task-agnostic top-1 on the test split (gate routing), the run's headline metric"),
        ("test task-aware", lambda r: r["test"].get("mean_accuracy_task_aware"),
         "prediction restricted to the dataset's own classes"),
        ("train-test gap", lambda r: r.get("train_test_gap"), "train minus test accuracy"),
        ("purity", lambda r: (_routing(r) or {}).get("purity"),
         "share of test samples whose expert's majority dataset is their own (gated runs with 2+ experts; "
         "1 by definition with one dataset)"),
        ("avg acc (agnostic)", lambda r: _continual(r, "task_agnostic", "average_accuracy"),
         "sequential runs: mean task-agnostic test accuracy after the last phase"),
        ("forgetting (agnostic)", lambda r: _continual(r, "task_agnostic", "forgetting"),
         "sequential runs: mean drop of a dataset's task-agnostic accuracy from after its phase to the end"),
    ],
    "routing": [
        ("test accuracy", lambda r: r.get("test_accuracy"), "mean over tasks of the test accuracy"),
        ("lowest task", lambda r: min(r["test_accuracy_per_task"]) if r.get("test_accuracy_per_task") else None,
         "the lowest task's test accuracy"),
        ("distinct routes", lambda r: r.get("distinct_routes"), "distinct greedy routes over the tasks (routers)"),
        ("collision fraction", lambda r: r.get("collision_fraction"),
         "share of task pairs whose most frequent greedy routes are identical (routers)"),
    ],
}
FAMILIES = tuple(METRICS)


def metrics_problem(family: str, results: dict[str, Any]) -> str | None:
    """None when every :data:`METRICS` column of ``family`` can be read from ``results`` as a number or
    is absent (None), and the first, headline column is there; else what is damaged (worded to follow
    ``results.json``). Why: the report computes these columns over all runs at once, so a damaged run must
    be found, and named, before it joins them."""
    for i, (name, get, _) in enumerate(METRICS[family]):
        try:
            value = get(results)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            return f"cannot give the {name} ({type(exc).__name__}: {str(exc)[:60]})"
        if value is None and i == 0:
            return f"has no {name}"
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"has a {name} that is not a number ({str(value)[:40]})"
    by_epoch = results.get("accuracy_by_epoch")
    if by_epoch is not None and (not isinstance(by_epoch, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in by_epoch.values())):
        return "has an 'accuracy_by_epoch' that is not a mapping of epochs to numbers"
    return None
#: Routing: the epochs of the paper's Table 2 (test accuracy after 1, 5, ... epochs), shown where runs reached them.
TABLE2_EPOCHS = (1, 5, 10, 20, 50, 100)


@dataclass
class SupervisedRun:
    path: Path
    family: str
    config: dict[str, Any]
    results: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.results.get("seed", 0)))


@dataclass
class Variant:
    family: str
    label: str
    runs: list[SupervisedRun] = field(default_factory=list)


def load_supervised(paths: list[str]) -> tuple[list[SupervisedRun], list[tuple[str, str]]]:
    """Finished masked-expert and routing runs among ``paths`` (run directories or folders of them), and
    ``(path, reason)`` for the finished runs of these families that could not be read or repeat a (config,
    seed) pair already taken (a repeat is never another seed). Other paths are left to the MoE DQN loader,
    which names them."""
    out: list[SupervisedRun] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    taken: dict[tuple[str, str, Any], str] = {}  # (family, variant, seed) -> the run that holds it
    for p in paths:
        found, _ = expand_run_folders(Path(p))
        for run_path in found:
            key = Path(run_path).resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                run = RunDir.open_finished(run_path)
            except ConfigError:
                continue
            family = run.read_status().get("family")
            if family not in FAMILIES:
                continue
            try:
                results = json.loads((run.path / RESULTS_FILE).read_text())
                config = run.read_config()
            except (OSError, ValueError, ConfigError) as exc:
                skipped.append((run_path, f"unreadable {RESULTS_FILE} or config ({exc})"))
                continue
            problem = _run_problem(str(family), results, config)
            if problem is not None:
                skipped.append((run_path, problem))
                continue
            pair = (str(family), _variant_key(config), config.get("seed"))
            if pair in taken:
                skipped.append((run_path, f"the same config and seed ({config.get('seed')}) as {taken[pair]}: "
                                          "a repeat, counted once"))
                continue
            taken[pair] = run_path
            out.append(SupervisedRun(run.path, str(family), config, results))
    return out, skipped


def _run_problem(family: str, results: Any, config: dict[str, Any]) -> str | None:
    """What keeps a finished run out of the report: a damaged ``results.json`` or a seed that is not an
    integer (the seed orders and labels the per-seed rows)."""
    problem = "is not a JSON object" if not isinstance(results, dict) else metrics_problem(family, results)
    if problem is not None:
        return f"{RESULTS_FILE} {problem}"
    seed = config.get("seed", results.get("seed", 0))
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"its seed is not an integer ({str(seed)[:40]})"
    return None


def _variant_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config without :data:`IGNORED_KEYS`: what makes two runs the same variant."""
    return {k: v for k, v in flatten(config).items() if k.split(".")[0] not in IGNORED_KEYS}


def _variant_key(config: dict[str, Any]) -> str:
    return json.dumps(_variant_settings(config), sort_keys=True, default=str)


def group_variants(runs: list[SupervisedRun]) -> list[Variant]:
    """Runs grouped per family by config without :data:`IGNORED_KEYS`, labelled by the keys that differ."""
    keyed: dict[tuple[str, str], Variant] = {}
    flat: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        kept = _variant_settings(run.config)
        key = (run.family, _variant_key(run.config))
        keyed.setdefault(key, Variant(run.family, "")).runs.append(run)
        flat[key] = kept
    for family in {k[0] for k in keyed}:
        keys = [k for k in keyed if k[0] == family]
        differing = sorted({name for k in keys for name in flat[k]
                            if len({json.dumps(flat[o].get(name), default=str) for o in keys}) > 1})
        for k in keys:
            variant = keyed[k]
            variant.runs.sort(key=lambda r: r.seed)
            shown = ", ".join([f"{name}={flat[k].get(name)}" for name in differing] or [_default_label(flat[k])])
            stems = {re.sub(r"_s\d+$", "", r.path.name) for r in variant.runs}
            # runs named <stem>_s<seed> (moerl's names, the vision grid's rows): the stem says which variant
            if len(stems) == 1:  # a long list of differing keys (a grid of unlike rows) is left to `moerl runs`
                variant.label = stems.pop() + (f" ({shown})" if len(shown) <= 60 else "")
            else:
                variant.label = shown
    return list(keyed.values())


def _default_label(config: dict[str, Any]) -> str:
    parts = [config.get("env"), config.get("arch") or config.get("algo")]
    return " ".join(str(p) for p in parts if p is not None) or "all runs"


def _cell(values: list[float | None]) -> str:
    from moerl.runs.seed_intervals import mean_ci_over_seeds

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "-"
    mean, lo, hi = mean_ci_over_seeds(np.asarray(vals)[:, None])
    return f"{mean[0]:.3f} [{lo[0]:.3f}, {hi[0]:.3f}]"


def markdown(runs: list[SupervisedRun]) -> str:
    """One section per family: a table of variants (mean [95% t-interval] over seeds), then per-seed values."""
    lines: list[str] = []
    grouped = group_variants(runs)
    for family in FAMILIES:
        variants = [v for v in grouped if v.family == family]
        if not variants:
            continue
        metrics = METRICS[family]
        used = [m for m in metrics if any(m[1](r.results) is not None for v in variants for r in v.runs)]
        lines += [f"## {family} runs", "",
                  "Mean [95% Student-t interval] over seeds, per variant (runs whose configs differ only in the "
                  f"seed, {', '.join(IGNORED_KEYS[1:])}); '-' where a variant has no such number.", ""]
        rows = [[v.label, str(len(v.runs)), ", ".join(str(r.seed) for r in v.runs),
                 *(_cell([m[1](r.results) for r in v.runs]) for m in used)] for v in variants]
        lines += [markdown_table(["variant", "seeds", "seed values", *(m[0] for m in used)], rows), ""]
        lines += [f"- {name}: {what}" for name, _, what in used] + [""]
        if family == "routing":
            lines += _by_epoch(variants)
        per_seed = [[v.label, str(r.seed), *(_fmt(m[1](r.results)) for m in used), str(r.path)]
                    for v in variants for r in v.runs]
        lines += ["Per seed:", "", markdown_table(["variant", "seed", *(m[0] for m in used), "run"], per_seed), ""]
    return "\n".join(lines).rstrip()


def _by_epoch(variants: list[Variant]) -> list[str]:
    """Routing: mean test accuracy after each of :data:`TABLE2_EPOCHS` that a variant's runs reached (the
    paper's Table 2 layout), from ``accuracy_by_epoch`` in results.json."""
    def at(run: SupervisedRun, epoch: int) -> float | None:
        value = (run.results.get("accuracy_by_epoch") or {}).get(str(epoch))
        return None if value is None else float(value)

    epochs = [e for e in TABLE2_EPOCHS if any(at(r, e) is not None for v in variants for r in v.runs)]
    if not epochs:
        return []
    rows = [[v.label, *(_cell([at(r, e) for r in v.runs]) for e in epochs), _paper_cell(v, epochs)] for v in variants]
    return ["Test accuracy after each epoch (the paper's Table 2 layout), mean [95% t-interval] over seeds; the "
            "paper's Table 2 (%, at its own budget) where it has the row:", "",
            markdown_table(["variant", *(f"epoch {e}" for e in epochs), "paper"], rows), ""]


def _paper_cell(variant: Variant, epochs: list[int]) -> str:
    """The paper's accuracies at ``epochs`` for the variant's env / algo / mode, with its dataset's name."""
    from moerl.runs.kinds import family_for_env

    config = variant.runs[0].config
    family = family_for_env(str(config.get("env")))
    found = family.paper_row(config) if family is not None and family.paper_row is not None else None
    if found is None:
        return "-"
    dataset, row = found
    return "/".join(str(row[e]) for e in epochs) + f" ({dataset})"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{float(value):.3f}"
