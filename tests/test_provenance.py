"""stack.json: what produced a run (commit, versions, machine), one record per training session."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from moerl.runs.provenance import (
    RESULT_PACKAGES,
    read_stacks,
    source_commit,
    stack_record,
    stacks_markdown,
)
from moerl.runs.rundir import RunDir, running

ROOT = Path(__file__).resolve().parents[1]


def test_the_record_names_the_installed_versions_the_commit_and_the_machine():
    record = stack_record("cpu")
    for name in RESULT_PACKAGES:
        try:
            assert record["packages"][name] == metadata.version(name)
        except metadata.PackageNotFoundError:
            assert record["packages"][name] is None
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["commit"] == head  # tests run from a checkout (editable install)
    assert record["torch_threads"] == torch.get_num_threads() and record["device"] == "cpu"
    assert source_commit(Path("/")) == (None, None)  # not a checkout: no commit rather than a wrong one


def test_every_training_session_adds_a_record_with_its_thread_count(tmp_path):
    run = RunDir.create(tmp_path, "r")
    threads = torch.get_num_threads()
    try:
        with running(run, "moe-dqn", 0, "cpu"):
            torch.set_num_threads(1)  # families set threads after the run starts: the record follows
        with running(run, "moe-dqn", 0, "cpu"):  # a resumed session
            pass
    finally:
        torch.set_num_threads(threads)
    records = read_stacks(run.path)
    assert len(records) == 2 and records[0]["torch_threads"] == 1 and records[1]["torch_threads"] == threads


def _fake_run(tmp_path: Path, name: str, torch_version: str | None) -> Path:
    path = tmp_path / name
    path.mkdir()
    if torch_version is not None:
        record = stack_record("cpu")
        record["packages"]["torch"] = torch_version
        (path / "stack.json").write_text(json.dumps([record]))
    return path


def test_mixed_stacks_are_named_and_warned_about(tmp_path):
    a, b = _fake_run(tmp_path, "a", "2.13.0"), _fake_run(tmp_path, "b", "2.13.0")
    text, warning = stacks_markdown([a, b])
    assert warning is None and "2 run(s)" in text
    c = _fake_run(tmp_path, "c", "2.14.0")
    text, warning = stacks_markdown([a, b, c])
    assert warning is not None and "2 different software stacks" in warning and "torch 2.14.0" in text
    _, warning = stacks_markdown([a, _fake_run(tmp_path, "old", None)])
    assert warning is not None and "unknown" in stacks_markdown([_fake_run(tmp_path, "old2", None)])[0]
