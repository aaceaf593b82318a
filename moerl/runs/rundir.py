"""Run directories: the unit of results.

Layout (every family writes the same skeleton, plus its own files)::

    RUN_DIR/
      status.json    {"status": "running" | "finished" | "failed" | "interrupted", "family", "seed",
                      "pid", "host", "heartbeat", "error", ...}
      config.yaml    the fully resolved config (re-runnable with ``moerl train --config``)
      tb/            TensorBoard event files
      results.json   final machine-readable summary (written at the end)
      stack.json     what produced the run, one record per training session (:mod:`.provenance`)
      .run.lock      flock-ed by the process training the run (one at a time; :func:`running_many`)
      ...            family files: model, eval.csv, plots

A directory whose ``status.json`` does not say ``finished`` is not a finished run; ``moerl eval``
refuses it. Config errors are raised before the directory is created, so bad input leaves nothing.

Honest files: every file a later command reads is written to a temporary name in the same directory,
flushed to disk and renamed (:meth:`RunDir.save_atomic`), so a crash or a full disk leaves the previous
complete file, never half of one. While a run trains, a heartbeat thread refreshes ``status.json`` every
:data:`HEARTBEAT_SECONDS`; with the pid and host recorded there, :func:`run_state` tells a live run from one
whose process died without a word (SIGKILL, out of memory, a machine crash).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from moerl.core.checkpoint_store import checkpoint_config_text, checkpoint_step, load_or_refuse
from moerl.core.config import flatten, parse_yaml
from moerl.core.errors import ConfigError
from moerl.runs.locks import exclusive_lock

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
TB_DIR = "tb"
#: Held (``flock``) by the process that trains the run (:func:`running_many`).
LOCK_FILE = ".run.lock"
#: Seconds between heartbeats of a running run; a heartbeat older than :data:`STALE_AFTER` means it died.
HEARTBEAT_SECONDS = 15.0
STALE_AFTER = 4 * HEARTBEAT_SECONDS


MAX_RUN_NAME = 120
#: Characters a run or sweep name may hold besides letters and digits (see :func:`check_run_name`).
NAME_PUNCTUATION = "._-+=,@"


def check_run_name(name: str, what: str = "run name") -> str:
    """A run name must be one sane folder name: it never reaches outside ``--logdir`` and is safe to paste.

    Why a fixed set (letters, digits and :data:`NAME_PUNCTUATION`, starting with a letter or digit): a name
    becomes a folder that users type, glob and pass to shell scripts and cluster tools; tabs, newlines,
    control characters, quotes and shell metacharacters (``$ ; | & * ?`` ...) in it break those silently or
    worse, and ``/`` or a leading ``.`` would leave the logdir or hide the run. The generated names
    (:func:`moerl.runs.kinds.default_run_name`) keep to this set. ``what`` names the value in the error
    (``run name``, ``sweep name``).
    """
    valid = (0 < len(name) <= MAX_RUN_NAME and name[0].isalnum()
             and all(c.isalnum() or c in NAME_PUNCTUATION for c in name))
    if not valid:
        raise ConfigError(
            f"{what} {name[:60]!r}{'...' if len(name) > 60 else ''} is not valid: it must be one folder name of "
            f"at most {MAX_RUN_NAME} characters: letters, digits and {' '.join(NAME_PUNCTUATION)}, starting with a "
            "letter or digit"
        )
    return name


class RunDir:
    """A run directory on disk, with helpers to write the standard files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        #: Created by this process (:meth:`create`) and not yet marked running: removed if it cannot start.
        self.fresh = False

    @property
    def tb_dir(self) -> Path:
        return self.path / TB_DIR

    @classmethod
    def create(cls, logdir: str | Path, name: str) -> RunDir:
        """Create a fresh directory ``logdir/name`` (``name-2``, ``name-3``... if taken)."""
        check_run_name(name)
        logdir = Path(logdir)
        check_outside_runs(logdir, "log directory")
        try:
            logdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create log directory '{logdir}': {exc.strerror}") from None
        if not os.access(logdir, os.W_OK):
            raise ConfigError(f"log directory '{logdir}' is not writable")
        candidate = logdir / name
        suffix = 2
        while True:
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                candidate = logdir / f"{name}-{suffix}"
                suffix += 1
        run = cls(candidate)
        try:
            run.tb_dir.mkdir()
        except OSError:  # a full disk: no empty run directory is left behind
            candidate.rmdir()
            raise
        run.fresh = True
        return run

    @classmethod
    def open_finished(cls, path: str | Path) -> RunDir:
        """Open an existing run directory, refusing anything that is not a finished run."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"'{path}' is a file, not a run directory; pass a directory written by 'moerl train'")
        if not run.path.is_dir():
            raise ConfigError(f"run directory '{path}' does not exist")
        status = run.read_status()
        state = run_state(status)
        if state != "finished":
            detail = {
                "crashed": " (its process died without a word: killed or the machine crashed)",
                "running": " (still training)",
            }.get(state, f" ({status['error']})" if status.get("error") else "")
            raise ConfigError(
                f"'{path}' is not a finished run (status: {state}{detail}); "
                "pass a directory written by a completed 'moerl train'"
            )
        return run

    @classmethod
    def open_resumable(cls, path: str | Path, family: str) -> tuple[RunDir, int]:
        """Open a run that ``moerl train --resume`` may continue; return it and its checkpoint's position.

        Refused (one line): a missing directory, a run still running or already finished, a run of another
        family, a run without a checkpoint (it stopped before the first one).
        """

        run = cls(path)
        status = resume_status(path)
        _refuse_unless_resumable(path, status)
        if status.get("family") != family:
            raise ConfigError(f"'{path}' is not a {family} run")
        step = checkpoint_step(run.path)
        if step is None:
            raise ConfigError(f"'{path}' has no checkpoint (it stopped before the first one); train it anew")
        _check_config_unchanged(run, path, step)
        return run, step

    def read_status(self) -> dict[str, Any]:
        """``status.json`` as a mapping: ``{}`` when there is none, and ``{"status": "corrupt", "error": why}``
        when it is not what moerl writes (see :func:`status_problem`), so that every reader can take its
        fields and every command names the damage (one run's junk never stops a listing)."""
        f = self.path / STATUS_FILE
        if not f.is_file():
            return {}
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            return {"status": "corrupt", "error": f"{STATUS_FILE} is not UTF-8 text"}
        except json.JSONDecodeError as exc:
            return {"status": "corrupt", "error": f"{STATUS_FILE} is not valid JSON ({exc.msg}, line {exc.lineno})"}
        problem = status_problem(data)
        return data if problem is None else {"status": "corrupt", "error": f"{STATUS_FILE} {problem}"}

    def write_status(self, status: str, **extra: Any) -> None:
        with _STATUS_LOCK:
            data = self.read_status()
            data.update(extra)
            data["status"] = status
            data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            data["heartbeat"] = time.time()
            self.write_json(STATUS_FILE, data)

    def heartbeat(self) -> None:
        """Refresh the heartbeat of a running run (keeps every other field)."""
        with _STATUS_LOCK:
            data = self.read_status()
            if data.get("status") != "running":
                return
            data["heartbeat"] = time.time()
            self.write_json(STATUS_FILE, data)

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_text(CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config; a missing or broken ``config.yaml`` is a one-line ConfigError."""
        path = self.path / CONFIG_FILE
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"run '{self.path}' has a missing or broken {CONFIG_FILE} ({first})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"run '{self.path}' has a broken {CONFIG_FILE} (not a mapping)")
        return data

    def load_artifact(self, name: str, loader: Callable[[Path], Any]) -> Any:
        """``loader(path)`` for the run's file ``name``, or one line saying it is missing or damaged.

        Any exception from the loader means the file cannot be used (a truncated zip, random bytes, a pickle
        from another version), so all are reported the same way rather than as a traceback.
        """
        return load_or_refuse(self.path / name, f"run '{self.path}' has no {name} (it did not finish writing it)",
                              loader)

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2, default=_json_default) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def write_text(self, name: str, text: str) -> None:
        """Write atomically (temp file, flush, rename) so a crash never leaves half a file."""

        def write(tmp: Path) -> None:
            with open(tmp, "w") as f:
                f.write(text)

        self.save_atomic(name, write)

    def save_atomic(self, name: str, write: Callable[[Path], Any]) -> Path:
        """Call ``write(tmp_path)``, fsync the file and rename it to ``name``; return the final path.

        The temporary name keeps the suffix (``.model.tmp-123.zip``) because writers such as SB3's
        ``save`` add one when it is missing. On any failure the temporary file is removed and the
        previous ``name`` (if any) is left as it was.
        """
        target = self.path / name
        tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}-{threading.get_ident()}{target.suffix}")
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            tmp.replace(target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target


def find_run_dirs(path: Path, _searched: set[Path] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """``path`` itself when it is a run directory (or not a directory: the caller reports it), else every run
    directory below it (a folder holding ``status.json``; nothing inside a run is searched) in name order, and
    ``(entry, reason)`` for each entry directly below ``path`` that is neither a run nor holds one (e.g. a
    ``table.md`` a script wrote beside the runs). A folder is searched once: a link back to one already
    searched (a symlink loop) is named once, not followed until the system's link limit."""
    if not path.is_dir() or (path / "status.json").is_file():
        return [str(path)], []
    searched = set() if _searched is None else _searched
    searched.add(path.resolve())
    runs: list[str] = []
    skipped: list[tuple[str, str]] = []
    try:
        children = sorted(path.iterdir())
    except OSError as exc:
        return [], [(str(path), f"cannot be read ({exc.strerror})")]
    for child in children:
        if child.name.startswith("."):
            continue  # .sweep state, temporary folders
        if child.is_dir() and child.resolve() in searched:
            skipped.append((str(child), f"a link to a folder searched already ({child.resolve()})"))
            continue
        found, _ = find_run_dirs(child, searched) if child.is_dir() else ([], [])
        found = [f for f in found if (Path(f) / "status.json").is_file()]
        if found:
            runs.extend(found)
        else:
            skipped.append((str(child), "not a run directory and holds none"))
    if not runs:
        skipped.append((str(path), "a folder with no run directory below it"))
    return runs, skipped


def status_problem(data: Any) -> str | None:
    """What makes a parsed ``status.json`` unlike any moerl writes (None: nothing): not a JSON object, or a
    field that commands read with a type they cannot use (``status`` and ``family`` are text, ``batch`` a
    mapping)."""
    if not isinstance(data, dict):
        return f"is not a JSON object (a {type(data).__name__})"
    for key, kind in (("status", str), ("family", str), ("batch", dict)):
        if key in data and not isinstance(data[key], kind):
            return f"has a '{key}' that is not {'text' if kind is str else 'a mapping'} ({json.dumps(data[key])[:40]})"
    return None


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory that ``path`` is, or lies inside (its ``tb/`` and every folder below), if any.

    Why: nothing inside a run is searched by ``moerl runs`` or ``moerl report``, and a run's files are its
    own, so nothing may be trained or written there.
    """
    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / STATUS_FILE).is_file():
            return folder
    return None


def check_outside_runs(path: str | Path, what: str) -> None:
    """Refuse ``path`` as the folder of new runs when it is a run directory or lies inside one (one line)."""
    inside = enclosing_run(path)
    if inside is not None:
        where = "is a run directory" if inside == Path(path).resolve() else f"is inside the run directory '{inside}'"
        raise ConfigError(f"{what} '{path}' {where}; a run inside a run is listed and reported by no command: "
                          "give a folder outside it")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_STATUS_LOCK = threading.Lock()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _try_status(run: RunDir, status: str, **extra: Any) -> None:
    """Record a final status; if even that fails (full disk), the stale heartbeat still tells the truth."""
    try:
        run.write_status(status, **extra)
    except OSError:
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, Slurm's ``scancel``, ``docker stop``) turned into an interruption of the run."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated("terminated by SIGTERM")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While training, SIGTERM interrupts like Ctrl-C (the run is marked, files stay whole)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _SignalStop:
    """State of :func:`stop_on_signals`: which signal asked to stop, if any."""

    def __init__(self) -> None:
        self.name: str | None = None

    def raise_if_stopped(self) -> None:
        """After the loop returned: turn the requested stop into the interruption ``running`` records."""
        if self.name == "SIGTERM":
            raise Terminated("terminated by SIGTERM (checkpoint saved)")
        if self.name == "SIGINT":
            raise KeyboardInterrupt("interrupted by the user (SIGINT; checkpoint saved)")


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None]) -> Iterator[_SignalStop]:
    """The first SIGINT / SIGTERM asks the loop to stop at a clean point (``request_stop(name)``), so that a
    checkpoint can be written; a second one interrupts at once, as usual."""
    state = _SignalStop()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if state.name is not None:  # asked twice: stop now
            if signum == signal.SIGTERM:
                raise Terminated("terminated by SIGTERM")
            raise KeyboardInterrupt
        state.name = name
        request_stop(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _record_stack(run: RunDir, device: str | None) -> None:
    """Append this session's :func:`~moerl.runs.provenance.stack_record` to ``stack.json``."""
    from moerl.runs.provenance import STACK_FILE, stack_record

    try:
        records = run.read_json(STACK_FILE)
    except (OSError, ValueError):
        records = []
    run.write_json(STACK_FILE, [*(records if isinstance(records, list) else []), stack_record(device)])


def _refresh_threads(run: RunDir) -> None:
    """The thread count of this session as it trained (families set it after the run starts)."""
    import torch

    from moerl.runs.provenance import STACK_FILE

    try:
        records = run.read_json(STACK_FILE)
        if records and records[-1].get("torch_threads") != torch.get_num_threads():
            records[-1]["torch_threads"] = torch.get_num_threads()
            run.write_json(STACK_FILE, records)
    except (OSError, ValueError, AttributeError, IndexError):
        pass


@contextmanager
def running(run: RunDir, family: str, seed: int | None, device: str | None = None,
            resumed_from: int | None = None) -> Iterator[RunDir]:
    """Mark ``run`` running (pid, host, heartbeat); on exit mark it finished, failed or interrupted.
    ``stack.json`` gets this session's software stack and machine (``device``: where it trains).
    ``resumed_from``: the checkpoint step a ``--resume`` loaded (see :func:`running_many`)."""
    with running_many([run], family, [seed], device, (run, resumed_from) if resumed_from is not None else None):
        yield run


class RunningRuns(Sequence[RunDir]):
    """What :func:`running_many` yields: its runs, and :meth:`finish` to release one that is done before the
    others (a batch member that reached its budget)."""

    def __init__(self, runs: Sequence[RunDir]) -> None:
        self.runs = list(runs)
        #: The runs the exit still marks (finished, failed or interrupted).
        self.active = list(runs)

    def __getitem__(self, index: Any) -> Any:
        return self.runs[index]

    def __len__(self) -> int:
        return len(self.runs)

    def finish(self, run: RunDir) -> None:
        """Mark ``run`` finished now; the exit leaves its status alone (its lock is kept until then)."""
        if run not in self.active:
            raise ValueError(f"'{run.path}' is not one of the running runs")
        _refresh_threads(run)
        run.write_status("finished")
        self.active.remove(run)


@contextmanager
def running_many(runs: Sequence[RunDir], family: str, seeds: Sequence[int | None],
                 device: str | None = None, resumed: tuple[RunDir, int] | None = None) -> Iterator[RunningRuns]:
    """:func:`running` for several runs one process trains together (the batched engine's seeds): one
    heartbeat thread for all of them, and all marked finished, failed or interrupted together, but for the
    runs released before with the yielded :meth:`RunningRuns.finish` (marked finished then, left alone after).

    Before anything is written, each run's lock (:data:`LOCK_FILE`) is taken and held to the end, so that one
    process at a time trains a run: a second ``--resume`` (or one of a run a fresh ``moerl train`` is
    training) is refused naming the holder. ``resumed``: (the run holding the checkpoint, the step loaded);
    under the locks, the runs are checked again to be resumable from that very checkpoint (another process
    may have trained them between the checks before loading and now).

    SIGTERM is taken over before the first "running" is written: a signal at any moment after it (a sweep
    stopping its children as they start) leaves no run "running" behind a dead process (a run being marked
    gets its previous status back; one marked is marked interrupted).
    """
    with contextlib.ExitStack() as locks:
        for run in runs:
            locks.enter_context(exclusive_lock(run.path / LOCK_FILE, functools.partial(_busy, run.path)))
        if resumed is not None:
            _check_still_resumable(runs, *resumed)
        marked = RunningRuns(runs)
        with _marked_running(marked, family, seeds, device, resumed[1] if resumed is not None else None):
            yield marked


def _busy(path: Path, holder: str) -> str:
    return (f"'{path}' is being trained by another moerl process ({holder}); wait for it, or stop it first "
            "(one process at a time trains a run)")


def _check_still_resumable(runs: Sequence[RunDir], holder: RunDir, step: int) -> None:
    for run in runs:
        _refuse_unless_resumable(run.path, resume_status(run.path))
    if checkpoint_step(holder.path) != step:
        raise ConfigError(f"the checkpoint of '{holder.path}' changed while this resume was starting (another "
                          "process trained the run); resume it again")


@contextmanager
def _marked_running(marked: RunningRuns, family: str, seeds: Sequence[int | None], device: str | None,
                    resumed_from: int | None) -> Iterator[None]:
    """The body of :func:`running_many`, under the runs' locks; at the exit, only the runs still active
    (not released by :meth:`RunningRuns.finish`) are marked."""
    runs = marked.runs
    seed_of = {id(run): seed for run, seed in zip(runs, seeds, strict=True)}

    def active() -> tuple[list[RunDir], list[int | None]]:
        now = list(marked.active)
        return now, [seed_of[id(run)] for run in now]

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            for run in list(marked.active):
                try:
                    run.heartbeat()
                except OSError:
                    pass

    thread = threading.Thread(target=beat, name="moerl-heartbeat", daemon=True)
    marking = True
    # One try from the first "running" to the end: a stop signal at any point in between (while marking, or
    # while the heartbeat thread starts, which can take a while on a loaded machine) marks the runs interrupted.
    with _sigterm_interrupts():  # before the first "running" is written (see running_many)
        try:
            _mark_running(runs, family, seeds, device, resumed_from)
            marking = False
            thread.start()
            yield
        except KeyboardInterrupt as exc:
            stop.set()
            _mark_interrupted(*active(), family, exc)
            raise
        except BaseException as exc:
            stop.set()
            if not marking:  # a failed marking has put the runs' files back itself (_mark_running)
                for run, seed in zip(*active(), strict=True):
                    _try_status(run, "failed", family=family, seed=seed, error=_one_line(exc))
            raise
        finally:
            stop.set()
            if thread.ident is not None:
                thread.join()
            if not marking:
                for run in marked.active:
                    _refresh_threads(run)
        for run in marked.active:
            run.write_status("finished")


def _mark_interrupted(runs: Sequence[RunDir], seeds: Sequence[int | None], family: str,
                      exc: KeyboardInterrupt) -> None:
    default = "terminated by SIGTERM" if isinstance(exc, Terminated) else "interrupted by the user (SIGINT)"
    for run, seed in zip(runs, seeds, strict=True):
        _try_status(run, "interrupted", family=family, seed=seed, error=str(exc) or default)


def _mark_running(runs: Sequence[RunDir], family: str, seeds: Sequence[int | None], device: str | None,
                  resumed_from: int | None) -> None:
    """Write each run's "running" status and this session's stack record. All or nothing: when one write
    fails (a full disk, a member directory deleted), the runs already marked get their previous files back,
    so no run is left saying "running" (or "failed") for a session that never trained it, and the fresh
    directories of a new run are removed (an empty ``NAME/tb/`` without ``status.json`` is no run)."""
    from moerl.runs.provenance import STACK_FILE

    extra = {"resumed_from": resumed_from} if resumed_from is not None else {}
    previous: list[tuple[RunDir, dict[str, bytes | None]]] = []
    try:
        for run, seed in zip(runs, seeds, strict=True):
            previous.append((run, {name: _read_bytes(run.path / name) for name in (STATUS_FILE, STACK_FILE)}))
            run.write_status("running", family=family, seed=seed, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                             pid=os.getpid(), host=socket.gethostname(), **extra)
            _record_stack(run, device)
    except Exception:  # a failed write; a stop signal instead marks the runs interrupted (_marked_running)
        for run, files in previous:
            if not run.fresh:
                for name, data in files.items():
                    _restore(run, name, data)
        for run in runs:
            if run.fresh:
                shutil.rmtree(run.path, ignore_errors=True)
        raise
    for run in runs:
        run.fresh = False


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _restore(run: RunDir, name: str, data: bytes | None) -> None:
    """Put back a file as it was (``None``: it did not exist); best effort (the disk may be full)."""
    try:
        if data is None:
            (run.path / name).unlink(missing_ok=True)
        else:
            run.save_atomic(name, lambda tmp: tmp.write_bytes(data))
    except OSError:
        pass


def resume_status(path: str | Path) -> dict[str, Any]:
    """The ``status.json`` of the run ``--resume`` was given, or one line saying what ``path`` is instead: a
    missing path, a file, an empty folder, a folder without ``status.json``, or one whose ``status.json`` is
    not moerl's (not JSON, not an object, no family). Reads only."""
    folder = Path(path)
    if not folder.exists():
        raise ConfigError(f"run directory '{path}' does not exist")
    if not folder.is_dir():
        raise ConfigError(f"'{path}' is a file, not a run directory; give the folder 'moerl train' printed")
    status_file = folder / STATUS_FILE
    if not status_file.is_file():
        what = "an empty folder" if not any(folder.iterdir()) else f"a folder without {STATUS_FILE}"
        raise ConfigError(f"'{path}' is {what}, not a run directory written by 'moerl train'; nothing to resume")
    try:
        status = json.loads(status_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"'{status_file}' is damaged ({first}); moerl cannot tell what run this is") from None
    if not isinstance(status, dict) or not isinstance(status.get("family"), str):
        raise ConfigError(f"'{status_file}' is damaged (not a JSON object naming the run's family); moerl cannot "
                          "tell what run this is")
    return status


def _refuse_unless_resumable(path: str | Path, status: dict[str, Any]) -> None:
    """Refuse a run that is training now (naming its process) or already finished."""
    state = run_state(status)
    if state == "running":
        raise ConfigError(f"'{path}' is running (pid {status.get('pid')} on {status.get('host')}); only "
                          "interrupted, failed or crashed runs resume; wait for it, or stop it first")
    if state == "finished":
        raise ConfigError(f"'{path}' is finished; only interrupted, failed or crashed runs resume")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed process whose parent died too stays a zombie until init reaps it: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def run_state(status: dict[str, Any], now: float | None = None) -> str:
    """What a status really means: its own word, or ``crashed`` for a "running" run that is not.

    A run is crashed when its process is gone (same host, pid not alive) or, from another host, when its
    heartbeat is older than :data:`STALE_AFTER` seconds.
    """
    state = status.get("status", "missing")
    if state != "running":
        return state
    now = time.time() if now is None else now
    pid, host = status.get("pid"), status.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return "crashed"
    beat = status.get("heartbeat")
    if isinstance(beat, (int, float)) and now - beat > STALE_AFTER:
        return "crashed"
    return "running"


#: Top-level config keys ``--resume`` itself may change (a new total, where to continue).
RESUMABLE_KEYS = ("timesteps", "epochs", "device")


def _check_config_unchanged(run: RunDir, path: str | Path, step: int) -> None:
    """Refuse to resume a run whose ``config.yaml`` differs from the one its checkpoint was written with
    (beyond :data:`RESUMABLE_KEYS`): the checkpoint holds a network, an optimiser and data of that config, so
    an edited file would be recorded but not used, or used half-way; one line names the first key that
    differs."""
    saved_text = checkpoint_config_text(run.path)
    config_file = run.path / "config.yaml"
    if saved_text is None or not config_file.is_file():
        return
    try:
        saved, now = parse_yaml(saved_text) or {}, parse_yaml(config_file.read_text()) or {}
    except Exception:  # noqa: BLE001 (a damaged file: the family's own reading refuses it with its line)
        return
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return
    a = {k: v for k, v in flatten(saved).items() if k not in RESUMABLE_KEYS}
    b = {k: v for k, v in flatten(now).items() if k not in RESUMABLE_KEYS}
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise ConfigError(
                f"'{path}': config.yaml differs from the one its checkpoint (step {step}) was written with at "
                f"'{key}' ({b.get(key)!r}, was {a.get(key)!r}); a resumed run keeps its config: restore the "
                f"file, or train a new run (only {', '.join('--' + k for k in RESUMABLE_KEYS)} may change)")

