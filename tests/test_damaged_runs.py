"""Damaged and odd run folders: ``moerl runs``, ``moerl report`` and ``moerl eval`` name what is wrong, in one
line, and go on with the other runs; nothing is trained inside a run; a closed stdout ends a command quietly.

Two tiny real runs are trained once (a MoE DQN run with a router, a routing run); each case damages a copy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moerl.cli import main

RL = ["--env", "CartPole-v1", "--arch", "big", "--router", "softmoe", "--timesteps", "600",
      "--set", "network.hidden=8", "--set", "network.experts=2", "--set", "dqn.learning_starts=50",
      "--set", "dqn.batch_size=32", "--set", "eval.freq=300", "--set", "eval.episodes=1",
      "--set", "eval.final_episodes=1", "--no-progress", "-q"]
ROUTING = ["--env", "digits-mtl", "--algo", "wpl", "--epochs", "1", "--set", "samples_per_epoch=256",
           "--set", "channels=4", "--set", "hidden=8", "--no-progress", "-q"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """``rl`` and ``routing``: one finished run of each, never changed (cases damage copies)."""
    root = tmp_path_factory.mktemp("made")
    assert main(["train", *RL, "--logdir", str(root), "--run-name", "rl"]) == 0
    assert main(["train", *ROUTING, "--logdir", str(root), "--run-name", "routing"]) == 0
    return root


def _copy(made: Path, kind: str, to: Path) -> Path:
    shutil.copytree(made / kind, to)
    return to


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _rows(out: str) -> dict[str, list[str]]:
    """``moerl runs`` table rows by run name: [family, status, differs, final]."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 5 and cells[0] not in ("run", "---"):
            rows[Path(cells[0]).name] = cells[1:]
    return rows


def _skips(err: str) -> dict[str, str]:
    return {Path(p).name: why for p, why in re.findall(r"^moerl: skipped (\S+): (.*)$", err, re.M)}


JUNK_STATUS = {
    "list": (b"[1]", "not a JSON object (a list)"),
    "string": (b'"finished"', "not a JSON object (a str)"),
    "family_list": (b'{"status": "finished", "family": ["moe-dqn"]}', "'family' that is not text"),
    "bytes": (b"\xff\xfe{\x00}\x00", "not UTF-8 text"),
}


def test_a_junk_status_is_named_and_the_other_runs_still_count(made, tmp_path, capsys):
    """Defect 11: a status.json that is a list, a string, has a list for its family or is not UTF-8."""
    folder = tmp_path / "runs"
    _copy(made, "rl", folder / "good")
    for name, (data, _) in JUNK_STATUS.items():
        (_copy(made, "rl", folder / name) / "status.json").write_bytes(data)

    assert main(["runs", str(folder)]) == 0
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert rows["good"][1] == "finished" and "Traceback" not in err
    for name, (_, why) in JUNK_STATUS.items():
        assert rows[name][1] == "damaged" and why in rows[name][3], rows[name]

    assert main(["report", str(folder)]) == 0
    out, err = capsys.readouterr()
    skips = _skips(err)
    assert "| big | softmoe |" in out and "good" not in skips
    for name, (_, why) in JUNK_STATUS.items():
        assert why in skips[name], err
    assert err.count("\n") == len(JUNK_STATUS)  # one line per damaged run

    for name, (_, why) in JUNK_STATUS.items():
        assert main(["eval", str(folder / name), "--episodes", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and "status.json" in err, err


def _damage(run: Path, how: str) -> None:
    results = run / "results.json"
    if how == "short_eval_row":
        (run / "eval.csv").write_text("step,task\n1\n")
    elif how == "word_in_eval":
        lines = (run / "eval.csv").read_text().splitlines()
        cells = lines[1].split(",")
        cells[2] = "lots"
        (run / "eval.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    elif how == "short_metrics_row":
        (run / "metrics.csv").write_text("step,key,value\n5,moe/x\n")
    elif how == "no_router":
        _edit_json(results, lambda d: d.pop("router"))
    elif how == "seed_not_int":
        _edit_json(results, lambda d: d.update(seed="zero"))
    elif how == "empty_results":
        results.write_text("{}")
    elif how == "schedule":
        (run / "schedule.json").write_text('{"schedule": [{"block": 0}], "block_steps": 150}')
    elif how == "routing_empty_results":
        results.write_text("{}")
    elif how == "routing_word_accuracy":
        _edit_json(results, lambda d: d.update(test_accuracy="high"))


#: How each copy is damaged, what ``moerl report`` says, and whether ``moerl runs`` (which reads only
#: status.json, config.yaml and results.json) must call it damaged.
PARTLY_DAMAGED = {
    "short_eval_row": ("eval.csv line 2 has no 'task' (a short row", False),
    "word_in_eval": ("eval.csv line 2 has 'lots' for 'mean_return', not a number", False),
    "short_metrics_row": ("metrics.csv line 2 has no 'value'", False),
    "schedule": ("schedule.json is damaged", False),
    "no_router": ("results.json has no 'router'", True),
    "seed_not_int": ("results.json has a 'seed' of the wrong type", True),
    "empty_results": ("results.json has no 'final_eval'", True),
    "routing_empty_results": ("results.json has no test accuracy", True),
    "routing_word_accuracy": ("results.json has a test accuracy that is not a number (high)", True),
}


def test_partly_damaged_runs_are_skipped_with_what_is_damaged_and_runs_agrees(made, tmp_path, capsys):
    """Defects 14 and 36: runs that pass the results.json check but are partly damaged, and a results.json
    of ``{}``: the report skips each with one line saying what is damaged; ``moerl runs`` calls every run
    whose results.json the report refuses damaged, not finished."""
    folder = tmp_path / "runs"
    _copy(made, "rl", folder / "good")
    _copy(made, "routing", folder / "good_routing")
    for how in PARTLY_DAMAGED:
        _damage(_copy(made, "routing" if how.startswith("routing") else "rl", folder / how), how)

    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 0
    out, err = capsys.readouterr()
    skips = _skips(err)
    assert "Traceback" not in err and set(skips) == set(PARTLY_DAMAGED), err
    for how, (why, _) in PARTLY_DAMAGED.items():
        assert why in skips[how], (how, skips[how])
    assert "| big | softmoe |" in out and "## routing runs" in out
    assert (tmp_path / "rep" / "report.md").is_file() and list((tmp_path / "rep").glob("*.png"))

    assert main(["runs", str(folder)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["good"][1] == rows["good_routing"][1] == "finished"
    for how, (_, in_results) in PARTLY_DAMAGED.items():
        assert rows[how][1] == ("damaged" if in_results else "finished"), (how, rows[how])
        if in_results:
            assert rows[how][3] == skips[how], (rows[how], skips[how])  # the same reason in both


def test_a_symlink_loop_and_repeated_paths_give_one_line_each(made, tmp_path, capsys):
    """Defect 37: a link back to a folder is searched once and named once; the same run given three times
    is one line."""
    folder = tmp_path / "runs"
    _copy(made, "rl", folder / "a")
    (folder / "loop").symlink_to(".")
    assert main(["report", str(folder)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loop: a link to a folder searched already" in err, err
    assert main(["runs", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert list(_rows(out)) == ["a"] and err.count("\n") == 1
    run = str(folder / "a")
    assert main(["report", run, run, run]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "given before (2 more times; counted once)" in err, err


def test_report_out_is_a_markdown_file_or_a_folder_and_nothing_else(made, tmp_path, capsys):
    """Defect 38: ``--out out.txt`` made a folder named out.txt; any suffix but .md is refused now."""
    run = str(made / "rl")
    for out in ("out.txt", "notes.v2"):
        assert main(["report", run, "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "FILE.md" in err and "without a suffix" in err, err
        assert not (tmp_path / out).exists()
    assert main(["report", run, "--out", str(tmp_path / "r.md")]) == 0
    assert main(["report", run, "--out", str(tmp_path / "rep")]) == 0
    assert main(["report", run, "--out", str(tmp_path / "rep2.d") + "/"]) == 0
    capsys.readouterr()
    assert (tmp_path / "r.md").is_file() and (tmp_path / "rep" / "report.md").is_file()
    assert (tmp_path / "rep2.d" / "report.md").is_file()
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "any other suffix is refused" in " ".join(capsys.readouterr().out.split())


def test_eval_of_a_file_says_it_is_a_file(made, capsys):
    """Defect 43: it said the run directory "does not exist"."""
    assert main(["eval", str(made / "rl" / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a run directory" in err, err


def test_eval_of_a_run_whose_config_env_was_edited_is_one_line(made, tmp_path, capsys):
    """Defect 18: a traceback, or numbers of a model run on an env it was not built for."""
    edited = _copy(made, "rl", tmp_path / "edited")
    config = edited / "config.yaml"
    config.write_text(config.read_text().replace("env: CartPole-v1", "env: Acrobot-v1"))
    assert main(["eval", str(edited), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names env 'Acrobot-v1', but the run trained 'CartPole-v1'" in err, err
    _edit_json(edited / "results.json", lambda d: d.update(env="Acrobot-v1"))  # both edited: the model decides
    assert main(["eval", str(edited), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its model takes observations (4,)" in err and "(6,)" in err, err


def test_eval_refuses_bad_seeds_and_too_many_episodes(made, capsys):
    """Defects 19 and M01: a gymnasium traceback for --seed -1; --episodes 1e8 ran for minutes, silent."""
    run = str(made / "rl")
    for seed in ("-1", str(2**32), str(2**64)):
        with pytest.raises(SystemExit) as stop:
            main(["eval", run, "--seed", seed])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and "seed must be an integer in [0, 4294967295]" in err
    assert main(["eval", run, "--episodes", "100000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--episodes must be at most 1000 episodes per task" in err, err
    assert main(["eval", run, "--seed", str(2**32 - 1), "--episodes", "1"]) == 0  # the range's ends are fine
    capsys.readouterr()


def test_training_configs_bound_evaluation_episodes(tmp_path, capsys):
    """Defect 12 (M02, M05, M06): eval.episodes and eval.final_episodes of 1e8 ran for minutes, then crashed."""
    logdir = tmp_path / "runs"
    for key, engine in (("eval.episodes", "sb3"), ("eval.final_episodes", "sb3"), ("eval.episodes", "batched")):
        assert main(["train", "--env", "CartPole-v1", "--timesteps", "600", "--engine", engine,
                     "--set", f"{key}=100000000", "--logdir", str(logdir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{key} must be at most 1000 episodes per task" in err, err
    assert not logdir.exists()
    sweep = tmp_path / "s.yaml"
    sweep.write_text("base: {env: CartPole-v1, timesteps: 600, eval.final_episodes: 1001}\nseeds: 0\nengine: sb3\n")
    assert main(["sweep", str(sweep), "--dry-run", "--logdir", str(logdir)]) == 2
    assert "eval.final_episodes must be at most 1000" in capsys.readouterr().err


def test_no_run_is_trained_or_swept_inside_a_run(made, tmp_path, capsys):
    """Defect 24: ``--logdir`` a run directory, its tb/ or a folder below: refused in one line, nothing made."""
    run = _copy(made, "rl", tmp_path / "A")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for logdir, line in ((run, RL), (run / "tb", RL), (run / "tb" / "x" / "y", RL), (run, ROUTING),
                         (run / "tb", [*RL, "--engine", "batched", "--seeds", "0-1"])):
        assert main(["train", *line, "--logdir", str(logdir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a run inside a run" in err, err
        assert ("is a run directory" in err) if logdir == run else (f"inside the run directory '{run}'" in err)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"base: {{env: CartPole-v1, timesteps: 600}}\nseeds: 0\nengine: sb3\nlogdir: {run / 'tb'}\n")
    assert main(["sweep", str(sweep), "--dry-run"]) == 2
    assert main(["sweep", str(sweep), "--logdir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.count("a run inside a run") == 2, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_a_closed_stdout_ends_every_printing_command_quietly(made, tmp_path):
    """Defect 45: ``moerl report runs | head`` said "[Errno 32] Broken pipe" and exited 1; now it ends as
    Unix tools do when their reader is gone: exit 141 (128 + SIGPIPE), nothing on stderr."""
    for args in (["report", str(made)], ["runs", str(made)], ["envs"]):
        proc = subprocess.Popen([sys.executable, "-m", "moerl", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        proc.stdout.close()  # the reader is gone before moerl writes a line
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 141 and err == "", (args, proc.returncode, err)
