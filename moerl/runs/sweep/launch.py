"""``moerl sweep SWEEP.yaml``: train every run of a sweep file, skipping what is done and resuming what died.

Why subprocesses: each job is ``moerl train`` in its own process (one torch thread, as every run), so a job
that crashes, runs out of memory or is killed takes nothing else with it, and a job runs exactly as the
same command typed by hand would, writing the same run directories. The local backend runs ``--workers``
jobs at a time (default: one per core); :mod:`moerl.runs.sweep.ray_backend` hands the same jobs to Ray Tune.

What a launch does with each job (:func:`plan_job`), from the run directories alone:

* every seed finished: nothing;
* a run marked running by a live process (another launch): left alone, reported as busy;
* interrupted, failed or crashed with a checkpoint: ``moerl train --resume`` continues it (a batched job
  resumes its whole batch from the leader's checkpoint);
* unfinished without a checkpoint (nothing worth keeping): its directories are removed and the seeds
  trained again. A seed's results do not depend on which other seeds share its batch, so retraining only
  the unfinished seeds of a batch gives the same runs;
* a directory at a run's place whose ``status.json`` is missing or damaged is not moerl's to delete (it may
  hold results, a model or the user's own files): it is set aside as ``<name>.set-aside-<time>`` beside
  it, the launch says so, and the seed is trained again.

A job that fails is reported with the last line of its log (``<logdir>/.sweep/logs/<job>.log``) and does
not stop the others; the exit status is 1 when any job failed. ``<logdir>/sweep.json`` records every job's
outcome and time.

SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the sweep stops it cleanly: each running ``moerl train`` gets the
signal once (from the sweep only: the children run in sessions of their own) and saves as it does on that
signal, no further job starts, ``sweep.json`` says which jobs were interrupted and which not started
(``stopped_by``), one line is printed and the exit status is 128 + the signal (143, 130, 129). The same
command then resumes the interrupted runs and trains the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moerl.core.devices import check_device, resolve_device
from moerl.core.errors import ConfigError
from moerl.runs.locks import exclusive_lock
from moerl.runs.sweep.jobs import (
    Children,
    JobOutcome,
    JobPlan,
    expand_outcome,
    group_plans,
    plan_job,
    run_job,
    set_aside_unaccounted,
    stop_leftover_trainers,
)
from moerl.runs.sweep.spec import Sweep

STATE_DIR = ".sweep"
#: Held (``flock``) by the launch that works on a logdir.
LOCK_FILE = ".sweep.lock"


@dataclass
class Progress:
    """Counts for the live view; printed one line per event (readable in logs and terminals alike)."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    durations: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    workers: int = 1

    def eta(self, todo: int) -> str:
        if not self.durations or todo <= 0:
            return "-"
        mean = sum(self.durations) / len(self.durations)
        return f"{mean * todo / max(1, self.workers) / 60:.1f} min"

    def line(self, event: str) -> str:
        todo = self.total - self.done - self.failed
        return (f"[sweep] {self.done}/{self.total} done, {self.running} running, {self.failed} failed, "
                f"ETA {self.eta(todo - self.running)}: {event}")


def run_local(plans: Sequence[JobPlan], state_dir: Path, workers: int, device: str | None,
              say: Callable[[str], None], children: Children | None = None) -> list[JobOutcome]:
    """Run ``plans`` ``workers`` at a time in subprocesses; report each start and end through ``say``.
    Once ``children`` is stopped (a signal), no job starts and a job its stop ended is ``interrupted``."""
    progress = Progress(total=len(plans), workers=workers)
    children = children or Children()

    def one(plan: JobPlan) -> JobOutcome:
        if children.signal is not None:
            return JobOutcome(plan.plan_id, plan.seeds, "not started", 0.0,
                              f"the sweep was stopped ({_signal_name(children.signal)}) first", plan.action)
        with progress.lock:
            progress.running += 1
            say(progress.line(f"{plan.action} {plan.plan_id} ({describe(plan)})"))
        try:
            outcome = run_job(plan, state_dir, device, children)
        except Exception as exc:  # a job that cannot even start is a failed job, not a failed sweep
            outcome = JobOutcome(plan.plan_id, plan.seeds, "failed", 0.0, f"{type(exc).__name__}: {exc}",
                                 plan.action)
        if outcome.status != "finished" and children.signal is not None:
            outcome.status = "interrupted"
            outcome.error = f"stopped by {_signal_name(children.signal)}; a relaunch resumes it"
        with progress.lock:
            progress.running -= 1
            if outcome.status == "finished":
                progress.done += 1
                progress.durations.append(outcome.seconds)
                say(progress.line(f"finished {outcome.job_id} in {outcome.seconds:.0f} s"))
            elif outcome.status == "interrupted":
                say(progress.line(f"interrupted {outcome.job_id}: {outcome.error}"))
            else:
                progress.failed += 1
                say(progress.line(f"FAILED {outcome.job_id}: {outcome.error}"))
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, plans))


def describe(plan: JobPlan) -> str:
    """``seeds 0-9``, or for a group its runs per job: ``12 runs: NAME (seeds 0-5), NAME (seeds 0-5)``."""
    if not plan.group:
        return f"seeds {_seeds(plan.seeds)}"
    runs = sum(len(seeds) for _, seeds in plan.group)
    return f"{runs} runs: " + ", ".join(f"{job.name} (seeds {_seeds(seeds)})" for job, seeds in plan.group)


#: Runs per process when a sweep groups runs into batches (``--max-members``); see docs/batched-engine.md.
DEFAULT_MAX_MEMBERS = 64


def plan_launch(spec: Sweep, max_members: int = DEFAULT_MAX_MEMBERS) -> list[JobPlan]:
    """Every job's plan from the run directories (:func:`plan_job`), with the runs that can share a batch
    merged into groups of at most ``max_members`` (:func:`group_plans`; 1 turns grouping off)."""
    from moerl.runs.kinds import family_by_name
    from moerl.runs.sweep.spec import SWEEP_FAMILY

    plans = [plan_job(job) for job in spec.jobs]
    family = family_by_name(SWEEP_FAMILY)
    if family.group_key is None or max_members < 2:
        return plans
    return group_plans(plans, family.group_key, max_members)


def dry_run(spec: Sweep, max_members: int = DEFAULT_MAX_MEMBERS, say: Callable[[str], None] = print) -> float:
    """Print what a launch would do: each plan (groups with their members) and its estimated core time on this
    machine (the family's calibration, measured once per kind of group and cached); returns the total
    seconds of what would train."""
    from moerl.runs.kinds import family_by_name
    from moerl.runs.sweep.spec import SWEEP_FAMILY

    family = family_by_name(SWEEP_FAMILY)
    plans = plan_launch(spec, max_members)
    total, unknown = 0.0, 0
    for plan in plans:
        cost = "-"
        if plan.action == "train" and plan.job.engine == "batched" and family.estimate_group is not None:
            seconds = family.estimate_group([{"name": job.name, "seeds": list(seeds), "config": job.config}
                                             for job, seeds in plan.members])
            total += seconds
            cost = f"~{seconds / 3600:.2f} core-h"
        elif plan.action in ("train", "resume"):
            unknown += 1
        say(f"{plan.action:7s} {plan.plan_id}  {describe(plan)}  {cost}")
    processes = sum(p.action in ("train", "resume") for p in plans)
    grouping = f"groups of at most {max_members} runs" if max_members > 1 else "no groups: a process per job"
    say(f"{len(spec.jobs)} jobs, {spec.runs} runs in {spec.logdir}; {processes} processes to run "
        f"({grouping}); estimated {total / 3600:.2f} core-hours on this machine"
        + (f" for the fresh ones ({unknown} resumed or one-by-one jobs not estimated)" if unknown else "")
        + " (from a timing of each kind of group here; start-up and writing not counted: docs/batched-engine.md)")
    return total


def _seeds(seeds: Sequence[int]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def summary(outcomes: Sequence[JobOutcome]) -> str:
    """A Markdown table of every job's outcome."""
    from moerl.runs.tables import markdown_table

    rows = [[o.job_id, _seeds(o.seeds), o.action or "-", o.status, f"{o.seconds:.0f}" if o.seconds else "-",
             o.error or ""] for o in outcomes]
    return markdown_table(["job", "seeds", "action", "status", "seconds", "error"], rows)


def write_record(sweep: Sweep, outcomes: Sequence[JobOutcome], backend: str, seconds: float,
                 stopped_by: str | None = None) -> None:
    """``<logdir>/sweep.json``: the launch's jobs and outcomes (atomic); ``stopped_by``: the signal that
    stopped the launch, if one did."""
    path = Path(sweep.logdir) / "sweep.json"
    data = {"name": sweep.name, "backend": backend, "engine": sweep.engine, "seconds": round(seconds, 1),
            "stopped_by": stopped_by,
            "jobs": [{"job": o.job_id, "seeds": list(o.seeds), "action": o.action, "status": o.status,
                      "seconds": round(o.seconds, 1), "error": o.error} for o in outcomes]}
    tmp = path.with_name(".sweep.json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def check_options(backend: str, workers: int | None, device: str | None, address: str | None,
                  gpus_per_job: float) -> None:
    """Refuse options that cannot work, in one line each, before anything is planned or written (the dry
    run checks them too).

    A device is checked as ``moerl train`` checks it (:func:`~moerl.core.devices.resolve_device`): ``cuda`` on
    a machine whose torch sees no GPU would fail every job one by one. Not with a Ray cluster's address: its
    nodes' GPUs are not this machine's, so there only the name is checked.
    """
    from moerl.runs.sweep.ray_backend import cluster_address, parse_address

    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend '{backend}' is not one of local, ray")
    if not 0 <= gpus_per_job <= 1:
        raise ConfigError(f"--gpus-per-job must be between 0 and 1, got {gpus_per_job}")
    if backend == "local" and (address or gpus_per_job):
        raise ConfigError("--address and --gpus-per-job apply to --backend ray only")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    cluster = cluster_address(address) if backend == "ray" else None
    if cluster is not None:
        parse_address(*cluster)
    if device is not None and cluster is not None:
        check_device(device)
    elif device is not None:
        resolve_device(device)


def sweep(path: str, backend: str = "local", workers: int | None = None, device: str | None = None,
          logdir: str | None = None, address: str | None = None, gpus_per_job: float = 0.0,
          say: Callable[[str], None] = print, max_members: int = DEFAULT_MAX_MEMBERS) -> tuple[list[JobOutcome], Sweep]:
    """Plan and run the sweep file ``path`` (see the module docstring); returns every job's outcome, or
    raises :class:`SweepStopped` once a stop signal's work is done."""
    from moerl.runs.sweep.ray_backend import check_reachable, cluster_address
    from moerl.runs.sweep.spec import load_sweep

    check_options(backend, workers, device, address, gpus_per_job)
    spec = load_sweep(path, logdir)
    cluster = cluster_address(address) if backend == "ray" else None
    if cluster is not None:
        check_reachable(*cluster)
    workers = workers or os.cpu_count() or 1
    children = Children()
    with logdir_lock(Path(spec.logdir)), _stopped_by_signals(children):
        outcomes = _launch(spec, backend, workers, device, address, gpus_per_job, say, children, max_members)
    if children.signal is not None:
        raise SweepStopped(children.signal, outcomes, spec)
    return outcomes, spec


class SweepStopped(Exception):
    """A launch that a signal stopped, after its children stopped and its record was written: the CLI
    prints the message as its one line and exits with :attr:`status` (128 + the signal, as a shell does)."""

    def __init__(self, signum: int, outcomes: Sequence[JobOutcome], spec: Sweep) -> None:
        self.status = 128 + signum
        counts = {state: sum(o.status == state for o in outcomes) for state in ("interrupted", "not started")}
        super().__init__(
            f"sweep stopped by {_signal_name(signum)}: {counts['interrupted']} job(s) interrupted, "
            f"{counts['not started']} not started; the same command resumes them; record in "
            f"{Path(spec.logdir) / 'sweep.json'}")


#: The signals that stop a launch cleanly: SIGTERM (``kill``, a scheduler), SIGINT (Ctrl-C), SIGHUP (the
#: terminal closed; its children are in sessions of their own and would not see it).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def _stopped_by_signals(children: Children) -> Iterator[None]:
    """While a launch runs, a stop signal stops its children (:meth:`Children.stop`) instead of killing the
    sweep outright, which left them training as orphans and wrote no record; the launch then waits for them,
    starts nothing more and records what was stopped. While a Ray launch waits in Tune, the signal also
    interrupts it (:func:`_run_ray`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        first = children.signal is None
        children.stop(signum)
        if children.interrupt_main and first:
            raise RayInterrupted

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class RayInterrupted(KeyboardInterrupt):
    """A stop signal interrupting a Ray launch's ``tuner.fit`` (see :func:`_stopped_by_signals`)."""


def check_logdir_writable(logdir: Path) -> None:
    """Refuse a logdir that cannot be created or written, as ``moerl train`` does ("cannot create log
    directory"), before anything is planned: the nearest existing folder on its path must be writable."""
    existing = logdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        if existing == logdir:
            raise ConfigError(f"log directory '{logdir}' {what}")
        raise ConfigError(f"cannot create log directory '{logdir}': '{existing}' {what}")


@contextlib.contextmanager
def logdir_lock(logdir: Path) -> Iterator[None]:
    """Hold ``<logdir>/.sweep.lock`` for a whole launch: a second launch on the same logdir (which would
    train the same runs twice, or delete the first one's runs as unfinished) is refused with one line.

    Why a kernel lock (``flock``): it is released when the process dies however it dies, so a killed
    launch never leaves a stale lock behind.
    """
    check_logdir_writable(logdir)
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # what the check above cannot see (a full disk, a race)
        raise ConfigError(f"cannot create log directory '{logdir}': {exc.strerror or exc}") from None
    with exclusive_lock(logdir / LOCK_FILE, lambda holder: f"another moerl sweep ({holder}) is running on "
                        f"'{logdir}'; wait for it, or give another --logdir"):
        yield


def _launch(spec: Sweep, backend: str, workers: int, device: str | None, address: str | None,
            gpus_per_job: float, say: Callable[[str], None], children: Children,
            max_members: int = DEFAULT_MAX_MEMBERS) -> list[JobOutcome]:
    """The launch itself, under the logdir's lock: plan from the run directories, run, record."""
    plans = plan_launch(spec, max_members)
    for old, new in set_aside_unaccounted(plans):
        say(f"[sweep] set aside {old}: its status.json is missing or damaged, so it is not deleted; "
            f"moved to {new.name}")
    state_dir = Path(spec.logdir).resolve() / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    skipped = [JobOutcome(p.job.job_id, p.job.seeds, "finished" if p.action == "done" else "busy",
                          action="skip" if p.action == "done" else "busy",
                          error=None if p.action == "done" else "running in another process")
               for p in plans if p.action in ("done", "busy")]
    todo = [p for p in plans if p.action in ("train", "resume")]
    grouped = sum(bool(p.group) for p in todo)
    say(f"[sweep] {spec.name}: {len(spec.jobs)} jobs ({spec.runs} runs) in {spec.logdir}; "
        f"{len(plans) - len(todo)} need nothing, {len(todo)} to run on {backend} with {workers} workers"
        + (f" ({grouped} of them groups of several jobs in one batch)" if grouped else ""))
    start = time.perf_counter()
    if backend == "local":
        outcomes = run_local(todo, state_dir, workers, device, say, children)
    else:
        outcomes = _run_ray(todo, state_dir, workers, device, address, gpus_per_job, say, children)
    everything = skipped + [one for plan, outcome in zip(todo, outcomes, strict=True)
                            for one in expand_outcome(plan, outcome)]
    stopped_by = _signal_name(children.signal) if children.signal is not None else None
    write_record(spec, everything, backend, time.perf_counter() - start, stopped_by)
    return everything


def _run_ray(plans: Sequence[JobPlan], state_dir: Path, workers: int, device: str | None, address: str | None,
             gpus_per_job: float, say: Callable[[str], None], children: Children) -> list[JobOutcome]:
    """The Ray backend. A stop signal interrupts Tune (Ray then shuts its workers down, and each worker's
    ``moerl train`` is stopped: :func:`run_job`, :func:`stop_leftover_trainers`); each job is then recorded
    from its run directories: finished, or interrupted."""
    from moerl.runs.sweep.ray_backend import run_ray

    children.interrupt_main = True
    try:
        outcomes = run_ray(plans, state_dir, workers, device, address, gpus_per_job, say)
    except KeyboardInterrupt:  # RayInterrupted, or what Tune makes of it
        if children.signal is None:
            raise
        outcomes = []
    finally:
        children.interrupt_main = False
    if children.signal is None:
        return outcomes
    stop_leftover_trainers(plans)
    return [_after_stop(plan, children.signal) for plan in plans]


def _after_stop(plan: JobPlan, signum: int) -> JobOutcome:
    """What a stop left of a Ray job, from its run directories: finished, not started, or interrupted."""
    from moerl.runs.rundir import RunDir, run_state

    folders = plan.run_dirs()
    if all(run_state(RunDir(f).read_status()) == "finished" for f in folders if f.exists()) and all(
            f.exists() for f in folders):
        return JobOutcome(plan.plan_id, plan.seeds, "finished", 0.0, None, plan.action)
    if plan.action == "train" and not any(f.exists() for f in folders):
        return JobOutcome(plan.plan_id, plan.seeds, "not started", 0.0,
                          f"the sweep was stopped ({_signal_name(signum)}) first", plan.action)
    return JobOutcome(plan.plan_id, plan.seeds, "interrupted", 0.0,
                      f"stopped by {_signal_name(signum)}; a relaunch resumes it", plan.action)
