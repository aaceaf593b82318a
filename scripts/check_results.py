"""Keep the README's results tables honest: regenerate them from runs, or check that their command still
produces them.

A results block in a Markdown file is delimited by two comments naming the sweep file that produces it::

    <!-- results: configs/paper/quick.yaml -->
    ... (generated: never edit by hand) ...
    <!-- /results -->

Its body is a digest of ``moerl report`` over the sweep's runs: per env and setting, the variants, the
aggregate scores, the dormant-neuron, expert-specialisation and continual-metric tables, and the claims section; figures and the
per-run table are left out. A block whose marker adds ``summary`` (``<!-- results: FILE summary -->``) holds
one screen of it: one table of every variant's IQM per env and setting, and each claim's verdict, for the
README; the full block lives in a ``docs/`` page. Both views are checked the same way, from one rerun of the sweep. Lines starting with ``> stack:`` name the commit and software stack the runs came
from; they are shown, not compared (a new commit that computes the same numbers still matches).

    python scripts/check_results.py --write --only configs/paper/quick.yaml --runs runs/paper-quick
    python scripts/check_results.py                     # rerun every block's sweep, compare
    python scripts/check_results.py docs/results-moe-dqn.md   # the blocks of one file only
    python scripts/check_results.py --only configs/paper/quick.yaml --runs runs/paper-quick   # existing runs

A block may span several sweep files, named joined by ``+`` (``<!-- results: A.yaml+B.yaml -->``: the study's
seeds 0-9 and 10-19 are two sweeps of one report); ``--only`` names them the same way and ``--runs`` is given
once per file, in that order.

A study too long to rerun for a check is checked in two parts: ``--runs`` names its kept runs (``study/``),
the block must equal the digest of those runs, and ``--rerun-variant dense`` reruns that variant's runs of
every sweep file from nothing (all its settings and seeds: the same groups as in the study) and compares them
with the kept runs of the same names: results (but for timings), evaluation, metric and usage tables. Equal
bit for bit is required when the kept runs ran on this kind of CPU; on another CPU the rerun
diverges by float rounding, and the count of equal runs and the difference of the variant's mean score are
printed, not failed. A sweep whose runs are kept in the repository (``study/<commit in study/COMMIT>/<sweep
name>/``, see ``scripts/study_archive.py``) is checked that way by default: its block from the kept runs,
and its first variant (the dense baseline) rerun; a sweep file of such a block with no kept folder yet (a
study whose later sweeps have not started) adds no runs to it and is not rerun. "This kind of CPU" here is torch's CPU capability and the
CPU model, as the runs' ``stack.json`` record them (an Intel and an AMD machine with AVX-512 round
differently).

The check reruns the sweep from nothing in a temporary folder (``moerl sweep FILE --logdir TMP``, the batched
engine is deterministic for a given config, seed list and device), reports it, and exits 1 with a diff when
a block no longer matches what its command produces; 2 on bad input. Why a script and not a CI test on the
README itself: the quick study takes about 20 minutes on 2 cores; CI runs this script on a tiny sweep
(``tests/test_check_results.py``).

How it compares depends on the CPU. Runs are bit-identical only on the same software stack *and* the same
kind of CPU: torch picks its kernels by the CPU's instruction set (``torch.backends.cpu.get_cpu_capability()``,
AVX2, AVX512...), its BLAS and oneDNN pick theirs, and one different rounding makes a greedy episode, hence a
number, differ. Each run's ``stack.json`` records that capability and the report's stack lines name it (``;
CPU capability AVX512``):

* **exactly** when the fresh runs' CPU capability is the one the block's ``> stack:`` lines record (or with
  ``--exact``): every line must be equal;
* **statistically** otherwise (another CPU, or a block written before runs recorded their CPU), or with
  ``--statistical`` (the same capability is necessary for bit-identical numbers, not sufficient: numpy and
  the C library's maths also choose code by CPU, so another CPU model can still differ): the tables
  must have the same shape and the same text and integers (variants, seed counts and values, engines,
  steps), and every ``x [lo, hi]`` cell (the 95% confidence intervals over seeds and bootstrap CIs, and the
  continual metrics' ``mean [min, max]`` over seeds) must overlap the block's interval for that cell. Point
  estimates written without an interval (the claims' ``(dense 0.311, ...)``) repeat numbers whose interval is
  checked in the tables, so they are not compared on their own; a claim verdict that changes is shown, not
  failed (a verdict flips when an interval crosses its threshold, which overlapping intervals allow).
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BLOCK = re.compile(r"<!-- results: (?P<sweep>\S+)(?: (?P<view>summary))? -->\n(?P<body>.*?)<!-- /results -->", re.S)
#: What joins the sweep files of a block that spans several (one report over all of their runs).
JOIN = "+"
#: The files of a run compared between a rerun and the kept run, and the results keys that are timings.
RUN_FILES = ("eval.csv", "metrics.csv", "eval_usage.csv", "schedule.json")
TIMINGS = ("train_seconds", "steps_per_second")
#: Where a study's finished runs are kept (``study/COMMIT`` names the commit they ran on).
KEPT_ROOT = Path("study")
#: The files searched for blocks when none is named: the README and the docs pages.
DEFAULT_FILES = ("README.md", "docs/*.md")
STACK_PREFIX = "> stack:"
#: Report subsections kept in the digest (the others only hold figures).
KEPT_SUBSECTIONS = ("Aggregate scores", "Dormant neurons", "Expert usage per task", "Continual metrics")


def digest(report_text: str, sweep_file: str, runs: str, view: str | None = None) -> str:
    """The block's body for ``report_text`` (``moerl report`` Markdown without figures); ``view="summary"``:
    the aggregate scores and the claims' verdicts only (:func:`summary`)."""
    sections = re.split(r"^(?=## )", report_text, flags=re.M)
    stacks: list[str] = []
    envs: list[str] = []
    claims: list[str] = []
    for section in sections:
        head, _, rest = section.partition("\n")
        if head == "## Software stacks":
            stacks = [f"{STACK_PREFIX} {line[2:]}" for line in rest.splitlines() if line.startswith("- ")]
        elif head.startswith("## Claims"):
            claims = ["#### Claims of the paper, checked on these runs", "", *_body(rest)]
        elif head.startswith("## ") and "(" in head:
            envs += [f"#### {head[3:]}", "", *_env_body(rest)]
    if not envs:
        raise SystemExit(f"check_results: the report over '{runs}' has no study section (no runs found?)")
    sweeps = sweep_file.split(JOIN)
    launches = " and ".join(f"`moerl sweep {f}`" for f in sweeps)
    intro = [f"_Generated by `python scripts/check_results.py --write --only {sweep_file} --runs {runs}` from the runs of "
             f"{launches}; `python scripts/check_results.py` reruns {'that sweep' if len(sweeps) == 1 else 'them'} "
             "and fails if these tables no longer match. Do not edit by hand._", "", *stacks, ""]
    if view == "summary":
        envs, claims = summary(envs, claims)
    return "\n".join(_squeeze(intro + envs + claims)).rstrip() + "\n"


def summary(envs: list[str], claims: list[str]) -> tuple[list[str], list[str]]:
    """One screen of a digest: one table of every variant's IQM [95% CI] per env and setting (the aggregate
    scores' first measure; the settings as columns), and each claim's headline with its verdict (without the
    comparisons under it). A setting without aggregate scores (a single-task env) has no column."""
    columns: list[str] = []
    cells: dict[str, dict[str, tuple[str, str]]] = {}  # variant -> column -> (seeds, IQM [CI])
    column, section = "", ""
    for line in envs:
        if line.startswith("#### "):
            column, section = setting_name(line[5:]), ""
        elif line.startswith("##### "):
            section = line[6:]
        elif section == "Aggregate scores" and line.startswith("| ") and not line.startswith("| variant |"):
            variant, seeds, iqm = (c.strip() for c in line.strip("|").split("|")[:3])
            if column not in columns:
                columns.append(column)
            cells.setdefault(variant, {})[column] = (seeds, iqm)
    table: list[str] = []
    if columns:
        table = ["#### IQM of the final normalised greedy return [95% CI]", "",
                 "| variant | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
        for variant, row in cells.items():
            seeds = {row[c][0] for c in row}
            counts = next(iter(seeds)) if len(seeds) == 1 else " / ".join(row[c][0] if c in row else "-"
                                                                        for c in columns)
            table.append(f"| {variant} | {counts} | " + " | ".join(row[c][1] if c in row else "-" for c in columns)
                         + " |")
        table.append("")
    headlines = [line for line in claims if re.match(r"\d+\. \*\*", line)]
    return table, (["#### Claims of the paper, checked on these runs", "", *headlines] if headlines else [])


def setting_name(heading: str) -> str:
    """A report's env heading as a column name: ``cartpole-crl (crl, env_kwargs.order=reverse)`` ->
    ``cartpole-crl, order=reverse``; ``cartpole-mtrl (mtrl)`` -> ``cartpole-mtrl`` (the setting kind is in the
    env's name; an env_kwargs key is the env's own option)."""
    name, _, rest = heading.partition(" (")
    extra = [part.strip().removeprefix("env_kwargs.") for part in rest.removesuffix(")").split(",")[1:]]
    return ", ".join([name, *[e for e in extra if e]])


def _body(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.startswith("![") and not line.startswith("_no ")]
    return _squeeze(lines)


def _env_body(text: str) -> list[str]:
    out: list[str] = []
    keep = True
    for line in text.splitlines():
        if line.startswith("### "):
            keep = line[4:] in KEPT_SUBSECTIONS
            if keep:
                out += [f"##### {line[4:]}", ""]
            continue
        if keep and not line.startswith("![") and not (line.startswith("_no ") and "figure" in line):
            out.append(line)
    return _squeeze(out)


def _squeeze(lines: list[str]) -> list[str]:
    """Collapse runs of blank lines, so the digest does not depend on the report's spacing of figures."""
    out: list[str] = []
    for line in lines:
        if line.strip() or (out and out[-1].strip()):
            out.append(line.rstrip())
    return out + [""]


def compared(body: str) -> list[str]:
    """The lines of a block that must match (the stack lines name provenance, they are not results)."""
    return [line for line in body.strip().splitlines() if not line.startswith(STACK_PREFIX)]


#: How a stack line names the CPU capability its runs computed with (``moerl.runs.provenance.describe``).
CAPABILITY = re.compile(r"; CPU capability ([^;:]+)")
#: A number with its interval, ``0.520 [0.457, 0.592]``: a CI, or a mean with its [min, max] over seeds.
INTERVAL = re.compile(r"(-?\d+(?:\.\d+)?) \[(-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?)\]")
DECIMAL = re.compile(r"-?\d+\.\d+")
#: A claim's verdict: ``Verdict: **mixed**`` and ``... -> not supported``.
VERDICT = re.compile(r"(Verdict: \*\*)[^*]+(\*\*)|(-> )[a-z ]+$")
UNRECORDED = "unrecorded"


def capabilities(body: str) -> set[str]:
    """The CPU capabilities a block's (or digest's) stack lines name; :data:`UNRECORDED` for a stack line
    without one (runs made before ``stack.json`` recorded it)."""
    found = set()
    for line in body.splitlines():
        if line.startswith(STACK_PREFIX):
            match = CAPABILITY.search(line)
            found.add(match.group(1).strip() if match else UNRECORDED)
    return found or {UNRECORDED}


def skeleton(line: str) -> str:
    """A line with its intervals, decimal numbers and claim verdicts blanked: what must stay equal when the
    numbers are compared statistically."""
    line = INTERVAL.sub("<interval>", line)
    line = DECIMAL.sub("<x>", line)
    return VERDICT.sub(lambda m: f"{m.group(1) or m.group(3)}<verdict>{m.group(2) or ''}", line)


def statistical_differences(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    """``(failures, notes)`` of comparing a block's lines with fresh ones statistically (module docstring):
    a failure for a line whose shape, text or integers differ or whose interval does not overlap the block's,
    a note for a changed verdict."""
    if len(old) != len(new):
        return [f"the block has {len(old)} lines, the fresh digest {len(new)}"], []
    failures, notes = [], []
    for a, b in zip(old, new, strict=True):
        if skeleton(a) != skeleton(b):
            failures.append(f"differs beyond its numbers:\n  block: {a}\n  now:   {b}")
            continue
        for x, y in zip(INTERVAL.findall(a), INTERVAL.findall(b), strict=True):
            lo, hi = max(float(x[1]), float(y[1])), min(float(x[2]), float(y[2]))
            if lo > hi:
                failures.append(f"interval {y[0]} [{y[1]}, {y[2]}] does not overlap the block's "
                                f"{x[0]} [{x[1]}, {x[2]}] in: {a}")
        if [m.group(0) for m in VERDICT.finditer(a)] != [m.group(0) for m in VERDICT.finditer(b)]:
            notes.append(f"verdict changed (shown, not failed):\n  block: {a}\n  now:   {b}")
    return failures, notes


def moerl(*args: str) -> str:
    """Run the ``moerl`` CLI of this interpreter; stop with its error output if it fails."""
    proc = subprocess.run([sys.executable, "-m", "moerl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"check_results: 'moerl {' '.join(args)}' failed with exit status {proc.returncode}")
    return proc.stdout


def report_of(runs: list[str]) -> str:
    return moerl("report", *runs)


def sweep_logdir(sweep_file: str) -> str:
    """The logdir(s) a block's sweep file(s) write to, as the block's intro names them."""
    from moerl.core.errors import ConfigError
    from moerl.runs.sweep.spec import load_sweep

    try:
        return " --runs ".join(str(load_sweep(f).logdir) for f in sweep_file.split(JOIN))
    except ConfigError as e:
        print(f"check_results: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def variant_only(sweep_file: str, variant: str, folder: Path) -> Path:
    """A copy of ``sweep_file`` in ``folder`` whose variants are those matching ``variant`` (``arch`` or
    ``arch:router``) alone: the same runs of that variant, settings and seeds (the same run names), grouped as
    in the whole sweep (groups never mix variants)."""
    import yaml

    data = yaml.safe_load(Path(sweep_file).read_text())
    arch, _, router = variant.partition(":")
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, list):
        print(f"check_results: '{sweep_file}' has no variants list to pick --rerun-variant '{variant}' from",
              file=sys.stderr)
        raise SystemExit(2)
    chosen = [v for v in variants if v.get("arch") == arch and (v.get("router") or "") == router]
    if not chosen:
        names = ", ".join(f"{v.get('arch')}{':' + v['router'] if v.get('router') else ''}" for v in variants)
        print(f"check_results: --rerun-variant '{variant}' is not a variant of '{sweep_file}' (its variants: "
              f"{names})", file=sys.stderr)
        raise SystemExit(2)
    path = folder / Path(sweep_file).name
    path.write_text(yaml.safe_dump({**data, "variants": chosen}, sort_keys=False))
    return path


def kept_runs(sweep_file: str) -> str | None:
    """The folder keeping ``sweep_file``'s finished runs in the repository, or None (module docstring)."""
    from moerl.runs.sweep.spec import load_sweep

    commit = KEPT_ROOT / "COMMIT"
    if not commit.is_file():
        return None
    folder = KEPT_ROOT / commit.read_text().strip() / load_sweep(sweep_file).name
    return str(folder) if folder.is_dir() else None


def first_variant(sweep_file: str) -> str:
    """The sweep file's first variant as ``arch`` or ``arch:router`` (its baseline, by the study's order)."""
    import yaml

    first = (yaml.safe_load(Path(sweep_file).read_text()).get("variants") or [{}])[0]
    return f"{first.get('arch')}{':' + first['router'] if first.get('router') else ''}"


def _run_content(run: Path) -> dict[str, object]:
    """What must be equal between a rerun and a kept run: results without timings, and :data:`RUN_FILES`."""
    import json

    results = json.loads((run / "results.json").read_text())
    out: dict[str, object] = {"results.json": {k: v for k, v in results.items() if k not in TIMINGS}}
    for name in RUN_FILES:
        out[name] = (run / name).read_bytes() if (run / name).is_file() else None
    return out


def _score(run: Path) -> float:
    import json

    tasks = json.loads((run / "results.json").read_text()).get("final_eval") or {}
    return sum(t["normalized"] for t in tasks.values()) / max(len(tasks), 1)


def rerun_matches(sweep_file: str, variant: str, kept: str, tmp: Path, workers: str | None) -> bool:
    """Rerun ``variant``'s runs of ``sweep_file`` from nothing and compare them with the kept runs of the same
    names in ``kept`` (module docstring); print the outcome and say whether it passed."""
    from moerl.runs.provenance import cpu_capability, cpu_model

    if not any((p / "results.json").is_file() for p in Path(kept).glob("*_s*")):  # hours of training for nothing
        print(f"[check_results] {variant} of {sweep_file}: no finished runs in {kept} to compare a rerun with; "
              "not rerun")
        return False
    folder = tmp / f"rerun-{Path(sweep_file).stem}"
    folder.mkdir()
    logdir = folder / "runs"
    extra = ["--workers", workers] if workers else []
    print(f"[check_results] rerunning the {variant} runs of {sweep_file} into {logdir}", flush=True)
    moerl("sweep", str(variant_only(sweep_file, variant, folder)), "--logdir", str(logdir), *extra)
    fresh = sorted(p for p in logdir.iterdir() if (p / "status.json").is_file())
    missing = [p.name for p in fresh if not (Path(kept) / p.name / "results.json").is_file()]
    label = f"{variant} rerun of {sweep_file} ({len(fresh)} runs) against {kept}"
    if missing:
        print(f"[check_results] {label}: {len(missing)} runs are not kept there (e.g. {missing[0]}): the study "
              "is not finished, or its sweep file changed")
        return False
    import json

    def kind(stack: dict) -> str:  # what bit-identical numbers need: torch's capability and the CPU model
        return f"{stack.get('cpu_capability')} on {stack.get('cpu_model')}"

    kept_kinds = {kind(json.loads((Path(kept) / p.name / "stack.json").read_text())[0]) for p in fresh}
    here = kind({"cpu_capability": cpu_capability(), "cpu_model": cpu_model()})
    equal = [p.name for p in fresh if _run_content(p) == _run_content(Path(kept) / p.name)]
    if len(equal) == len(fresh):
        print(f"[check_results] {label}: every run equal bit for bit (CPU {here})")
        return True
    delta = sum(_score(p) - _score(Path(kept) / p.name) for p in fresh) / len(fresh)
    differs = f"{len(fresh) - len(equal)} of {len(fresh)} runs differ (mean score difference {delta:+.3f})"
    if kept_kinds == {here}:
        print(f"[check_results] {label}: {differs} although the kept runs ran on this kind of CPU ({here}): the "
              "numerics changed since they ran")
        return False
    print(f"[check_results] {label}: {differs}; the kept runs ran on {', '.join(sorted(kept_kinds))}, this "
          f"machine is {here}: not compared exactly (shown, not failed)")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("markdown", nargs="*", help="the files holding results blocks (default: README.md and "
                                                   "the docs/*.md pages that hold one)")
    parser.add_argument("--only", help="the blocks of this sweep file only (several joined by +, as the block's "
                                       "marker names them; default: every block)")
    parser.add_argument("--runs", action="append", help="use these existing runs instead of rerunning the sweep "
                                                        "(with --only, or when the blocks are of one sweep file); "
                                                        "once per sweep file of the block, in its order")
    parser.add_argument("--write", action="store_true", help="rewrite the blocks from the runs (needs --runs)")
    parser.add_argument("--rerun-variant", help="with --runs: also rerun this variant's runs (arch or "
                                                "arch:router) from nothing and compare them with the kept ones")
    parser.add_argument("--workers", help="passed to moerl sweep when rerunning")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--exact", action="store_true", help="compare exactly even when the runs' CPU capability is "
                                                          "not the one the block records")
    how.add_argument("--statistical", action="store_true", help="compare statistically even when the CPU "
                                                                "capability is the block's (another CPU model)")
    args = parser.parse_args(argv)
    named = [Path(m) for m in args.markdown]
    for path in named:
        if not path.is_file():
            print(f"check_results: '{path}' is not a file", file=sys.stderr)
            return 2
    if args.write and not args.runs:
        print("check_results: --write needs --runs DIR (the runs to write the tables from)", file=sys.stderr)
        return 2
    if args.rerun_variant and not args.runs:
        print("check_results: --rerun-variant needs --runs DIR (the kept runs to compare the rerun with)",
              file=sys.stderr)
        return 2
    for folder in args.runs or []:
        if not Path(folder).is_dir():
            print(f"check_results: --runs '{folder}' is not a folder", file=sys.stderr)
            return 2
    paths = named or [p for pattern in DEFAULT_FILES for p in sorted(Path().glob(pattern))]
    texts = {path: path.read_text() for path in paths if path.is_file()}
    blocks = [(path, b) for path, text in texts.items() for b in BLOCK.finditer(text)]
    where = ", ".join(f"'{p}'" for p in texts) or "README.md"
    if not blocks:
        print(f"check_results: {where} has no '<!-- results: SWEEP.yaml -->' block", file=sys.stderr)
        return 2
    if args.only:
        blocks = [(p, b) for p, b in blocks if b["sweep"] == args.only]
        if not blocks:
            print(f"check_results: {where} has no block of '{args.only}'", file=sys.stderr)
            return 2
    elif args.runs and len({b["sweep"] for _, b in blocks}) > 1:
        print(f"check_results: {where} hold blocks of {len({b['sweep'] for _, b in blocks})} sweep files: --runs "
              "needs --only SWEEP.yaml to say which", file=sys.stderr)
        return 2
    if args.runs:
        files = blocks[0][1]["sweep"].split(JOIN)
        if len(args.runs) != len(files):
            print(f"check_results: --runs names {len(args.runs)} folders for the {len(files)} sweep files of "
                  f"'{blocks[0][1]['sweep']}' (one per file, in its order)", file=sys.stderr)
            return 2
    failed = 0
    written: dict[Path, dict[tuple[str, str | None], str]] = {}  # per file: (sweep, view) -> the new block
    reports: dict[str, str] = {}  # one report per sweep file: a README summary and its docs block share a rerun
    reruns: dict[tuple[str, str, str], bool] = {}  # one variant rerun per sweep file, shared by the blocks of it

    def rerun(one: str, variant: str, kept: str) -> bool:
        if (one, variant, kept) not in reruns:
            reruns[one, variant, kept] = rerun_matches(one, variant, kept, Path(tmp), args.workers)
        return reruns[one, variant, kept]

    with tempfile.TemporaryDirectory(prefix="check-results-") as tmp:
        for path, block in blocks:
            sweep_file = block["sweep"]
            if sweep_file not in reports:
                kept_all = [kept_runs(one) for one in sweep_file.split(JOIN)] if not args.runs else []
                if any(kept_all):
                    variant = args.rerun_variant or first_variant(sweep_file.split(JOIN)[0])
                    print(f"[check_results] the runs of {sweep_file} are kept in "
                          f"{', '.join(k for k in kept_all if k)}: the block is checked from them, and their "
                          f"{variant} runs are rerun", flush=True)
                    runs = []
                    for one, kept in zip(sweep_file.split(JOIN), kept_all, strict=True):
                        if kept is None:  # a sweep of the study not started: none of its runs in the block
                            runs.append(str(Path(tmp) / f"not-started-{len(reports)}-{len(runs)}"))
                            Path(runs[-1]).mkdir()
                            print(f"[check_results] no runs of {one} are kept yet: the block has none of them",
                                  flush=True)
                            continue
                        runs.append(kept)
                        failed += not rerun(one, variant, kept)
                elif args.runs:
                    runs = list(args.runs)
                    if args.rerun_variant and not args.write:
                        for one, kept in zip(sweep_file.split(JOIN), runs, strict=True):
                            failed += not rerun(one, args.rerun_variant, kept)
                else:
                    runs = []
                    for one in sweep_file.split(JOIN):
                        runs.append(str(Path(tmp) / f"runs-{len(reports)}-{len(runs)}"))
                        extra = ["--workers", args.workers] if args.workers else []
                        print(f"[check_results] rerunning {one} into {runs[-1]}", flush=True)
                        moerl("sweep", one, "--logdir", runs[-1], *extra)
                reports[sweep_file] = report_of(runs)
            fresh = digest(reports[sweep_file], sweep_file, sweep_logdir(sweep_file), block["view"])
            label = f"{sweep_file}{' (summary)' if block['view'] else ''} in {path}"
            if args.write:
                marker = f"<!-- results: {sweep_file}{' ' + block['view'] if block['view'] else ''} -->"
                written.setdefault(path, {})[sweep_file, block["view"]] = f"{marker}\n{fresh}<!-- /results -->"
                print(f"[check_results] wrote the block of {label}")
                continue
            failed += not _matches(label, path, block["body"], fresh, args)
    for path, new_blocks in written.items():
        # the file as it is now, not as it was read: prose edited while the runs were reported is kept
        current = path.read_text()
        gone = set(new_blocks) - {(m["sweep"], m["view"]) for m in BLOCK.finditer(current)}
        for sweep_file, view in sorted(gone, key=str):
            print(f"check_results: the block of {sweep_file}{' (summary)' if view else ''} left {path} while its "
                  "runs were reported: not written", file=sys.stderr)
            failed += 1
        new_text = BLOCK.sub(lambda m, new=new_blocks: new.get((m["sweep"], m["view"]), m.group(0)), current)
        if new_text != current:
            tmp_path = path.with_name(f".{path.name}.tmp")
            tmp_path.write_text(new_text)
            tmp_path.replace(path)
    return 1 if failed else 0


def _matches(label: str, path: Path, body: str, fresh: str, args: argparse.Namespace) -> bool:
    """Compare a block's ``body`` with the ``fresh`` digest (exactly or statistically: module docstring),
    print the outcome, and say whether it matched."""
    old, new = compared(body), compared(fresh)
    recorded, now = capabilities(body), capabilities(fresh)
    same_cpu = recorded == now and UNRECORDED not in recorded and len(now) == 1
    if args.exact or (same_cpu and not args.statistical):
        how = "--exact" if args.exact else f"CPU capability {next(iter(now))}, as the block records"
        if old == new:
            print(f"[check_results] {label}: the block matches what its command produces, exactly ({how})")
            return True
        print(f"[check_results] {label}: the block does NOT match what its command produces "
              f"(compared exactly: {how}):")
        sys.stdout.writelines(difflib.unified_diff([f"{x}\n" for x in old], [f"{x}\n" for x in new],
                                                   f"{path} (block)", "produced now"))
        return False
    why = ("--statistical" if same_cpu else f"these runs' CPU capability {', '.join(sorted(now))} is not the "
           f"block's {', '.join(sorted(recorded))}")
    failures, notes = statistical_differences(old, new)
    for note in notes:
        print(f"[check_results] {label}: {note}")
    if not failures:
        print(f"[check_results] {label}: the block matches what its command produces, statistically "
              f"({why}: same tables, text and integers, every interval overlaps the block's)")
        return True
    print(f"[check_results] {label}: the block does NOT match what its command produces (compared "
          f"statistically: {why}):")
    for failure in failures:
        print(f"  {failure}")
    return False


if __name__ == "__main__":
    raise SystemExit(main())
