"""Keep a long sweep's finished runs in the repository, and put them back so that the sweep resumes.

    python scripts/study_archive.py save LOGDIR ARCHIVE      # finished runs of LOGDIR -> ARCHIVE (committed)
    python scripts/study_archive.py restore ARCHIVE LOGDIR   # archived runs -> LOGDIR; then `moerl sweep` again

Why: the study of seed 001 takes tens of core hours, more than one working session, and a session's machine
keeps nothing but the repository. A sweep resumes from its run directories (a run whose ``status.json`` says
finished is skipped), so keeping the finished runs is what makes the study resumable across machines. Only
the files that ``moerl report``, ``moerl runs``, ``scripts/check_results.py`` and ``scripts/study_cost.py``
read are kept (:data:`KEPT`): the status, config, results, provenance, task schedule and the evaluation,
metrics and expert-usage tables. Left out: the model (``model.zip``, 0.6 MB for a big MoE), the TensorBoard
events (the same scalars as ``metrics.csv``) and checkpoints. So an archived run is read, listed and reported
like any other, and ``moerl eval`` on it says its model file is missing.

``save`` also keeps the launch's ``sweep.json`` (jobs, outcomes, seconds) as ``.sweep/launches/<digest>.json``: a
sweep's wall time is the sum of its launches' ``seconds``, and saving twice keeps one copy. A run is saved
only when finished, and written to a temporary folder that is renamed at the end, so a stopped save leaves no
run that looks finished with files missing. Neither command overwrites a run that is already there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

#: The files of a run directory that the readers of results need (see the module docstring).
KEPT = ("status.json", "config.yaml", "results.json", "stack.json", "schedule.json", "eval.csv", "metrics.csv",
        "eval_usage.csv")
#: Beside the runs, hidden as the sweep's own state is, so that readers of run folders pass it by.
LAUNCHES = ".sweep/launches"


def finished_runs(folder: Path) -> list[Path]:
    """The run directories directly below ``folder`` whose ``status.json`` says finished, sorted by name."""
    out = []
    for status in sorted(folder.glob("*/status.json")):
        try:
            state = json.loads(status.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            continue
        if state == "finished":
            out.append(status.parent)
    return out


def copy_run(run: Path, target: Path, names: tuple[str, ...] | None = None) -> bool:
    """Copy ``run``'s files ``names`` (all of its files when None) to ``target`` through a temporary folder
    renamed at the end; False (nothing written) when ``target`` exists."""
    if target.exists():
        return False
    tmp = target.with_name(f".{target.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = [p for p in run.iterdir() if p.is_file()] if names is None else [run / n for n in names]
    for path in files:
        if path.is_file():
            shutil.copy2(path, tmp / path.name)
    tmp.rename(target)
    return True


def save(logdir: Path, archive: Path) -> tuple[int, int, int]:
    """``(saved, already there, unfinished left out)``; the launch record too (see the module docstring)."""
    if not logdir.is_dir():
        raise NotADirectoryError(logdir)
    runs = finished_runs(logdir)
    unfinished = sum(1 for p in logdir.glob("*/status.json")) - len(runs)
    saved = sum(copy_run(run, archive / run.name, KEPT) for run in runs)
    record = logdir / "sweep.json"
    if record.is_file():
        digest = hashlib.sha256(record.read_bytes()).hexdigest()[:16]
        (archive / LAUNCHES).mkdir(parents=True, exist_ok=True)
        target = archive / LAUNCHES / f"{digest}.json"
        if not target.exists():
            shutil.copy2(record, target)
    return saved, len(runs) - saved, unfinished


def restore(archive: Path, logdir: Path) -> tuple[int, int]:
    """``(restored, already there)``: every archived run copied into ``logdir`` where it is missing."""
    if not archive.is_dir():
        raise NotADirectoryError(archive)
    runs = finished_runs(archive)
    logdir.mkdir(parents=True, exist_ok=True)
    restored = sum(copy_run(run, logdir / run.name) for run in runs)
    return restored, len(runs) - restored


def wall_seconds(archive: Path) -> float:
    """The sum of the archived launches' ``seconds``: the sweep's wall time so far."""
    return sum(float(json.loads(p.read_text()).get("seconds") or 0.0)
               for p in sorted((archive / LAUNCHES).glob("*.json")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save", help="copy the finished runs of LOGDIR into ARCHIVE")
    p.add_argument("logdir", type=Path)
    p.add_argument("archive", type=Path)
    p = sub.add_parser("restore", help="copy the archived runs into LOGDIR, where they are missing")
    p.add_argument("archive", type=Path)
    p.add_argument("logdir", type=Path)
    args = parser.parse_args(argv)
    source = args.logdir if args.command == "save" else args.archive
    if not source.is_dir():
        print(f"study_archive: '{source}' is not a folder", file=sys.stderr)
        return 2
    if args.command == "save":
        saved, there, unfinished = save(args.logdir, args.archive)
        print(f"study_archive: saved {saved} finished runs to {args.archive} ({there} already there, "
              f"{unfinished} unfinished left out); launches' wall time {wall_seconds(args.archive):.0f} s")
    else:
        restored, there = restore(args.archive, args.logdir)
        print(f"study_archive: restored {restored} runs to {args.logdir} ({there} already there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
