"""scripts/check_results.py on a tiny real sweep: a block written from runs matches a rerun of its sweep, a
changed number fails the check with a diff, provenance lines are not compared, bad input exits 2. And
scripts/learning_curves.py on the sweep's single-task runs: its medians are those of the runs' eval.csv."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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


@pytest.mark.parametrize("edit", ["prose", "block removed"])
def test_an_edit_made_while_the_runs_are_reported_is_kept(tiny_study, monkeypatch, capsys, edit):
    """--write puts its blocks into the file as it is when it writes, not as it was read minutes before: a
    sentence edited meanwhile stays; a block removed meanwhile is not written back (exit 1, one line)."""
    check = _script()
    page = tiny_study / f"race-{edit.replace(' ', '-')}.md"
    page.write_text("intro\n\n<!-- results: tiny.yaml -->\nold\n<!-- /results -->\n\nold prose\n")
    report_of = check.report_of

    def edited_meanwhile(runs):  # the edit lands while the report is being made
        text = page.read_text()
        page.write_text(text.replace("old prose", "new prose") if edit == "prose" else "intro only\n")
        return report_of(runs)

    monkeypatch.setattr(check, "report_of", edited_meanwhile)
    monkeypatch.chdir(tiny_study)
    code = check.main([page.name, "--write", "--only", "tiny.yaml", "--runs", "runs/tiny"])
    text = page.read_text()
    if edit == "prose":
        assert code == 0 and text.endswith("<!-- /results -->\n\nnew prose\n") and "\nold\n" not in text
        assert "| big/softmoe |" in text
    else:
        assert code == 1 and text == "intro only\n"
        assert "the block of tiny.yaml left" in capsys.readouterr().err


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



def test_a_docs_page_and_a_readme_summary_are_written_and_checked_from_one_rerun(tiny_study):
    """The full block in a docs page and its one-screen summary in the README come from the same runs; with no
    file named the check reads both, reruns the sweep once, and a changed number in the summary fails."""
    readme, page = tiny_study / "README.md", tiny_study / "docs" / "results.md"
    good = readme.read_text()
    page.parent.mkdir()
    try:
        page.write_text("# Full\n\n<!-- results: tiny.yaml -->\n<!-- /results -->\n")
        readme.write_text(good + "\n<!-- results: tiny.yaml summary -->\nold\n<!-- /results -->\n")
        written = _check(tiny_study, "--write", "--runs", "runs/tiny")
        assert written.returncode == 0, written.stdout + written.stderr
        assert "wrote the block of tiny.yaml (summary) in README.md" in written.stdout
        full, summary = page.read_text(), readme.read_text().rpartition("<!-- results: tiny.yaml summary -->")[2]
        assert "##### Dormant neurons" in full and "##### Dormant neurons" not in summary
        assert "   - " in full and "   - " not in summary  # the claims' comparisons stay on the docs page
        aggregates = full.split("##### Aggregate scores", 1)[1]
        row = [line for line in aggregates.splitlines() if line.startswith("| big/softmoe |")][0]
        variant, seeds, iqm = (c.strip() for c in row.strip("|").split("|")[:3])
        # one table, a column per env and setting: each variant's IQM [CI] as in the full block, nothing else
        table = [f"| {variant} | {seeds} | {iqm} |"]
        assert table[0] in summary.splitlines() and "| variant | seeds | cartpole-crl |" in summary
        assert "P(X > dense)" in full and "P(X > dense)" not in summary and "#### cartpole-crl" not in summary
        verdicts = [line for line in full.splitlines() if re.match(r"\d+\. \*\*", line)]
        assert verdicts and all(line in summary for line in verdicts)

        checked = _check(tiny_study)  # README.md and docs/*.md, one rerun of tiny.yaml for the three blocks
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.count("[check_results] rerunning tiny.yaml") == 1
        assert checked.stdout.count("matches what its command produces") == 3

        readme.write_text(readme.read_text().replace(table[0], table[0].replace("| big/softmoe | 2 |", "| big/softmoe | 3 |")))
        changed = _check(tiny_study, "--runs", "runs/tiny", "README.md")
        assert changed.returncode == 1 and "tiny.yaml (summary) in README.md: the block does NOT match" in changed.stdout
    finally:
        readme.write_text(good)
        page.unlink(missing_ok=True)
        page.parent.rmdir()

def _first_interval_row(text: str) -> tuple[int, re.Match]:
    """Index of the first table row with an ``x [lo, hi]`` cell whose interval is not a point, and that cell."""
    for row, line in enumerate(text.splitlines(keepends=True)):
        for match in re.finditer(r"(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]", line):
            if line.startswith("| ") and float(match.group(2)) < float(match.group(3)):
                return row, match
    raise AssertionError("no table cell with an interval")


def _with_interval(text: str, point: float, lo: float, hi: float) -> str:
    lines = text.splitlines(keepends=True)
    row, match = _first_interval_row(text)
    lines[row] = lines[row][:match.start()] + f"{point:.3f} [{lo:.3f}, {hi:.3f}]" + lines[row][match.end():]
    return "".join(lines)


def test_runs_on_another_cpu_are_compared_statistically(tiny_study):
    """Exact on the CPU capability the block records; on another one the tables' shape, text and integers must
    match and every interval must overlap the block's (the rules themselves: the test below)."""
    readme = tiny_study / "README.md"
    good = readme.read_text()
    capability = re.search(r"; CPU capability ([^;:]+)", good).group(1)  # the fresh runs record it
    assert capability == torch.backends.cpu.get_cpu_capability()
    other = good.replace(f"; CPU capability {capability}", "; CPU capability OTHER-CPU")
    _, match = _first_interval_row(good)
    point, lo, hi = (float(g) for g in match.groups())
    nudged = (lo + hi) / 2 if abs((lo + hi) / 2 - point) >= 0.001 else (lo + point) / 2  # the same interval
    try:
        readme.write_text(_with_interval(other, nudged, lo, hi))  # another CPU's noise within the interval
        done = _check(tiny_study, "--runs", "runs/tiny")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"statistically (these runs' CPU capability {capability} is not the block's OTHER-CPU" in done.stdout

        readme.write_text(_with_interval(good, nudged, lo, hi))  # the same CPU: compared exactly, so it fails
        done = _check(tiny_study, "--runs", "runs/tiny")
        assert done.returncode == 1 and f"compared exactly: CPU capability {capability}" in done.stdout
        done = _check(tiny_study, "--runs", "runs/tiny", "--statistical")  # asked for: another CPU model
        assert done.returncode == 0 and "statistically (--statistical" in done.stdout

        readme.write_text(_with_interval(other, hi + 5, hi + 4, hi + 6))  # an interval that moved away
        done = _check(tiny_study, "--runs", "runs/tiny")
        assert done.returncode == 1 and "compared statistically" in done.stdout
        assert "does not overlap the block's" in done.stdout
    finally:
        readme.write_text(good)


def _script():
    spec = importlib.util.spec_from_file_location("check_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_statistical_rules():
    check = _script()
    block = ["| variant | seeds | IQM [95% CI] | P(X > dense) [95% CI] |",
             "| dense | 5 | 0.538 [0.304, 0.758] | (baseline) |",
             "   - crl: IQM difference -0.109 [-0.342, 0.158], (dense 0.311, big 0.742) -> not supported"]
    same_shape = ["| variant | seeds | IQM [95% CI] | P(X > dense) [95% CI] |",
                  "| dense | 5 | 0.501 [0.290, 0.700] | (baseline) |",
                  "   - crl: IQM difference 0.020 [-0.300, 0.250], (dense 0.300, big 0.700) -> mixed"]
    failures, notes = check.statistical_differences(block, same_shape)
    assert failures == [] and len(notes) == 1 and "verdict changed" in notes[0]  # shown, not failed
    moved = [block[0], "| dense | 5 | 0.900 [0.800, 0.950] | (baseline) |", block[2]]
    (failure,) = check.statistical_differences(block, moved)[0]
    assert "0.900 [0.800, 0.950] does not overlap the block's 0.538 [0.304, 0.758]" in failure
    fewer_seeds = [block[0], "| dense | 4 | 0.538 [0.304, 0.758] | (baseline) |", block[2]]
    assert "differs beyond its numbers" in check.statistical_differences(block, fewer_seeds)[0][0]
    assert check.statistical_differences(block, block[:2])[0]  # a missing line
    stack = "> stack: moerl 0.1.0 @ abc; Python 3.11.7; torch 2.13.0+cpu; CPU capability AVX2; BLAS mkl 2024.2: 4 run(s)"
    assert check.capabilities(stack) == {"AVX2"}
    assert check.capabilities("> stack: moerl 0.1.0 @ abc; Python 3.11.7; torch 2.13.0+cpu: 4 run(s)") == {
        check.UNRECORDED}  # a block written before runs recorded their CPU: never compared exactly


def test_the_summary_is_one_table_of_iqm_per_setting():
    """Settings become columns (named by the env and its own options), variants rows; a variant missing from a
    setting gets '-', seed counts that differ by setting are listed per column, and a single-task section
    without aggregate scores gets no column; claims keep their headlines only."""
    check = _script()
    header = "| variant | seeds | IQM [95% CI] | Optimality gap [95% CI] | Mean [95% CI] | P(X > dense) [95% CI] |"
    envs = ["#### CartPole-v1 (single)", "", "##### Dormant neurons", "", "| variant | seeds | x |", "| dense | 3 | 1 |",
            "#### cartpole-crl (crl, env_kwargs.order=reverse)", "", "##### Aggregate scores", "", "intro line", "",
            header, "|---|---|---|---|---|---|", "| big/softmoe | 20 | 0.588 [0.455, 0.715] | 0.430 [0.358, 0.501] | x | y |",
            "| dense | 20 | 0.534 [0.415, 0.639] | 0.477 [0.420, 0.538] | x | (baseline) |", "",
            "##### Dormant neurons", "", "| dense | 20 | 0.443 [0.418, 0.469] | (baseline) |",
            "#### cartpole-mtrl (mtrl, ppo.shared_network=(default))", "", "##### Aggregate scores", "", header,
            "|---|---|---|---|---|---|", "| dense | 10 | 0.998 [0.986, 1.000] | 0.065 [0.035, 0.098] | x | (baseline) |"]
    claims = ["#### Claims of the paper, checked on these runs", "", "1. **Big beats.** Verdict: **unsettled**.",
              "   - cartpole-crl: big/softmoe vs dense: ... -> unsettled"]
    table, headlines = check.summary(envs, claims)
    assert table == ["#### IQM of the final normalised greedy return [95% CI]", "",
                     "| variant | seeds | cartpole-crl, order=reverse | cartpole-mtrl, ppo.shared_network=(default) |",
                     "|---|---|---|---|",
                     "| big/softmoe | 20 | 0.588 [0.455, 0.715] | - |",
                     "| dense | 20 / 10 | 0.534 [0.415, 0.639] | 0.998 [0.986, 1.000] |", ""]
    assert headlines == claims[:3]
    assert check.summary(envs[:6], []) == ([], [])  # nothing with aggregate scores: no table, no claims


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


def test_learning_curves_reads_raw_and_training_returns(tiny_study):
    """``--metric return`` reads eval.csv's greedy return, ``--metric train`` the TensorBoard training returns
    of the task, averaged over the window before the step read."""
    import csv

    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    def table(*args: str) -> dict[tuple[str, str], str]:
        done = subprocess.run([sys.executable, str(CURVES), "runs/tiny", "--at", "300", *args], cwd=tiny_study,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return {tuple(c.strip() for c in line.split("|")[1:3]): line for line in done.stdout.splitlines()[2:]}

    runs = [run for run in sorted((tiny_study / "runs" / "tiny").glob("*_dense-*"))
            if "fixed_task" in (run / "config.yaml").read_text()]
    raw = []
    for run in runs:
        with open(run / "eval.csv", newline="") as f:
            raw += [float(r["mean_return"]) for r in csv.DictReader(f)
                    if r["task"] == "cartpole-longheavy" and r["step"] == "300"]
    v = np.array(raw)
    assert f"{np.median(v):.2f} [{v.min():.2f}, {v.max():.2f}]" in table("--metric", "return")[("dense", "cartpole-longheavy")]

    trained = []
    for run in runs:
        events = EventAccumulator(str(run / "tb"), size_guidance={SCALARS: 0})
        events.Reload()
        points = [(e.step, e.value) for e in events.Scalars("train/return/cartpole-longheavy")]
        at = max(step for step, _ in points if step <= 300)
        trained.append(np.mean([value for step, value in points if at - 200 < step <= at]))
    v = np.array(trained)
    row = table("--metric", "train", "--window", "200")[("dense", "cartpole-longheavy")]
    assert f"{np.median(v):.2f} [{v.min():.2f}, {v.max():.2f}]" in row
    bad = subprocess.run([sys.executable, str(CURVES), "runs/tiny", "--window", "0"], cwd=tiny_study,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--window must be a positive" in bad.stderr


def test_study_cost_reads_each_batch_once(tiny_study):
    """scripts/study_cost.py: a batch's time is its members' largest train_seconds, counted once, spread over
    its env steps; a batch with a member not finished is left out, one whose member finished in a later batch
    is not."""
    import json
    import shutil

    script = SCRIPT.with_name("study_cost.py")
    runs = sorted((tiny_study / "runs" / "tiny").glob("*_s*"))
    by_leader: dict[str, list[dict]] = {}
    for run in runs:
        leader = json.loads((run / "status.json").read_text()).get("batch", {}).get("leader", run.name)
        by_leader.setdefault(leader, []).append(json.loads((run / "results.json").read_text()))
    seconds = sum(max(r["train_seconds"] for r in rs) for rs in by_leader.values())
    steps = sum(r["timesteps"] for rs in by_leader.values() for r in rs)
    done = subprocess.run([sys.executable, str(script), "runs/tiny"], cwd=tiny_study, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"All: {len(by_leader)} batches, {steps:,} member env steps, {seconds / 3600:.2f} core hours." in done.stdout
    dense = [r for rs in by_leader.values() for r in rs if r["arch"] == "dense"]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| cartpole: dense |"))
    assert f"| {sum(r['timesteps'] for r in dense):,} |" in row and f"| {dense[0]['parameters']:,} |" in row

    copy = tiny_study / "runs" / "partial"
    shutil.copytree(tiny_study / "runs" / "tiny", copy)
    try:
        member = next(run for run in sorted(copy.glob("*_s*")) if "batch" in (run / "status.json").read_text())
        shutil.rmtree(member)  # one member gone: its batch is no longer complete
        done = subprocess.run([sys.executable, str(script), "runs/partial"], cwd=tiny_study, capture_output=True,
                              text=True)
        assert done.returncode == 0 and "1 batch(es) left out" in done.stdout
        assert f"All: {len(by_leader) - 1} batches" in done.stdout
    finally:
        shutil.rmtree(copy)

    # a member trained again by a later batch (a sweep resumed after a stop) finishes there; its first batch
    # still counts, complete, and the run once
    copy = tiny_study / "runs" / "retrained"
    shutil.copytree(tiny_study / "runs" / "tiny", copy)
    try:
        member = next(run for run in sorted(copy.glob("*_s*"))
                      if json.loads((run / "status.json").read_text()).get("batch", {}).get("leader") not in
                      (None, run.name))
        status = json.loads((member / "status.json").read_text())
        status["batch"] = {"leader": member.name, "members": [member.name]}  # now a batch of its own
        (member / "status.json").write_text(json.dumps(status))
        done = subprocess.run([sys.executable, str(script), "runs/retrained"], cwd=tiny_study, capture_output=True,
                              text=True)
        assert done.returncode == 0 and " 0 batch(es) left out" in done.stdout
        assert f"All: {len(by_leader) + 1} batches, {steps:,} member env steps" in done.stdout
        assert f"runs/retrained: {len(runs)} runs in " in done.stdout
    finally:
        shutil.rmtree(copy)
    bad = subprocess.run([sys.executable, str(script), "nowhere"], cwd=tiny_study, capture_output=True, text=True)
    assert bad.returncode == 2 and "'nowhere' does not exist" in bad.stderr


def test_learning_curves_reads_plain_gymnasium_runs_and_labels_ppo(tmp_path):
    """A run on a plain Gymnasium env is single-task (its one task); PPO runs are labelled ``(ppo)``, and
    ``(ppo, shared)`` with one network for actor and critic, so the two never merge into one row."""
    import csv

    from moerl.cli import main

    small = ["--env", "CartPole-v1", "--algo", "ppo", "--timesteps", "256", "--set", "ppo.n_steps=32",
             "--set", "eval.freq=128", "--set", "eval.episodes=2", "--set", "eval.final_episodes=2",
             "--no-progress", "-q", "--logdir", str(tmp_path / "runs")]
    assert main(["train", *small, "--seed", "0", "--run-name", "sep"]) == 0
    assert main(["train", *small, "--seed", "0", "--run-name", "one", "--set", "ppo.shared_network=true"]) == 0
    done = subprocess.run([sys.executable, str(CURVES), "runs", "--at", "256", "--metric", "return"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {("dense (ppo)", "CartPole-v1"), ("dense (ppo, shared)", "CartPole-v1")}  # the env's one task
    for run, variant in (("sep", "dense (ppo)"), ("one", "dense (ppo, shared)")):
        with open(tmp_path / "runs" / run / "eval.csv", newline="") as f:
            last = [float(r["mean_return"]) for r in csv.DictReader(f) if r["step"] == "256"]
        assert f"{last[0]:.2f} [{last[0]:.2f}, {last[0]:.2f}]" in rows[(variant, "CartPole-v1")]
    # `moerl report`'s summary rows are variants too: the two runs of one arch are two rows, not one pooled
    from moerl.report import report

    text, _ = report([str(tmp_path / "runs")])
    summary = text[text.index("| env | variant | seeds |"):].split("\n\n")[0].splitlines()[2:]
    cells = sorted(tuple(c.strip() for c in line.split("|")[1:4]) for line in summary)
    assert cells == [("CartPole-v1", "dense (ppo) [ppo.shared_network=False]", "1"),
                     ("CartPole-v1", "dense (ppo) [ppo.shared_network=True]", "1")]


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """A study of two sweep files (seeds 0-1 and 2-3 of the same grid, as the seed-001 study's halves), run
    once, with a docs page whose one block spans both."""
    root = tmp_path_factory.mktemp("check-two")
    for name, seeds in (("a", "0-1"), ("b", "2-3")):
        (root / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "logdir": f"runs/{name}", "seeds": seeds, "base": TINY,
            "settings": [{"env": "cartpole-crl"}],
            "variants": [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]}))
        done = subprocess.run([sys.executable, "-m", "moerl", "sweep", f"{name}.yaml"], cwd=root,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    (root / "page.md").write_text("# Study\n\n<!-- results: a.yaml+b.yaml -->\n<!-- /results -->\n")
    written = _check(root, "page.md", "--write", "--only", "a.yaml+b.yaml", "--runs", "runs/a", "--runs", "runs/b")
    assert written.returncode == 0, written.stdout + written.stderr
    return root


def test_a_block_of_two_sweeps_reports_both_and_a_rerun_of_both_matches(two_sweeps):
    text = (two_sweeps / "page.md").read_text()
    assert "`moerl sweep a.yaml` and `moerl sweep b.yaml`" in text
    assert "--only a.yaml+b.yaml --runs runs/a --runs runs/b`" in text  # the command that writes it
    # four seeds per variant: both sweeps' runs are in the one report
    assert re.search(r"\| dense \| 4 \|", text) and re.search(r"\| big/softmoe \| 4 \|", text), text
    same = _check(two_sweeps, "page.md")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "rerunning a.yaml" in same.stdout and "rerunning b.yaml" in same.stdout
    assert "matches what its command produces, exactly" in same.stdout


def test_a_rerun_of_one_variant_is_compared_with_the_kept_runs(two_sweeps, tmp_path):
    import shutil

    kept = tmp_path / "kept"
    for name in ("a", "b"):
        shutil.copytree(two_sweeps / "runs" / name, kept / name)
    args = ("page.md", "--only", "a.yaml+b.yaml", "--runs", str(kept / "a"), "--runs", str(kept / "b"))
    done = _check(two_sweeps, *args, "--rerun-variant", "dense")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("every run equal bit for bit") == 2  # a.yaml's and b.yaml's dense runs
    assert "big" not in "".join(line for line in done.stdout.splitlines() if "rerunning" in line)
    assert "matches what its command produces, exactly" in done.stdout

    # a kept run whose evaluation differs from what the code computes now fails the check
    run = next((kept / "b").glob("*_dense-*_s3"))
    (run / "eval.csv").write_text((run / "eval.csv").read_text().replace(",1\n", ",2\n", 1))
    done = _check(two_sweeps, *args, "--rerun-variant", "dense")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 2 runs differ" in done.stdout and "the numerics changed since they ran" in done.stdout

    # an empty folder of kept runs: nothing to compare with, so nothing is trained
    (tmp_path / "none").mkdir()
    done = _check(two_sweeps, "page.md", "--only", "a.yaml+b.yaml", "--runs", str(kept / "a"), "--runs",
                  str(tmp_path / "none"), "--rerun-variant", "dense")
    assert done.returncode == 1 and "no finished runs in " in done.stdout and "rerunning the dense runs of b" not in \
        done.stdout


@pytest.mark.parametrize("args, message", [
    (["--rerun-variant", "dense"], "--rerun-variant needs --runs"),
    (["--runs", "runs/a"], "--runs names 1 folders for the 2 sweep files of 'a.yaml+b.yaml'"),
    (["--runs", "runs/a", "--runs", "runs/b", "--rerun-variant", "wide"],
     "--rerun-variant 'wide' is not a variant of 'a.yaml' (its variants: dense, big:softmoe)"),
])
def test_bad_study_checks_exit_2_with_one_line(two_sweeps, args, message):
    before = (two_sweeps / "page.md").read_text()
    done = _check(two_sweeps, "page.md", "--only", "a.yaml+b.yaml", *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (two_sweeps / "page.md").read_text() == before


def test_a_study_kept_in_the_repository_is_checked_from_its_kept_runs(two_sweeps, tmp_path):
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(two_sweeps, root, ignore=shutil.ignore_patterns("runs"))
    (root / "study").mkdir()
    (root / "study" / "COMMIT").write_text("abc123\n")
    for name in ("a", "b"):  # the sweeps' names: where study_archive keeps their runs
        shutil.copytree(two_sweeps / "runs" / name, root / "study" / "abc123" / name)
    done = _check(root, "page.md")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "are kept in study/abc123/a, study/abc123/b" in done.stdout
    assert done.stdout.count("every run equal bit for bit") == 2  # the first variant, dense, rerun per sweep
    assert "rerunning the dense runs of a.yaml" in done.stdout and "rerunning a.yaml into" not in done.stdout
    assert "matches what its command produces, exactly" in done.stdout

    # a study whose second sweep has not started: its block holds the first's runs, and nothing is rerun for it
    shutil.rmtree(root / "study" / "abc123" / "b")
    (root / "empty").mkdir()
    written = _check(root, "page.md", "--write", "--only", "a.yaml+b.yaml", "--runs", "study/abc123/a", "--runs",
                     "empty")
    assert written.returncode == 0, written.stdout + written.stderr
    assert re.search(r"\| dense \| 2 \|", (root / "page.md").read_text())
    done = _check(root, "page.md")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no runs of b.yaml are kept yet" in done.stdout and done.stdout.count("every run equal bit for bit") == 1
    assert "of b.yaml" not in done.stdout.replace("no runs of b.yaml", "")
    assert "matches what its command produces, exactly" in done.stdout

    # a second block over one of the same sweep files (a README summary beside a docs page): its runs rerun once
    with (root / "page.md").open("a") as f:
        f.write("\n<!-- results: a.yaml summary -->\n<!-- /results -->\n")
    written = _check(root, "page.md", "--write", "--only", "a.yaml", "--runs", "study/abc123/a")
    assert written.returncode == 0, written.stdout + written.stderr
    done = _check(root, "page.md")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("rerunning the dense runs of a.yaml") == 1
    assert done.stdout.count("matches what its command produces, exactly") == 2
