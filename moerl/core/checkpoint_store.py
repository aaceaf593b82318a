"""Where a run keeps its checkpoint: one complete folder at a time, swapped in atomically.

Layout: ``RUN/checkpoint.json`` names the current ``RUN/checkpoints/<kind>-<N>/`` (``N``: env steps for
MoE DQN, epochs or batches for the supervised families). A new checkpoint is written into a temporary
folder, flushed to disk, renamed into place, and only then does the pointer (itself written to a temporary
name, flushed and renamed) move to it; older folders are removed last. A kill or a full disk at any moment
therefore leaves one complete checkpoint and a pointer to it.

Why one module for every family: the trainers differ in *what* they save (SB3's model, replay buffer and
env for MoE DQN; a torch state dict for the supervised learners), not in how it reaches the disk safely.
The writer is given a folder to fill; this module owns the rest. It imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

POINTER = "checkpoint.json"
FOLDER = "checkpoints"
#: The run's config file, whose text the pointer keeps: a resume compares it with the file as it is then.
CONFIG_FILE = "config.yaml"


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())


def write_checkpoint(run_path: str | Path, step: int, write: Callable[[Path], None], kind: str = "step") -> Path:
    """Fill a fresh folder with ``write(folder)``, make it the run's checkpoint, drop older ones.

    ``step`` is the position the checkpoint was taken at (recorded in the pointer, shown by ``--resume``
    errors and used to purge TensorBoard events written after it). Returns the checkpoint's folder.
    """
    run_path = Path(run_path)
    final = run_path / FOLDER / f"{kind}-{step}"
    k = 1
    while final.exists():  # never replace the folder the pointer may name (a second checkpoint at one step)
        k += 1
        final = run_path / FOLDER / f"{kind}-{step}.{k}"
    work = run_path / FOLDER / f".{kind}-{step}.tmp-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        write(work)
        _fsync_tree(work)
    except BaseException:  # a full disk, a second signal: leave no half-written folder behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    work.rename(final)
    pointer = run_path / POINTER
    tmp = pointer.with_name(f".{POINTER}.tmp-{os.getpid()}")
    try:
        config = run_path / CONFIG_FILE
        record = {"folder": f"{FOLDER}/{final.name}", "step": step,
                  "config": config.read_text() if config.is_file() else None}
        tmp.write_text(json.dumps(record) + "\n")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(pointer)
    finally:
        tmp.unlink(missing_ok=True)
    for old in (run_path / FOLDER).iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_step(run_path: str | Path) -> int | None:
    """The position of the run's current checkpoint, or None when it has none."""
    pointer = Path(run_path) / POINTER
    if not pointer.is_file():
        return None
    return int(json.loads(pointer.read_text())["step"])


def checkpoint_config_text(run_path: str | Path) -> str | None:
    """The text ``config.yaml`` had when the run's checkpoint was written (None for checkpoints written
    before the pointer kept it)."""
    return json.loads((Path(run_path) / POINTER).read_text()).get("config")


def checkpoint_folder(run_path: str | Path) -> Path:
    """The folder the pointer names (the run must have a checkpoint: see :func:`checkpoint_step`)."""
    run_path = Path(run_path)
    return run_path / json.loads((run_path / POINTER).read_text())["folder"]


def remove_checkpoints(run_path: str | Path) -> None:
    """Drop the checkpoint of a run that finished: its final files hold everything (a study of hundreds of
    runs would otherwise keep a replay buffer, or an optimiser state, per run)."""
    run_path = Path(run_path)
    (run_path / POINTER).unlink(missing_ok=True)
    shutil.rmtree(run_path / FOLDER, ignore_errors=True)
