"""One sweep job on disk: what a launch must do for it, and the ``moerl train`` process that does it.

Shared by both backends of ``moerl sweep`` (:mod:`moerl.runs.sweep.launch` runs these locally,
:mod:`moerl.runs.sweep.ray_backend` as Ray Tune trials), so a job runs the same whichever runs it. The rules
:func:`plan_job` applies are in :mod:`moerl.runs.sweep.launch`'s docstring.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from moerl.core.checkpoint_store import has_checkpoint
from moerl.runs.sweep.spec import SweepJob


@dataclass
class JobPlan:
    """What a launch must do for one job: ``action`` is done, busy, train or resume."""

    job: SweepJob
    action: str
    seeds: tuple[int, ...] = ()
    resume_from: Path | None = None


@dataclass
class JobOutcome:
    job_id: str
    seeds: tuple[int, ...]
    status: str  # finished, failed, busy, interrupted (stopped by a signal), not started (the launch stopped first)
    seconds: float = 0.0
    error: str | None = None
    action: str = ""


def plan_job(job: SweepJob) -> JobPlan:
    """Decide from the run directories what ``job`` needs (see the module docstring)."""
    from moerl.runs.rundir import RunDir, run_state

    states = {seed: (run_state(RunDir(job.run_dir(seed)).read_status()) if job.run_dir(seed).exists() else "missing")
              for seed in job.seeds}
    unfinished = tuple(s for s, state in states.items() if state != "finished")
    if not unfinished:
        return JobPlan(job, "done")
    if any(states[s] == "running" for s in unfinished):
        return JobPlan(job, "busy", unfinished)
    if all(states[s] != "missing" for s in job.seeds):  # the whole batch (or the one sb3 run) was started
        leader = _leader(job)
        if leader is not None and has_checkpoint(leader):  # damaged or not: --resume says what is wrong
            return JobPlan(job, "resume", unfinished, resume_from=job.run_dir(unfinished[0]))
    return JobPlan(job, "train", unfinished)


def _leader(job: SweepJob) -> Path | None:
    """The run directory holding the job's checkpoint: the batch leader, or the run itself for sb3."""
    first = job.run_dir(job.seeds[0])
    if job.engine != "batched":
        return first
    from moerl.runs.rundir import RunDir

    leader = (RunDir(first).read_status().get("batch") or {}).get("leader")
    return first.parent / leader if leader else None


def set_aside_unaccounted(plans: list[JobPlan]) -> list[tuple[Path, Path]]:
    """Move every directory a ``train`` plan would replace whose status moerl cannot read (no
    ``status.json``, or one that is not moerl's JSON) to ``<name>.set-aside-<time>`` beside it; returns
    ``(old, new)`` per directory moved. Run directories moerl wrote and can account for are left to
    :func:`prepare`."""
    from moerl.runs.rundir import RunDir

    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for plan in plans:
        if plan.action != "train":
            continue
        for seed in plan.seeds:
            folder = plan.job.run_dir(seed)
            if not folder.exists():
                continue
            status = RunDir(folder).read_status()
            if isinstance(status, dict) and status.get("status") not in (None, "corrupt"):
                continue
            target = folder.with_name(f"{folder.name}.set-aside-{stamp}")
            k = 1
            while target.exists():
                target, k = folder.with_name(f"{folder.name}.set-aside-{stamp}-{k}"), k + 1
            folder.rename(target)
            moved.append((folder, target))
    return moved


def job_command(plan: JobPlan, config_file: Path, device: str | None) -> list[str]:
    """The ``moerl train`` command line that carries out ``plan``."""
    cmd = [sys.executable, "-m", "moerl", "train", "--no-progress"]
    if plan.action == "resume":
        return [*cmd, "--resume", str(plan.resume_from), *(["--device", device] if device else [])]
    job = plan.job
    cmd += ["--config", str(config_file), "--logdir", job.logdir]
    if job.engine == "batched":
        cmd += ["--seeds", ",".join(map(str, plan.seeds)), "--run-name", job.name]
    else:
        cmd += ["--seed", str(plan.seeds[0]), "--run-name", f"{job.name}_s{plan.seeds[0]}"]
    return [*cmd, *(["--device", device] if device else [])]


def prepare(plan: JobPlan, state_dir: Path) -> Path:
    """Write the job's config file; clear unfinished directories that a fresh start replaces."""
    if plan.action == "train":
        for seed in plan.seeds:
            shutil.rmtree(plan.job.run_dir(seed), ignore_errors=True)
    # One file per job (the sb3 engine's seeds of a config are separate jobs running at the same time).
    config_file = state_dir / "configs" / f"{plan.job.job_id}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_name(f".{config_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(yaml.safe_dump(plan.job.config, sort_keys=False))
    tmp.replace(config_file)
    return config_file


class Children:
    """The ``moerl train`` processes a launch is running, and the signal that stops them.

    Why the launch signals its children itself: a signal to the sweep (``kill PID``) used to end it alone,
    leaving its children training as orphans with no record of the launch; and since each child runs in a
    session of its own (:func:`run_job`), no signal reaches it but through the launch. :meth:`stop` passes
    the stop on to every child, and to any child started after it; a child stops as ``moerl train`` does on
    that signal (it writes a checkpoint and marks its runs interrupted).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        #: True while the main thread waits in a call that only an exception ends (Ray Tune's ``fit``).
        self.interrupt_main = False
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.RLock()  # re-entrant: the signal handler may run while the main thread holds it

    def stop(self, signum: int) -> None:
        """Stop every child now and every later one at its start (SIGINT passes on as SIGINT, any other
        signal as SIGTERM); a second stop is passed on again (``moerl train`` then stops at once)."""
        with self._lock:
            self.signal = signum
            for proc in self._running:
                _pass_on(proc, signum)

    def adopt(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.add(proc)
            if self.signal is not None:
                _pass_on(proc, self.signal)

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(proc)


def _pass_on(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)


#: Seconds a stopped launch waits for leftover trainers to save and exit.
LEFTOVER_WAIT = 120.0


def stop_leftover_trainers(plans: Sequence[JobPlan]) -> None:
    """SIGTERM every ``moerl train`` of ``plans`` still running on this machine, and wait (at most
    :data:`LEFTOVER_WAIT` s) until each has saved and exited.

    Why from the run directories: a Ray worker that is shut down may be killed before it can stop its
    child, which would then train on as an orphan; the child's pid and host are in its ``status.json``.
    """
    from moerl.runs.rundir import RunDir, run_state

    host = socket.gethostname()
    running = [RunDir(plan.job.run_dir(seed)) for plan in plans for seed in plan.seeds]
    running = [run for run in running if run_state(run.read_status()) == "running"
               and run.read_status().get("host") == host and isinstance(run.read_status().get("pid"), int)]
    for pid in {run.read_status()["pid"] for run in running}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + LEFTOVER_WAIT
    while any(run_state(run.read_status()) == "running" for run in running) and time.monotonic() < deadline:
        time.sleep(0.2)


def run_job(plan: JobPlan, state_dir: Path, device: str | None, children: Children | None = None) -> JobOutcome:
    """Carry out ``plan`` in a ``moerl train`` subprocess; its output goes to the job's log file.

    The child runs in a session of its own, so that only the launch signals it (:class:`Children`): a
    terminal's Ctrl-C goes to its whole foreground process group, and a child that got it from the terminal
    and again from the launch would take the second as "stop at once" and skip its checkpoint. If this
    thread is interrupted while the child runs (a Ray worker shut down), the child is stopped the same way.
    """
    config_file = prepare(plan, state_dir)
    log = state_dir / "logs" / f"{plan.job.job_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(job_command(plan, config_file, device))}\n")
        out.flush()
        proc = subprocess.Popen(job_command(plan, config_file, device), stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        if children is not None:
            children.adopt(proc)
        try:
            code = proc.wait()
        except BaseException:
            _pass_on(proc, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            if children is not None:
                children.release(proc)
    seconds = time.perf_counter() - start
    if code == 0:
        return JobOutcome(plan.job.job_id, plan.seeds, "finished", seconds, action=plan.action)
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    error = f"exit {code}: {lines[-1] if lines else 'no output'}"
    return JobOutcome(plan.job.job_id, plan.seeds, "failed", seconds, error, plan.action)
