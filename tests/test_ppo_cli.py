"""``moerl train --algo ppo`` (issue 26, items 3-4 on the SB3 engine): a PPO run directory holds what a DQN run's
does, ``eval``, ``runs`` and ``report`` read it, bad input is one line, and DQN's configs and ids are untouched.

Real envs, real SB3, TensorBoard files read back with EventAccumulator; budgets are tiny (a few rollouts)."""

import csv
import hashlib
import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from moerl.cli import main
from moerl.core.config import to_dict
from tests.conftest import read_tb_scalars

#: A CRL run of 4 blocks of 512 env steps, in rollouts of 4 envs x 64 steps (8 rollouts).
SHORT = ["--timesteps", "2048", "--set", "env_kwargs.block_steps=512", "--set", "ppo.n_steps=64",
         "--set", "eval.freq=512", "--set", "eval.episodes=2", "--set", "eval.final_episodes=2",
         "--set", "logging.metrics_interval=256", "--set", "logging.log_interval=1", "--no-progress"]


def _train(tmp_path: Path, *args: str, name: str = "run") -> Path:
    assert main(["train", "--algo", "ppo", *args, "--logdir", str(tmp_path), "--run-name", name]) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def crl_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ppo")
    return _train(root, "--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", *SHORT)


# --- DQN stays as it was ---------------------------------------------------------------------------
#: Run labels and the default config.yaml's digest computed on the tree before the config was split (commit
#: 71a7ee6): DQN's run ids and stored configs must not move.
DQN_LABELS = {
    ("cartpole-crl", "big", "softmoe", ()): "cartpole-crl_big_softmoe-29a88de7",
    ("CartPole-v1", None, None, ("dqn.learning_rate=5e-4",)): "CartPole-v1_dense-d582a48c",
    ("minatar-crl", "dense", None, ("network.torso=conv",)): "minatar-crl_dense_conv-67970dbd",
}
DQN_DEFAULT_YAML_SHA = "b849e27a61646cdf"


def test_dqn_run_ids_and_config_yaml_are_unchanged_by_the_split():
    from moerl.rl.config import DQNRunConfig, build_config, run_label

    for (env, arch, router, sets), label in DQN_LABELS.items():
        flags = {k: v for k, v in {"env": env, "arch": arch, "router": router}.items() if v is not None}
        assert run_label(to_dict(build_config(None, flags, list(sets)))) == label
    text = yaml.safe_dump(to_dict(DQNRunConfig()), sort_keys=False)
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == DQN_DEFAULT_YAML_SHA
    assert [f.name for f in fields(DQNRunConfig)] == [
        "family", "env", "env_kwargs", "timesteps", "seed", "device", "network", "dqn", "eval", "logging",
        "checkpoint", "engine", "compile"]
    assert "algo" not in text


def test_ppo_config_shares_every_common_section_and_adds_its_own():
    from moerl.rl.config import DQNRunConfig, RLRunConfig
    from moerl.rl.ppo_config import PPORunConfig

    common = [f.name for f in fields(RLRunConfig)]
    ppo = [f.name for f in fields(PPORunConfig)]
    assert [n for n in ppo if n not in ("algo", "ppo")] == common
    assert [n for n in (f.name for f in fields(DQNRunConfig)) if n != "dqn"] == common
    assert issubclass(PPORunConfig, RLRunConfig) and issubclass(DQNRunConfig, RLRunConfig)


# --- the run directory -------------------------------------------------------------------------------
def test_ppo_run_directory_is_complete(crl_run):
    from moerl import MoEPPO

    for name in ("config.yaml", "results.json", "eval.csv", "eval_usage.csv", "metrics.csv", "model.zip",
                 "schedule.json", "stack.json", "status.json"):
        assert (crl_run / name).is_file(), name
    assert not (crl_run / "checkpoint.json").exists()  # a finished run keeps no checkpoint
    config = yaml.safe_load((crl_run / "config.yaml").read_text())
    assert config["algo"] == "ppo" and config["ppo"]["n_steps"] == 64 and config["engine"] == "sb3"
    assert "dqn" not in config
    status = json.loads((crl_run / "status.json").read_text())
    assert status["status"] == "finished" and status["family"] == "moe-dqn"
    results = json.loads((crl_run / "results.json").read_text())
    tasks = ["cartpole-default", "cartpole-longheavy", "cartpole-lowgrav", "cartpole-mirror"]
    assert sorted(results["final_eval"]) == tasks
    assert results["continual"]["average_performance"] is not None and results["timesteps"] == 2048
    with (crl_run / "eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in rows}) == [0, 512, 1024, 1536, 2048]
    assert {r["task"] for r in rows} == set(tasks)
    with (crl_run / "eval_usage.csv").open() as f:
        assert {r["layer"] for r in csv.DictReader(f)} == {"actor.big", "critic.big"}
    with (crl_run / "metrics.csv").open() as f:
        keys = {r["key"] for r in csv.DictReader(f)}
    for head in ("actor", "critic"):
        for key in ("dormant/tau0/all", "router/big/entropy", "router/big/usage_expert0", "router/big/aux_loss"):
            assert f"moe/{head}/{key}" in keys
    schedule = json.loads((crl_run / "schedule.json").read_text())
    assert [b["start_step"] for b in schedule["schedule"]] == [0, 512, 1024, 1536]  # the suite's grid of steps
    model = MoEPPO.load(crl_run / "model.zip", device="cpu")
    assert model.policy.ac.actor.config.arch == "big"
    assert model.action_probs(model.observation_space.sample()[None]).shape == (1, 2)


def test_ppo_tensorboard_has_ppo_diagnostics_and_training_returns(crl_run):
    scalars = read_tb_scalars(crl_run / "tb")
    for tag in ("train/approx_kl", "train/clip_fraction", "train/explained_variance", "train/entropy_loss",
                "train/policy_gradient_loss", "train/value_loss", "eval/return/cartpole-default",
                "moe/actor/router/big/entropy", "moe/critic/dormant/tau0/all"):
        assert scalars.get(tag), tag
    assert scalars.get("train/return/cartpole-default")  # training returns per task (the anchors' measure)
    assert any(tag.startswith("eval_usage/cartpole-default/actor.big/expert") for tag in scalars)


def test_eval_runs_and_report_read_a_ppo_run(crl_run, capsys, tmp_path):
    capsys.readouterr()
    assert main(["eval", str(crl_run), "--episodes", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["per_task"]) == ["cartpole-default", "cartpole-longheavy", "cartpole-lowgrav",
                                       "cartpole-mirror"]
    assert main(["runs", str(crl_run.parent)]) == 0
    listing = capsys.readouterr().out
    assert crl_run.name in listing and "| moe-dqn (ppo) | finished |" in listing and "avg perf" in listing
    assert main(["report", str(crl_run), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "big (ppo)" in text and "softmoe" in text
    # the dormant fraction the report gives a PPO run is the policy's (moe/actor/...), as metrics.csv holds it
    with (crl_run / "metrics.csv").open() as f:
        actor = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "moe/actor/dormant/tau0.1/all"]
    row = next(line for line in text.splitlines() if line.startswith("| cartpole-crl | big/softmoe (ppo) | 1 |"))
    assert row.split("|")[6].strip() == f"{actor[-1]:.2f} [{actor[-1]:.2f}, {actor[-1]:.2f}]"
    assert "no metrics.csv" not in (tmp_path / "rep" / "report.md").read_text()


def test_ppo_cli_run_equals_the_python_api(tmp_path):
    """The config's sections are MoEPPO's own arguments: the CLI's model before training is the API's."""
    from moerl.rl.ppo_config import build_ppo_config
    from moerl.rl.ppo_run import build_ppo_model, make_vec_env, run_suite_info

    config = build_ppo_config(None, {"env": "cartpole-mtrl", "arch": "middle", "router": "topk", "seed": 3})
    env = make_vec_env(config, run_suite_info(config))
    model = build_ppo_model(config, env)
    assert model.n_steps == 128 and model.batch_size == 128 and model.n_envs == 4 and model.seed == 3
    assert model.policy.ac.actor.config.router == "topk"
    env.close()


@pytest.mark.parametrize("arch,router", [("dense", None), ("wide", None),
                                         *[(a, r) for a in ("middle", "final", "all", "big")
                                           for r in ("softmoe", "topk", "hardcoded")]])
def test_every_placement_and_router_trains(tmp_path, arch, router):
    args = ["--env", "cartpole-mtrl", "--arch", arch, *(["--router", router] if router else []),
            "--timesteps", "256", "--set", "ppo.n_steps=32", "--set", "eval.freq=0", "--set", "eval.episodes=1",
            "--set", "eval.final_episodes=1", "--set", "logging.metrics_interval=128", "--no-progress", "-q"]
    run = _train(tmp_path, *args)
    results = json.loads((run / "results.json").read_text())
    assert results["arch"] == arch and results["router"] == router and len(results["final_eval"]) == 4
    assert results["timesteps"] == 256  # whole rollouts of 4 x 32


def test_minatar_conv_torso_trains(tmp_path):
    pytest.importorskip("minatar")
    run = _train(tmp_path, "--env", "minatar-mtrl", "--arch", "big", "--router", "softmoe", "--timesteps", "256",
                 "--set", "network.torso=conv", "--set", "ppo.n_steps=32", "--set", "eval.freq=0",
                 "--set", "eval.episodes=1", "--set", "eval.final_episodes=1", "--no-progress", "-q")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["network"]["torso"] == "conv"
    assert json.loads((run / "results.json").read_text())["final_eval"]


def test_seeds_train_one_after_another_on_the_sb3_engine(tmp_path):
    """``--engine sb3``: the seeds one after another (``engine: auto`` batches them: test_batched_ppo_runs.py)."""
    rc = main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--seeds", "0-1", "--engine", "sb3", "--timesteps", "200",
               "--set", "ppo.n_steps=32", "--set", "eval.freq=0", "--set", "eval.episodes=1",
               "--set", "eval.final_episodes=1", "--logdir", str(tmp_path), "--no-progress", "-q"])
    assert rc == 0
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and runs[0].startswith("CartPole-v1_ppo_dense-") and runs[0].endswith("_s0")
    assert runs[0][:-3] == runs[1][:-3]  # one config, two seeds
    ra, rb = (json.loads((tmp_path / r / "results.json").read_text()) for r in runs)
    assert (ra["seed"], rb["seed"]) == (0, 1) and ra["engine"] == rb["engine"] == "sb3"
    # 200 asked, 256 trained (whole rollouts of 4 x 32) and recorded so; the id keeps the asked budget
    assert ra["timesteps"] == 256
    assert yaml.safe_load((tmp_path / runs[0] / "config.yaml").read_text())["timesteps"] == 256
    with (tmp_path / runs[0] / "eval.csv").open() as f:
        assert max(int(r["step"]) for r in csv.DictReader(f)) == 256


def test_a_ppo_runs_own_config_yaml_trains_again(crl_run, tmp_path):
    """``--config <a run's config.yaml>`` reads ``algo: ppo`` and trains PPO without ``--algo``."""
    rc = main(["train", "--config", str(crl_run / "config.yaml"), "--timesteps", "256", "--set", "eval.freq=0",
               "--logdir", str(tmp_path), "--run-name", "again", "--no-progress", "-q"])
    assert rc == 0
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["algo"] == "ppo"


# --- bad input ---------------------------------------------------------------------------------------
BAD = [
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "dqn.batch_size=64"],
     "--set sets 'dqn.batch_size', a setting of --algo dqn, but this run trains --algo ppo"),
    (["--env", "CartPole-v1", "--set", "ppo.n_steps=64"],
     "--set sets 'ppo.n_steps', a setting of --algo ppo, but this run trains --algo dqn"),
    (["--algo", "sac", "--env", "CartPole-v1"], "unknown RL algorithm 'sac'"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--seeds", "0-2", "--engine", "batched", "--set", "ppo.target_kl=0"],
     "ppo.target_kl must be positive, got"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--compile", "on"], "compile: on applies to DQN's batched engine"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--seeds", "0-2", "--compile", "on"],
     "compile: on applies to DQN's batched engine"),
    (["--algo", "ppo", "--env", "Acrobot-v1", "--seeds", "0-1", "--engine", "batched"],
     "the batched engine runs moerl's task suites"),
    (["--algo", "ppo", "--env", "cartpole-crl", "--seeds", "0-1", "--engine", "batched", "--set", "ppo.n_envs=3"],
     "ppo.n_envs (3) must divide"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "ppo.n_minibatches=3"], "must divide a rollout"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "ppo.gamma=2"], "ppo.gamma must be in [0, 1]"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "ppo.n_stepz=2"], "unknown config key 'ppo.n_stepz'"),
    (["--algo", "ppo", "--env", "cartpole-crl", "--set", "ppo.n_envs=3"], "ppo.n_envs (3) must divide"),
    (["--algo", "ppo", "--env", "cartpole-crl", "--set", "env_kwargs.order=random"], "each environment would draw"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--seed", "1", "--seeds", "0-1"], "give --seed or --seeds"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--arch", "big", "--router", "hardcoded"], "no task one-hot"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_ppo_input_exits_2_with_one_line_and_no_run_dir(args, message, tmp_path, capsys):
    rc = main(["train", *args, "--logdir", str(tmp_path / "runs"), "--timesteps", "100", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("moerl: error: ")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_algo_lists_the_valid_ones(tmp_path, capsys):
    assert main(["train", "--algo", "a2c", "--env", "CartPole-v1", "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "valid choices: dqn, ppo" in err


def test_algo_flag_and_config_file_that_disagree_are_refused(crl_run, tmp_path, capsys):
    rc = main(["train", "--algo", "dqn", "--config", str(crl_run / "config.yaml"), "--logdir", str(tmp_path)])
    assert rc == 2 and "says algo: ppo" in capsys.readouterr().err


# --- shipped PPO configs -----------------------------------------------------------------------------
SHIPPED = {  # name: (the source's settings the file must hold, rollout = n_envs x n_steps)
    "ppo/cartpole": ({"learning_rate": 2.5e-4, "n_envs": 4, "n_steps": 128, "n_epochs": 4, "n_minibatches": 4,
                      "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.01}, 512),
    "ppo/minatar": ({"learning_rate": 5e-4, "n_envs": 64, "n_steps": 128, "n_epochs": 4, "n_minibatches": 8,
                     "gamma": 0.999, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.01}, 8192),
    "ppo/cartpole-zoo": ({"learning_rate": 1e-3, "anneal_lr": True, "clip_range": 0.2, "anneal_clip": True,
                          "n_envs": 8, "n_steps": 32, "n_epochs": 20, "n_minibatches": 1, "gamma": 0.98,
                          "gae_lambda": 0.8, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5}, 256),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_ppo_configs_hold_their_sources_settings_and_train_a_rollout_on_both_engines(name, tmp_path):
    from moerl.core.config_files import shipped_configs
    from moerl.rl.ppo_config import build_ppo_config

    assert sorted(c for c in shipped_configs() if c.startswith("ppo/")) == sorted(SHIPPED)
    settings, rollout = SHIPPED[name]
    config = build_ppo_config(name)
    assert {k: getattr(config.ppo, k) for k in settings} == settings
    if name == "ppo/cartpole":  # PureJaxRL's defaults are PPOHyperParams' own
        from moerl.rl.algos.ppo import PPOHyperParams

        assert config.ppo == PPOHyperParams() and config.timesteps == 500_000
    small = ["--timesteps", "1", "--set", "eval.freq=0", "--set", "eval.episodes=1", "--set", "eval.final_episodes=1",
             "--no-progress", "-q", "--logdir", str(tmp_path)]
    assert main(["train", "--config", name, "--seeds", "0-1", "--run-name", "b", *small]) == 0
    assert main(["train", "--config", name, "--seed", "0", "--run-name", "one", *small]) == 0
    for run in ("b_s0", "b_s1", "one"):
        written = yaml.safe_load((tmp_path / run / "config.yaml").read_text())
        assert written["timesteps"] == rollout and written["engine"] == ("sb3" if run == "one" else "batched")
        assert (tmp_path / run / "model.zip").is_file()


def test_shared_network_takes_effect_on_both_engines_and_keeps_default_ids(tmp_path):
    """``ppo.shared_network``: one network for actor and critic in the SB3 model and in every batched member's
    exported zip (no critic, fewer parameters); at its default the run id is the one computed before the key
    existed."""
    from moerl.rl.sb3.moe_ppo import MoEPPO
    from moerl.runs.kinds import config_id

    small = ["--env", "cartpole-mtrl", "--arch", "big", "--router", "softmoe", "--timesteps", "128",
             "--set", "ppo.n_steps=32", "--set", "eval.freq=0", "--set", "eval.episodes=1",
             "--set", "eval.final_episodes=1", "--no-progress", "-q", "--logdir", str(tmp_path)]
    assert main(["train", "--algo", "ppo", *small, "--seed", "0", "--run-name", "sep"]) == 0
    assert main(["train", "--algo", "ppo", *small, "--seed", "0", "--run-name", "one",
                 "--set", "ppo.shared_network=true"]) == 0
    assert main(["train", "--algo", "ppo", *small, "--seeds", "0-1", "--run-name", "b",
                 "--set", "ppo.shared_network=true"]) == 0
    separate = MoEPPO.load(tmp_path / "sep" / "model.zip", device="cpu").policy.ac
    assert separate.critic is not None
    params = {}
    for run in ("one", "b_s0", "b_s1"):
        ac = MoEPPO.load(tmp_path / run / "model.zip", device="cpu").policy.ac
        assert ac.critic is None
        params[run] = sum(p.numel() for p in ac.parameters())
        written = yaml.safe_load((tmp_path / run / "config.yaml").read_text())
        assert written["ppo"]["shared_network"] is True
    assert len(set(params.values())) == 1 and params["one"] < sum(p.numel() for p in separate.parameters())
    sep_config = yaml.safe_load((tmp_path / "sep" / "config.yaml").read_text())
    assert sep_config["ppo"]["shared_network"] is False
    before = {**sep_config, "ppo": {k: v for k, v in sep_config["ppo"].items() if k != "shared_network"}}
    assert config_id(sep_config) == config_id(before)  # the default leaves the id as it was
