"""``moerl train --seeds ... --engine batched``: one run directory per seed, in the SB3 path's layout, read by
``moerl eval``, ``moerl report`` and ``MoEDQN.load``; deterministic; bad input refused before anything is made."""

from __future__ import annotations

import csv
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moerl import MoEDQN
from moerl.cli import main
from moerl.core.errors import ConfigError
from moerl.core.seeding import parse_seeds
from tests.conftest import read_tb_scalars

ARGS = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "1200",
        "--set", "env_kwargs.block_steps=300", "--set", "eval.freq=400", "--set", "eval.episodes=2",
        "--set", "eval.final_episodes=2", "--set", "dqn.learning_starts=200", "--set", "network.hidden=16",
        "--no-progress"]


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    assert main(["train", *ARGS, "--seeds", "3,5", "--engine", "batched", "--logdir", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def sb3(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb3")
    assert main(["train", *ARGS, "--seed", "3", "--logdir", str(root), "--run-name", "ref"]) == 0
    return root / "ref"


def _rows(path: Path) -> list[dict]:
    with open(path / "eval.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_one_run_directory_per_seed_in_the_sb3_layout(batched, sb3):
    runs = sorted(p.name for p in batched.iterdir())
    assert [re.sub("-[0-9a-f]{8}_", "-ID_", r) for r in runs] == ["cartpole-crl_big_softmoe-ID_s3",
                                                                   "cartpole-crl_big_softmoe-ID_s5"]
    assert len({r[:-3] for r in runs}) == 1  # the seeds of one config share its id
    for name in runs:
        run = batched / name
        assert {p.name for p in run.iterdir()} == {p.name for p in sb3.iterdir()}
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        ours, theirs = _rows(run), _rows(sb3)
        assert ours[0].keys() == theirs[0].keys()
        assert [(r["step"], r["task"]) for r in ours] == [(r["step"], r["task"]) for r in theirs]
        res, ref = (json.loads((p / "results.json").read_text()) for p in (run, sb3))
        assert set(ref) <= set(res) and res["engine"] == "batched" and res["seeds_in_batch"] == 2
        assert res["final_eval"].keys() == ref["final_eval"].keys()
        assert res["continual"].keys() == ref["continual"].keys()
        tags = set(read_tb_scalars(run / "tb"))
        assert {"eval/normalized_mean", "eval/return/cartpole-mirror", "train/loss"} <= tags
        theirs = set(read_tb_scalars(sb3 / "tb"))
        for prefix in ("eval/", "moe/"):  # evaluations and MoE metrics (dormant neurons, router usage)
            assert {t for t in tags if t.startswith(prefix)} == {t for t in theirs if t.startswith(prefix)}, prefix
    config = (batched / runs[1] / "config.yaml").read_text()
    assert "seed: 5" in config and "engine: batched" in config


def test_models_load_in_sb3_and_moerl_eval_and_report_read_the_runs(batched, capsys):
    run = sorted(batched.iterdir())[1]  # seed 5
    model = MoEDQN.load(run / "model.zip", device="cpu")
    assert model.num_timesteps == 1200 and model.policy.q_net.network_config.arch == "big"
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["per_task"]["cartpole-mirror"]["episodes"] == 2
    assert main(["report", *map(str, sorted(batched.iterdir()))]) == 0
    assert "| cartpole-crl | big/softmoe | 2 |" in capsys.readouterr().out


def test_a_batched_model_records_the_runs_whole_dqn_section(tmp_path):
    """model.zip holds the run's hyper-parameters, not MoEDQN's defaults (it once kept a hand-made subset:
    loss, aux_loss_coef and adam_eps fell back to their defaults)."""
    import dataclasses

    import yaml

    from moerl.rl.algos.dqn import DQNHyperParams

    changed = {"loss": "huber", "aux_loss_coef": 0.25, "adam_eps": 1e-5, "gamma": 0.95, "max_grad_norm": 3.0,
               "learning_rate": 5e-4, "exploration_final_eps": 0.02}
    defaults = DQNHyperParams()
    assert all(getattr(defaults, k) != v for k, v in changed.items())  # each value shows it was recorded
    args = [*ARGS, "--timesteps", "400", "--router", "topk", "--set", "network.balance_loss=importance",
            *(a for k, v in changed.items() for a in ("--set", f"dqn.{k}={v}"))]
    assert main(["train", *args, "--seeds", "0,1", "--engine", "batched", "--logdir", str(tmp_path)]) == 0
    for run in sorted(tmp_path.iterdir()):
        dqn = yaml.safe_load((run / "config.yaml").read_text())["dqn"]
        model = MoEDQN.load(run / "model.zip", device="cpu")
        for field in dataclasses.fields(DQNHyperParams):
            if field.name == "adam_eps":
                saved = model.policy.optimizer.param_groups[0]["eps"]
            elif field.name == "train_freq":
                saved = model.train_freq.frequency
            elif field.name == "optimizer":  # the optimiser the saved policy trains with
                saved = "rmsprop" if isinstance(model.policy.optimizer, torch.optim.RMSprop) else "adam"
            else:
                saved = getattr(model, field.name)
            assert saved == dqn[field.name], (run.name, field.name, saved, dqn[field.name])
        assert {k: dqn[k] for k in changed} == changed


def test_the_same_seeds_give_the_same_runs(batched, tmp_path):
    assert main(["train", *ARGS, "--seeds", "3,5", "--engine", "batched", "--logdir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in batched.iterdir())
    for name in (p.name for p in batched.iterdir()):
        assert (tmp_path / name / "eval.csv").read_text() == (batched / name / "eval.csv").read_text()
        a = MoEDQN.load(tmp_path / name / "model.zip", device="cpu").policy.state_dict()
        b = MoEDQN.load(batched / name / "model.zip", device="cpu").policy.state_dict()
        assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_seeds_with_the_sb3_engine_run_one_after_another(tmp_path):
    assert main(["train", *ARGS, "--timesteps", "300", "--seeds", "1-2", "--engine", "sb3", "--logdir",
                 str(tmp_path), "--run-name", "x"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_s1", "x_s2"]
    assert json.loads((tmp_path / "x_s1" / "results.json").read_text())["engine"] == "sb3"
    assert "engine: sb3" in (tmp_path / "x_s1" / "config.yaml").read_text()


@pytest.mark.parametrize(("args", "engine"), [
    (["--seeds", "1-2"], "batched"),  # several seeds of a suite: together
    (["--seeds", "1"], "sb3"),  # one seed alone is faster on the SB3 path
    (["--seed", "1"], "sb3"),
    (["--seeds", "1-2", "--env", "Acrobot-v1"], "sb3"),  # an env the batched engine does not run
])
def test_the_default_engine_is_batched_for_several_seeds_of_a_suite_and_sb3_otherwise(tmp_path, args, engine):
    base = ARGS if "Acrobot-v1" not in args else ["--arch", "big", "--router", "softmoe", "--no-progress"]
    assert main(["train", *base, "--timesteps", "300", *args, "--logdir", str(tmp_path)]) == 0
    configs = [p / "config.yaml" for p in tmp_path.iterdir()]
    assert configs and all(f"engine: {engine}" in c.read_text() for c in configs)


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "5-2"], "--seeds '5-2' is not a list or range of seeds"),
    (["--seeds", "a,b"], "--seeds 'a,b' is not a list or range of seeds"),
    (["--seeds", "1,1"], "names a seed twice"),
    (["--seeds", "0-99999"], "names more than 65,536 seeds"),
    (["--seeds", "4294967296"], "seed must be an integer in [0, 4294967295]"),
    (["--seeds", "0-1", "--seed", "3"], "give --seed or --seeds, not both"),
    (["--engine", "jax"], "unknown engine 'jax'; valid choices: auto, batched, sb3"),
    (["--seeds", "0-1", "--engine", "batched", "--env", "Acrobot-v1"], "the batched engine runs moerl's task suites"),
])
def test_bad_input_is_refused_in_one_line_before_anything_exists(tmp_path, capsys, args, message):
    assert main(["train", *ARGS, *args, "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_seeds_are_refused_by_the_supervised_families(tmp_path, capsys):
    assert main(["train", "--env", "digits-mtl", "--seeds", "0-1", "--logdir", str(tmp_path)]) == 2
    assert "option --seeds does not apply to env 'digits-mtl'" in capsys.readouterr().err


def test_parse_seeds():
    assert parse_seeds("0-3,10,12-13") == [0, 1, 2, 3, 10, 12, 13]
    assert parse_seeds(" 7 ") == [7]


def test_auto_device_is_the_faster_one_for_each_engine():
    """The SB3 path's small networks are launch-bound on a GPU: auto is the CPU there; batched: any GPU."""
    from moerl.core.devices import resolve_device
    from moerl.rl.config import DQNRunConfig, engine_device

    assert engine_device(DQNRunConfig(engine="sb3")) == torch.device("cpu")
    assert engine_device(DQNRunConfig(engine="batched")) == resolve_device("auto")
    assert engine_device(DQNRunConfig(engine="sb3"), "cpu") == torch.device("cpu")


# -- a killed batch resumes to the uninterrupted result -------------------------------------------------
LONG = [*ARGS, "--timesteps", "3000", "--set", "checkpoint.every=500", "--seeds", "3,5", "--engine", "batched"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    assert main(["train", *LONG, "--logdir", str(root), "--run-name", "b"]) == 0
    return root


def _same_batch(a: Path, b: Path) -> None:
    for name in ("b_s3", "b_s5"):
        for file in ("eval.csv", "eval_usage.csv", "metrics.csv"):  # rewritten from the checkpoint: no duplicates
            assert (a / name / file).read_text() == (b / name / file).read_text(), file
        ra, rb = (json.loads((p / name / "results.json").read_text()) for p in (a, b))
        for key in ("train_seconds", "steps_per_second"):
            ra.pop(key), rb.pop(key)
        assert ra == rb
        ma = MoEDQN.load(a / name / "model.zip", device="cpu").policy.state_dict()
        mb = MoEDQN.load(b / name / "model.zip", device="cpu").policy.state_dict()
        assert all(torch.equal(v, mb[k]) for k, v in ma.items())
        ta, tb = read_tb_scalars(a / name / "tb"), read_tb_scalars(b / name / "tb")
        assert ta.keys() == tb.keys()
        for tag in ta:
            steps = [s for s, _ in tb[tag]]
            assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
            assert sorted(ta[tag]) == sorted(tb[tag]), tag


def test_a_batch_that_dies_between_an_evaluation_and_the_next_checkpoint_resumes_without_duplicates(
        uninterrupted, tmp_path, monkeypatch):
    """The case a random kill time only sometimes hits: evaluations every 400 steps, checkpoints every 500.
    The batch dies just before its checkpoint at 1,500, after the evaluation at 1,200 wrote its events; that
    evaluation also wrote points *behind* the checkpoint at 1,000 (the task switch at 900, the MoE metrics
    measured at 1,000). Resumed from 1,000, they must be neither lost nor written twice."""
    from moerl.rl import batched_runs

    real = batched_runs._Batch.checkpoint

    def dies_at_1500(self, started):
        if self.agent.num_timesteps == 1500:
            raise RuntimeError("simulated crash before the checkpoint at 1,500")
        real(self, started)

    monkeypatch.setattr(batched_runs._Batch, "checkpoint", dies_at_1500)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["train", *LONG, "--logdir", str(tmp_path), "--run-name", "b"])
    monkeypatch.undo()
    assert json.loads((tmp_path / "b_s3" / "status.json").read_text())["status"] == "failed"
    rows = (tmp_path / "b_s3" / "eval.csv").read_text()
    assert "\n1200," in rows and "\n1600," not in rows  # it got past the evaluation at 1,200, not to 1,600
    assert main(["train", "--resume", str(tmp_path / "b_s5"), "--no-progress"]) == 0
    _same_batch(uninterrupted, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_batch_resumes_from_any_member_to_the_uninterrupted_result(uninterrupted, tmp_path, sig):
    rng = random.Random(int(time.time()))
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", *LONG, "--logdir", str(tmp_path),
                             "--run-name", "b"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    leader = tmp_path / "b_s3"
    deadline = time.time() + 180
    while not (leader / "checkpoint.json").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    assert proc.poll() is None, "the batch finished before it could be killed; lengthen it"
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    for name in ("b_s3", "b_s5"):
        status = json.loads((tmp_path / name / "status.json").read_text())
        assert status["status"] == ("interrupted" if sig == signal.SIGTERM else "running")
        assert not (tmp_path / name / "results.json").exists()
    assert main(["train", "--resume", str(tmp_path / "b_s5"), "--no-progress"]) == 0  # any member
    for name in ("b_s3", "b_s5"):
        assert json.loads((tmp_path / name / "status.json").read_text())["status"] == "finished"
    assert not (leader / "checkpoints").exists()
    _same_batch(uninterrupted, tmp_path)


def test_a_finished_batch_does_not_resume(uninterrupted, capsys):
    assert main(["train", "--resume", str(uninterrupted / "b_s5")]) == 2
    assert "is finished; only interrupted, failed or crashed runs resume" in capsys.readouterr().err


def test_members_of_other_configs_train_as_in_a_batch_of_their_own_config(tmp_path):
    """Issue 23: one batch may hold the runs of several configs of one architecture (a sweep's settings: task
    order, a fixed task, block length). Each member's run directory holds exactly the files it gets in a
    batch of its own config of the same size, at the same slot (same shapes, so the same kernels)."""
    from moerl.rl.batched_runs import train_members, train_seeds
    from moerl.rl.config import build_config
    from moerl.runs.console import Console

    def config(**env_kwargs):
        c = build_config(None, {"env": "cartpole-crl", "arch": "big", "router": "softmoe", "timesteps": 900})
        c.env_kwargs = {"block_steps": 300, **env_kwargs}
        c.eval.freq, c.eval.episodes, c.eval.final_episodes = 300, 2, 2
        c.dqn.learning_starts, c.network.hidden, c.logging.metrics_interval = 200, 16, 300
        return c

    members = [config(), config(order="reverse"), config(fixed_task=1, max_episode_steps=80)]
    quiet = Console(verbosity=0, progress=False)
    mixed = train_members(members, [0, 1, 2], str(tmp_path / "mixed"), [None] * 3, quiet)
    assert len({p.name[:-3] for p in mixed}) == 3  # three configs, three ids
    for slot, (member, run) in enumerate(zip(members, mixed, strict=True)):
        seeds = [7, 8, 9]
        seeds[slot] = slot
        own = train_seeds(member, seeds, str(tmp_path / f"own{slot}"), None, quiet)[slot]
        assert own.name == run.name
        for name in ("eval.csv", "eval_usage.csv", "metrics.csv", "config.yaml", "schedule.json"):
            assert (run / name).read_bytes() == (own / name).read_bytes(), (slot, name)
    assert max(float(r["mean_return"]) for r in _rows(mixed[2])) <= 80  # member 2's own episode limit
    with pytest.raises(ConfigError, match="must share eval.freq"):
        other = config()
        other.eval.freq = 450
        train_members([members[0], other], [0, 1], str(tmp_path / "bad"), [None] * 2, quiet)
    assert not (tmp_path / "bad").exists()


def test_both_engines_name_a_plain_gymnasium_envs_task_by_its_id_and_older_runs_read_alike(tmp_path):
    """A plain Gymnasium id (CartPole-v1) is one task, named by the id on both engines: eval.csv, results.json,
    eval_usage.csv and the TensorBoard tags agree, so a report over both has one task column. A batched run
    written before named it by the suite task reproducing it (``cartpole-default``): the report and
    ``learning_curves.py --metric train`` read such a run under the id too."""
    import shutil

    from moerl.report import report

    tiny = ["--env", "CartPole-v1", "--arch", "big", "--router", "softmoe", "--timesteps", "600",
            "--set", "eval.freq=300", "--set", "eval.episodes=1", "--set", "eval.final_episodes=1",
            "--set", "dqn.learning_starts=100", "--set", "network.hidden=8", "--no-progress", "-q",
            "--logdir", str(tmp_path)]
    assert main(["train", *tiny, "--seed", "0", "--run-name", "one"]) == 0
    assert main(["train", *tiny, "--seeds", "0-1", "--engine", "batched", "--run-name", "many"]) == 0
    runs = {name: tmp_path / name for name in ("one", "many_s0", "many_s1")}
    for run in runs.values():
        assert {r["task"] for r in _rows(run)} == {"CartPole-v1"}
        assert list(json.loads((run / "results.json").read_text())["final_eval"]) == ["CartPole-v1"]
        with open(run / "eval_usage.csv", newline="") as f:
            assert {r["task"] for r in csv.DictReader(f)} == {"CartPole-v1"}
    tags = {name: {t for t in read_tb_scalars(run / "tb") if t.startswith(("eval/", "train/return/"))}
            for name, run in runs.items()}
    assert tags["one"] == tags["many_s0"] and "train/return/CartPole-v1" in tags["many_s0"]
    # the same batched run as an older one wrote it: its task under the suite task's name, files and tags
    old = tmp_path / "old" / "many_s1"
    shutil.copytree(runs["many_s1"], old)
    for name in ("eval.csv", "eval_usage.csv"):
        (old / name).write_text((old / name).read_text().replace(",CartPole-v1,", ",cartpole-default,"))
    results = json.loads((old / "results.json").read_text())
    assert results["env"] == "CartPole-v1"
    results["final_eval"] = {"cartpole-default": results["final_eval"]["CartPole-v1"]}
    (old / "results.json").write_text(json.dumps(results))
    for event in (old / "tb").glob("events.out.tfevents.*"):
        event.unlink()
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(old / "tb")) as writer:
        for step, value in ((300, 12.0), (600, 20.0)):
            writer.add_scalar("train/return/cartpole-default", value, step)
    text, _ = report([str(runs["many_s0"]), str(old)])
    assert "cartpole-default" not in text and "| 0 | 600 |" in text
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "learning_curves.py"),
                           str(old), "--metric", "train", "--at", "600", "--window", "1000"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| CartPole-v1 | 1 | 16.00 [16.00, 16.00] |" in done.stdout, done.stdout
