"""``moerl sweep`` under bad input and signals, black-box: unsafe sweep names, a key given twice, a device or a
Ray address that cannot work, a read-only logdir (one line, exit 2, before anything runs), and SIGTERM / SIGINT
(the children stop and save, the record says so, a relaunch finishes everything)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TINY = {"env": "CartPole-v1", "timesteps": 600, "eval.freq": 300, "eval.episodes": 1, "eval.final_episodes": 1,
        "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8}


def _moerl(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moerl", *args], capture_output=True, text=True, cwd=cwd, **kwargs)


def _refused(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("moerl: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, shown", [("../../escape", "'../../escape'"), ("a b", "'a b'"), ("x;rm", "'x;rm'"),
                                         ("a\tb", "'a\\tb'"), (".hidden", "'.hidden'")])
def test_unsafe_sweep_names_are_refused(tmp_path, name, shown):
    """A sweep's name is the folder of its default logdir (``runs/<name>``): held to the run-name rule, so
    ``../../escape`` cannot put the runs outside ``runs/`` (dry run and launch alike)."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": name, "seeds": "0", "base": TINY}))
    for extra in (["--dry-run"], []):
        _refused(_moerl("sweep", str(path), *extra, cwd=tmp_path),
                 f"sweep name {shown} is not valid: it must be one folder name of at most 120 characters: "
                 "letters, digits and . _ - + = , @")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    assert not (tmp_path.parent / "escape").exists()


def test_a_file_name_that_is_no_valid_sweep_name_says_to_set_one(tmp_path):
    path = tmp_path / "my study.yaml"
    path.write_text(yaml.safe_dump({"seeds": "0", "base": TINY}))
    _refused(_moerl("sweep", str(path), "--dry-run", cwd=tmp_path), "(it is the file's name: set 'name:'")
    path.write_text(yaml.safe_dump({"name": "my-study", "seeds": "0", "base": TINY}))
    proc = _moerl("sweep", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and "runs/my-study" in proc.stdout, proc.stderr


@pytest.mark.parametrize("sweep, words", [
    ({"base": {**TINY, "dqn": {"learning_rate": 0.01}, "dqn.learning_rate": 0.1}},
     "'base' gives 'dqn.learning_rate' twice (as 'dqn: {...}' and as 'dqn.learning_rate'); keep one"),
    ({"base": TINY, "variants": [{"arch": "dense"}, {"arch": "big", "network": {"arch": "dense"}}]},
     "'variants' entry 2 gives 'network.arch' twice (as 'arch' and as 'network: {...}')"),
    ({"base": TINY, "settings": [{"env_kwargs": {"max_episode_steps": 50}, "env_kwargs.max_episode_steps": 60}]},
     "'settings' entry 1 gives 'env_kwargs.max_episode_steps' twice"),
    ({"base": TINY, "grid": {"dqn.gamma": [0.9, 0.95], "dqn": [{"gamma": 0.8}]}},
     "'grid' gives 'dqn.gamma' twice (as 'dqn: {...}' and as 'dqn.gamma')"),
])
def test_a_key_given_twice_in_one_mapping_is_refused(tmp_path, capsys, sweep, words):
    """Nested and dotted (or flat-named and nested) spellings of one key side by side: one would win
    silently, so the sweep is refused in one line naming the key, as config files refuse ``arch`` beside
    ``network.arch``."""
    from moerl.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"seeds": "0", "logdir": str(tmp_path / "out"), **sweep}))
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_the_parts_of_a_run_combine_key_by_key(tmp_path, capsys):
    """A variant's nested ``dqn: {gamma: ..}`` overrides ``dqn.gamma`` alone: the base's learning rate is
    kept (it used to be dropped with the rest of the base's ``dqn`` keys), so both files give one config."""
    from moerl.cli import main

    ids = []
    for name, sweep in (("nested", {"base": {**TINY, "dqn.learning_rate": 0.1}, "variants": [{"dqn": {"gamma": 0.9}}]}),
                        ("flat", {"base": {**TINY, "dqn.learning_rate": 0.1, "dqn.gamma": 0.9}})):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"seeds": "0", "logdir": str(tmp_path / name), **sweep}))
        assert main(["sweep", str(path), "--dry-run"]) == 0
        ids.append(capsys.readouterr().out.split()[1])
    assert ids[0] == ids[1]


def _wait_running(logdir: Path, proc: subprocess.Popen, not_in: set[str] = frozenset()) -> tuple[Path, int]:
    """The first run directory (not in ``not_in``) whose status.json says running, and its trainer's pid."""
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        for status in sorted(logdir.glob("*/status.json")):
            data = json.loads(status.read_text() or "{}")
            if status.parent.name not in not_in and data.get("status") == "running" and data.get("pid"):
                return status.parent, data["pid"]
        time.sleep(0.1)
    raise AssertionError("no run started")


def test_a_stopped_sweep_stops_its_children_records_them_and_resumes(tmp_path):
    """SIGTERM (``kill PID``) and SIGINT (Ctrl-C) to the sweep alone: its ``moerl train`` child stops too (no
    orphan: the pid in the run's status.json is gone), the run reads interrupted, sweep.json says what was
    stopped, one line on stderr, exit 143 / 130; a relaunch then finishes every run."""
    from moerl.runs.rundir import _pid_alive

    path = tmp_path / "s.yaml"
    base = {**TINY, "timesteps": 3000, "checkpoint.every": 400, "eval.freq": 1000}
    path.write_text(yaml.safe_dump({"name": "stop", "seeds": "0", "base": base,
                                    "variants": [{"arch": "dense"}, {"arch": "wide"}]}))
    logdir = tmp_path / "runs" / "stop"
    stopped: set[str] = set()
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc = subprocess.Popen([sys.executable, "-m", "moerl", "sweep", str(path), "--workers", "1"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run, trainer = _wait_running(logdir, proc, stopped)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == code, out + err
        name = signal.Signals(signum).name
        assert err.count("\n") == 1 and err.startswith(f"moerl: sweep stopped by {name}: 1 job(s) interrupted"), err
        assert not _pid_alive(trainer)  # no orphan left training
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "interrupted" and name in status["error"], status
        record = json.loads((logdir / "sweep.json").read_text())
        assert record["stopped_by"] == name
        assert {j["job"]: j["status"] for j in record["jobs"]}[run.name.removesuffix("_s0")] == "interrupted"
        stopped.add(run.name)
    assert len(stopped) == 2  # the relaunch resumed the first job, and the second was stopped in its turn
    proc = subprocess.run([sys.executable, "-m", "moerl", "sweep", str(path), "--workers", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((logdir / "sweep.json").read_text())
    assert record["stopped_by"] is None and [j["status"] for j in record["jobs"]] == ["finished", "finished"]
    assert all(json.loads((logdir / r / "status.json").read_text())["status"] == "finished" for r in stopped)


def _free_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_options_that_cannot_work_are_refused_up_front(tmp_path):
    """A malformed Ray address (--address or RAY_ADDRESS), one where nothing listens (refused within
    seconds, where Ray retried for minutes), ``--device cuda`` without a GPU (dry run too, where every job
    used to fail one by one) and a read-only logdir: one line each, exit 2, before anything is written."""
    import torch

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "opts", "seeds": "0", "base": TINY}))
    port = _free_port()
    forms = "valid forms: HOST:PORT (e.g. 10.0.0.1:6379, the head node's GCS), ray://HOST:PORT (Ray Client), auto or local"
    cases = [
        (["--backend", "ray", "--address", "127.0.0.1:notaport"], {}, f"--address '127.0.0.1:notaport' is not a Ray cluster address; {forms}"),
        (["--backend", "ray", "--address", "127.0.0.1:notaport", "--dry-run"], {}, "is not a Ray cluster address"),
        (["--backend", "ray"], {"RAY_ADDRESS": "http://head"}, "RAY_ADDRESS 'http://head' is not a Ray cluster address"),
        (["--backend", "ray", "--address", f"127.0.0.1:{port}"], {},
         f"no Ray cluster answers at --address '127.0.0.1:{port}' (Connection refused); start one with 'ray start --head'"),
        (["--backend", "ray"], {"RAY_ADDRESS": f"ray://127.0.0.1:{port}"}, f"no Ray cluster answers at RAY_ADDRESS 'ray://127.0.0.1:{port}'"),
    ]
    if not torch.cuda.is_available():
        cases += [(["--device", "cuda", *extra], {}, "device 'cuda' was asked for but torch sees no CUDA GPU; valid "
                   "choices: cpu, auto") for extra in ([], ["--dry-run"])]
    for args, env, words in cases:
        start = time.monotonic()
        _refused(_moerl("sweep", str(path), *args, cwd=tmp_path, env={**os.environ, **env}, timeout=60), words)
        assert time.monotonic() - start < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_read_only_logdir_is_refused_before_anything_runs(tmp_path, read_only_disk):
    ro = read_only_disk
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "ro", "seeds": "0", "base": TINY}))
    for extra in ([], ["--dry-run"]):
        _refused(_moerl("sweep", str(path), "--logdir", str(ro / "runs"), *extra, cwd=tmp_path),
                 f"cannot create log directory '{ro / 'runs'}': '{ro}' is not writable")
    _refused(_moerl("sweep", str(path), "--logdir", str(ro), cwd=tmp_path), f"log directory '{ro}' is not writable")


@pytest.mark.slow
def test_a_stopped_ray_sweep_stops_its_trainers_before_ray_ends_their_workers(tmp_path):
    """With the Ray backend, SIGTERM to the sweep: ``ray.init`` and Tune have their own handlers, which
    ended the sweep without a record while Ray killed the trainers mid-run; the trainer now saves and reads
    interrupted, the job not yet started reads so, exit 143 with one line."""
    from moerl.runs.rundir import _pid_alive

    path = tmp_path / "s.yaml"
    base = {**TINY, "timesteps": 3000, "checkpoint.every": 400, "eval.freq": 1000}
    path.write_text(yaml.safe_dump({"name": "ray", "seeds": "0", "base": base,
                                    "variants": [{"arch": "dense"}, {"arch": "wide"}]}))
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "sweep", str(path), "--backend", "ray", "--workers", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run, trainer = _wait_running(tmp_path / "runs" / "ray", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, out + err
    assert err.splitlines()[-1].startswith("moerl: sweep stopped by SIGTERM: 1 job(s) interrupted, 1 not started"), err
    assert not _pid_alive(trainer)
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    record = json.loads((tmp_path / "runs" / "ray" / "sweep.json").read_text())
    assert record["stopped_by"] == "SIGTERM" and sorted(j["status"] for j in record["jobs"]) == ["interrupted", "not started"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH needs Python 3.11")
def test_children_train_the_launchs_moerl_not_a_checkout_in_the_working_directory(tmp_path):
    """``python -m`` puts the working directory first on the import path: a sweep launched from a folder that
    holds another ``moerl`` (a checkout being edited beside a frozen install) used to start its children on
    that folder's code. The children must import the ``moerl`` the launch itself runs: here the folder's
    ``moerl`` stops any process that imports it, and the sweep must still train and finish its run."""
    import moerl

    shadow = tmp_path / "moerl"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('shadow moerl imported')\n")
    (shadow / "__main__.py").write_text("raise SystemExit('shadow moerl imported')\n")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "shadowed", "seeds": "0", "base": TINY}))
    # The launch runs the installed moerl (not the folder's), as the console script `moerl` would.
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    proc = subprocess.run([sys.executable, "-m", "moerl", "sweep", str(path), "--workers", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "shadowed").rglob("*.log"))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    assert "shadow moerl imported" not in logs
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "runs" / "shadowed").glob("*_s0/status.json")]
    assert statuses == ["finished"]
    assert Path(moerl.__file__).resolve().parent != shadow.resolve()
