"""stack.json: what produced a run (commit, versions, machine), one record per training session."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from moerl.runs.provenance import (
    RESULT_PACKAGES,
    UNKNOWN_COMMIT,
    blas_info,
    build_commit,
    describe,
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
    assert record["commit"] == head and record["commit_source"] == "checkout"  # tests run from a checkout
    assert record["torch_threads"] == torch.get_num_threads() and record["device"] == "cpu"
    assert source_commit(Path("/")) == (None, None)  # not a checkout: no commit rather than a wrong one


def test_the_record_names_the_cpu_capability_and_blas_torch_computes_with():
    """Numbers reproduce bit for bit only on the same kind of CPU: the record says which (and the stack line,
    which scripts/check_results.py reads, names it)."""
    record = stack_record("cpu")
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["blas"] == blas_info() and set(record["blas"]) == {"blas", "lapack", "mkl", "onednn", "parallel"}
    assert f"; CPU capability {record['cpu_capability']}" in describe(record)
    config = ("PyTorch built with:\n  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605\n"
              "  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71)\n  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, "
              "LAPACK_INFO=mkl, TORCH_VERSION=2.13.0, USE_MKL=ON,\n")
    assert blas_info(config, "ATen parallel backend: OpenMP\n") == {
        "blas": "mkl", "lapack": "mkl", "mkl": "2024.2", "onednn": "v3.12.0", "parallel": "OpenMP"}
    arm = "  - Build settings: BLAS_INFO=open, LAPACK_INFO=open, USE_MKL=OFF,\n"
    assert blas_info(arm, "") == {"blas": "open", "lapack": "open", "mkl": None, "onednn": None, "parallel": None}
    assert "; BLAS mkl 2024.2, oneDNN v3.12.0" in describe({**record, "blas": blas_info(config, "")})


def test_an_installed_moerl_reads_the_commit_its_build_recorded_or_says_it_is_unknown(tmp_path):
    """The end-to-end case (a built wheel in a fresh venv) is tests/test_packaging.py's wheel test."""
    info = tmp_path / "_build_info.json"
    assert build_commit(info) == (None, None)
    info.write_text(json.dumps({"commit": "0123456789abcdef", "dirty": True}))
    assert build_commit(info) == ("0123456789abcdef", True)
    info.write_text("{not json")
    assert build_commit(info) == (None, None)
    line = describe({"moerl": "0.1.0", "commit": None, "commit_source": UNKNOWN_COMMIT, "python": "3.11"})
    assert line.startswith("moerl 0.1.0 @ unknown (installed, not a checkout")


def test_every_training_session_adds_a_record_with_its_thread_count(tmp_path):
    run = RunDir.create(tmp_path, "r")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with running(run, "moe-dqn", 0, "cpu"):
            torch.set_num_threads(1)  # families set threads after the run starts: the record follows
        torch.set_num_threads(2)
        with running(run, "moe-dqn", 0, "cpu"):  # a resumed session, with its own count
            pass
    finally:
        torch.set_num_threads(threads)  # whatever the tests before left, restored for those after
    records = read_stacks(run.path)
    assert len(records) == 2 and records[0]["torch_threads"] == 1 and records[1]["torch_threads"] == 2


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
