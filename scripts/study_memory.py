"""Memory per run of the study, from the study's own training processes: their peak resident memory.

    python scripts/study_memory.py sample STUDY_HOME [--into FILE]   # one look at the running batches
    python scripts/study_memory.py keep FILE KEPT                      # merge FILE's records into KEPT
    python scripts/study_memory.py report FILE [FILE ...]             # per variant: peak MiB, MiB per member

The study trains from a frozen install whose processes record no memory, so ``study/run.sh`` runs ``sample``
every 30 s beside its lanes: it finds the batch processes whose working directory is ``STUDY_HOME`` (``moerl
sweep-group GROUP.yaml``, or ``moerl train --resume RUN`` for a resumed batch), reads each one's peak resident
set (``VmHWM`` in ``/proc/PID/status``: the most memory it has held, so a sample taken late in a process's life
gives its peak up to then) and keeps, per process, the largest value seen with what the process trains: its
members (runs) and their variants, read from the group file or the batch leader's ``status.json`` when the
process is first seen. A process gone at a later look is marked ``ended``: its peak is final (a batch stopped
with its machine counts as ended at its next look, with the peak it had reached). ``FILE`` (default ``STUDY_HOME/memory.json``) is rewritten atomically at every sample;
``study/save.sh`` merges it into ``study/<commit>/memory.json`` (``keep``), so the records of every machine the
study ran on are kept.

``report`` gives, per suite and variant, the ended batches' peak resident memory and that peak over the
batch's members: the memory one run of the study costs in a batch, the interpreter, torch and the batch's transients
shared among its members (so it falls as a batch grows; one run alone, as on the SB3 engine, pays all of it).
``benchmarks/variant_cost.py`` gives the other side: the bytes a run's own tensors hold.

Why a script: the frozen commit's processes cannot be changed to record their memory, and Linux keeps a
process's peak only while it lives; reading ``/proc`` is all there is (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml


def suite(env: str) -> str:
    """``cartpole-crl`` -> ``cartpole``, as ``moerl.rl.report.data.suite_variant`` names suites. Written here
    again, not imported: ``study/run.sh`` runs this script with the study's frozen install, whose moerl predates
    that function (this script needs only yaml)."""
    return env.split("-")[0].lower()


def variant_of(config: dict) -> str:
    """``suite: arch[/router]`` of a run's config (``config.yaml`` or a group member's ``config``)."""
    net = config.get("network") or {}
    arch = net.get("arch", "dense")
    name = arch if arch in ("dense", "wide") else f"{arch}/{net.get('router')}"
    return f"{suite(str(config.get('env', '?')))}: {name}"


def batch_of(argv: list[str], cwd: Path) -> dict | None:
    """What a study process trains, from its command line: ``{"target", "members", "variants"}``, or None for a
    process that is not a batch of the study (the sweep driver, the lane loop, anything else)."""
    if "sweep-group" in argv:
        path = Path(argv[argv.index("sweep-group") + 1])
        group = yaml.safe_load((cwd / path).read_text())
        members = sum(len(m["seeds"]) for m in group["members"])
        variants = sorted({variant_of(m["config"]) for m in group["members"]})
        return {"target": path.stem, "members": members, "variants": variants}
    if "train" in argv and "--resume" in argv:
        run = cwd / argv[argv.index("--resume") + 1]
        status = json.loads((run / "status.json").read_text())
        members = len((status.get("batch") or {}).get("members") or [run.name])
        config = yaml.safe_load((run / "config.yaml").read_text())
        return {"target": run.name, "members": members, "variants": [variant_of(config)]}
    return None


def peak_kib(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no VmHWM")


def processes_in(home: Path) -> list[tuple[str, list[str]]]:
    """``(key, argv)`` of every process whose working directory is ``home`` (forked children still showing their
    parent's command line left out); the key (this boot's id, the pid
    and its start time in clock ticks since boot) names one process even when a pid is reused or the study
    moves to another machine."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    found: dict[str, tuple[str, list[str], str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != home:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone, or not ours to read
            continue
        found[entry.name] = (f"{boot}:{entry.name}@{stat[19]}", argv, stat[1])
    # A child the batch forks (to run a command) shows its parent's command line until it execs: not a batch
    return [(key, argv) for key, argv, parent in found.values() if found.get(parent, (None, None))[1] != argv]


def sample(home: Path, into: Path) -> dict:
    """One look at ``home``'s batch processes, merged into ``into`` (rewritten atomically); returns the
    records."""
    records = json.loads(into.read_text()) if into.exists() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    seen = set()
    for key, argv in processes_in(home):
        pid = int(key.split(":")[1].split("@")[0])
        try:
            peak = peak_kib(pid)
            record = records.get(key) or batch_of(argv, home)
        except (OSError, ValueError, KeyError, IndexError):
            continue  # ended between the listing and the read, or mid-write of its files
        if record is None:
            continue
        record.setdefault("first_seen", now)
        record.update(last_seen=now, peak_kib=max(peak, record.get("peak_kib", 0)))
        records[key] = record
        seen.add(key)
    for key, record in records.items():  # gone since the last look: its peak is final
        if key not in seen:
            record["ended"] = True
    write(records, into)
    return records


def write(records: dict, into: Path) -> None:
    """``records`` as JSON into ``into``, atomically (a reader never sees half a file)."""
    tmp = into.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    tmp.replace(into)


def merged(records: dict, more: dict) -> dict:
    """``records`` with ``more`` merged in: a process in both keeps the larger peak, the earlier
    ``first_seen``, the later ``last_seen``, and is ended if either says so."""
    out = dict(records)
    for key, record in more.items():
        old = out.get(key)
        if old is not None:
            record = {**record, "first_seen": min(old["first_seen"], record["first_seen"]),
                      "last_seen": max(old["last_seen"], record["last_seen"]),
                      "peak_kib": max(old["peak_kib"], record["peak_kib"]),
                      "ended": bool(old.get("ended") or record.get("ended"))}
        out[key] = record
    return out


def keep(source: Path, kept: Path) -> dict:
    """``source``'s records merged into ``kept`` (:func:`merged`); returns the merged records."""
    records = merged(json.loads(kept.read_text()) if kept.exists() else {}, json.loads(source.read_text()))
    write(records, kept)
    return records


def report(files: list[Path]) -> list[str]:
    """Markdown rows per suite and variant over the ended batches in ``files``: batches, members, peak MiB
    (range) and MiB per member (range), then a line counting the batches still running (their peak is not yet
    final, so they are left out). A batch of several variants (never the study's groups, which hold one) would
    count under each."""
    records: dict = {}
    for f in files:  # a process in several files (a live one and the kept one) counts once
        records = merged(records, json.loads(f.read_text()))
    rows: dict[str, list[tuple[int, float]]] = defaultdict(list)
    running = 0
    for record in records.values():
        if not record.get("ended"):
            running += 1
            continue
        for variant in record["variants"]:
            rows[variant].append((record["members"], record["peak_kib"] / 1024))
    out = ["| suite: variant | batches | members per batch | peak resident MiB per batch | MiB per member |",
           "|---|---|---|---|---|"]
    for variant in sorted(rows):
        batches = rows[variant]
        members = sorted({m for m, _ in batches})
        peaks = [p for _, p in batches]
        per = [p / m for m, p in batches]
        span = ", ".join(str(m) for m in members)
        out.append(f"| {variant} | {len(batches)} | {span} | {min(peaks):.0f}-{max(peaks):.0f} | "
                   f"{min(per):.1f}-{max(per):.1f} |")
    if running:
        out += ["", f"({running} batch(es) still running when last sampled: left out)"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="one look at STUDY_HOME's running batches")
    s.add_argument("home")
    s.add_argument("--into", help="the records' file (default: STUDY_HOME/memory.json)")
    k = sub.add_parser("keep", help="merge FILE's records into KEPT")
    k.add_argument("file")
    k.add_argument("kept")
    r = sub.add_parser("report", help="per variant: peak resident MiB and MiB per member")
    r.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "sample":
        home = Path(args.home).resolve()
        if not home.is_dir():
            print(f"study_memory: STUDY_HOME '{args.home}' is not a folder", file=sys.stderr)
            return 2
        sample(home, Path(args.into) if args.into else home / "memory.json")
        return 0
    if args.command == "keep":
        if not Path(args.file).is_file():
            print(f"study_memory: no such file: {args.file}", file=sys.stderr)
            return 2
        keep(Path(args.file), Path(args.kept))
        return 0
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"study_memory: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    print("\n".join(report([Path(f) for f in args.files])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
