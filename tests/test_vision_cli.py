"""End to end through the CLI: a short digits-split run writes a complete run directory."""

import json

import pytest
import torch

from moerl.cli import main

torch.set_num_threads(1)


def test_cli_train_and_eval_digits_split(tmp_path, capsys):
    rc = main(["train", "--env", "digits-split", "--arch", "masked-moe", "--mask", "lu", "--experts", "2",
               "--epochs", "2", "--logdir", str(tmp_path), "--run-name", "r", "--set", "batch_size=64"])
    assert rc == 0
    run = tmp_path / "r"
    for name in ("config.yaml", "results.json", "model.pt", "status.json", "learning_curves.png",
                 "routing.png", "mask_density.png", "history.csv"):
        assert (run / name).is_file(), name
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert any((run / "tb").iterdir())
    res = json.loads((run / "results.json").read_text())
    assert set(res["test"]["datasets"]) == {"digits0-4", "digits5-9"}
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mean_accuracy"] == pytest.approx(res["test"]["mean_accuracy"])


def test_cli_packnet_sequential(tmp_path):
    rc = main(["train", "--env", "digits-split", "--arch", "packnet", "--epochs", "1", "--logdir", str(tmp_path),
               "--set", "schedule=sequential", "--run-name", "p"])
    assert rc == 0
    res = json.loads((tmp_path / "p" / "results.json").read_text())
    assert res["continual"]["task_aware"]["forgetting"] == 0.0  # task-1 weights and head are frozen


@pytest.mark.parametrize("args,needle", [
    (["--mask", "bogus"], "unknown mask 'bogus'"),
    (["--set", "lr=-1"], "lr must be positive"),
    (["--set", "lerning_rate=1"], "unknown config key"),
    (["--arch", "packnet"], "schedule: sequential"),
    (["--set", "schedule=sequential"], "experts"),
])
def test_bad_input_exits_2_without_run_dir(tmp_path, capsys, args, needle):
    rc = main(["train", "--env", "digits-split", "--experts", "2", "--logdir", str(tmp_path / "logs"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())
