"""What ``moerl train`` prints, for every family, through real short CLI runs in a subprocess (stdout and
stderr are pipes, not a terminal: the plain-lines mode a log file gets).

Checked: the plain progress lines carry the quantities that matter; the whole output stays small;
``--quiet`` prints only the run directory; ``--verbose`` adds the evaluation lines; the summary's numbers
are those of the run's results.json, and "avg perf" is the mean of the column printed beside it.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moerl.runs.console import Console

MOE = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "800",
       "--set", "env_kwargs.block_steps=200", "--set", "eval.freq=400", "--set", "eval.episodes=2",
       "--set", "eval.final_episodes=2", "--set", "dqn.learning_starts=200", "--set", "network.hidden=16"]
ROUTING = ["--env", "digits-mtl", "--algo", "wpl", "--epochs", "2", "--set", "samples_per_epoch=256",
           "--set", "channels=4", "--set", "hidden=8"]
MASKED = ["--env", "digits-split", "--arch", "masked-moe", "--mask", "lu", "--experts", "2", "--epochs", "2",
          "--set", "batch_size=64"]
#: A short run's whole output (progress, summary) stays under this many bytes in plain mode.
MAX_BYTES = 6000


def train(tmp_path: Path, *args: str) -> tuple[str, str, list[Path]]:
    proc = subprocess.run([sys.executable, "-m", "moerl", "train", *args, "--logdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = [Path(line.split(": ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("run directory: ")]
    assert runs
    return proc.stdout, proc.stderr, runs


def summary_rows(out: str, first: str) -> dict[str, list[str]]:
    """The rows of the summary table whose header starts with ``first``: first cell -> the other cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    rows = {}
    for line in lines[start + 2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 2 or not re.fullmatch(r"[-\d.]+", cells[-1]):
            break
        rows[cells[0]] = cells[1:]
    return rows


def test_moe_dqn_plain_lines_summary_and_bounded_size(tmp_path):
    out, err, (run,) = train(tmp_path, *MOE)
    res = json.loads((run / "results.json").read_text())
    progress = [line for line in err.splitlines() if line.startswith("cartpole-crl big/softmoe s0:")]
    assert 2 <= len(progress) <= 4  # the start line, at most one per 30 s, the last line
    last = progress[-1]
    for needle in ("800/800 steps (100%)", "steps/s", "ETA", "return(last 10)", "eval@800", "task "):
        assert needle in last, (needle, last)
    assert "eval @ step" not in err  # the evaluation lines are --verbose's
    assert len((out + err).encode()) < MAX_BYTES
    rows = summary_rows(out, "task ")
    assert set(rows) == set(res["final_eval"])
    for task, cells in rows.items():
        assert cells[0] == f'{res["final_eval"][task]["mean_return"]:.2f}'
        assert cells[3] == f'{res["continual"]["final_normalized"][task]:.3f}'
    avg_text = re.search(r"avg perf ([\d.]+)", out).group(1)
    assert avg_text == f'{res["continual"]["average_performance"]:.3f}'
    avg = float(avg_text)
    column = [float(cells[3]) for cells in rows.values()]
    assert avg == pytest.approx(sum(column) / len(column), abs=0.001)  # the mean of the column beside it
    assert "how:" in out and "avg perf = mean over tasks of 'last eval norm'" in out


def test_moe_dqn_quiet_prints_only_the_run_directory(tmp_path):
    out, err, runs = train(tmp_path, *MOE, "--quiet")
    assert out.splitlines() == [f"run directory: {runs[0]}"]
    assert err == ""


def test_moe_dqn_verbose_adds_each_evaluation_and_moe_metrics(tmp_path):
    out, err, (run,) = train(tmp_path, *MOE, "--verbose", "--set", "logging.metrics_interval=200")
    evals = re.findall(r"^eval @ step ([\d,]+): ", err, re.M)
    assert evals == ["0", "400", "800"]  # every row step of eval.csv, as it happens
    steps = {line.split(",")[0] for line in (run / "eval.csv").read_text().splitlines()[1:]}
    assert steps == {"0", "400", "800"}
    assert re.search(r"^moe @ step [\d,]+: .*router/big/entropy", err, re.M)


def test_batched_engine_one_view_for_the_seeds_and_a_summary_per_seed(tmp_path):
    out, err, runs = train(tmp_path, *MOE, "--seeds", "0-1", "--engine", "batched", "--verbose")
    assert len(runs) == 2
    assert "return(last 10, median of 2 seeds)" in err
    assert re.search(r"^eval @ step 800 \(median of 2 seeds\): ", err, re.M)
    assert len((out + err).encode()) < MAX_BYTES
    seeds = summary_rows(out, "seed ")
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        cells = seeds[str(res["seed"])]
        per_task = [float(c) for c in cells[: len(res["continual"]["final_normalized"])]]
        avg = float(cells[len(per_task)])
        assert cells[len(per_task)] == f'{res["continual"]["average_performance"]:.3f}'
        assert avg == pytest.approx(sum(per_task) / len(per_task), abs=0.001)


def test_routing_plain_lines_verbose_and_summary(tmp_path):
    out, err, (run,) = train(tmp_path, *ROUTING, "--verbose")
    res = json.loads((run / "results.json").read_text())
    assert err.splitlines()[0].startswith("routing: building digits-mtl")  # a line at once, before the data
    last = [line for line in err.splitlines() if line.startswith("digits-mtl wpl s0:")][-1]
    for needle in ("(100%)", "batches/s", "epoch 2/2", "loss ", "test acc@2"):
        assert needle in last, (needle, last)
    assert len((out + err).encode()) < MAX_BYTES
    rows = summary_rows(out, "task ")
    assert [c[0] for c in rows.values()] == [f"{a:.4f}" for a in res["test_accuracy_per_task"]]
    assert re.search(r"mean test accuracy ([\d.]+)", out).group(1) == f'{res["test_accuracy"]:.4f}'
    assert re.findall(r"^epoch (\d): train loss [\d.]+ \| test accuracy mean [\d.]+ \| 0-vs-rest", err, re.M) == ["1", "2"]


def test_masked_experts_plain_lines_verbose_and_summary(tmp_path):
    out, err, (run,) = train(tmp_path, *MASKED, "--verbose")
    res = json.loads((run / "results.json").read_text())
    assert err.splitlines()[0].startswith("masked-experts: building digits-split")
    assert re.findall(r"^epoch (\d) \[joint \d\]: train loss", err, re.M) == ["1", "2"]
    last = [line for line in err.splitlines() if line.startswith("digits-split masked-moe s0:")][-1]
    for needle in ("2/2 epochs (100%)", "val acc", "train acc", "loss"):
        assert needle in last, (needle, last)
    assert len((out + err).encode()) < MAX_BYTES
    rows = summary_rows(out, "dataset ")
    for name, cells in rows.items():
        split = res["test"] if name == "mean" else res["test"]["datasets"][name]
        expected = split["mean_accuracy"] if name == "mean" else split["accuracy"]
        assert cells[2] == f"{expected:.4f}"


def test_quiet_and_verbose_together_are_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "moerl", "train", *MOE, "-q", "-v", "--logdir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_plain_lines_are_bounded_in_frequency_and_the_last_always_comes():
    stream = io.StringIO()
    console = Console(stream=stream, out=io.StringIO(), plain_seconds=3600.0)
    console.start("run", 10_000, "step")
    for i in range(1, 10_001):
        console.update(i, {"return": f"{i:.1f}"})
    console.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("run: 10,000/10,000 steps (100%)")
    assert "return 10000.0" in lines[-1]
