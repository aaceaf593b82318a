"""Run directories: the unit of results.

Layout (every family writes the same skeleton, plus its own files)::

    RUN_DIR/
      status.json    {"status": "running" | "finished" | "failed" | "interrupted", "family", "seed", ...}
      config.yaml    the fully resolved config (re-runnable with ``moerl train --config``)
      tb/            TensorBoard event files
      results.json   final machine-readable summary (written at the end)
      ...            family files: model, eval.csv, plots

A directory whose ``status.json`` does not say ``finished`` is not a finished run; ``moerl eval``
refuses it. Config errors are raised before the directory is created, so bad input leaves nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from moerl.errors import ConfigError

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
TB_DIR = "tb"


class RunDir:
    """A run directory on disk, with helpers to write the standard files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def tb_dir(self) -> Path:
        return self.path / TB_DIR

    @classmethod
    def create(cls, logdir: str | Path, name: str) -> RunDir:
        """Create a fresh directory ``logdir/name`` (``name-2``, ``name-3``... if taken)."""
        logdir = Path(logdir)
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
        run.tb_dir.mkdir()
        return run

    @classmethod
    def open_finished(cls, path: str | Path) -> RunDir:
        """Open an existing run directory, refusing anything that is not a finished run."""
        run = cls(path)
        if not run.path.is_dir():
            raise ConfigError(f"run directory '{path}' does not exist")
        status = run.read_status()
        if status.get("status") != "finished":
            raise ConfigError(
                f"'{path}' is not a finished run (status: {status.get('status', 'missing')}); "
                "pass a directory written by a completed 'moerl train'"
            )
        return run

    def read_status(self) -> dict[str, Any]:
        f = self.path / STATUS_FILE
        if not f.is_file():
            return {}
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError:
            return {"status": "corrupt"}

    def write_status(self, status: str, **extra: Any) -> None:
        data = self.read_status()
        data.update(extra)
        data["status"] = status
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.write_json(STATUS_FILE, data)

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_text(CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / CONFIG_FILE).read_text()) or {}

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2, default=_json_default) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def write_text(self, name: str, text: str) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        target = self.path / name
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextmanager
def running(run: RunDir, family: str, seed: int | None) -> Iterator[RunDir]:
    """Mark ``run`` running; on exit mark it finished, failed or interrupted."""
    run.write_status("running", family=family, seed=seed, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        yield run
    except KeyboardInterrupt:
        run.write_status("interrupted")
        raise
    except BaseException as exc:
        run.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.write_status("finished")
