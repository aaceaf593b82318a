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
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from moerl.core.errors import ConfigError

POINTER = "checkpoint.json"
FOLDER = "checkpoints"
#: The run's config file, whose text the pointer keeps: a resume compares it with the file as it is then.
CONFIG_FILE = "config.yaml"
T = TypeVar("T")


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
    except BaseException as exc:  # a full disk, a second signal: leave no half-written folder behind
        shutil.rmtree(work, ignore_errors=True)
        disk = _os_error_behind(exc)
        if disk is not None and disk is not exc:  # a writer that wraps the disk's error (torch's RuntimeError)
            raise OSError(disk.errno, f"{disk.strerror} (writing the checkpoint of '{run_path}')") from None
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


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError (a full disk, an I/O error) that ``exc`` is, or that it was raised while handling: torch's
    writer reports a failed write as a RuntimeError whose context is the file's OSError."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def save_torch(obj: object, path: Path) -> None:
    """``torch.save(obj, path)`` through a Python file: a failed write (a full disk) is then an OSError that
    :func:`write_checkpoint` reports as one, and the file is closed at once, so the space of the removed
    half-written checkpoint comes back (torch's own file writer keeps it open while its error propagates,
    and the run could not even be marked failed)."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def has_checkpoint(run_path: str | Path) -> bool:
    """Whether the run has a checkpoint pointer at all, readable or not (a damaged one is still not nothing:
    a resume says what is wrong with it rather than the run being trained anew)."""
    return (Path(run_path) / POINTER).is_file()


@dataclass(frozen=True)
class Pointer:
    """What ``checkpoint.json`` says: the checkpoint's folder (inside the run; whether its files are there
    is checked as they are loaded, :func:`load_checkpoint_file`), its position, and the text ``config.yaml``
    had then (None for pointers written before it was kept)."""

    folder: Path
    step: int
    config: str | None


def read_pointer(run_path: str | Path) -> Pointer | None:
    """The run's checkpoint pointer, checked; None when the run has none.

    Why checked here: every family resumes through this pointer, so a damaged one (not JSON, not an object,
    a step that is not a whole number, a folder outside ``checkpoints/``) is refused in one line naming the
    file, for all of them, instead of a JSONDecodeError, KeyError or TypeError from whichever reader came
    first.
    """
    run_path = Path(run_path)
    path = run_path / POINTER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"'{path}' is damaged ({_first_line(exc)}); the run cannot resume from it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' is damaged (not a JSON object); the run cannot resume from it")
    folder, step, config = data.get("folder"), data.get("step"), data.get("config")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ConfigError(f"'{path}' is damaged (its step {step!r} is not a whole number); the run cannot resume")
    if not isinstance(folder, str) or not folder.startswith(f"{FOLDER}/") or ".." in Path(folder).parts:
        raise ConfigError(f"'{path}' is damaged (its folder {folder!r} is not one of {FOLDER}/); the run cannot "
                          "resume")
    if config is not None and not isinstance(config, str):
        raise ConfigError(f"'{path}' is damaged (its config is not text); the run cannot resume")
    return Pointer(run_path / folder, step, config)


def checkpoint_step(run_path: str | Path) -> int | None:
    """The position of the run's current checkpoint, or None when it has none (damaged: ConfigError)."""
    pointer = read_pointer(run_path)
    return None if pointer is None else pointer.step


def checkpoint_config_text(run_path: str | Path) -> str | None:
    """The text ``config.yaml`` had when the run's checkpoint was written (None for checkpoints written
    before the pointer kept it, or no checkpoint)."""
    pointer = read_pointer(run_path)
    return None if pointer is None else pointer.config


def checkpoint_folder(run_path: str | Path) -> Path:
    """The folder the pointer names (the run must have a checkpoint: see :func:`checkpoint_step`)."""
    pointer = read_pointer(run_path)
    if pointer is None:
        raise ConfigError(f"run '{run_path}' has no checkpoint ({POINTER})")
    return pointer.folder


def load_checkpoint_file(run_path: str | Path, name: str, loader: Callable[[Path], T]) -> T:
    """``loader(path)`` for the file ``name`` of the run's current checkpoint, or one line naming it.

    A missing file, or any exception from the loader (a truncated zip or pickle, random bytes, a pickle
    missing what the family needs), means the checkpoint cannot be used: one ConfigError for all of them,
    raised before the family writes anything, so the run is left as it was.
    """
    run_path = Path(run_path)
    path = checkpoint_folder(run_path) / name
    return load_or_refuse(path, f"run '{run_path}' has no {path.relative_to(run_path)} (its checkpoint is "
                                "incomplete); the run cannot resume", loader)


def load_or_refuse(path: Path, missing: str, loader: Callable[[Path], T]) -> T:
    """``loader(path)``; ``missing`` (a ConfigError) when there is no such file, and one line saying the
    file is damaged when the loader raises anything (a traceback would name the reader, not the file)."""
    if not path.is_file():
        raise ConfigError(missing)
    try:
        return loader(path)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001  (see the docstring)
        raise ConfigError(f"'{path}' is damaged and cannot be loaded ({type(exc).__name__}: "
                          f"{_first_line(exc)[:200]})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def remove_checkpoints(run_path: str | Path) -> None:
    """Drop the checkpoint of a run that finished: its final files hold everything (a study of hundreds of
    runs would otherwise keep a replay buffer, or an optimiser state, per run)."""
    run_path = Path(run_path)
    (run_path / POINTER).unlink(missing_ok=True)
    shutil.rmtree(run_path / FOLDER, ignore_errors=True)
