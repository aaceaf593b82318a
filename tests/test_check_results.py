"""scripts/check_results.py on a tiny real sweep: a block written from runs matches a rerun of its sweep, a
changed number fails the check with a diff, provenance lines are not compared, bad input exits 2. And
scripts/learning_curves.py on the sweep's single-task runs: its medians are those of the runs' eval.csv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_results.py"
CURVES = Path(__file__).resolve().parents[1] / "scripts" / "learning_curves.py"
TINY = {"timesteps": 600, "eval.freq": 150, "eval.episodes": 1, "eval.final_episodes": 2,
        "env_kwargs.block_steps": 150, "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8,
        "checkpoint.every": 0}


def _check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A 2-variant, 2-seed CRL sweep, run once, and a README whose block was written from its runs."""
    root = tmp_path_factory.mktemp("check")
    (root / "tiny.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "logdir": "runs/tiny", "seeds": "0-1", "base": TINY,
        "settings": [{"env": "cartpole-crl"}, {"env": "cartpole-crl", "env_kwargs.fixed_task": 1, "timesteps": 300}],
        "variants": [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]}))
    done = subprocess.run([sys.executable, "-m", "moerl", "sweep", "tiny.yaml"], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (root / "README.md").write_text("# Results\n\nintro\n\n<!-- results: tiny.yaml -->\nold\n<!-- /results -->\n\nend\n")
    written = _check(root, "--write", "--runs", "runs/tiny")
    assert written.returncode == 0, written.stdout + written.stderr
    return root


def test_the_written_block_holds_the_reports_tables_and_keeps_the_rest(tiny_study):
    text = (tiny_study / "README.md").read_text()
    assert text.startswith("# Results\n\nintro\n\n<!-- results: tiny.yaml -->\n") and text.endswith("<!-- /results -->\n\nend\n")
    assert "\nold\n" not in text
    for part in ("#### cartpole-crl (crl)", "##### Aggregate scores", "##### Continual metrics", "| dense |",
                 "| big/softmoe |", "#### Claims of the paper", "> stack: moerl "):
        assert part in text, part
    assert "![" not in text  # figures are not part of the digest


def test_a_rerun_of_the_sweep_matches_the_block_and_a_changed_number_fails(tiny_study):
    same = _check(tiny_study)  # reruns tiny.yaml from nothing in a temporary folder
    assert same.returncode == 0, same.stdout + same.stderr
    assert "matches what its command produces" in same.stdout

    readme = tiny_study / "README.md"
    good = readme.read_text()
    try:
        lines = good.splitlines(keepends=True)
        row = next(i for i, line in enumerate(lines) if line.startswith("| dense |") and "[" in line)
        lines[row] = lines[row].replace("0.", "9.", 1) if "0." in lines[row] else lines[row].replace("|", "| 7", 2)
        readme.write_text("".join(lines))
        changed = _check(tiny_study, "--runs", "runs/tiny")
        assert changed.returncode == 1
        assert "does NOT match" in changed.stdout and "+| dense |" in changed.stdout

        # the stack lines name provenance (a later commit), they are not compared
        readme.write_text(good.replace("> stack: moerl ", "> stack: moerl other-commit "))
        assert _check(tiny_study, "--runs", "runs/tiny").returncode == 0
    finally:
        readme.write_text(good)


@pytest.mark.parametrize("args, message", [
    (["missing.md"], "'missing.md' is not a file"),
    (["--write"], "--write needs --runs"),
    (["--runs", "nowhere"], "--runs 'nowhere' is not a folder"),
    (["--only", "other.yaml"], "has no block of 'other.yaml'"),
])
def test_bad_input_exits_2_with_one_line(tiny_study, args, message):
    before = (tiny_study / "README.md").read_text()
    done = _check(tiny_study, *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (tiny_study / "README.md").read_text() == before


def test_learning_curves_reads_each_single_task_run_on_its_own_task(tiny_study):
    import csv

    import numpy as np

    done = subprocess.run([sys.executable, str(CURVES), "runs/tiny", "--at", "150,300"], cwd=tiny_study,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {("dense", "cartpole-longheavy"), ("big/softmoe", "cartpole-longheavy")}  # fixed_task 1
    for run_glob, variant in (("*_dense-*", "dense"), ("*_big_softmoe-*", "big/softmoe")):
        finals = []
        for run in sorted((tiny_study / "runs" / "tiny").glob(run_glob)):
            if "fixed_task" not in (run / "config.yaml").read_text():
                continue
            with open(run / "eval.csv", newline="") as f:
                finals += [float(r["normalized"]) for r in csv.DictReader(f)
                           if r["task"] == "cartpole-longheavy" and r["step"] == "300"]
        assert len(finals) == 2
        v = np.array(finals)
        assert f"{np.median(v):.2f} [{v.min():.2f}, {v.max():.2f}]" in rows[(variant, "cartpole-longheavy")]
    bad = subprocess.run([sys.executable, str(CURVES), "runs/tiny", "--at", "x"], cwd=tiny_study,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--at 'x'" in bad.stderr
