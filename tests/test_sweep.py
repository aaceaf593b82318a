"""``moerl sweep``: real tiny sweeps (real ``moerl train`` subprocesses, real Ray): layout, skipping, resuming
after a kill, failures reported while the rest finish, bad sweep files refused, Ray = local."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

from moerl.cli import main
from moerl.core.checkpoint_store import checkpoint_step
from moerl.rl.envs.registration import resolve_env_id
from moerl.runs.rundir import _pid_alive
from moerl.runs.sweep.spec import load_sweep

TINY = {"timesteps": 400, "eval.freq": 200, "eval.episodes": 1, "eval.final_episodes": 1,
        "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8}
VARIANTS = [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]
NOT_COMPARED = ("train_seconds", "steps_per_second")


def _write(tmp_path: Path, name: str, **sweep) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": TINY, "grid": {"env": ["CartPole-v1"]}, "variants": VARIANTS,
                                    "seeds": "0-1", "logdir": str(tmp_path / name), **sweep}))
    return path


def _results(run: Path) -> dict:
    data = json.loads((run / "results.json").read_text())
    return {k: v for k, v in data.items() if k not in NOT_COMPARED}


def _same_runs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if (p / "status.json").is_file())
    assert names == sorted(p.name for p in b.iterdir() if (p / "status.json").is_file())
    for name in names:
        assert _results(a / name) == _results(b / name), name
        assert (a / name / "eval.csv").read_text() == (b / name / "eval.csv").read_text(), name


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    path = _write(tmp, "study")
    assert main(["sweep", str(path), "--workers", "2"]) == 0
    return path, tmp / "study"


def test_every_run_gets_a_stable_directory_and_a_record(local_sweep, capsys):
    path, logdir = local_sweep
    spec = load_sweep(path)
    assert [job.seeds for job in spec.jobs] == [(0, 1), (0, 1)]  # batched: one job per config
    for job in spec.jobs:
        for seed in job.seeds:
            run = job.run_dir(seed)
            assert run.name == f"{job.name}_s{seed}" and job.config_id in run.name
            assert json.loads((run / "status.json").read_text())["status"] == "finished"
            stack = json.loads((run / "stack.json").read_text())
            assert stack[0]["packages"]["torch"] and stack[0]["torch_threads"] == 1
            assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
    record = json.loads((logdir / "sweep.json").read_text())
    assert [j["status"] for j in record["jobs"]] == ["finished", "finished"]
    assert load_sweep(path).jobs == spec.jobs  # the same file gives the same ids on every launch


def test_relaunching_a_finished_sweep_runs_nothing(local_sweep, capsys):
    path, logdir = local_sweep
    before = {p: p.stat().st_mtime_ns for p in logdir.glob("*/results.json")}
    assert main(["sweep", str(path)]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in logdir.glob("*/results.json")} == before
    assert [j["action"] for j in json.loads((logdir / "sweep.json").read_text())["jobs"]] == ["skip", "skip"]


def test_a_relaunch_sets_aside_what_it_cannot_account_for(local_sweep, tmp_path, capsys):
    """A run directory without a readable status.json is not moerl's to delete: a relaunch moves it aside
    (results, model and a user's own file intact), says so, and trains the seed again."""
    import shutil

    path, logdir = local_sweep
    copy = tmp_path / "copy"
    shutil.copytree(logdir, copy)
    job = load_sweep(path, str(copy)).jobs[0]
    missing, damaged = job.run_dir(0), job.run_dir(1)
    (missing / "status.json").unlink()
    (damaged / "status.json").write_text("{ not json")
    (missing / "my-notes.txt").write_text("mine")
    results = (missing / "results.json").read_text()
    assert main(["sweep", str(path), "--logdir", str(copy), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("[sweep] set aside") == 2 and "status.json is missing or damaged" in out
    (aside_missing,) = copy.glob(f"{missing.name}.set-aside-*")
    (aside_damaged,) = copy.glob(f"{damaged.name}.set-aside-*")
    assert (aside_missing / "my-notes.txt").read_text() == "mine"
    assert (aside_missing / "results.json").read_text() == results and (aside_damaged / "model.zip").is_file()
    for run in (missing, damaged):  # trained again, to the same result
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        assert (run / "eval.csv").read_text() == (logdir / run.name / "eval.csv").read_text()


def test_two_launches_on_one_logdir_do_not_both_train(tmp_path, capsys):
    """While a launch works on a logdir, a second one is refused (one line, exit 2) instead of training the
    same runs again or deleting the first one's runs as unfinished; once the first is done, a launch runs."""
    path = _write(tmp_path, "locked", base={**TINY, "timesteps": 3000}, variants=[{"arch": "dense"}])
    first = subprocess.Popen([sys.executable, "-m", "moerl", "sweep", str(path), "--workers", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = tmp_path / "locked" / ".sweep.lock"
    deadline = time.time() + 60
    while not (lock.is_file() and lock.read_text().startswith("pid")) and time.time() < deadline:
        time.sleep(0.05)
    assert main(["sweep", str(path), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"another moerl sweep (pid {first.pid}) is running" in err, err
    assert first.wait(timeout=300) == 0, first.stdout.read() if first.stdout else ""
    assert main(["sweep", str(path), "--workers", "1"]) == 0  # the lock went with the first launch
    jobs = json.loads((tmp_path / "locked" / "sweep.json").read_text())["jobs"]
    assert [j["action"] for j in jobs] == ["skip"]


def test_the_sb3_engine_gives_one_job_per_seed_in_the_same_layout(local_sweep, tmp_path):
    _, batched = local_sweep
    path = _write(tmp_path, "sb3", engine="sb3", variants=[{"arch": "dense"}])
    assert [job.seeds for job in load_sweep(path).jobs] == [(0,), (1,)]
    assert main(["sweep", str(path), "--workers", "2"]) == 0
    runs = sorted(p.name for p in (tmp_path / "sb3").glob("*_s*"))
    assert len(runs) == 2 and all((tmp_path / "sb3" / r / "model.zip").is_file() for r in runs)
    # an engine is part of a config: the sb3 runs never collide with the batched runs' directories
    assert not set(runs) & {p.name for p in batched.iterdir()}


def test_a_failing_job_is_reported_and_the_others_finish(tmp_path, capsys):
    path = _write(tmp_path, "faulty", variants=[{"arch": "dense"}, {"arch": "dense", "env_kwargs": {"bogus": 1}}],
                  seeds="0")
    assert main(["sweep", str(path), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "env_kwargs do not apply to 'CartPole-v1'" in out
    jobs = json.loads((tmp_path / "faulty" / "sweep.json").read_text())["jobs"]
    assert sorted(j["status"] for j in jobs) == ["failed", "finished"]
    good = next(j for j in jobs if j["status"] == "finished")
    assert json.loads((tmp_path / "faulty" / f"{good['job']}_s0" / "status.json").read_text())["status"] == "finished"


def test_a_killed_sweep_resumes_from_checkpoints_to_the_uninterrupted_result(tmp_path):
    long = {**TINY, "timesteps": 3000, "checkpoint.every": 400, "eval.freq": 1000}
    killed = _write(tmp_path, "killed", base=long, variants=[{"arch": "dense"}])
    whole = _write(tmp_path, "whole", base=long, variants=[{"arch": "dense"}])
    assert main(["sweep", str(whole)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "sweep", str(killed)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (job,) = load_sweep(killed).jobs
    deadline = time.time() + 240
    while checkpoint_step(job.run_dir(0)) is None:
        assert proc.poll() is None and time.time() < deadline, "the sweep ended or stalled before a checkpoint"
        time.sleep(0.2)
    trainer = json.loads((job.run_dir(0) / "status.json").read_text())["pid"]
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training process (in a session of its own), as a
    os.kill(trainer, signal.SIGKILL)  # lost machine would
    proc.wait()
    while _pid_alive(trainer):  # SIGKILL is delivered at once but a process takes a moment to go
        assert time.time() < deadline
        time.sleep(0.1)
    assert json.loads((job.run_dir(0) / "status.json").read_text())["status"] == "running"  # crashed, not finished
    assert main(["sweep", str(killed)]) == 0
    record = json.loads((tmp_path / "killed" / "sweep.json").read_text())
    assert [j["action"] for j in record["jobs"]] == ["resume"]
    _same_runs(tmp_path / "killed", tmp_path / "whole")


@pytest.mark.parametrize("content, message", [
    ({"seeds": "0", "grid": {"env": ["CartPole-v1"]}, "colour": 1}, "unknown key 'colour'"),
    ({"seeds": "0", "engine": "jax"}, "engine 'jax' is not one of batched, sb3"),
    ({"grid": {"env": ["CartPole-v1"]}}, "needs 'seeds'"),
    ({"seeds": "0", "grid": {"arch": "big"}}, "grid key 'arch' needs a non-empty list"),
    ({"seeds": "0", "grid": {"arch": ["dense"], "router": ["topk"]}}, "does not apply to arch 'dense'"),
    ({"seeds": "0", "base": {"dqn.gamma": "high"}}, "dqn.gamma"),
    ({"seeds": "0", "base": {"seed": 3}}, "'seed' is set by the sweep itself"),
    ({"seeds": "3-1"}, "3-1"),
])
def test_bad_sweep_files_are_refused_in_one_line_before_anything_exists(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**content, "logdir": str(tmp_path / "out")}))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--backend", "slurm"], "--backend 'slurm' is not one of local, ray"),
    (["--workers", "0"], "--workers"),
    (["--gpus-per-job", "0.5"], "apply to --backend ray only"),
    (["--device", "tpu"], "tpu"),
])
def test_bad_sweep_options_are_refused(local_sweep, capsys, args, message):
    path, _ = local_sweep
    try:
        code = main(["sweep", str(path), *args])
    except SystemExit as exc:  # argparse's own checks (types) exit from inside the parser
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_dry_run_lists_the_jobs_and_trains_nothing(tmp_path, capsys):
    path = _write(tmp_path, "dry")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("train ") == 2 and "2 jobs, 4 runs" in out
    assert not (tmp_path / "dry").exists()


@pytest.mark.slow
def test_the_ray_backend_gives_the_local_backends_runs_in_a_relative_logdir(local_sweep, tmp_path, monkeypatch):
    """A relative logdir (the README's ``logdir: runs/study``) means the launch's working directory, not
    the Ray trial's: the runs land there, and a relaunch finds them finished and trains nothing."""
    path, logdir = local_sweep
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(path), "--backend", "ray", "--workers", "2", "--logdir", "ray"]) == 0
    _same_runs(logdir, tmp_path / "ray")
    assert main(["sweep", str(path), "--backend", "ray", "--workers", "2", "--logdir", "ray"]) == 0
    assert [j["action"] for j in json.loads((tmp_path / "ray" / "sweep.json").read_text())["jobs"]] == ["skip", "skip"]


def test_the_report_names_the_stack_and_warns_when_runs_mix_stacks(local_sweep, tmp_path, capsys):
    import shutil

    _, logdir = local_sweep
    runs = sorted(p for p in logdir.glob("*_s*"))
    assert main(["report", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "## Software stacks" in out and f"{len(runs)} run(s)" in out and "Warning" not in out
    other = tmp_path / runs[0].name
    shutil.copytree(runs[0], other)
    records = json.loads((other / "stack.json").read_text())
    records[0]["packages"]["numpy"] = "0.0.1"
    (other / "stack.json").write_text(json.dumps(records))
    assert main(["report", *map(str, runs[1:]), str(other)]) == 0
    assert "different software stacks" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_the_paper_sweeps_are_valid_and_cover_the_study(path):
    spec = load_sweep(path)
    envs = {job.config["env"] for job in spec.jobs}
    assert any(e.endswith("-mtrl") for e in envs) and any(e.endswith("-crl") for e in envs)
    orders = {job.config["env_kwargs"].get("order") for job in spec.jobs
              if job.config["env"].endswith("-crl") and "fixed_task" not in job.config["env_kwargs"]}
    assert orders == {"sequential", "reverse"}  # two CRL task orders
    archs = {(job.config["network"]["arch"], job.config["network"]["router"]) for job in spec.jobs}
    assert ("dense", "softmoe") in archs and ("big", "hardcoded") in archs
    studied = [job for job in spec.jobs if "fixed_task" not in job.config["env_kwargs"]]
    references = {(job.config["network"]["arch"], job.config["network"]["router"], job.config["env_kwargs"]["fixed_task"])
                  for job in spec.jobs if "fixed_task" in job.config["env_kwargs"]}
    crl = next(e for e in envs if e.endswith("-crl"))
    tasks = len(gym.make(resolve_env_id(crl)).unwrapped.task_names)
    assert references == {(arch, router, task) for arch, router in archs for task in range(tasks)}  # every task, variant
    if path.stem.endswith("-seeds10-19"):  # the four compared variants again, on seeds 10-19
        first = load_sweep(path.with_name(path.stem.removesuffix("-seeds10-19") + ".yaml"))
        assert len(studied) == 12 and all(list(job.seeds) == list(range(10, 20)) for job in spec.jobs)
        assert archs == {("dense", "softmoe"), ("big", "softmoe"), ("big", "hardcoded"), ("big", "topk")}
        assert {json.dumps(j.config, sort_keys=True) for j in spec.jobs} <= {
            json.dumps(j.config, sort_keys=True) for j in first.jobs}  # the very configs of seeds 0-9
    elif path.stem.startswith("full"):
        assert len(studied) == 33 and all(len(job.seeds) == 10 for job in spec.jobs)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "paper" / "parts").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_a_part_of_a_paper_sweep_trains_the_very_runs_of_the_whole(path):
    """configs/paper/parts/X.yaml trains some of the runs of the sweep whose name and logdir it shares, as that
    sweep would (same configs, seeds and run directories), so the whole, launched later, skips them."""
    part = load_sweep(path)
    whole = load_sweep(path.parents[1] / f"{part.name.removeprefix('paper-')}.yaml")
    assert (part.name, part.logdir, part.engine) == (whole.name, whole.logdir, whole.engine)
    runs_of = lambda spec: {job.run_dir(seed): json.dumps(job.config, sort_keys=True)  # noqa: E731
                            for job in spec.jobs for seed in job.seeds}
    part_runs, whole_runs = runs_of(part), runs_of(whole)
    assert part_runs and len(part_runs) < len(whole_runs)
    assert {run: whole_runs.get(run) for run in part_runs} == part_runs


def test_report_takes_the_sweep_folder_and_names_what_is_not_a_run(local_sweep, capsys):
    _, logdir = local_sweep
    runs = sorted(str(p) for p in logdir.glob("*_s*"))
    assert main(["report", *runs]) == 0
    explicit = capsys.readouterr().out
    assert main(["report", str(logdir)]) == 0
    captured = capsys.readouterr()
    assert captured.out == explicit  # the same runs, found below the folder
    assert "sweep.json: not a run directory" in captured.err and ".sweep" not in captured.err


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "paper" / "evidence").glob("*-budget.yaml")),
                         ids=lambda p: p.stem)
def test_the_evidence_sweeps_are_valid_single_task_runs_of_every_task(path):
    spec = load_sweep(path)
    env = {job.config["env"] for job in spec.jobs}.pop()
    tasks = {job.config["env_kwargs"]["fixed_task"] for job in spec.jobs}
    assert tasks == set(range(len(gym.make(resolve_env_id(env)).unwrapped.task_names)))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "paper" / "evidence").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_evidence_sweep_validates_and_names_its_own_command(path):
    """Each evidence file's runs are valid configs of their engine, and its header gives the command that runs it
    (the README and docs quote these headers; a renamed file with a stale command would send readers astray)."""
    from moerl.core.config import from_dict
    from moerl.rl.batch_engines import engine_of

    spec = load_sweep(path)
    assert spec.jobs
    for job in spec.jobs:
        config = from_dict(engine_of(job.config).schema, dict(job.config))
        assert config.env == job.config["env"]
    rel = path.relative_to(path.parents[3]).as_posix()
    assert f"moerl sweep {rel}" in path.read_text()
    assert yaml.safe_load(path.read_text())["logdir"] == f"runs/{path.stem}"
