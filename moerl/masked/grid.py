"""Run the masked-expert grid (configs/vision/G*.yaml, P1.yaml) and write a markdown report.

    python -m moerl.masked.grid [--out runs/vision-grid-report/vision-results.md] [--logdir runs/vision-grid]
        [--only G0,G3] [--seeds 0-2] [--set epochs=2] [--resume]

Each row is one ``moerl train --config configs/vision/<row>.yaml`` run per seed (run directory ``<row>``
for seed 0 alone, ``<row>_s<seed>`` with ``--seeds``); the report lists train/val/test accuracy and the
train-test gap per row (seed 0, or the first seed), routing counts and purity for the gated runs, the
continual metrics for the sequential runs, and copies the PNG plots next to the report. With several seeds
it adds, per row, the mean and 95% interval over seeds of every metric (``moerl report``'s section for
masked-expert runs, :mod:`moerl.runs.supervised_report`). Everything is written under ``runs/`` by
default, never into tracked files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from moerl.core.config_files import CONFIG_ROOT
from moerl.core.errors import ConfigError
from moerl.core.registry import Registry
from moerl.core.seeding import parse_seeds
from moerl.runs.kinds import TrainRequest
from moerl.runs.rundir import RunDir
from moerl.runs.tables import markdown_table

GRID_ROWS = Registry("grid row", {
    "G0": "one dataset, one expert, no mask (4-layer expert)",
    "G0b": "one dataset, one expert, no mask, 2-layer expert",
    "G1": "one dataset, one expert, fixed random mask at 50% density",
    "G2": "one dataset, one expert, learnable LU mask (top-k, 50%)",
    "G2b": "lowrank ablation of G2 (S = A B, no triangular structure)",
    "G3": "one dataset, two experts, LU, gated, no balancing loss",
    "G4": "two datasets, two experts, LU, no balancing loss (the seed's setting)",
    "G4b": "G4 with the optional balancing loss",
    "G5": "two datasets, two experts, no mask",
    "G6": "two datasets, two experts, fixed 50% masks",
    "G7": "Fashion then Animal; an expert added, the first frozen; gate replay remedy",
    "G7b": "G7 without the gate remedy (shows gate drift)",
    "P1": "PackNet baseline, Fashion then Animal, prune 50% per task, 1 fine-tune epoch",
})


def _grid_config(row: str) -> Path:
    """The YAML config of grid row ``row``: ``moerl/configs/vision/<row>.yaml``, shipped as package data, so
    the grid runs from a plain ``pip install .`` too."""

    return CONFIG_ROOT / "vision" / f"{GRID_ROWS.check(row)}.yaml"


def run_grid(out: Path, logdir: Path, rows: list[str], overrides: list[str],
             resume: bool = False, seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """Train every row for every seed (``resume``: reuse a finished run directory under ``logdir``)."""
    from moerl.masked.experiment import train

    results = []
    all_runs: list[Path] = []
    for row in rows:
        cfg = _grid_config(row)
        members: list[tuple[str, int | None]] = [(f"{row}_s{seed}", seed) for seed in seeds] if seeds else [(row, None)]
        for name, seed in members:
            t0 = time.perf_counter()
            previous = RunDir(logdir / name)
            if resume and previous.read_status().get("status") == "finished":
                path = previous.path
                print(f"[grid] {name}: reusing the finished run {path}", flush=True)
            else:
                extra = [] if seed is None else [f"seed={seed}"]
                path = train(TrainRequest(config=str(cfg), logdir=str(logdir), run_name=name,
                                          overrides=[*overrides, *extra]))
            all_runs.append(path)
            print(f"[grid] {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
            if seeds and seed != seeds[0]:
                continue  # the per-row tables show the first seed; the seeds table shows them all
            res = json.loads((path / "results.json").read_text())
            res["row"], res["run_dir"], res["wall_seconds"] = row, str(path), time.perf_counter() - t0
            results.append(res)
    write_report(out, results, all_runs if seeds and len(seeds) > 1 else None)
    return results


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    """Markdown table lines for the report (the shared writer; cells as their own text)."""
    return markdown_table(head, [[str(c) for c in row] for row in rows]).split("\n")


def write_report(out: Path, results: list[dict[str, Any]], seed_runs: list[Path] | None = None) -> None:
    """The grid's Markdown (+ JSON and plots) at ``out``; ``seed_runs``: every seed's run, summarised per row."""
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = out.parent / (out.stem + "-plots")
    plots.mkdir(exist_ok=True)
    lines = ["# Masked-expert vision grid (seed 000): results", "",
             "Generated by `python -m moerl.masked.grid` from `configs/vision/*.yaml`. "
             "Accuracy = task-agnostic top-1 over the union of classes (gate routing, argmax) unless marked "
             "task-aware (prediction restricted to the dataset's own classes; PackNet is task-aware only).", ""]
    notes = sorted({n for r in results for n in r.get("notes", [])})
    sizes = {r["row"]: r["sizes"] for r in results}
    lines += [f"Data: {'; '.join(notes) or 'full'}. Sizes of the first row: {next(iter(sizes.values()))}.", ""]
    table = []
    for r in results:
        cfg = r.get("config", {})
        key = r["headline_metric"]
        packnet = r["arch"] == "packnet"  # no gate, no experts, no learned masks: its own pruning masks
        table.append([r["row"], f"{r['suite']} ({r['schedule']})", r["arch"],
                      "pruned" if packnet else cfg.get("mask", ""), "-" if packnet else cfg.get("experts", ""),
                      _fmt(r["train"][key]), _fmt(r["val"][key]), _fmt(r["test"][key]), _fmt(r["train_test_gap"]),
                      _fmt(r["test"]["mean_accuracy_task_aware"]), r["epochs_run"], f"{r['train_seconds']:.0f}"])
    lines += _table(["row", "data", "arch", "mask", "experts", "train", "val", "test", "gap", "test task-aware",
                     "epochs", "s"], table)
    if seed_runs:
        from moerl.runs import supervised_report as report_supervised

        runs, _ = report_supervised.load_supervised([str(p) for p in seed_runs])
        lines += ["", "## Over seeds", "", "The tables above show the first seed of each row; this one every seed.",
                  "", report_supervised.markdown(runs).replace("## masked-experts runs", "### Every row")]
    lines += ["", "## Routing (test split; rows: datasets, columns: experts)", ""]
    table = []
    for r in results:
        routing = r["test"].get("routing")
        if not routing or len(routing["utilisation"]) < 2:
            continue
        forced = {k: round(v["accuracy_forced_routing"], 3) for k, v in r["test"]["datasets"].items()}
        table.append([r["row"], routing["counts"], f"{routing['purity']:.3f}",
                      f"{routing['best_matched_accuracy']:.3f}", [round(u, 3) for u in routing["utilisation"]],
                      forced])
    lines += _table(["row", "counts", "purity", "best-matched", "utilisation", "forced-routing acc per dataset"],
                    table)
    lines += ["", "## Continual runs (test accuracy after each phase; rows: after dataset i)", ""]
    for r in results:
        cont = r.get("continual")
        if not cont:
            continue
        for kind, m in cont.items():
            mat = [[None if v != v else round(v, 3) for v in row] for row in m["accuracy_matrix"]]
            lines.append(f"- **{r['row']}** {kind}: matrix {mat}; average {m['average_accuracy']:.3f}, "
                         f"BWT {m.get('backward_transfer', float('nan')):.3f}, "
                         f"forgetting {m.get('forgetting', float('nan')):.3f}")
    lines += ["", "## Plots", ""]
    for r in results:
        for png in sorted(Path(r["run_dir"]).glob("*.png")):
            target = plots / f"{r['row']}_{png.name}"
            shutil.copyfile(png, target)
            lines.append(f"- {r['row']} {png.stem}: `{target.relative_to(out.parent)}`")
    total = sum(r["train_seconds"] for r in results)
    lines += ["", f"Total training time: {total:.0f} s (single thread, shared machine).", ""]
    out.write_text("\n".join(lines))
    (out.parent / (out.stem + ".json")).write_text(json.dumps(results, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(prog="python -m moerl.masked.grid")
    p.add_argument("--out", default="runs/vision-grid-report/vision-results.md")
    p.add_argument("--logdir", default="runs/vision-grid")
    p.add_argument("--only", help="comma-separated rows (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--resume", action="store_true", help="reuse rows already finished under --logdir")
    p.add_argument("--seeds", help="e.g. 0-2 or 0,3: every row once per seed (run directories <row>_s<seed>)")
    args = p.parse_args(argv)
    seeds = None
    if args.seeds:

        try:
            seeds = parse_seeds(args.seeds)
        except ConfigError as exc:  # one line and exit 2, as every moerl command
            print(f"--seeds: {exc}", file=sys.stderr)
            return 2
    rows = args.only.split(",") if args.only else list(GRID_ROWS)
    bad = [r for r in rows if r not in GRID_ROWS]
    if bad:
        print(GRID_ROWS.error(bad[0]), file=sys.stderr)
        return 2
    run_grid(Path(args.out), Path(args.logdir), rows, args.overrides, resume=args.resume, seeds=seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
