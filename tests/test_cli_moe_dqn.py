"""The ``moerl`` CLI end to end for the MoE DQN family, and its errors."""

import csv
import json
import re
import subprocess
import sys

import pytest

from moerl.cli import main
from moerl.core.errors import ConfigError

TINY = ["--set", "dqn.learning_starts=50", "--set", "dqn.batch_size=32", "--set", "eval.episodes=2",
        "--set", "eval.final_episodes=2", "--set", "network.hidden=16", "--no-progress"]


def test_headline_crl_run_writes_a_complete_run_directory(tmp_path, tb_scalars, capsys):
    rc = main(["train", "--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "1200",
               "--logdir", str(tmp_path), "--set", "env_kwargs.block_steps=300", "--set", "eval.freq=300",
               "--set", "logging.metrics_interval=100", "--set", "logging.log_interval=1", *TINY])
    assert rc == 0
    (run,) = tmp_path.iterdir()
    assert re.fullmatch(r"cartpole-crl_big_softmoe-[0-9a-f]{8}_s0", run.name)  # readable name + config id
    assert f"run directory: {run}" in capsys.readouterr().out
    for name in ("config.yaml", "status.json", "results.json", "eval.csv", "model.zip", "schedule.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    results = json.loads((run / "results.json").read_text())
    tasks = ["cartpole-default", "cartpole-longheavy", "cartpole-lowgrav", "cartpole-mirror"]
    assert sorted(results["final_eval"]) == tasks
    assert results["continual"]["average_performance"] is not None
    assert set(results["continual"]["forgetting_best"]) == set(tasks[:-1])
    rows = list(csv.DictReader((run / "eval.csv").open()))
    assert {r["task"] for r in rows} == set(tasks)
    assert {int(r["step"]) for r in rows} >= {0, 300, 600, 900, 1200}
    switches = json.loads((run / "schedule.json").read_text())["switches_seen"]
    assert [s[2] for s in switches] == tasks

    tags = tb_scalars(run / "tb")
    for tag in ["rollout/ep_rew_mean", "moe/dormant/tau0/all", "moe/dormant/tau0.025/all", "moe/dormant/tau0.1/all",
                "moe/router/big/usage_expert0", "moe/router/big/usage_expert3", "moe/router/big/entropy",
                "schedule/task_id", "eval/normalized_mean"]:
        assert tag in tags, tag
    for task in tasks:
        assert f"eval/return/{task}" in tags
        assert f"eval_usage/{task}/big/expert0" in tags
    assert any(t.startswith("train/return/cartpole-") for t in tags)
    assert any(t.startswith("moe/dormant/tau0.1/big.hidden") for t in tags)
    assert sorted({v for _, v in tags["schedule/task_id"]}) == [0.0, 1.0, 2.0, 3.0]


def test_eval_reloads_a_finished_run(tmp_path, capsys):
    assert main(["train", "--env", "CartPole-v1", "--arch", "middle", "--router", "topk", "--timesteps", "300",
                 "--logdir", str(tmp_path), "--run-name", "r", *TINY]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--episodes", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_task"]["CartPole-v1"]["episodes"] == 2


def test_envs_lists_suites_with_their_tasks(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for name in ("cartpole-crl", "cartpole-mtrl", "mountaincar-crl", "classic-mtrl", "cartpole-mirror"):
        assert name in out


BAD = [
    (["--env", "cartpol-crl"], "unknown env 'cartpol-crl' (did you mean 'cartpole-crl'?)"),
    (["--env", "CartPole-v1", "--arch", "huge"], "'huge'"),
    (["--env", "CartPole-v1", "--router", "soft"], "unknown router 'soft' (did you mean 'softmoe'?); valid choices: hardcoded, softmoe, topk"),
    (["--env", "CartPole-v1", "--set", "dqn.learning_rat=1e-3"], "did you mean 'learning_rate'"),
    (["--env", "CartPole-v1", "--set", "dqn.batch_size=-3"], "dqn.batch_size must be positive, got -3"),
    (["--env", "CartPole-v1", "--arch", "big", "--router", "topk", "--topk", "5"],
     "topk must be between 1 and the number of experts (4), got 5"),
    # flags that would be silently ignored are refused
    (["--env", "CartPole-v1", "--router", "topk"], "'network.router' (--router) does not apply to arch 'dense'"),
    (["--env", "CartPole-v1", "--experts", "8"], "'network.experts' (--experts) does not apply to arch 'dense'"),
    (["--env", "CartPole-v1", "--arch", "wide", "--topk", "2"], "'network.topk' (--topk) does not apply to arch 'wide'"),
    (["--env", "CartPole-v1", "--arch", "big", "--topk", "2"], "'network.topk' (--topk) does not apply to router 'softmoe'"),
    (["--env", "CartPole-v1", "--arch", "big", "--router", "topk", "--set", "network.normalize=true"],
     "'network.normalize' does not apply to router 'topk'"),
    (["--env", "CartPole-v1", "--data-dir", "/tmp"], "option --data-dir does not apply"),
    (["--env", "CartPole-v1", "--epochs", "3"], "option --epochs does not apply"),
    (["--env", "CartPole-v1", "--set", "learning_rate=1e-3"], "unknown config key 'learning_rate' (it lives under 'dqn.learning_rate')"),
    # numbers that would train garbage, and sizes the machine cannot hold
    (["--env", "CartPole-v1", "--set", "dqn.learning_rate=.inf"], "'dqn.learning_rate' must be a finite number, got inf"),
    (["--env", "CartPole-v1", "--set", "dqn.max_grad_norm=-1"], "dqn.max_grad_norm must be positive, got -1.0"),
    (["--env", "CartPole-v1", "--set", "dqn.gradient_steps=0"], "dqn.gradient_steps must be positive, got 0"),
    (["--env", "CartPole-v1", "--set", "dqn.exploration_initial_eps=-3"], "must be in [0, 1], got -3.0"),
    (["--env", "CartPole-v1", "--set", "dqn.exploration_final_eps=7"], "must be in [0, 1], got 7.0"),
    (["--env", "CartPole-v1", "--set", "dqn.aux_loss_coef=.nan"], "must be a finite number, got nan"),
    (["--env", "CartPole-v1", "--set", "dqn.batch_size=.nan"], "'dqn.batch_size' must be an integer, got nan"),
    (["--env", "CartPole-v1", "--set", "logging.log_interval=0"], "logging.log_interval must be positive, got 0"),
    (["--env", "CartPole-v1", "--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--env", "CartPole-v1", "--seed", str(2**32)], "seed must be an integer in [0, 4294967295], got 4294967296"),
    (["--env", "CartPole-v1", "--arch", "big", "--experts", "10000000"], "sized by network.hidden / network.experts)"),
    (["--env", "CartPole-v1", "--set", "dqn.buffer_size=1e11"], "sized by dqn.buffer_size); this machine allows"),
    (["--env", "CartPole-v1", "--set", "env_kwargs.max_episode_steps=0"], "max_episode_steps"),
    (["--env", "CartPole-v1", "--set", "eval.reference_runs.x=/nope"], "is not a run directory with an eval.csv"),
    (["--env", "LunarLander-v3"], "needs a package that is not installed"),
    (["--env", "CartPole-v2"], "unknown env 'CartPole-v2' (did you mean 'CartPole-v1'?)"),
    (["--env", "CartPole-v1", "--run-name", "../x"], "run name '../x' is not valid"),
    (["--env", "CartPole-v1", "--run-name", "a" * 300], "is not valid: it must be one folder name"),
    # names that break shells and scripts: the rule is said in the error
    *[(["--env", "CartPole-v1", f"--run-name={name}"], f"run name {name!r} is not valid: it must be one folder name "
       "of at most 120 characters: letters, digits and . _ - + = , @, starting with a letter or digit")
      for name in ("a\tb", "a\nb", "a\x1bb", "a b", "a;rm -rf x", "$(id)", "a|b", "a&b", "a*", "a?", "a'b", 'a"b',
                   "a`b`", "a>b", "a\\b", "-x", ".hidden", "")],
    (["--env", "CartPole-v1", "--set", "env_kwargs={a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a],"
      " c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]}"], "expands to more than"),
    (["--env", "CartPole-v1", "--mask", "lu"], "option --mask does not apply"),
    (["--env", "CartPole-v1", "--arch", "big", "--router", "hardcoded"], "no task one-hot"),
    (["--env", "CartPole-v1", "--device", "tpu"], "unknown device 'tpu'"),
    (["--env", "CartPole-v1", "--config", "/nonexistent/x.yaml"], "does not exist"),
    (["--env", "cartpole-crl", "--set", "env_kwargs.tasks=[cartpole-nope]"], "cartpole-nope"),
    (["--env", "cartpole-crl", "--set", "env_kwargs.block_steps=0"], "block_steps"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_exits_2_with_one_line_and_no_run_dir(args, message, tmp_path, capsys):
    rc = main(["train", *args, "--logdir", str(tmp_path / "runs"), "--timesteps", "100", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("moerl: error: ")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_flat_cli_names_and_scientific_notation_in_files(tmp_path):
    """A file written with the CLI's names (arch, router, ...) and 5e-4 style numbers means what it says."""
    from moerl.rl.experiment import build_config

    flat = tmp_path / "flat.yaml"
    flat.write_text("env: CartPole-v1\narch: big\nrouter: topk\nexperts: 3\ntopk: 2\ndqn:\n  learning_rate: 5e-4\n"
                    "  adam_eps: 1E-8\n")
    cfg = build_config(str(flat), {}, ["dqn.max_grad_norm=1e1"])
    assert (cfg.network.arch, cfg.network.router, cfg.network.experts, cfg.network.topk) == ("big", "topk", 3, 2)
    assert cfg.dqn.learning_rate == 5e-4 and cfg.dqn.adam_eps == 1e-8 and cfg.dqn.max_grad_norm == 10.0
    both = tmp_path / "both.yaml"
    both.write_text("arch: big\nnetwork: {arch: dense}\n")
    with pytest.raises(ConfigError, match="gives both 'arch' and 'network.arch'"):
        build_config(str(both))


def test_malformed_yaml_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: {arch: big\n")
    assert main(["train", "--config", str(bad), "--logdir", str(tmp_path / "runs")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_eval_refuses_an_unfinished_run(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "status.json").write_text('{"status": "running"}')
    assert main(["eval", str(tmp_path / "r")]) == 2
    assert "not a finished run (status: running" in capsys.readouterr().err


def test_console_script_bad_number_is_exit_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "moerl", "train", "--env", "CartPole-v1", "--timesteps", "-5"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "timesteps must be positive, got -5" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("config", ["dense", "big-softmoe", "all-topk", "big-hardcoded"])
def test_shipped_configs_load_and_validate(config):
    from pathlib import Path

    from moerl.rl.experiment import build_config

    path = Path(__file__).resolve().parents[1] / "moerl" / "configs" / "dqn" / f"{config}.yaml"
    cfg = build_config(str(path))
    assert cfg.network.arch == config.split("-")[0]


def test_report_tabulates_finished_runs(tmp_path, capsys):
    for arch in ("dense", "final"):
        assert main(["train", "--env", "cartpole-mtrl", "--arch", arch, "--timesteps", "200",
                     "--logdir", str(tmp_path), "--run-name", arch, *TINY]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "dense"), str(tmp_path / "final"), "--out", str(tmp_path / "t.md")]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| arch | router | seed | steps | steps/s | cartpole-default")
    assert table[2].startswith("| dense | - | 0 | 200 |") and table[3].startswith("| final | softmoe | 0 | 200 |")
    written = (tmp_path / "t.md").read_text().strip().splitlines()
    assert written[0] == "<!-- written by moerl -->" and written[1:] == table  # the mark, then what was printed
    summary = table[table.index("") + 1:]
    assert summary[0].startswith("| env | variant | seeds | avg perf")
    assert summary[2].startswith("| cartpole-mtrl | dense | 1 |")
    point, lo, hi = (float(x) for x in re.findall(r"[-\d.]+", summary[2].split("|")[-2]))
    assert lo <= point <= hi
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_crl_replay_defaults_to_one_block_and_is_recorded(tmp_path):
    import yaml

    assert main(["train", "--env", "cartpole-crl", "--arch", "dense", "--timesteps", "200", "--logdir", str(tmp_path),
                 "--run-name", "crl", "--set", "env_kwargs.block_steps=150", *TINY]) == 0
    assert main(["train", "--env", "cartpole-mtrl", "--arch", "dense", "--timesteps", "200", "--logdir", str(tmp_path),
                 "--run-name", "mtrl", *TINY]) == 0
    assert yaml.safe_load((tmp_path / "crl" / "config.yaml").read_text())["dqn"]["buffer_size"] == 150
    assert yaml.safe_load((tmp_path / "mtrl" / "config.yaml").read_text())["dqn"]["buffer_size"] == 50_000


def test_iqm_with_ci_on_known_scores(monkeypatch):
    import sys

    import numpy as np

    from moerl.rl.report.summary import iqm_with_ci

    flat = iqm_with_ci({"g": np.full((3, 4), 0.5)})
    assert flat == {"g": (0.5, 0.5, 0.5)}
    # IQM drops the lowest and highest quarter: the outliers 0 and 1 do not count
    scores = np.array([[0.0, 0.4, 0.4, 0.4], [0.4, 0.4, 0.4, 1.0]])
    assert iqm_with_ci({"g": scores})["g"][0] == 0.4
    monkeypatch.setitem(sys.modules, "rliable", None)  # rliable not installed
    assert iqm_with_ci({"g": scores}) is None


def test_a_runs_own_config_yaml_trains_again_and_non_default_ignored_keys_are_still_refused(tmp_path, capsys):
    """config.yaml lists every key (``router: softmoe`` for a dense run too): re-running it with --config works;
    a key a dense network would ignore, set to a non-default value in a file, is still refused."""
    import yaml

    assert main(["train", "--env", "CartPole-v1", "--timesteps", "200", "--logdir", str(tmp_path),
                 "--run-name", "first", "--no-progress"]) == 0
    saved = tmp_path / "first" / "config.yaml"
    assert "router: softmoe" in saved.read_text()
    assert main(["train", "--config", str(saved), "--logdir", str(tmp_path), "--run-name", "again",
                 "--no-progress"]) == 0
    assert (tmp_path / "again" / "config.yaml").read_text() == saved.read_text()
    config = yaml.safe_load(saved.read_text())
    config["network"]["router"] = "topk"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train", "--config", str(bad), "--logdir", str(tmp_path / "no"), "--no-progress"]) == 2
    assert "'network.router' (--router) does not apply to arch 'dense'" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
