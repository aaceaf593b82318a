"""The Ray backend of ``moerl sweep``: the same jobs as the local backend, one Ray Tune trial each.

Why Ray Tune: it schedules trials over a cluster by declared resources, retries, and reports progress,
which a study outgrowing one machine needs; moerl adds nothing to that. Each trial runs the very job the
local backend would (:func:`moerl.runs.sweep.jobs.run_job`: a ``moerl train`` subprocess), so results land
in the same run directories and ``moerl report`` does not care which backend made them. Ray is an optional
extra (``pip install 'moerl[ray]'``).

Cluster: ``--address`` (or ``RAY_ADDRESS``) attaches to a running cluster, otherwise a local Ray starts
with ``--workers`` CPUs. Every node must see the sweep's ``logdir`` at the same path (a shared file
system) and have moerl installed; the commands are in the README ("Studies on a cluster").
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moerl.core.errors import ConfigError
from moerl.runs.sweep.jobs import JobOutcome, JobPlan, stop_leftover_trainers
from moerl.runs.sweep.spec import SweepJob

#: Seconds a sweep waits for the cluster's address to accept a connection before refusing it.
CONNECT_TIMEOUT = 3.0
#: What ``--address`` takes, for the error that refuses anything else.
ADDRESS_FORMS = "HOST:PORT (e.g. 10.0.0.1:6379, the head node's GCS), ray://HOST:PORT (Ray Client), auto or local"


def cluster_address(address: str | None) -> tuple[str, str] | None:
    """The cluster a Ray sweep attaches to and where it was given: ``(--address, "--address")``, else
    ``(RAY_ADDRESS, "RAY_ADDRESS")`` from the environment, else None (a local Ray is started)."""
    if address:
        return address, "--address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    return None


def parse_address(address: str, source: str) -> tuple[str, int] | None:
    """The ``(host, port)`` that ``address`` connects to, None for ``auto`` and ``local`` (found or started by
    Ray on this machine); a one-line ConfigError for anything else (Ray itself raises a ValueError
    traceback on a port that is not a number)."""
    if address in ("auto", "local"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{source} '{address}' is not a Ray cluster address; valid forms: {ADDRESS_FORMS}")
    return host, int(port)


def check_reachable(address: str, source: str) -> None:
    """Refuse, within :data:`CONNECT_TIMEOUT` seconds, a cluster address where nothing accepts a connection.

    Why a plain TCP connect before ``ray.init``: Ray retries an address where nothing listens for minutes,
    printing its connection warnings (a sweep hung over 240 s that way), while the cause (a wrong host or port,
    or a head node that is not started) is known at once. This only proves that something listens there;
    ``auto`` and ``local`` are left to Ray, which answers them quickly.
    """
    target = parse_address(address, source)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        why = (f"no answer within {CONNECT_TIMEOUT:.0f} s" if isinstance(exc, TimeoutError)
               else exc.strerror or type(exc).__name__)
        raise ConfigError(
            f"no Ray cluster answers at {source} '{address}' ({why}); start one with 'ray start --head', or give "
            "the head node's address"
        ) from None


def _trial(trial_config: dict[str, Any]) -> None:
    """One Tune trial: run the job and report its outcome (a failure is reported, not raised, so that
    Tune does not retry a job that will fail the same way; the sweep reports it)."""
    from ray import tune

    from moerl.runs.sweep.jobs import JobPlan, run_job

    config = trial_config["plan"]
    plan = JobPlan.from_dict(config)
    outcome = run_job(plan, Path(config["state_dir"]), config["device"])
    tune.report({"status": outcome.status, "seconds": outcome.seconds, "error": outcome.error or ""})


def run_ray(plans: Sequence[JobPlan], state_dir: Path, workers: int, device: str | None, address: str | None,
            gpus_per_job: float, say: Callable[[str], None]) -> list[JobOutcome]:
    """Run ``plans`` as Ray Tune trials (one CPU each, ``gpus_per_job`` of a GPU each)."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("the ray backend needs Ray Tune: pip install 'moerl[ray]'") from None
    if not plans:
        return []
    cluster = cluster_address(address)
    started_here = not ray.is_initialized()
    if started_here:
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        if cluster:
            _attach(ray, *cluster)
        else:
            # Ray runs its workers at nice 15 so the raylet stays responsive; on a machine where the jobs are
            # the work, that only makes them yield to anything else running (measured: 12x slower here beside
            # two other processes). A local Ray started for the sweep runs them at normal priority.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        # ray.init installs its own SIGTERM handler (it logs and exits) and Tune its own SIGINT handler: the
        # launch's handlers are put back, so that a stop signal stops the jobs and writes the record as with
        # the local backend.
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        # Paths absolute here, in the launch's working directory: a Ray trial runs in a folder of its own,
        # where a relative logdir would put every run (and a relaunch would find none of them).
        space = [{**_absolute(p).to_dict(), "state_dir": str(state_dir.resolve()), "device": device} for p in plans]
        resources: dict[str, float] = {"cpu": 1.0, **({"gpu": gpus_per_job} if gpus_per_job > 0 else {})}
        tuner = tune.Tuner(
            tune.with_resources(_trial, resources),
            param_space={"plan": tune.grid_search(space)},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name="tune", storage_path=str(state_dir / "ray"), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        try:
            results = tuner.fit()
        except KeyboardInterrupt:  # a stop signal: the trainers save and stop before Ray ends their workers
            stop_leftover_trainers(plans)
            raise
    finally:
        if started_here:
            ray.shutdown()
    by_job: dict[str, JobOutcome] = {}
    for result in (results[i] for i in range(len(results))):
        plan_cfg = (result.config or {})["plan"]
        job_id = _job_id(plan_cfg)
        metrics = result.metrics or {}
        if result.error is not None or metrics.get("status") is None:
            outcome = JobOutcome(job_id, tuple(plan_cfg["seeds"]), "failed", 0.0,
                                 f"ray trial failed: {str(result.error).strip().splitlines()[-1] if result.error else 'no result'}",
                                 plan_cfg["action"])
        else:
            outcome = JobOutcome(job_id, tuple(plan_cfg["seeds"]), str(metrics["status"]),
                                 float(metrics.get("seconds", 0.0)), metrics.get("error") or None, plan_cfg["action"])
        by_job[job_id] = outcome
        say(f"[sweep] ray: {outcome.status} {job_id}" + (f": {outcome.error}" if outcome.error else ""))
    return [by_job[p.plan_id] for p in plans]


def _absolute(plan: JobPlan) -> JobPlan:
    """``plan`` with absolute paths (its jobs' logdirs, the run it resumes)."""
    def job(j: SweepJob) -> SweepJob:
        return dataclasses.replace(j, logdir=str(Path(j.logdir).resolve()))

    return dataclasses.replace(plan, job=job(plan.job),
                               resume_from=plan.resume_from.resolve() if plan.resume_from else None,
                               group=tuple((job(j), seeds) for j, seeds in plan.group))


def _attach(ray: Any, address: str, source: str) -> None:
    """``ray.init`` on a running cluster; Ray's "no running instance" (``auto`` with none on this machine) is
    a one-line refusal of the address, not a traceback."""
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        first = (str(exc).strip().splitlines() or ["no cluster"])[0]
        raise ConfigError(f"cannot attach to the Ray cluster at {source} '{address}': {first}") from None


def _trial_name(trial: Any) -> str:
    """Trials named by their job (Tune's default name spells out the whole config)."""
    return _job_id(trial.config["plan"])


def _job_id(plan_cfg: dict[str, Any]) -> str:
    from moerl.runs.sweep.jobs import JobPlan

    return JobPlan.from_dict(plan_cfg).plan_id
