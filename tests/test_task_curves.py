"""``scripts/task_curves.py`` on a real tiny sweep: one table per CRL order (single-task runs left out), each
cell the mean over seeds of each seed's evaluations in its window, read back from the runs' eval.csv."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from moerl.cli import main
from tests.conftest import load_script

TINY = {"timesteps": 400, "env_kwargs.block_steps": 100, "eval.freq": 50, "eval.episodes": 1,
        "eval.final_episodes": 1, "dqn.learning_starts": 50, "dqn.batch_size": 16, "network.hidden": 8}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curves")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": TINY, "logdir": str(tmp / "runs"), "seeds": "0-1",
                                    "settings": [{"env": "cartpole-crl"},
                                                 {"env": "cartpole-crl", "env_kwargs.order": "reverse"},
                                                 {"env": "cartpole-crl", "env_kwargs.fixed_task": 1,
                                                  "timesteps": 100}],
                                    "variants": [{"arch": "dense"}]}))
    assert main(["sweep", str(path), "--workers", "1"]) == 0
    return tmp / "runs"


def test_one_table_per_order_with_each_window_the_mean_over_seeds(swept, capsys):
    curves = load_script("task_curves")
    assert curves.main([str(swept), "--variant", "dense", "--window", "200"]) == 0
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if line.startswith("cartpole-crl (")]
    assert len(headings) == 2 and all("2 seeds (0, 1)" in h for h in headings)  # the single-task runs left out
    sequential = next(h for h in headings if "order: cartpole-default > " in h)
    table = out.split(sequential)[1].split("\n\n")[1].splitlines()
    tasks = table[0].strip("| ").split(" | ")[1:]
    assert tasks == sequential.split("order: ")[1].split(")")[0].split(" > ")

    runs = sorted(p for p in swept.iterdir() if p.name.startswith("cartpole-crl_dense")
                  and "order: reverse" not in (p / "config.yaml").read_text()
                  and "fixed_task: 1" not in (p / "config.yaml").read_text())
    assert len(runs) == 2
    rows = [list(csv.DictReader((run / "eval.csv").open())) for run in runs]
    for line in table[2:]:
        cells = line.strip("| ").split(" | ")
        begin = int(cells[0].split("-")[0].replace(",", ""))
        for task, cell in zip(tasks, cells[1:], strict=True):
            per_seed = [np.mean([float(r["normalized"]) for r in seed_rows
                                 if r["task"] == task and begin <= int(r["step"]) < begin + 200])
                        for seed_rows in rows]
            assert cell == f"{np.mean(per_seed):.2f}", (line, task)
    assert [line.split(" | ")[0] for line in table[2:]] == ["| 0-200", "| 200-400", "| 400-600"]


def test_a_variant_without_runs_is_refused_with_the_ones_found(swept, capsys):
    curves = load_script("task_curves")
    assert curves.main([str(swept), "--variant", "big/softmoe"]) == 2
    assert curves.main([str(swept), "--variant", "dense", "--window", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'big/softmoe'" in err[0] and "found: dense" in err[0] and "--window" in err[1]
