"""Members with budgets of their own (issue 23): a member that reaches its budget stops learning and is written
out while the others go on; a batch killed after that resumes to the uninterrupted files; sweeps group
configs that differ in budget only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from moerl import MoEDQN
from moerl.cli import main
from moerl.core.errors import ConfigError
from moerl.runs.console import Console
from tests.conftest import read_tb_scalars

EARLY, LATE = 456, 900  # the early member's budget is no multiple of eval.freq: it gets its own evaluation
QUIET = Console(verbosity=0, progress=False)


def _config(timesteps: int, **env_kwargs):
    from moerl.rl.config import build_config

    c = build_config(None, {"env": "cartpole-crl", "arch": "big", "router": "softmoe", "timesteps": timesteps})
    c.env_kwargs = {"block_steps": 300, **env_kwargs}
    c.eval.freq, c.eval.episodes, c.eval.final_episodes = 300, 1, 2
    c.dqn.learning_starts, c.dqn.batch_size, c.network.hidden, c.logging.metrics_interval = 100, 16, 16, 150
    c.checkpoint.every = 152  # a multiple of train_freq (4): checkpoints at 152, 304, 456, 608, 760
    return c


def _train(root: Path, budgets: list[int], early_last: bool = False) -> list[Path]:
    """Members: one of the reversed task order (seed 0, "early") and two of the CRL order (seeds 1, 2,
    "late") with the budgets given, in this order or (``early_last``) with the first one last."""
    from moerl.rl.batched_runs import train_members

    members = [(_config(budgets[0], order="reverse"), 0, "early"), (_config(budgets[1]), 1, "late"),
               (_config(budgets[2]), 2, "late")]
    if early_last:
        members = [*members[1:], members[0]]
    configs, seeds, names = (list(x) for x in zip(*members, strict=True))
    return train_members(configs, seeds, str(root), names, QUIET)


def _rows(run: Path, name: str = "eval.csv") -> list[dict[str, str]]:
    with (run / name).open() as f:
        return list(csv.DictReader(f))


def _steps(run: Path) -> list[int]:
    return sorted({int(r["step"]) for r in _rows(run)})


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return MoEDQN.load(run / "model.zip", device="cpu").policy.state_dict()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The early member (budget 456) beside two of budget 900, uninterrupted; the statuses seen just after
    the early one was written out."""
    from moerl.rl import batched_runs

    root = tmp_path_factory.mktemp("mixed")
    seen: list[dict[str, str]] = []
    real = batched_runs._Batch.finish_members

    def watched(self, finishing, started, console):
        real(self, finishing, started, console)
        seen.append({p.name: _status(p)["status"] for p in root.iterdir()})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batched_runs._Batch, "finish_members", watched)
        paths = _train(root, [EARLY, LATE, LATE])
    return root, paths, seen


def test_the_early_member_is_written_out_at_its_budget_while_the_others_train_on(mixed, tmp_path):
    root, (early, late1, late2), seen = mixed
    assert [p.name for p in (early, late1, late2)] == ["early_s0", "late_s1", "late_s2"]  # the caller's order
    assert seen == [{"early_s0": "finished", "late_s1": "running", "late_s2": "running"}]
    for run in (early, late1, late2):
        assert _status(run)["status"] == "finished" and (run / "model.zip").is_file()
        assert _status(run)["batch"]["leader"] == "late_s1"  # a member of the largest budget holds the checkpoint
    assert not (late1 / "checkpoints").exists()
    results = json.loads((early / "results.json").read_text())
    assert results["timesteps"] == EARLY and results["seeds_in_batch"] == 3
    assert MoEDQN.load(early / "model.zip", device="cpu").num_timesteps == EARLY
    assert _steps(early) == [0, 300, EARLY]  # its own evaluation at its budget
    for run in (late1, late2):
        assert json.loads((run / "results.json").read_text())["timesteps"] == LATE
        assert _steps(run) == [0, 300, 600, 900]  # no extra evaluation at the early member's budget
    assert len(_rows(early)) == 3 * 4 and len(_rows(late1)) == 4 * 4  # 4 tasks per evaluation
    tb = read_tb_scalars(early / "tb")
    assert max(s for s, _ in tb["eval/normalized_mean"]) == EARLY

    # In a batch of its own budget (the same members and slots: the same shapes and kernels; the mixed batch
    # put it last, behind the members of the largest budget) the early member trains bit for bit as here;
    # only its evaluations at 456 ran in a batch of one here, so they are compared where rounding cannot
    # reach them (steps, tasks).
    own = _train(tmp_path / "own", [EARLY, EARLY, EARLY], early_last=True)[2]
    assert own.name == early.name
    wa, wb = _weights(early), _weights(own)
    assert wa.keys() == wb.keys() and all(torch.equal(v, wb[k]) for k, v in wa.items())
    for name in ("eval.csv", "eval_usage.csv"):
        a, b = _rows(early, name), _rows(own, name)
        assert [r for r in a if int(r["step"]) < EARLY] == [r for r in b if int(r["step"]) < EARLY], name
        assert ([(r["step"], r["task"]) for r in a if int(r["step"]) == EARLY]
                == [(r["step"], r["task"]) for r in b if int(r["step"]) == EARLY]), name
    for name in ("metrics.csv", "config.yaml", "schedule.json"):  # measured in training: the same bytes
        assert (early / name).read_bytes() == (own / name).read_bytes(), name
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (early, own))
    assert ra.keys() == rb.keys() and ra["final_eval"].keys() == rb["final_eval"].keys()
    assert all(ra[k] == rb[k] for k in ra if k not in ("train_seconds", "steps_per_second", "final_eval",
                                                          "continual"))


def test_moerl_runs_and_report_read_the_members(mixed, capsys):
    root, paths, _ = mixed
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert all(p.name in out for p in paths) and out.count("finished") >= 3
    assert main(["report", *map(str, paths)]) == 0
    assert capsys.readouterr().out.strip()


def _same_files(a: Path, b: Path) -> None:
    for file in ("eval.csv", "eval_usage.csv", "metrics.csv", "config.yaml", "schedule.json"):
        assert (a / file).read_text() == (b / file).read_text(), (a.name, file)
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    for key in ("train_seconds", "steps_per_second"):
        ra.pop(key), rb.pop(key)
    assert ra == rb
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(v, wb[k]) for k, v in wa.items())
    ta, tb = read_tb_scalars(a / "tb"), read_tb_scalars(b / "tb")
    assert ta.keys() == tb.keys()
    for tag in ta:
        steps = [s for s, _ in tb[tag]]
        assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
        assert sorted(ta[tag]) == sorted(tb[tag]), tag


@pytest.mark.parametrize("dies_at", [EARLY, 608], ids=["checkpoint-holds-the-finished-member", "it-left-before"])
def test_a_batch_killed_after_a_member_finished_resumes_to_the_uninterrupted_files(mixed, tmp_path, monkeypatch,
                                                                                  dies_at):
    """Checkpoints every 152 steps. Dying at the checkpoint at 456 (just after the early member was written
    out) resumes from 304, whose checkpoint still holds that member: it trains on in the batch to 456 without
    writing anything (so the others compute exactly as they did) and leaves. Dying at 608 (after the
    evaluation at 600) resumes from 456, whose checkpoint holds the others only. Either way every file is the
    uninterrupted batch's, and the finished member's files are not touched."""
    from moerl.rl import batched_runs

    root, uninterrupted, _ = mixed
    real = batched_runs._Batch.checkpoint

    def dies(self, started):
        if self.agent.num_timesteps == dies_at:
            raise RuntimeError("simulated crash before a checkpoint")
        real(self, started)

    monkeypatch.setattr(batched_runs._Batch, "checkpoint", dies)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(tmp_path, [EARLY, LATE, LATE])
    monkeypatch.undo()
    early, late1, late2 = (tmp_path / p.name for p in uninterrupted)
    assert _status(early)["status"] == "finished"  # the exit marks only the members still training
    assert _status(late1)["status"] == _status(late2)["status"] == "failed"
    before = {f: f.read_bytes() for f in early.rglob("*") if f.is_file()}
    held = torch.load(next(late1.glob("checkpoints/*/batch.pt")), weights_only=False)["members"]
    assert held == (["late_s1", "late_s2", "early_s0"] if dies_at == EARLY else ["late_s1", "late_s2"])

    assert main(["train", "--resume", str(early), "--no-progress"]) == 0  # any member, a finished one too
    assert {f: f.read_bytes() for f in early.rglob("*") if f.is_file()} == before
    for run, whole in zip((early, late1, late2), uninterrupted, strict=True):
        assert _status(run)["status"] == "finished"
        _same_files(whole, run)
    assert not (late1 / "checkpoints").exists()
    assert main(["train", "--resume", str(early)]) == 2  # nothing left to resume


def test_what_members_must_share_is_still_refused_in_one_line(tmp_path):
    from moerl.rl.batched_runs import train_members

    other = _config(LATE)
    other.eval.freq = 450
    with pytest.raises(ConfigError, match=r"must share eval\.freq .*they may differ in .*timesteps"):
        train_members([_config(EARLY), other], [0, 1], str(tmp_path / "bad"), [None] * 2, QUIET)
    assert not (tmp_path / "bad").exists()


def test_sweep_groups_join_budgets_and_estimate_each_members_share():
    from moerl.core.config import to_dict
    from moerl.rl.batched_runs import suite_spec
    from moerl.rl.calibration import Calibration, estimate_seconds
    from moerl.rl.config import resolve_env
    from moerl.rl.sweep_groups import group_key

    def raw(timesteps):
        return {**to_dict(_config(timesteps)), "engine": "batched"}

    assert group_key(raw(EARLY)) == group_key(raw(LATE)) is not None
    other = raw(LATE)
    other["eval"] = {**other["eval"], "freq": 450}
    assert group_key(other) != group_key(raw(LATE))
    cal = Calibration(step=1e-3, eval_step=1e-4)
    uniform = estimate_seconds([_config(LATE)] * 4, cal)
    limit = int(suite_spec(resolve_env("cartpole-crl"), {"block_steps": 300}).episode_limits.max())
    assert uniform == pytest.approx(LATE * 1e-3 + (LATE // 300 + 2 + 2) * limit * 1e-4)  # as before
    mixed = estimate_seconds([_config(LATE), _config(LATE), _config(EARLY), _config(EARLY)], cal)
    early_alone = estimate_seconds([_config(EARLY)] * 4, cal)
    assert mixed == pytest.approx((uniform + early_alone) / 2)
