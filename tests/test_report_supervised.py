"""``moerl report`` over masked-expert and routing runs (real runs on the tiny digits suites): seeds of one
config form a variant whose cells are the mean and 95% t-interval of the per-seed numbers; configs that
differ are told apart; the vision grid's ``--seeds`` runs every row per seed and reports them through the
same code."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from scipy import stats

from moerl.cli import main
from moerl.masked import grid as vision_grid

torch.set_num_threads(1)
ROUTING_FAST = ["--set", "samples_per_epoch=256", "--set", "channels=4", "--set", "hidden=8", "--no-progress"]


def _cell(text: str) -> tuple[float, float, float]:
    mean, lo, hi = re.fullmatch(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", text.strip()).groups()
    return float(mean), float(lo), float(hi)


def _rows(markdown: str, first_col_prefix: str) -> list[list[str]]:
    """Rows of the variants tables (not the per-seed tables below them) whose first cell starts so."""
    rows, per_seed = [], False
    for line in markdown.splitlines():
        per_seed = (per_seed or line.startswith("Per seed:")) and not line.startswith("## ")
        if not per_seed and line.startswith(f"| {first_col_prefix}"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("supervised")
    for seed in (0, 1, 2):
        assert main(["train", "--env", "digits-mtl", "--algo", "wpl", "--epochs", "1", "--seed", str(seed),
                     "--logdir", str(root / "routing"), *ROUTING_FAST]) == 0
    for seed in (0, 1):
        assert main(["train", "--env", "digits-mtl", "--algo", "task-specific-all-fc", "--epochs", "1", "--seed",
                     str(seed), "--logdir", str(root / "routing"), *ROUTING_FAST]) == 0
    for seed in (0, 1):
        assert main(["train", "--env", "digits-split", "--arch", "masked-moe", "--mask", "lu", "--experts", "2",
                     "--epochs", "1", "--seed", str(seed), "--logdir", str(root / "vision"), "--no-progress",
                     "--set", "batch_size=64"]) == 0
    (root / "routing" / "notes.md").write_text("not a run")
    return root


def test_routing_variants_are_seed_means_with_t_intervals(runs, capsys):
    capsys.readouterr()
    assert main(["report", str(runs / "routing")]) == 0
    out = capsys.readouterr()
    assert "## routing runs" in out.out and "notes.md" in out.err  # a non-run is named, not fatal
    results = {p.name: json.loads((p / "results.json").read_text()) for p in (runs / "routing").iterdir()
               if p.is_dir()}
    rows = {r[0]: r for r in _rows(out.out[:out.out.index("Test accuracy after")], "digits-mtl_")}
    wpl = next(r for label, r in rows.items() if "algo=wpl" in label)
    baseline = next(r for label, r in rows.items() if "algo=task-specific-all-fc" in label)
    assert wpl[1] == "3" and wpl[2] == "0, 1, 2" and baseline[1] == "2"
    for row, algo in ((wpl, "_wpl-"), (baseline, "_task-specific-all-fc-")):
        accs = [r["test_accuracy"] for name, r in sorted(results.items()) if algo in name]
        mean, lo, hi = _cell(row[3])
        half = stats.t.ppf(0.975, len(accs) - 1) * np.std(accs, ddof=1) / np.sqrt(len(accs))
        assert mean == pytest.approx(np.mean(accs), abs=6e-4)
        assert (lo, hi) == (pytest.approx(np.mean(accs) - half, abs=6e-4), pytest.approx(np.mean(accs) + half, abs=6e-4))
    assert len({r["test_accuracy"] for n, r in results.items() if "_task-specific" in n}) == 2  # a real interval
    assert baseline[5] == "-" and wpl[5] != "-"  # a baseline has no routes: its route cells say so
    table2 = out.out[out.out.index("Table 2 layout"):out.out.index("Per seed:")]
    (row,) = [r for r in _rows(table2, "digits-mtl_") if "algo=task-specific-all-fc" in r[0]]
    epoch1 = [r["accuracy_by_epoch"]["1"] for n, r in sorted(results.items()) if "_task-specific" in n]
    assert "| variant | epoch 1 |" in table2 and _cell(row[1])[0] == pytest.approx(np.mean(epoch1), abs=6e-4)
    assert row[-1] == "-"  # the paper has no digits suite: no paper number beside it


def test_report_folder_holds_the_routing_figures(runs, tmp_path):
    """``--out DIR`` writes one learning-curve figure per dataset and the first seed's routing map and
    policy evolution of each router variant (copies of the run's own plots); report.md shows every one."""
    out = tmp_path / "rep"
    assert main(["report", str(runs / "routing"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "routing-digits-mtl-accuracy.png" in images
    maps = [name for name in images if name.endswith("routing_map.png")]
    assert len(maps) == 1 and "wpl" in maps[0] and "-s0-" in maps[0]  # the router variant only, its seed 0
    wpl_s0 = next(p for p in (runs / "routing").iterdir() if p.is_dir() and "_wpl-" in p.name and p.name.endswith("_s0"))
    assert (out / maps[0]).read_bytes() == (wpl_s0 / "routing_map.png").read_bytes()
    assert all((out / name).is_file() and (out / name).stat().st_size > 0 for name in images)
    assert sorted(p.name for p in out.iterdir()) == sorted({"report.md", *images})


def test_the_paper_column_holds_table_2_for_the_env_algo_and_mode(tmp_path):
    """The paper's numbers sit beside a variant by (env, algo, mode): MNIST-MTL beside mnist-mtl, CIFAR-MTL
    (named as other data) beside fashion-5way-mtl, the recursive WPL row for mode=recursive, none else."""
    from moerl.runs.supervised_report import SupervisedRun, Variant, _paper_cell

    def cell(env: str, algo: str, epochs: list[int], **extra) -> str:
        run = SupervisedRun(tmp_path, "routing", {"env": env, "algo": algo, **extra}, {})
        return _paper_cell(Variant("routing", "v", [run]), epochs)

    assert cell("mnist-mtl", "wpl", [1, 5, 10, 20]) == "90/90/98/99 (MNIST-MTL)"
    assert cell("mnist-mtl", "task-specific-1-fc", [1, 100]) == "90/95 (MNIST-MTL)"
    assert cell("fashion-5way-mtl", "q-tabular", [1, 5, 10, 20]) == "20/36/47/50 (CIFAR-MTL, other data)"
    assert cell("fashion-5way-mtl", "wpl", [20], mode="recursive") == "48 (CIFAR-MTL, other data)"
    assert cell("fashion-5way-mtl", "wpl", [20]) == "58 (CIFAR-MTL, other data)"
    assert cell("mnist-mtl", "q-tabular", [1]) == "-"  # the paper ran routers only on CIFAR-MTL
    assert cell("fashion-mtl", "wpl", [1]) == "-"  # no paper dataset stands beside it


def test_masked_expert_runs_and_a_mixed_folder(runs, capsys, tmp_path):
    out_dir = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out_dir)]) == 0
    text = (out_dir / "report.md").read_text()
    assert "## masked-experts runs" in text and "## routing runs" in text
    (row,) = _rows(text, "digits-split_masked-moe")[:1]
    accs = [json.loads((p / "results.json").read_text())["test"]["mean_accuracy"]
            for p in sorted((runs / "vision").iterdir())]
    assert row[1] == "2" and _cell(row[3])[0] == pytest.approx(np.mean(accs), abs=6e-4)
    assert _cell(row[6])[0] == pytest.approx(np.mean(
        [json.loads((p / "results.json").read_text())["test"]["routing"]["purity"]
         for p in sorted((runs / "vision").iterdir())]), abs=6e-4)


def test_vision_grid_seeds(tmp_path, capsys):
    out = tmp_path / "report" / "grid.md"
    small = ["epochs=1", "max_train=300", "max_val=100", "max_test=100"]
    vision_grid.run_grid(out, tmp_path / "runs", ["G0", "G4"], small, seeds=[0, 1])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["G0_s0", "G0_s1", "G4_s0", "G4_s1"]
    text = out.read_text()
    section = text[text.index("### Every row"):text.index("Per seed:")]
    rows = {r[0].split(" ")[0]: r for r in _rows(section, "G")}
    assert rows["G4"][1] == "2" and rows["G4"][2] == "0, 1"
    seeds = [json.loads((tmp_path / "runs" / f"G4_s{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["config"]["seed"] for r in seeds] == [0, 1]
    assert _cell(rows["G4"][3])[0] == pytest.approx(np.mean([r["test"]["mean_accuracy"] for r in seeds]), abs=6e-4)
    capsys.readouterr()
    assert vision_grid.main(["--seeds", "2-1", "--only", "G0", "--logdir", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "bad").exists()


def test_routing_seeds_script_makes_runs_that_report_and_resumes(tmp_path):
    """scripts/routing_seeds.py: one run directory per (algo, seed), kept when finished (a rerun trains
    nothing); moerl report reads them. (A stopped run is continued with `moerl train --resume`, tested
    with the routing family in tests/test_routing_resume.py.)"""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "routing_seeds.py"
    bad = subprocess.run([sys.executable, str(script), "--algos", "wpl,bogus", "--logdir", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'bogus'" in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before any run started
    cmd = [sys.executable, str(script), "--env", "digits-mtl", "--epochs", "1", "--samples-per-epoch", "256",
           "--seeds", "0-1", "--algos", "wpl,task-specific-1-fc", "--logdir", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["digits-mtl_task-specific-1-fc_s0", "digits-mtl_task-specific-1-fc_s1", "digits-mtl_wpl_s0",
                     "digits-mtl_wpl_s1"]
    wpl = json.loads((tmp_path / "digits-mtl_wpl_s1" / "results.json").read_text())
    assert wpl["seed"] == 1 and wpl["algo"] == "wpl"
    before = {p.name: (p / "results.json").stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("finished before, kept") == 4
    assert {p.name: (p / "results.json").stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert main(["report", str(tmp_path)]) == 0
