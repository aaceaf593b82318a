"""``scripts/study_memory.py`` reads the peak memory of a real ``moerl sweep``'s batch process from ``/proc``
while it trains, names what the batch trains (members, variant), and keeps records across machines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_script

study_memory = load_script("study_memory")

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")

BASE = {"timesteps": 1200, "env_kwargs.block_steps": 300, "eval.freq": 600, "eval.episodes": 1,
        "eval.final_episodes": 1, "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8}


def test_a_sweep_groups_peak_memory_is_sampled_with_its_members_and_variant(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "study.yaml").write_text(yaml.safe_dump({
        "base": BASE, "seeds": "0-1", "logdir": "runs/study",
        "settings": [{"env": "cartpole-crl"}, {"env": "cartpole-crl", "env_kwargs.order": "reverse"},
                     {"env": "cartpole-crl", "env_kwargs.fixed_task": 1}],
        "variants": [{"arch": "big", "router": "softmoe"}]}))
    into = home / "memory.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    sweep = subprocess.Popen([sys.executable, "-m", "moerl", "sweep", "study.yaml", "--workers", "1"], cwd=home,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while sweep.poll() is None:  # sample as study/run.sh does, only faster
        assert time.time() < deadline, "the sweep did not finish"
        study_memory.sample(home, into)
        time.sleep(0.1)
    assert sweep.returncode == 0, sweep.stderr.read().decode()
    records = json.loads(into.read_text())
    assert len(records) == 1, records  # the batch process; not the sweep driver, not this test
    (key, record), = records.items()
    assert record["target"].startswith("group-") and record["members"] == 6
    assert record["variants"] == ["cartpole: big/softmoe"]
    assert record["peak_kib"] > 50 * 1024  # an interpreter with torch loaded holds far more than 50 MiB
    if not record.get("ended"):  # the group ended after the last look while the driver wrote its record
        assert study_memory.report([into])[-1] == "(1 batch(es) still running when last sampled: left out)"
        record = study_memory.sample(home, into)[key]
    assert record["ended"]  # gone at a later look: its peak is final
    rows = study_memory.report([into])
    per_member = record["peak_kib"] / 1024 / 6
    assert rows[2] == (f"| cartpole: big/softmoe | 1 | 6 | {record['peak_kib'] / 1024:.0f}-"
                       f"{record['peak_kib'] / 1024:.0f} | {per_member:.1f}-{per_member:.1f} |")

    # a resumed batch (`moerl train --resume RUN`) is named from its leader's status.json and config.yaml
    run = next(p for p in (home / "runs" / "study").iterdir() if p.name.endswith("_s0"))
    resumed = study_memory.batch_of([sys.executable, "-m", "moerl", "train", "--no-progress", "--resume",
                                     f"runs/study/{run.name}"], home)
    assert resumed == {"target": run.name, "members": 6, "variants": ["cartpole: big/softmoe"]}

    # keep: another machine's records join; a process seen twice keeps its larger peak and stays ended
    kept = tmp_path / "kept.json"
    study_memory.keep(into, kept)
    later = {key: {**record, "peak_kib": record["peak_kib"] + 1, "last_seen": "2099-01-01T00:00:00Z",
                   "ended": False},
             "other-boot:1@2": {**record, "peak_kib": 1, "ended": False}}
    (tmp_path / "later.json").write_text(json.dumps(later))
    merged = study_memory.keep(tmp_path / "later.json", kept)
    assert merged[key]["peak_kib"] == record["peak_kib"] + 1 and merged[key]["first_seen"] == record["first_seen"]
    assert merged[key]["last_seen"] == "2099-01-01T00:00:00Z" and merged[key]["ended"]
    assert set(merged) == {key, "other-boot:1@2"} and json.loads(kept.read_text()) == merged
    # a report over the kept file and a live one counts each process once, the running one not at all
    rows = study_memory.report([kept, tmp_path / "later.json"])
    assert rows[2].startswith("| cartpole: big/softmoe | 1 | 6 |")
    assert rows[-1] == "(1 batch(es) still running when last sampled: left out)"


def test_a_child_the_batch_forks_is_not_a_second_batch(tmp_path):
    """Between fork and exec (the batch runs git for its provenance) a child shows the batch's command line; a
    look in that window once recorded it as a second batch of the same group."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "forks.py").write_text(
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(30)\n"
        "    os._exit(0)\n"
        "print('forked', flush=True)\n"
        "time.sleep(30)\n")
    batch = subprocess.Popen([sys.executable, "forks.py", "sweep-group", "group-x.yaml"], cwd=home,
                             stdout=subprocess.PIPE)
    children: list[int] = []
    try:
        assert batch.stdout.readline() == b"forked\n"
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and p.name != str(batch.pid)
                    and _cmdline(p).endswith("forks.py\0sweep-group\0group-x.yaml\0")]
        assert len(children) == 1  # the child is there, with its parent's command line
        found = study_memory.processes_in(home)
        assert [int(key.split(":")[1].split("@")[0]) for key, _ in found] == [batch.pid]
    finally:
        for pid in children:
            os.kill(pid, 9)
        batch.kill()
        batch.wait()


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert study_memory.main(["sample", str(tmp_path / "nowhere")]) == 2
    assert study_memory.main(["report", str(tmp_path / "missing.json")]) == 2
    assert study_memory.main(["keep", str(tmp_path / "missing.json"), str(tmp_path / "kept.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "nowhere" in err[0] and "missing.json" in err[1] and "missing.json" in err[2]
    assert not (tmp_path / "kept.json").exists()
