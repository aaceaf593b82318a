"""Shared test helpers: one torch thread (the machine has 2 cores), TensorBoard readers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # render checks run headless (pygame)


@pytest.fixture(scope="session", autouse=True)
def _sb3_logs_in_the_session_tmp(tmp_path_factory):
    """SB3 models learning without a logger of their own (``configure(None, ...)``) make a fresh
    ``/tmp/SB3-<time>`` folder each; thousands were left behind per test session. Point them, and the
    subprocesses tests start, at one folder under pytest's own temporary directory."""
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3-logs"))


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (scripts are not a package: loaded from their file)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_tb_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series in the TensorBoard event files under ``log_dir`` (read with EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files under {log_dir}"
    # One accumulator per folder, as TensorBoard reads a run: purge markers of a resumed run then apply
    # to the events its earlier files hold.
    for folder in sorted({f.parent for f in files}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


@pytest.fixture
def tb_scalars():
    return read_tb_scalars


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs (root only; skipped, with the reason, where nothing can be mounted): real EROFS."""
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({proc.stderr.decode().strip()})")
    yield ro
    subprocess.run(["umount", str(ro)], check=False)
