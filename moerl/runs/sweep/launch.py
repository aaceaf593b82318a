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
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from moerl.core.devices import check_device
from moerl.core.errors import ConfigError
from moerl.runs.locks import exclusive_lock
from moerl.runs.sweep.jobs import JobOutcome, JobPlan, plan_job, run_job, set_aside_unaccounted
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
              say: Callable[[str], None]) -> list[JobOutcome]:
    """Run ``plans`` ``workers`` at a time in subprocesses; report each start and end through ``say``."""
    progress = Progress(total=len(plans), workers=workers)

    def one(plan: JobPlan) -> JobOutcome:
        with progress.lock:
            progress.running += 1
            say(progress.line(f"{plan.action} {plan.job.job_id} (seeds {_seeds(plan.seeds)})"))
        try:
            outcome = run_job(plan, state_dir, device)
        except Exception as exc:  # a job that cannot even start is a failed job, not a failed sweep
            outcome = JobOutcome(plan.job.job_id, plan.seeds, "failed", 0.0, f"{type(exc).__name__}: {exc}",
                                 plan.action)
        with progress.lock:
            progress.running -= 1
            if outcome.status == "finished":
                progress.done += 1
                progress.durations.append(outcome.seconds)
                say(progress.line(f"finished {outcome.job_id} in {outcome.seconds:.0f} s"))
            else:
                progress.failed += 1
                say(progress.line(f"FAILED {outcome.job_id}: {outcome.error}"))
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, plans))


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


def write_record(sweep: Sweep, outcomes: Sequence[JobOutcome], backend: str, seconds: float) -> None:
    """``<logdir>/sweep.json``: the launch's jobs and outcomes (atomic)."""
    path = Path(sweep.logdir) / "sweep.json"
    data = {"name": sweep.name, "backend": backend, "engine": sweep.engine, "seconds": round(seconds, 1),
            "jobs": [{"job": o.job_id, "seeds": list(o.seeds), "action": o.action, "status": o.status,
                      "seconds": round(o.seconds, 1), "error": o.error} for o in outcomes]}
    tmp = path.with_name(".sweep.json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def sweep(path: str, backend: str = "local", workers: int | None = None, device: str | None = None,
          logdir: str | None = None, address: str | None = None, gpus_per_job: float = 0.0,
          say: Callable[[str], None] = print) -> tuple[list[JobOutcome], Sweep]:
    """Plan and run the sweep file ``path`` (see the module docstring); returns every job's outcome."""
    from moerl.runs.sweep.spec import load_sweep

    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend '{backend}' is not one of local, ray")
    if not 0 <= gpus_per_job <= 1:
        raise ConfigError(f"--gpus-per-job must be between 0 and 1, got {gpus_per_job}")
    if backend == "local" and (address or gpus_per_job):
        raise ConfigError("--address and --gpus-per-job apply to --backend ray only")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if device is not None:
        check_device(device)
    spec = load_sweep(path, logdir)
    workers = workers or os.cpu_count() or 1
    with logdir_lock(Path(spec.logdir)):
        return _launch(spec, backend, workers, device, address, gpus_per_job, say)


@contextlib.contextmanager
def logdir_lock(logdir: Path) -> Iterator[None]:
    """Hold ``<logdir>/.sweep.lock`` for a whole launch: a second launch on the same logdir (which would
    train the same runs twice, or delete the first one's runs as unfinished) is refused with one line.

    Why a kernel lock (``flock``): it is released when the process dies however it dies, so a killed
    launch never leaves a stale lock behind.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(logdir / LOCK_FILE, lambda holder: f"another moerl sweep ({holder}) is running on "
                        f"'{logdir}'; wait for it, or give another --logdir"):
        yield


def _launch(spec: Sweep, backend: str, workers: int, device: str | None, address: str | None,
            gpus_per_job: float, say: Callable[[str], None]) -> tuple[list[JobOutcome], Sweep]:
    """The launch itself, under the logdir's lock: plan from the run directories, run, record."""
    plans = [plan_job(job) for job in spec.jobs]
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
    say(f"[sweep] {spec.name}: {len(spec.jobs)} jobs ({spec.runs} runs) in {spec.logdir}; "
        f"{len(plans) - len(todo)} need nothing, {len(todo)} to run on {backend} with {workers} workers")
    start = time.perf_counter()
    if backend == "local":
        outcomes = run_local(todo, state_dir, workers, device, say)
    else:
        from moerl.runs.sweep.ray_backend import run_ray

        outcomes = run_ray(todo, state_dir, workers, device, address, gpus_per_job, say)
    everything = skipped + outcomes
    write_record(spec, everything, backend, time.perf_counter() - start)
    return everything, spec
