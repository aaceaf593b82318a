"""What a study cost: core time per sweep and, per variant, parameters and training time per env step, read
from the finished runs themselves.

    python scripts/study_cost.py RUNS_DIR [RUNS_DIR ...]

The batched engine trains a sweep's runs of one variant as one process (a *batch* of members: seeds and
settings), on one torch thread, so a batch's core time is its process time, and every member records the time
its batch had run when the member finished (``train_seconds``, summed over the processes of a resumed run); a
batch's time is therefore the largest ``train_seconds`` among its members (``status.json`` names each member's
batch leader). A member stopped with its batch and trained again in a later one (a sweep resumed after a stop)
finishes under the later batch; the earlier batch still counts, complete, with the time it spent on that member
(work lost to the stop is part of what the study cost). Per suite and variant: the batches' core time over the env steps of their members (``timesteps``), i.e.
the core time one env step of one run costs in a batch, evaluation and writing included. A run trained alone
(the SB3 engine) is its own batch. The times are wall-clock seconds of a one-thread process: on a machine
shared with other work they include waiting for a core, so they bound the core time from above.

Per sweep folder, its wall time as well: the sum of its launches' ``seconds`` (``sweep.json`` of each
launch, kept as ``.sweep/launches/*.json`` by ``scripts/study_archive.py``; a live logdir holds its last
launch's only), beside the core time of its finished batches.

Why a script: ``moerl report`` compares results; this reads the cost of producing them, which the study issue
asks for beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def batches(folders: list[str]) -> tuple[dict[str, dict], int, int]:
    """``({leader: {"seconds", "steps", "variants": {variant: steps}, "parameters": {variant: {n, ...}}}}, skipped,
    partial)`` over the finished moe-dqn runs below ``folders``, variants named ``suite: variant``; a batch with
    a member finished nowhere below ``folders`` (not in it, nor trained again by a later batch) is left out and
    counted in ``partial``."""
    from moerl.core.errors import ConfigError
    from moerl.rl.report.data import load_runs, suite_variant

    try:
        runs, skipped = load_runs(folders)
    except ConfigError as e:
        raise SystemExit(f"study_cost: {e}") from None
    out: dict[str, dict] = {}
    for run in runs:
        status = json.loads((run.path / "status.json").read_text())
        leader = (status.get("batch") or {}).get("leader") or run.path.name
        variant = suite_variant(run.env, run.arch, run.router)
        members = (status.get("batch") or {}).get("members") or [run.path.name]
        batch = out.setdefault(leader, {"seconds": 0.0, "steps": 0, "variants": defaultdict(int), "parameters": {},
                                        "members": set(members), "finished": set()})
        batch["finished"].add(run.path.name)
        batch["seconds"] = max(batch["seconds"], float(run.results.get("train_seconds") or 0.0))
        steps = int(run.results.get("timesteps") or 0)
        batch["steps"] += steps
        batch["variants"][variant] += steps
        if run.results.get("parameters") is not None:
            batch["parameters"].setdefault(variant, set()).add(int(run.results["parameters"]))
    finished = {run.path.name for run in runs}
    partial = [leader for leader, batch in out.items() if not batch["members"] <= finished]
    for leader in partial:  # its time so far belongs to members not finished yet as well
        del out[leader]
    return out, len(skipped), len(partial)


def table(found: dict[str, dict]) -> str:
    """Per suite and variant: runs' parameters (each distinct count), batches, core hours and core microseconds
    per member env step."""
    per: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "steps": 0, "batches": 0, "parameters": set()})
    for batch in found.values():
        for variant, steps in batch["variants"].items():
            row = per[variant]
            row["seconds"] += batch["seconds"] * steps / batch["steps"]  # a mixed batch is shared by its steps
            row["steps"] += steps
            row["batches"] += 1
            row["parameters"] |= batch["parameters"].get(variant, set())
    lines = ["| suite: variant | parameters | batches | member env steps | core hours | core us per member env step |",
             "|---|---|---|---|---|---|"]
    for variant, row in sorted(per.items()):
        params = " / ".join(f"{n:,}" for n in sorted(row["parameters"])) or "-"
        lines.append(f"| {variant} | {params} | {row['batches']} | {row['steps']:,} | {row['seconds'] / 3600:.2f} | "
                     f"{1e6 * row['seconds'] / max(row['steps'], 1):.0f} |")
    total = sum(b["seconds"] for b in found.values())
    lines += ["", f"All: {len(found)} batches, {sum(b['steps'] for b in found.values()):,} member env steps, "
                  f"{total / 3600:.2f} core hours."]
    return "\n".join(lines)


def launches(folder: Path) -> list[dict]:
    """The launch records of a sweep folder: the kept ones of an archive, else its last ``sweep.json``."""
    kept = sorted((folder / ".sweep" / "launches").glob("*.json"))
    paths = kept or ([folder / "sweep.json"] if (folder / "sweep.json").is_file() else [])
    return [json.loads(p.read_text()) for p in paths]


def sweep_lines(folders: list[str], found: dict[str, dict]) -> list[str]:
    """Per folder: its finished batches' runs and core hours, and its launches' wall hours."""
    lines = []
    for folder in map(Path, folders):
        names = {p.name for p in folder.iterdir() if (p / "status.json").is_file()} if folder.is_dir() else set()
        mine = [b for leader, b in found.items() if leader in names]
        runs = sum(len(b["finished"] & names) for b in mine)  # a member retrained by a later batch counts once
        records = launches(folder)
        wall = sum(float(r.get("seconds") or 0.0) for r in records)
        lines.append(f"{folder}: {runs} runs in {len(mine)} finished batches, "
                     f"{sum(b['seconds'] for b in mine) / 3600:.2f} core hours; {len(records)} launch(es), "
                     f"{wall / 3600:.2f} wall hours")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="run folders or folders holding runs (a sweep's logdir)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not Path(folder).exists():
            print(f"study_cost: '{folder}' does not exist", file=sys.stderr)
            return 2
    found, skipped, partial = batches(args.folders)
    print(table(found))
    print("")
    print("\n".join(f"- {line}" for line in sweep_lines(args.folders, found)))  # a Markdown list (the docs')
    if skipped or partial:
        print(f"\n({skipped} folder(s) skipped: not finished moe-dqn runs; {partial} batch(es) left out: not all "
              "their members finished)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
