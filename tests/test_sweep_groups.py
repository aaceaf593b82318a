"""``moerl sweep`` trains the runs of configs that can share a batch in one process (issue 23): a study's
settings of one architecture (task order, a fixed task) become one group; every run still gets its own
directory, the record lists every job, a relaunch finds nothing to do, a killed group resumes, and the dry
run shows the groups with an estimated core time measured on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from moerl.cli import main
from moerl.core.checkpoint_store import checkpoint_step
from moerl.runs.rundir import _pid_alive
from moerl.runs.sweep.spec import load_sweep

BASE = {"timesteps": 600, "env_kwargs.block_steps": 150, "eval.freq": 300, "eval.episodes": 1,
        "eval.final_episodes": 1, "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8}
SETTINGS = [{"env": "cartpole-crl"}, {"env": "cartpole-crl", "env_kwargs.order": "reverse"},
            {"env": "cartpole-crl", "env_kwargs.fixed_task": 1}]
VARIANTS = [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]


def _write(tmp_path: Path, name: str, **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "settings": SETTINGS, "variants": VARIANTS, "seeds": "0-1",
                                    "logdir": str(tmp_path / name), **changes}))
    return path


def _finished(logdir: Path) -> list[str]:
    return sorted(p.name for p in logdir.iterdir()
                  if (p / "status.json").is_file() and json.loads((p / "status.json").read_text())["status"] == "finished")


def _kill_at_first_checkpoint(path: Path, leader: Path, *args: str) -> None:
    """Launch ``moerl sweep path *args`` and SIGKILL it and its trainer once ``leader`` holds a checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "sweep", str(path), *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while checkpoint_step(leader) is None:
        assert proc.poll() is None and time.time() < deadline, "the sweep ended or stalled before a checkpoint"
        time.sleep(0.2)
    trainer = json.loads((leader / "status.json").read_text())["pid"]
    os.killpg(proc.pid, signal.SIGKILL)
    os.kill(trainer, signal.SIGKILL)
    proc.wait()
    while _pid_alive(trainer):
        assert time.time() < deadline
        time.sleep(0.1)


def test_a_sweep_trains_one_group_per_architecture_and_every_run_in_its_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _write(tmp_path, "study")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    groups = [line for line in out.splitlines() if line.startswith("train   group-")]
    assert len(groups) == 2 and all("6 runs:" in line and "core-h" in line for line in groups), out
    assert "2 processes to run" in out and "estimated" in out
    assert main(["sweep", str(path), "--dry-run", "--max-members", "1"]) == 0
    assert "6 processes to run" in capsys.readouterr().out  # grouping off: one process per job

    assert main(["sweep", str(path), "--workers", "2"]) == 0
    spec = load_sweep(path)
    expected = sorted(job.run_dir(seed).name for job in spec.jobs for seed in job.seeds)
    assert _finished(tmp_path / "study") == expected and len(expected) == 12
    record = json.loads((tmp_path / "study" / "sweep.json").read_text())
    assert sorted(j["job"] for j in record["jobs"]) == sorted(job.job_id for job in spec.jobs)
    assert all(j["status"] == "finished" and "(in group-" in j["action"] for j in record["jobs"])
    for job in spec.jobs:  # each run holds its own config: the group's members kept their settings
        config = yaml.safe_load((job.run_dir(0) / "config.yaml").read_text())
        assert config["env_kwargs"] == job.config["env_kwargs"] and config["engine"] == "batched"
    status = json.loads((spec.jobs[0].run_dir(0) / "status.json").read_text())
    assert len(status["batch"]["members"]) == 6  # three jobs' runs in one batch
    assert main(["sweep", str(path)]) == 0
    again = json.loads((tmp_path / "study" / "sweep.json").read_text())
    assert {j["action"] for j in again["jobs"]} == {"skip"}


def test_a_killed_group_resumes_as_one_batch(tmp_path):
    path = _write(tmp_path, "killed", variants=[{"arch": "dense"}],
                  base={**BASE, "timesteps": 3000, "checkpoint.every": 400, "eval.freq": 1000})
    jobs = load_sweep(path).jobs
    leader = jobs[0].run_dir(0)
    _kill_at_first_checkpoint(path, leader)
    other = jobs[1].run_dir(0) / "config.yaml"  # a member beside the leader, of another config
    kept = other.read_text()
    other.write_text(kept.replace("gamma: 0.99", "gamma: 0.5"))
    edited = subprocess.run([sys.executable, "-m", "moerl", "train", "--resume", str(leader)], capture_output=True,
                            text=True)
    assert edited.returncode == 2 and "was edited after its checkpoint (dqn.gamma" in edited.stderr, edited.stderr
    other.write_text(kept)
    assert main(["sweep", str(path)]) == 0
    record = json.loads((tmp_path / "killed" / "sweep.json").read_text())
    assert sorted(j["job"] for j in record["jobs"]) == sorted(job.job_id for job in jobs)  # every job recorded
    group = {j["action"] for j in record["jobs"]}
    assert len(group) == 1 and group.pop().startswith("resume (in group-")  # resumed as the group it was
    logs = (tmp_path / "killed" / ".sweep" / "logs").glob("*.log")
    assert sum(log.read_text().count(" --resume ") for log in logs) == 1  # by one process
    assert "resumed_from" in json.loads((leader / "status.json").read_text())  # from its checkpoint
    assert len(_finished(tmp_path / "killed")) == 6


def test_a_job_split_over_two_groups_is_not_trained_twice_after_a_kill(tmp_path, capsys):
    """Three jobs of two seeds in processes of three runs: the second job's seed 0 trains in the first group,
    its seed 1 in the second. Killed in the first group, the relaunch resumes that batch (which finishes seed
    0) and trains only seed 1 of the second job in a new group: seed 0 is neither trained again nor
    overwritten."""
    path = _write(tmp_path, "split", variants=[{"arch": "dense"}],
                  base={**BASE, "timesteps": 3000, "checkpoint.every": 400, "eval.freq": 1000})
    jobs = load_sweep(path).jobs
    leader = jobs[0].run_dir(0)
    _kill_at_first_checkpoint(path, leader, "--workers", "1", "--max-members", "3")
    members = json.loads((leader / "status.json").read_text())["batch"]["members"]
    split = jobs[1].run_dir(0).name
    assert members == [jobs[0].run_dir(0).name, jobs[0].run_dir(1).name, split]
    assert not jobs[1].run_dir(1).exists()  # the second group had not started

    assert main(["sweep", str(path), "--workers", "1", "--max-members", "3", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    group = [line for line in plan.splitlines() if line.startswith("train   ")]
    assert len(group) == 1 and "3 runs:" in group[0] and f"{jobs[1].name} (seeds 1)," in group[0], plan

    assert main(["sweep", str(path), "--workers", "1", "--max-members", "3"]) == 0
    assert len(_finished(tmp_path / "split")) == 6
    record = json.loads((tmp_path / "split" / "sweep.json").read_text())
    assert sorted((j["job"], tuple(j["seeds"]), j["action"].split()[0]) for j in record["jobs"]) == sorted(
        [(jobs[0].job_id, (0, 1), "resume"), (jobs[1].job_id, (0,), "resume"), (jobs[1].job_id, (1,), "train"),
         (jobs[2].job_id, (0, 1), "train")])  # the split job once per batch it is in
    status = json.loads((jobs[1].run_dir(0) / "status.json").read_text())
    assert status["batch"]["leader"] == leader.name and "resumed_from" in status  # finished by the resume
    assert json.loads((jobs[1].run_dir(1) / "status.json").read_text())["batch"]["leader"] == jobs[1].run_dir(1).name


def test_a_setting_added_after_a_checkpoint_at_its_default_is_no_edit(tmp_path):
    """A batch checkpointed before a setting existed resumes when the member's config holds that setting at
    its default (what the run computed); any other value, or any other key the checkpoint lacks, is refused."""
    from types import SimpleNamespace

    from moerl.core.errors import ConfigError
    from moerl.rl.batched_runs import _check_member_config

    run = SimpleNamespace(path=tmp_path)
    saved = {"algo": "ppo", "ppo": {"clip_range": 0.2}, "network": {"arch": "dense"}}
    _check_member_config(run, {**saved, "ppo": {"clip_range": 0.2, "anneal_clip": False},
                               "network": {"arch": "dense", "torso": "mlp"}}, saved)
    with pytest.raises(ConfigError, match=r"ppo.anneal_clip: None -> True"):
        _check_member_config(run, {**saved, "ppo": {"clip_range": 0.2, "anneal_clip": True}}, saved)
    with pytest.raises(ConfigError, match=r"ppo.target_kl: None -> 0.01"):
        _check_member_config(run, {**saved, "ppo": {"clip_range": 0.2, "target_kl": 0.01}}, saved)
