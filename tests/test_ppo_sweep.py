"""``moerl sweep`` over PPO configs (``algo: ppo``): PPO runs of one architecture train in one BatchedPPO batch
(members with their own task orders and learning rates), the dry run estimates the groups from a real timing,
the local and Ray backends give the same runs, and ``moerl report`` reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from moerl.cli import main
from moerl.runs.sweep.spec import load_sweep

BASE = {"algo": "ppo", "env": "cartpole-crl", "timesteps": 512, "env_kwargs.block_steps": 128, "eval.freq": 256,
        "eval.episodes": 1, "eval.final_episodes": 1, "ppo.n_steps": 32, "network.hidden": 8}
SETTINGS = [{}, {"env_kwargs.order": "reverse", "ppo.learning_rate": 1e-3}]
VARIANTS = [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]


def _write(tmp_path: Path, name: str, **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "settings": SETTINGS, "variants": VARIANTS, "seeds": "0-1",
                                    "logdir": str(tmp_path / name), **changes}))
    return path


def _finished(logdir: Path) -> list[str]:
    return sorted(p.name for p in logdir.iterdir() if (p / "status.json").is_file()
                  and json.loads((p / "status.json").read_text())["status"] == "finished")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ppo-sweep")
    path = _write(tmp, "study")
    assert main(["sweep", str(path), "--workers", "2"]) == 0
    return path, tmp / "study"


def test_ppo_runs_of_one_architecture_train_in_one_batch(study):
    path, logdir = study
    spec = load_sweep(path)
    expected = sorted(job.run_dir(seed).name for job in spec.jobs for seed in job.seeds)
    assert _finished(logdir) == expected and len(expected) == 8
    assert all("_ppo_" in name for name in expected)
    record = json.loads((logdir / "sweep.json").read_text())
    assert all(j["status"] == "finished" and "(in group-" in j["action"] for j in record["jobs"])
    for job in spec.jobs:
        config = yaml.safe_load((job.run_dir(1) / "config.yaml").read_text())
        assert config["algo"] == "ppo" and config["engine"] == "batched" and config["seed"] == 1
        assert config["env_kwargs"] == job.config["env_kwargs"]
        assert config["ppo"]["learning_rate"] == job.config["ppo"]["learning_rate"]  # the member's own
        status = json.loads((job.run_dir(1) / "status.json").read_text())
        assert len(status["batch"]["members"]) == 4  # two task orders x two seeds of one architecture
        assert (job.run_dir(1) / "model.zip").is_file()


def test_the_report_reads_a_ppo_sweep(study, capsys):
    _, logdir = study
    assert main(["report", *map(str, sorted(logdir.glob("*_s*")))]) == 0
    out = capsys.readouterr().out
    assert "big (ppo)" in out and "dense (ppo)" in out


def test_the_dry_run_estimates_ppo_groups_from_a_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _write(tmp_path, "dry")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    groups = [line for line in out.splitlines() if line.startswith("train   group-")]
    assert len(groups) == 2 and all("4 runs:" in line and "core-h" in line for line in groups), out
    assert "2 processes to run" in out and "estimated" in out
    cache = json.loads((tmp_path / "cache" / "moerl" / "calibration.json").read_text())
    assert len(cache) == 2 and all(entry["step"] > 0 and entry["eval_step"] > 0 for entry in cache.values())
    assert not (tmp_path / "dry").exists()


def test_ppo_and_dqn_runs_of_one_architecture_never_share_a_batch(tmp_path, capsys, monkeypatch):
    """``algo`` as a variant: a DQN and a PPO config of one architecture are two groups (and two run names)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base = {k: v for k, v in BASE.items() if not k.startswith("ppo.") and k != "algo"}
    path = _write(tmp_path, "mixed", base=base, settings=[{}, {"env_kwargs.order": "reverse"}],
                  variants=[{"arch": "dense"}, {"arch": "dense", "algo": "ppo", "ppo.n_steps": 32}])
    spec = load_sweep(path)
    assert sorted("_ppo_" in job.name for job in spec.jobs) == [False, False, True, True]
    from moerl.rl.sweep_groups import group_key

    keys = {"_ppo_" in job.name: group_key(job.config) for job in spec.jobs}
    assert keys[True] != keys[False] and None not in keys.values()


@pytest.mark.parametrize("changes, message", [
    ({"base": {**BASE, "dqn.batch_size": 32}}, "sets 'dqn.batch_size', a setting of --algo dqn"),
    ({"base": {**BASE, "ppo.target_kl": -0.01}}, "ppo.target_kl must be positive, got"),
    ({"variants": [{"arch": "dense", "algo": "sac"}]}, "unknown RL algorithm 'sac'"),
    # what only the env tells: refused before anything runs, not by each run at its start
    ({"base": {**BASE, "ppo.n_envs": 3}}, "ppo.n_envs (3) must divide the CRL block of 128 env steps"),
    ({"settings": [{"env_kwargs.order": "random", "ppo.n_envs": 2}]}, "env_kwargs.order 'random' with ppo.n_envs 2"),
])
def test_bad_ppo_sweep_points_are_refused_in_one_line(tmp_path, capsys, changes, message):
    path = _write(tmp_path, "bad", **changes)
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()  # nothing launched, nothing written


@pytest.mark.slow
def test_the_ray_backend_gives_the_local_backends_ppo_runs(study, tmp_path):
    path, logdir = study
    assert main(["sweep", str(path), "--backend", "ray", "--workers", "2", "--logdir", str(tmp_path / "ray")]) == 0
    names = _finished(logdir)
    assert _finished(tmp_path / "ray") == names
    for name in names:
        assert (logdir / name / "eval.csv").read_text() == (tmp_path / "ray" / name / "eval.csv").read_text()


def test_the_paper_ppo_study_groups_by_architecture_and_budget():
    """configs/paper/ppo-minatar.yaml: per variant, CRL in both orders (the suite's 3 x 1e7) and MTRL (3e7)
    are one group, the three single-game references (1e7) another."""
    from collections import Counter

    from moerl.rl.sweep_groups import group_key

    spec = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "paper" / "ppo-minatar.yaml")
    keys = Counter(group_key(job.config) for job in spec.jobs)
    assert None not in keys and len(spec.jobs) == 66 and sorted(keys.values()) == [3] * 22
