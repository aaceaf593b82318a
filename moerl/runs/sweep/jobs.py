"""One sweep job on disk: what a launch must do for it, and the ``moerl train`` process that does it.

Shared by both backends of ``moerl sweep`` (:mod:`moerl.runs.sweep.launch` runs these locally,
:mod:`moerl.runs.sweep.ray_backend` as Ray Tune trials), so a job runs the same whichever runs it. The rules
:func:`plan_job` applies are in :mod:`moerl.runs.sweep.launch`'s docstring.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from moerl.core.checkpoint_store import has_checkpoint
from moerl.runs.sweep.spec import SweepJob


@dataclass
class JobPlan:
    """What a launch must do for one job: ``action`` is done, busy, train or resume.

    A *group* plan trains the runs of several jobs in one process (one batch; see :func:`group_plans`):
    ``group`` then holds every member job with its seeds, and ``job``/``seeds`` are its first member's.
    """

    job: SweepJob
    action: str
    seeds: tuple[int, ...] = ()
    resume_from: Path | None = None
    group: tuple[tuple[SweepJob, tuple[int, ...]], ...] = ()

    @property
    def members(self) -> tuple[tuple[SweepJob, tuple[int, ...]], ...]:
        """(job, seeds) of every job this plan trains: the group's, or the job itself."""
        return self.group or ((self.job, self.seeds),)

    @property
    def plan_id(self) -> str:
        """The job's id, or for a group ``group-<hash of its runs>`` (stable across launches)."""
        if not self.group:
            return self.job.job_id
        runs = ",".join(f"{job.name}_s{seed}" for job, seeds in self.group for seed in seeds)
        return f"group-{hashlib.sha256(runs.encode()).hexdigest()[:8]}"

    def run_dirs(self) -> list[Path]:
        return [job.run_dir(seed) for job, seeds in self.members for seed in seeds]

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), "action": self.action, "seeds": list(self.seeds),
                "resume_from": str(self.resume_from) if self.resume_from else None,
                "group": [[job.to_dict(), list(seeds)] for job, seeds in self.group]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPlan:
        return cls(SweepJob.from_dict(data["job"]), data["action"], tuple(data["seeds"]),
                   Path(data["resume_from"]) if data["resume_from"] else None,
                   tuple((SweepJob.from_dict(job), tuple(seeds)) for job, seeds in data.get("group", [])))


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
        for folder in plan.run_dirs():
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


#: How a launch starts ``moerl`` in a child (with :func:`child_env`).
MOERL = (sys.executable, "-m", "moerl")


def child_env() -> dict[str, str]:
    """The environment of a launch's child: one torch thread, unbuffered output, ``PYTHONSAFEPATH`` so that the
    child's working directory is not put first on its import path (``python -m`` would do that, and a
    checkout of moerl in that directory would shadow the code the launch runs; Python 3.11+, ignored by
    3.10), and the folder that holds this process's ``moerl`` first on ``PYTHONPATH``, so that a child trains
    the very code its launch planned with (an editable install, a frozen checkout or site-packages alike)."""
    home = str(Path(__file__).resolve().parents[3])  # this file is <home>/moerl/runs/sweep/jobs.py
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1",
            "PYTHONPATH": home + (os.pathsep + path if path else "")}


def job_command(plan: JobPlan, config_file: Path, device: str | None) -> list[str]:
    """The ``moerl train`` command line that carries out ``plan`` (run it with :func:`child_env`). A resume,
    of one job or of a group's batch, continues from the checkpoint; only a group that starts afresh is a
    ``moerl sweep-group``."""
    cmd = [*MOERL, "train", "--no-progress"]
    if plan.action == "resume":
        return [*cmd, "--resume", str(plan.resume_from), *(["--device", device] if device else [])]
    if plan.group:
        return [*MOERL, "sweep-group", str(config_file), *(["--device", device] if device else [])]
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
        for folder in plan.run_dirs():
            shutil.rmtree(folder, ignore_errors=True)
    # One file per job (the sb3 engine's seeds of a config are separate jobs running at the same time); a
    # group's file lists its members (config, seeds, run name), read by ``moerl sweep-group``.
    config_file = state_dir / "configs" / f"{plan.plan_id}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_name(f".{config_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    content: Any = plan.job.config
    if plan.group:
        content = {"family": GROUP_FAMILY, "logdir": plan.job.logdir,
                   "members": [{"name": job.name, "seeds": list(seeds), "config": job.config}
                               for job, seeds in plan.group]}
    tmp.write_text(yaml.safe_dump(content, sort_keys=False))
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
    running = [RunDir(folder) for plan in plans for folder in plan.run_dirs()]
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
    log = state_dir / "logs" / f"{plan.plan_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env()
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
        return JobOutcome(plan.plan_id, plan.seeds, "finished", seconds, action=plan.action)
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    error = f"exit {code}: {lines[-1] if lines else 'no output'}"
    return JobOutcome(plan.plan_id, plan.seeds, "failed", seconds, error, plan.action)


#: The family whose runs sweeps group (the sweep file's kind of run).
GROUP_FAMILY = "moe-dqn"


def group_plans(plans: list[JobPlan], group_key: Callable[[dict[str, Any]], str | None],
                max_members: int) -> list[JobPlan]:
    """Merge the ``train`` plans whose configs can share a batch into group plans of at most ``max_members``
    runs each; everything else is kept as it is, and a resume is planned once per batch, as a group of the
    batch's jobs when it holds several (so the launch lists and records every job, not only the first).

    Why: the batched engine's speed per run grows with the runs in a process (docs/batched-engine.md), and a
    study's runs of one architecture differ only in what the engine holds per member (seed, env settings,
    replay capacity, discount, exploration, learning rate). ``group_key`` (the family's) gives configs that may share a
    batch the same key, and None to a config that trains alone. A key's runs are split into the fewest
    processes of at most ``max_members`` runs, of even sizes, in plan order; a job's seeds stay together
    unless the job alone is larger than a process.
    """
    out: list[JobPlan] = []
    buckets: dict[str, list[JobPlan]] = {}
    held = _held_by_resumes(plans)
    resumes: dict[Path, int] = {}  # a resumed batch's leader -> its plan's index in ``out``
    in_batch: dict[Path, dict[str, tuple[SweepJob, tuple[int, ...]]]] = {}  # leader -> its jobs and their seeds
    for plan in plans:
        if plan.action in ("train", "resume") and held:
            for seed in plan.seeds:
                leader = held.get(plan.job.run_dir(seed).resolve())
                if leader is not None:
                    job, seeds = in_batch.setdefault(leader, {}).get(plan.job.job_id, (plan.job, ()))
                    in_batch[leader][plan.job.job_id] = (job, (*seeds, seed))
        if plan.action == "resume":
            leader = _leader(plan.job)
            if leader is not None and leader.resolve() in resumes:
                continue  # another job of the same batch resumes it
            if leader is not None:
                resumes[leader.resolve()] = len(out)
        if plan.action == "train" and held:  # a job split over two batches: the resumed one finishes its part
            seeds = tuple(s for s in plan.seeds if plan.job.run_dir(s).resolve() not in held)
            if not seeds:
                continue
            plan = replace(plan, seeds=seeds)
        key = group_key(plan.job.config) if plan.action == "train" and plan.job.engine == "batched" else None
        if key is None:
            out.append(plan)
        else:
            buckets.setdefault(key, []).append(plan)
    for bucket in buckets.values():
        if len(bucket) == 1 and len(bucket[0].seeds) <= max_members:
            out.append(bucket[0])
            continue
        runs = [(plan.job, seed) for plan in bucket for seed in plan.seeds]
        processes = -(-len(runs) // max_members)
        size = -(-len(runs) // processes)
        for start in range(0, len(runs), size):
            chunk = runs[start : start + size]
            members: dict[str, tuple[SweepJob, list[int]]] = {}
            for job, seed in chunk:
                members.setdefault(job.job_id, (job, []))[1].append(seed)
            group = tuple((job, tuple(seeds)) for job, seeds in members.values())
            first_job, first_seeds = group[0]
            out.append(JobPlan(first_job, "train", first_seeds, None, group if len(group) > 1 else ()))
    for leader, index in resumes.items():  # a batch of several jobs resumes as the group it was: every job
        batch_jobs = tuple(in_batch.get(leader, {}).values())  # is listed and recorded, not only the first
        if len(batch_jobs) > 1:
            out[index] = replace(out[index], group=batch_jobs)
    return out


def _held_by_resumes(plans: list[JobPlan]) -> dict[Path, Path]:
    """The run directories of every batch a ``resume`` plan continues (its leader's ``batch.members``), each
    with its batch's leader.

    Why: a group splits a job's seeds over two processes; when the first is stopped, the job has runs in
    the stopped batch and runs not yet started, so it plans ``train`` for all of them. Its runs in the
    batch belong to that batch's resume: training them again in a new group would train them twice and
    overwrite what the resume finished.
    """
    from moerl.runs.rundir import RunDir

    held: dict[Path, Path] = {}
    for plan in plans:
        leader = _leader(plan.job) if plan.action == "resume" else None
        if leader is None:
            continue
        members = (RunDir(leader).read_status().get("batch") or {}).get("members") or []
        held |= {(leader.parent / name).resolve(): leader.resolve() for name in members}
    return held


def expand_outcome(plan: JobPlan, outcome: JobOutcome) -> list[JobOutcome]:
    """One outcome per job: a group's outcome is each of its jobs' (the record and summary list jobs)."""
    if not plan.group:
        return [outcome]
    note = f"in {plan.plan_id}"
    return [JobOutcome(job.job_id, seeds, outcome.status, outcome.seconds,
                       f"{outcome.error} ({note})" if outcome.error else None, f"{outcome.action} ({note})")
            for job, seeds in plan.group]
