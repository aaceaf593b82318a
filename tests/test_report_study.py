"""``moerl report``'s study report: numbers equal rliable's, figures are written, claims follow the data, older
run directories still report, bad input leaves nothing, and the new run files change nothing that trains."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from moerl.cli import main

TASKS = ["cartpole-default", "cartpole-longheavy", "cartpole-lowgrav", "cartpole-mirror"]
BLOCK = 1000


def _config(arch: str, router: str | None, seed: int, order: str = "sequential", env: str = "cartpole-crl") -> dict:
    env_kwargs = {} if order == "sequential" else {"order": order}
    return {"family": "moe-dqn", "env": env, "env_kwargs": env_kwargs, "timesteps": 4 * BLOCK,
            "seed": seed, "device": "cpu", "engine": "sb3",
            "network": {"arch": arch, "router": router or "softmoe", "experts": 4, "hidden": 16},
            "dqn": {"learning_rate": 0.001}, "eval": {"freq": 500, "episodes": 2, "reference_runs": {}},
            "logging": {"metrics_interval": 250, "log_interval": 4}, "checkpoint": {"every": 1000}}


def make_run(root: Path, name: str, arch: str, router: str | None, seed: int, finals: list[float],
             dormant: float = 0.3, new_files: bool = True, order: str = "sequential",
             env: str = "cartpole-crl") -> Path:
    """A finished run directory with known final normalised scores (one per task), written by hand."""
    run = root / name
    (run / "tb").mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "finished", "family": "moe-dqn", "seed": seed}))
    (run / "config.yaml").write_text(yaml.safe_dump(_config(arch, router, seed, order, env)))
    names = TASKS if order == "sequential" else TASKS[::-1]
    schedule = [{"block": i, "cycle": 0, "task_id": TASKS.index(t), "task_name": t, "start_step": i * BLOCK}
                for i, t in enumerate(names)]
    (run / "schedule.json").write_text(json.dumps({"schedule": schedule, "block_steps": BLOCK}))
    steps = range(0, 4 * BLOCK + 1, 500)
    with (run / "eval.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "task", "mean_return", "std_return", "normalized", "episodes"])
        for step in steps:
            for t, final in zip(TASKS, finals, strict=True):
                v = final * step / (4 * BLOCK)
                w.writerow([step, t, 500 * v, 1.0, v, 2])
    if new_files:
        with (run / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "key", "value"])
            for step in range(250, 4 * BLOCK + 1, 250):
                w.writerow([step, "moe/dormant/tau0.1/all", dormant * step / (4 * BLOCK)])
        if router is not None:
            with (run / "eval_usage.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "task", "layer", "expert", "usage"])
                for step in steps:
                    for i, t in enumerate(TASKS):
                        for e in range(4):
                            w.writerow([step, t, "big", e, 0.7 if e == i else 0.1])
    results = {"env": env, "env_id": "moerl/CartPole-CRL-v0", "arch": arch,
               "router": router, "seed": seed, "timesteps": 4 * BLOCK, "engine": "sb3",
               "final_eval": {t: {"mean_return": 500 * v, "std_return": 1.0, "normalized": v, "episodes": 2}
                              for t, v in zip(TASKS, finals, strict=True)},
               "continual": {"average_performance": float(np.mean(finals)), "mean_forgetting_end_of_block": 0.1}}
    (run / "results.json").write_text(json.dumps(results))
    return run


def study(root: Path, dense_scores: np.ndarray, big_scores: np.ndarray, new_files: bool = True,
          dense_dormant: float = 0.5, big_dormant: float = 0.2) -> list[str]:
    paths = []
    for seed, row in enumerate(dense_scores):
        paths.append(str(make_run(root, f"dense_s{seed}", "dense", None, seed, list(row), dense_dormant, new_files)))
    for seed, row in enumerate(big_scores):
        paths.append(str(make_run(root, f"big_s{seed}", "big", "softmoe", seed, list(row), big_dormant, new_files)))
    return paths


RNG = np.random.default_rng(7)
LOW = np.round(RNG.uniform(0.1, 0.3, (4, 4)), 3)
HIGH = np.round(RNG.uniform(0.6, 0.9, (4, 4)), 3)


def _report(paths: list[str], out: Path, capsys) -> str:
    assert main(["report", *paths, "--out", str(out)]) == 0
    capsys.readouterr()
    return (out / "report.md").read_text()


def _claim(text: str, number: int) -> str:
    return re.search(rf"^{number}\. \*\*.*?\*\* Verdict: \*\*(.+?)\*\*", text, re.M).group(1)


def _aggregate_row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {label} | 4 | ") and "[" in line)


@pytest.fixture(scope="module")
def big_wins(tmp_path_factory):
    """(runs, report dir, report text): big/softmoe's scores and dormant fractions beat dense's."""
    root = tmp_path_factory.mktemp("big_wins")
    paths = study(root / "runs", LOW, HIGH, dense_dormant=0.5, big_dormant=0.1)
    assert main(["report", *paths, "--out", str(root / "rep")]) == 0
    return paths, root / "rep", (root / "rep" / "report.md").read_text()


def test_numbers_equal_a_direct_rliable_computation(big_wins):
    from rliable import library as rly
    from rliable import metrics

    _, _, text = big_wins
    scores = {"dense": LOW, "big/softmoe": HIGH}
    np.random.seed(0)
    point, ci = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_optimality_gap(x),
                                    metrics.aggregate_mean(x)]), reps=2000)
    for label in scores:
        row = _aggregate_row(text, label)
        for i in range(3):
            assert f"{point[label][i]:.3f} [{ci[label][0, i]:.3f}, {ci[label][1, i]:.3f}]" in row, (label, i)
    np.random.seed(0)
    p_point, p_ci = rly.get_interval_estimates({"p": (HIGH, LOW)},
                                               lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
                                               reps=2000)
    expected = f"{p_point['p'][0]:.3f} [{p_ci['p'][0, 0]:.3f}, {p_ci['p'][1, 0]:.3f}]"
    assert expected in _aggregate_row(text, "big/softmoe")


def test_figures_are_written_and_are_pngs(big_wins):
    _, rep, text = big_wins
    pngs = sorted(rep.glob("*.png"))
    kinds = {"eval-curves", "aggregates", "improvement", "profiles", "dormant", "usage-big-softmoe"}
    assert {k for k in kinds for p in pngs if k in p.name} == kinds
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png.name
        assert f"]({png.name})" in text  # every figure is linked from the report
    assert sorted(p.name for p in rep.iterdir()) == sorted([*(p.name for p in pngs), "report.md"])


def test_stdout_without_out_has_the_same_study_but_no_figures(big_wins, capsys):
    paths, _, text = big_wins
    assert main(["report", *paths]) == 0
    out = capsys.readouterr().out
    assert "# Study report" in out and "pass `--out DIR`" in out and ".png" not in out
    for label in ("dense", "big/softmoe"):  # deterministic: the same numbers as the report made before
        assert _aggregate_row(out, label) == _aggregate_row(text, label)
    assert _claim(out, 1) == _claim(text, 1)


def test_claims_follow_the_data(big_wins, tmp_path, capsys):
    _, _, big = big_wins
    dense = _report(study(tmp_path / "b", HIGH, LOW, dense_dormant=0.1, big_dormant=0.5), tmp_path / "rb", capsys)
    assert _claim(big, 1) == "holds" and _claim(dense, 1) == "fails"
    assert _claim(big, 4) == "holds" and _claim(dense, 4) == "fails"  # dormant neurons
    assert _claim(big, 2) == "not enough runs to tell"  # no MTRL runs
    assert "no MTRL runs of an MoE variant beside dense" in big
    assert "no CRL variants that differ only in env_kwargs.order" in big
    assert "not corrected for the many comparisons" in big
    # the numbers the verdict rests on are printed, with the seed count the verdict stands on
    line = next(x for x in big.splitlines() if "big/softmoe vs dense: IQM difference" in x)
    point, lo, hi = (float(v) for v in re.findall(r"-?\d+\.\d+", line.split("IQM difference")[1])[:3])
    assert 0 < lo <= point <= hi and line.endswith("[4 seeds] -> supported")


def _twenty_seeds(root: Path, second_half_big: np.ndarray) -> list[str]:
    """dense and big/softmoe on seeds 0-19: big beats dense on seeds 0-9, and scores ``second_half_big`` on
    seeds 10-19."""
    rng = np.random.default_rng(3)
    dense = np.round(rng.uniform(0.2, 0.4, (20, 4)), 3)
    big = np.vstack([np.round(rng.uniform(0.7, 0.9, (10, 4)), 3), second_half_big])
    return [str(make_run(root, f"{arch}_s{s}", arch, router, s, list(row[s])))
            for arch, router, row in (("dense", None, dense), ("big", "softmoe", big)) for s in range(20)]


def test_a_verdict_is_settled_only_where_the_two_halves_of_the_seeds_agree(tmp_path, capsys):
    rng = np.random.default_rng(4)
    agree = _report(_twenty_seeds(tmp_path / "a", np.round(rng.uniform(0.7, 0.9, (10, 4)), 3)), tmp_path / "ra",
                    capsys)
    line = next(x for x in agree.splitlines() if "big/softmoe vs dense: IQM difference" in x)
    assert "(seeds 0-9: " in line and "seeds 10+: " in line and line.endswith("[20 seeds in two halves] -> supported")
    assert _claim(agree, 1) == "holds"
    # the second half of big's seeds falls below dense: all 20 seeds still favour big, the halves disagree
    split = _report(_twenty_seeds(tmp_path / "s", np.round(rng.uniform(0.0, 0.15, (10, 4)), 3)), tmp_path / "rs",
                    capsys)
    line = next(x for x in split.splitlines() if "big/softmoe vs dense: IQM difference" in x)
    assert line.endswith("-> unsettled") and _claim(split, 1) == "unsettled"


def test_a_variant_without_halves_is_compared_on_the_seeds_both_sides_share(tmp_path, capsys):
    """dense ran seeds 0-19, big/softmoe only 0-9: the comparison uses seeds 0-9 on both sides ("10 seeds"
    means ten on each side). Dense's seeds 10-19 score far above the rest; counted, they would cancel big's
    clear lead on the shared seeds."""
    rng = np.random.default_rng(5)
    dense = np.vstack([np.round(rng.uniform(0.2, 0.3, (10, 4)), 3), np.round(rng.uniform(0.95, 1.0, (10, 4)), 3)])
    big = np.round(rng.uniform(0.6, 0.7, (10, 4)), 3)
    root = tmp_path / "runs"
    paths = [str(make_run(root, f"dense_s{s}", "dense", None, s, list(dense[s]))) for s in range(20)]
    paths += [str(make_run(root, f"big_s{s}", "big", "softmoe", s, list(big[s]))) for s in range(10)]
    text = _report(paths, tmp_path / "rep", capsys)
    line = next(x for x in text.splitlines() if "big/softmoe vs dense: IQM difference" in x)
    assert line.endswith("[10 seeds] -> supported") and "seeds 0-9:" not in line, line
    from moerl.rl.report import stats

    (lo_point, _, _), = [stats.iqm_difference({"0": (big, dense[:10])})["0"]]
    assert f"IQM difference {lo_point:.3f} [" in line  # the shared seeds' difference, not all of dense's
    # the claim holds only thanks to that one-sample comparison in a study built to settle it by halves: so
    # labelled (seeds 0-3 studies, with no second half, say "holds" plain: test_claims_follow_the_data)
    assert _claim(text, 1) == "holds (10 seeds)"


def test_a_claim_resting_on_ten_seed_variants_of_a_twenty_seed_study_is_labelled(tmp_path, capsys):
    """dense and big/softmoe ran seeds 0-19 and tie; middle/softmoe beats middle/topk on seeds 0-9 (variants
    run on 10 seeds by design): claim 3 holds on that one 10-seed comparison, and says so."""
    rng = np.random.default_rng(8)
    root = tmp_path / "runs"
    paths = [str(make_run(root, f"{arch}_s{s}", arch, router, s, list(rng.uniform(0.4, 0.5, 4))))
             for arch, router in (("dense", None), ("big", "softmoe")) for s in range(20)]
    paths += [str(make_run(root, f"middle_{router}_s{s}", "middle", router, s, list(rng.uniform(lo, lo + 0.1, 4))))
              for router, lo in (("softmoe", 0.7), ("topk", 0.1)) for s in range(10)]
    text = _report(paths, tmp_path / "rep", capsys)
    line = next(x for x in text.splitlines() if "middle/softmoe vs middle/topk: IQM difference" in x)
    assert line.endswith("[10 seeds] -> supported")
    assert _claim(text, 3) == "holds (10 seeds)"


def test_a_claim_on_the_second_half_of_seeds_alone_is_labelled_with_its_seed_count(tmp_path, capsys):
    """Seeds 10-19 of both sides (a study whose first half has not run yet): big/softmoe beats dense, the
    claim's answer says it stands on 10 seeds."""
    rng = np.random.default_rng(6)
    root = tmp_path / "runs"
    paths = [str(make_run(root, f"dense_s{s}", "dense", None, s, list(rng.uniform(0.2, 0.3, 4))))
             for s in range(10, 20)]
    paths += [str(make_run(root, f"big_s{s}", "big", "softmoe", s, list(rng.uniform(0.6, 0.7, 4))))
              for s in range(10, 20)]
    text = _report(paths, tmp_path / "rep", capsys)
    line = next(x for x in text.splitlines() if "big/softmoe vs dense: IQM difference" in x)
    assert line.endswith("[10 seeds] -> supported")
    assert _claim(text, 1) == "holds (10 seeds)"


def test_the_pre_registered_rules_on_intervals():
    from moerl.rl.report import claims as c

    up, down, zero = (0.2, 0.1, 0.3), (-0.2, -0.3, -0.1), (0.05, -0.1, 0.2)
    assert [c.one_set(iv) for iv in (up, down, zero)] == [c.SUPPORTED, c.CONTRADICTED, c.INCONCLUSIVE]
    assert c.firm(up, (up, zero)) == c.SUPPORTED  # a half may be inconclusive if its point agrees
    assert c.firm(up, (up, (-0.01, -0.2, 0.1))) == c.UNSETTLED  # a half's point on the other side
    assert c.firm(up, (up, down)) == c.UNSETTLED
    assert c.firm(zero, (up, up)) == c.UNSETTLED  # all seeds inconclusive
    assert c.firm(down, (down, (-0.05, -0.2, 0.1))) == c.CONTRADICTED
    assert c.two_sided(down, None) == c.DIFFERS and c.two_sided(zero, None) == c.INCONCLUSIVE
    assert c.two_sided(down, (down, up)) == c.UNSETTLED and c.two_sided(up, (up, zero)) == c.DIFFERS
    assert c.suite_of("cartpole-crl") == c.suite_of("cartpole-mtrl") == "cartpole"
    assert c.suite_of("CartPole-v1") == "CartPole-v1"


def test_a_suite_not_yet_compared_is_named_beside_one_that_is(big_wins, tmp_path, capsys):
    """CartPole's big/softmoe beats dense; a second suite has only dense runs so far: its answer is "not enough
    runs to tell", named, so that the first suite's verdict is not read as both suites'."""
    paths, _, _ = big_wins
    paths = paths + [str(make_run(tmp_path / "mc", f"mc_dense_s{s}", "dense", None, s, list(row),
                                  env="mountaincar-crl")) for s, row in enumerate(LOW)]
    text = _report(paths, tmp_path / "rep", capsys)
    assert _claim(text, 1) == "cartpole: holds; mountaincar: not enough runs to tell"
    assert _claim(text, 2) == "not enough runs to tell"  # no suite has MTRL runs: nothing to name


def test_task_order_is_compared_when_both_orders_ran(tmp_path, capsys):
    root = tmp_path / "runs"
    paths = [str(make_run(root, f"seq_s{s}", "big", "softmoe", s, list(row))) for s, row in enumerate(HIGH)]
    paths += [str(make_run(root, f"rev_s{s}", "big", "softmoe", s, list(row), order="reverse"))
              for s, row in enumerate(LOW)]
    text = _report(paths, tmp_path / "rep", capsys)
    # each task order is its own study, named by what sets it apart
    assert "## cartpole-crl (crl, env_kwargs.order=reverse)" in text
    assert "## cartpole-crl (crl, env_kwargs.order=(default))" in text  # the runs without the key
    order_line = next(x for x in text.splitlines() if "big/softmoe: IQM(cartpole-" in x)
    assert "cartpole-default > cartpole-longheavy" in order_line and "cartpole-mirror > cartpole-lowgrav" in order_line
    assert order_line.endswith("-> differs") and _claim(text, 6) == "holds"
    assert _claim(text, 1) == "not enough runs to tell"  # no dense runs
    assert len(list((tmp_path / "rep").glob("*-aggregates.png"))) == 2  # one figure per study, none overwritten


def test_each_variant_is_compared_with_the_dense_runs_of_its_own_task_order(tmp_path, capsys):
    """Sequential runs score HIGH, reverse runs LOW, dense and MoE alike: within an order MoE equals dense, so
    claim 1 is not supported; comparing sequential MoE with reverse dense would wrongly support it."""
    root = tmp_path / "runs"
    paths = []
    for arch, router in (("dense", None), ("big", "softmoe")):
        paths += [str(make_run(root, f"{arch}_seq_s{s}", arch, router, s, list(row))) for s, row in enumerate(HIGH)]
        paths += [str(make_run(root, f"{arch}_rev_s{s}", arch, router, s, list(row), order="reverse"))
                  for s, row in enumerate(LOW)]
    text = _report(paths, tmp_path / "rep", capsys)
    evidence = [x for x in text.splitlines() if ": big/softmoe vs dense: IQM difference" in x]
    assert len(evidence) == 2 and all("IQM difference 0.000 [" in x and not x.endswith("-> supported")
                                      for x in evidence)
    assert _claim(text, 1) != "holds"


def test_older_runs_without_the_new_files_still_report(tmp_path, capsys):
    text = _report(study(tmp_path / "runs", LOW[:2], HIGH[:2], new_files=False), tmp_path / "rep", capsys)
    assert _claim(text, 1) in ("holds", "unsettled")
    assert "no metrics.csv in these runs" in text and "no eval_usage.csv in these runs" in text
    assert _claim(text, 4) == "not enough runs to tell"
    assert not list((tmp_path / "rep").glob("*dormant*.png")) and list((tmp_path / "rep").glob("*eval-curves*"))


@pytest.mark.parametrize("case", ["no-runs", "inside-run", "foreign-dir", "missing-parent"])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, capsys, case):
    paths = study(tmp_path / "runs", LOW[:2], HIGH[:2])
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    args, out = {
        "no-runs": ([str(tmp_path / "nope")], tmp_path / "rep"),
        "inside-run": (paths, Path(paths[0]) / "rep"),
        "foreign-dir": (paths, tmp_path / "foreign"),
        "missing-parent": (paths, tmp_path / "missing" / "rep"),
    }[case]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert main(["report", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moerl: error: ") and err.count("\n") == 1
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing half-written, no temp folder left


def test_a_report_directory_is_replaced_whole(tmp_path, capsys):
    paths = study(tmp_path / "runs", LOW[:2], HIGH[:0])
    _report(paths, tmp_path / "rep", capsys)
    (tmp_path / "rep" / "stale.png").write_bytes(b"old")
    _report(paths, tmp_path / "rep", capsys)  # a report written before is replaced, stale figures and all
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert "stale.png" not in names and "report.md" in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rep")]


def test_probability_of_improvement_equals_rliables():
    from rliable import metrics

    from moerl.rl.report.stats import prob_improvement

    rng = np.random.default_rng(0)
    for _ in range(100):
        x = rng.integers(0, 4, (rng.integers(1, 6), 3)) / 3
        y = rng.integers(0, 4, (rng.integers(1, 6), 3)) / 3
        assert prob_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)


# -- real runs: both engines write the new files without changing training, and report end to end -----------
TINY = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "800",
        "--set", "env_kwargs.block_steps=200", "--set", "eval.freq=400", "--set", "eval.episodes=2",
        "--set", "eval.final_episodes=2", "--set", "dqn.learning_starts=100", "--set", "network.hidden=16",
        "--set", "logging.metrics_interval=200", "--no-progress"]


def test_real_runs_of_both_engines_report_end_to_end(tmp_path, capsys):
    assert main(["train", *TINY, "--seeds", "0,1", "--engine", "batched", "--logdir", str(tmp_path),
                 "--run-name", "bat"]) == 0
    assert main(["train", *TINY, "--seed", "0", "--logdir", str(tmp_path), "--run-name", "sb3"]) == 0
    capsys.readouterr()
    for name in ("bat_s0", "bat_s1", "sb3"):
        run = tmp_path / name
        metrics = list(csv.DictReader((run / "metrics.csv").open()))
        usage = list(csv.DictReader((run / "eval_usage.csv").open()))
        evals = list(csv.DictReader((run / "eval.csv").open()))
        assert {r["key"] for r in metrics} >= {"moe/dormant/tau0.1/all", "moe/router/big/usage_expert0"}
        assert all(0.0 <= float(r["value"]) for r in metrics)
        # one usage row per (evaluation, task, expert); the usages of a task sum to 1 (softmax combine weights)
        assert len(usage) == len(evals) * 4
        for (step, task) in {(r["step"], r["task"]) for r in usage}:
            total = sum(float(r["usage"]) for r in usage if r["step"] == step and r["task"] == task)
            assert total == pytest.approx(1.0, abs=1e-5)
    paths = [str(tmp_path / n) for n in ("bat_s0", "bat_s1", "sb3")]
    assert main(["report", *paths, "--out", str(tmp_path / "rep")]) == 0
    capsys.readouterr()
    text = (tmp_path / "rep" / "report.md").read_text()
    # runs trained by different engines are studies of their own (each compared within its engine)
    assert "## cartpole-crl (crl, engine=batched)" in text and "## cartpole-crl (crl, engine=sb3)" in text
    assert len(list((tmp_path / "rep").glob("*usage*.png"))) == 2 and list((tmp_path / "rep").glob("*dormant*"))


def test_the_new_files_leave_training_and_random_streams_untouched(tmp_path):
    """Measuring router usage during a batched evaluation changes no return, no random state and no later
    weight: two identical agents, one evaluated with usage and one without, train on to the same weights."""
    import random

    import torch

    from moerl.rl.batched_runs import suite_spec
    from moerl.rl.engine.batched_dqn import BatchedDQN

    spec = suite_spec("moerl/CartPole-CRL-v0", {"block_steps": 200})
    a, b = (BatchedDQN(spec, [0, 1], {"arch": "big", "router": "softmoe", "hidden": 16}) for _ in range(2))
    for agent in (a, b):
        agent.learn(300)
    states = (np.random.get_state()[1].copy(), torch.get_rng_state().clone(), random.getstate())
    plain = a.evaluate(spec, 2, seed=5)
    usage: dict = {}
    with_usage = b.evaluate(spec, 2, seed=5, usage=usage)
    assert np.array_equal(plain, with_usage) and set(usage) == {"big"} and usage["big"].shape == (2, 4)
    assert np.array_equal(np.random.get_state()[1], states[0]) and torch.equal(torch.get_rng_state(), states[1])
    assert random.getstate() == states[2]
    for agent in (a, b):
        agent.learn(600)
    sa, sb = a.q_net.state_dict(), b.q_net.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_task_specialisation_measures_how_task_specific_the_experts_are(big_wins):
    """1 for one expert per task, 0 for the same mix everywhere, the mutual information in between, and the
    report's table gives it per variant and layer over seeds."""
    from moerl.rl.report.usage import task_specialisation

    assert task_specialisation(np.eye(4)) == pytest.approx(1.0)
    assert task_specialisation(np.full((4, 4), 0.25)) == pytest.approx(0.0, abs=1e-12)
    assert task_specialisation(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])) == pytest.approx(1.0)
    rows = np.full((4, 4), 0.1) + 0.6 * np.eye(4)  # the fixture's runs: 0.7 on the task's own expert
    expected = (np.log(4) + (0.7 * np.log(0.7) + 3 * 0.1 * np.log(0.1))) / np.log(4)
    assert task_specialisation(rows) == pytest.approx(expected)
    with_gap = np.vstack([np.eye(3), np.full((1, 3), np.nan)])  # a task not evaluated is left out
    assert task_specialisation(with_gap) == pytest.approx(1.0)
    assert task_specialisation(np.ones((1, 4))) is None and task_specialisation(np.ones((4, 1))) is None
    _, _, text = big_wins
    row = next(line for line in text.splitlines() if line.startswith("| big/softmoe | big |"))
    assert row == f"| big/softmoe | big | {len(HIGH)} | {expected:.3f} [{expected:.3f}, {expected:.3f}] |"


def test_the_usage_heat_map_matches_each_seeds_experts_to_tasks_before_averaging():
    """Two seeds that give each task an expert of its own, under different expert indices: averaged in index
    order they look unspecialised (0.5 everywhere), matched first they show the diagonal; hardcoded's
    identity stays in place, an unevaluated task is skipped and a spare expert goes last."""
    from types import SimpleNamespace

    from moerl.rl.report.usage import matched_order, usage_table

    assert matched_order(np.eye(3)) == [0, 1, 2]
    swapped = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert matched_order(swapped) == [1, 0]
    spare = np.array([[0.6, 0.1, 0.3], [np.nan, np.nan, np.nan], [0.2, 0.7, 0.1]])
    assert matched_order(spare) == [0, 1, 2]  # task 0 -> expert 0, task 2 -> expert 1, expert 2 left over

    def run(usage):  # a Run as usage_table reads it: eval_usage rows of one last evaluation
        rows = [{"step": "100", "task": task, "layer": "big", "expert": str(e), "usage": str(v)}
                for task, row in zip(("a", "b"), usage, strict=True) for e, v in enumerate(row)]
        return SimpleNamespace(usage_rows=rows)

    group = SimpleNamespace(tasks=("a", "b"), runs=[run([[1.0, 0.0], [0.0, 1.0]]), run([[0.0, 1.0], [1.0, 0.0]])])
    tasks, layers = usage_table(group)
    assert tasks == ["a", "b"] and np.array_equal(layers["big"], np.eye(2))


def test_curves_chooses_the_variants_the_evaluation_curves_draw(big_wins, tmp_path, capsys, monkeypatch):
    from moerl.rl.report import figures

    paths, _, _ = big_wins
    drawn: dict[str, list[str]] = {}
    save = figures._save

    def recording_save(fig, out, name):
        drawn[name] = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        return save(fig, out, name)

    monkeypatch.setattr(figures, "_save", recording_save)
    assert main(["report", *paths, "--out", str(tmp_path / "all")]) == 0
    curves = next(name for name in drawn if name.endswith("eval-curves.png"))
    assert drawn[curves] == ["dense (n=4)", "big/softmoe (n=4)"]  # the study's order: dense first
    drawn.clear()
    assert main(["report", *paths, "--out", str(tmp_path / "one"), "--curves", "dense"]) == 0
    assert drawn[curves] == ["dense (n=4)"]
    text = (tmp_path / "one" / "report.md").read_text()
    assert f"]({curves})" in text and "big/softmoe" in text  # the tables keep every variant
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["--curves", "dense"], "--curves chooses what the figures draw: it needs --out DIR"),
    (["--curves", "wide", "--out", "REP"], "--curves 'wide' is not a variant of these runs; their variants: "
                                           "big/softmoe, dense"),
    (["--curves", ",", "--out", "REP"], "--curves needs at least one variant label"),
])
def test_bad_curves_are_refused_in_one_line_and_nothing_is_written(big_wins, tmp_path, capsys, args, message):
    paths, _, _ = big_wins
    args = [str(tmp_path / "rep") if a == "REP" else a for a in args]
    assert main(["report", *paths, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_variant_keeps_its_colour_whichever_variants_share_the_figure():
    from moerl.rl.report.figures import SPARE_COLORS, VARIANT_COLORS, _colors

    alone = _colors(["dense", "big/softmoe"])
    crowded = _colors(["wide", "all/topk", "big/softmoe", "middle/softmoe", "dense", "final/topk"])
    assert alone["big/softmoe"] == crowded["big/softmoe"] and alone["dense"] == crowded["dense"]
    paper = list(VARIANT_COLORS)
    assert len(set(_colors(paper).values())) == len(paper)  # the 11 variants are told apart
    # Labels of one variant that differ in a config key, or labels of no paper variant: distinct spare colours.
    both = _colors(["big/softmoe [lr=0.001]", "big/softmoe [lr=0.01]", "tiny/router", "big/softmoe (ppo)"])
    assert len(set(both.values())) == 4
    assert both["big/softmoe [lr=0.001]"] == alone["big/softmoe"]
    assert both["big/softmoe [lr=0.01]"] == _colors(["x"])["x"]  # the first spare colour
    many = _colors([f"v{i}" for i in range(2 * len(SPARE_COLORS))])  # more labels than colours: cycles
    assert many["v0"] == many[f"v{len(SPARE_COLORS)}"]
