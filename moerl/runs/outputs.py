"""Where ``moerl report`` and ``moerl eval`` may write: never a directory given as a file, never inside a
run, never over a folder that is not a report written before."""

from __future__ import annotations

from pathlib import Path

from moerl.core.errors import ConfigError
from moerl.runs.rundir import STATUS_FILE


def check_output_path(out: str | Path) -> Path:
    """An output file for a report or an evaluation: never a directory, never a run's own file."""
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"output '{out}' is a directory; give a file name (e.g. {Path(out) / 'report.md'})")
    if (path.parent / STATUS_FILE).is_file() and path.exists():
        raise ConfigError(f"output '{out}' is a file of the run directory '{path.parent}'; refusing to overwrite it")
    if not path.parent.is_dir():
        raise ConfigError(f"output directory '{path.parent}' does not exist")
    return path


REPORT_FILE = "report.md"


def check_output_dir(out: str | Path) -> Path:
    """A report directory: new, or a report written before (replaced whole); never a run or other folder."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output '{out}' is a file; give a directory for the report and its figures")
    if (path.parent / STATUS_FILE).is_file() or (path / STATUS_FILE).is_file():
        raise ConfigError(f"output '{out}' is inside a run directory; refusing to write there")
    if path.is_dir():
        files = list(path.iterdir())
        if files and not ((path / REPORT_FILE).is_file()
                          and all(f.is_file() and (f.name == REPORT_FILE or f.suffix == ".png") for f in files)):
            raise ConfigError(f"output '{out}' is a directory with other files (not a report written by "
                              f"'moerl report'); give a new directory, e.g. {path / 'report'}")
    if not path.parent.is_dir():
        raise ConfigError(f"output directory '{path.parent}' does not exist")
    return path
