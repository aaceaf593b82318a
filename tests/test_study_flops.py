"""``scripts/study_flops.py``: a DQN sweep's counted FLOPs. Checked on a tiny sweep against an update counted
by hand (dense: the layers' multiply-adds, forward and backward, and the target's forward) and against its own
sum over jobs; a non-DQN sweep is refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "study_flops.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_a_dense_update_is_counted_as_its_matrix_products_and_jobs_sum(tmp_path):
    sweep = {"name": "tiny", "seeds": "0-2", "base": {"env": "cartpole-mtrl", "timesteps": 1000,
                                                      "dqn.learning_starts": 200, "dqn.batch_size": 16,
                                                      "dqn.train_freq": 4, "dqn.gradient_steps": 2,
                                                      "network.hidden": 8},
             "variants": [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
    done = _run("s.yaml", "--tflops", "1", "--out", "f.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "f.json").read_text())
    dense = next(r for r in out["rows"] if "_dense" in r["job"])
    # dense: in 8 (4 state + 4 task one-hot) -> 8 -> 8 -> 2 actions; a linear layer's forward is 2 x in x out
    # FLOPs per sample, its backward twice that (input and weight gradients; the first layer's input gradient
    # is not needed, and torch's counter still counts what autograd computes)
    forward = 2 * (8 * 8 + 8 * 8 + 8 * 2)
    assert dense["act_flops"] == forward
    assert 16 * (2 * forward) <= dense["update_flops"] <= 16 * (4 * forward)  # target + online fwd + bwd
    updates = (1000 - 200) // 4 * 2
    assert dense["flops"] == 3 * (updates * dense["update_flops"] + 1000 * dense["act_flops"])
    big = next(r for r in out["rows"] if "_big_" in r["job"])
    assert big["update_flops"] > 3 * dense["update_flops"]  # four experts
    assert out["total_flops"] == sum(r["flops"] for r in out["rows"])
    assert f"{out['total_flops'] / 1e12 / 3600:,.1f} GPU-hours" in done.stdout


def test_a_ppo_sweep_is_refused_in_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "p", "seeds": "0", "base": {
        "env": "cartpole-mtrl", "algo": "ppo", "timesteps": 512, "ppo.n_steps": 32}}))
    done = _run("p.yaml", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "is not DQN" in done.stderr, done.stderr
