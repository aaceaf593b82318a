"""Where ``moerl report`` and ``moerl eval`` may write: never a directory given as a file, never inside a
run, never over a folder that is not a report written before."""

from __future__ import annotations

from pathlib import Path

from moerl.core.errors import ConfigError
from moerl.runs.rundir import enclosing_run

#: The first line of every Markdown file moerl writes as a command's output, and the key of its JSON
#: outputs: an existing file without it is not moerl's to replace.
MARKDOWN_MARK = "<!-- written by moerl -->"
JSON_MARK = "written_by"


def check_output_path(out: str | Path) -> Path:
    """An output file for a report or an evaluation: never a directory, never inside a run directory (its
    files, ``tb/`` and every folder below it), never a file that moerl did not write."""
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"output '{out}' is a directory; give a file name (e.g. {Path(out) / 'report.md'})")
    _refuse_inside_run(path, out)
    if not path.parent.is_dir():
        raise ConfigError(f"output directory '{path.parent}' does not exist")
    if path.exists() and not written_by_moerl(path):
        raise ConfigError(f"output '{out}' exists and was not written by moerl; refusing to replace it "
                          "(give a new file name)")
    return path


def written_by_moerl(path: Path) -> bool:
    """True for a file a moerl command wrote as its output (the mark it leaves; see :data:`MARKDOWN_MARK`)."""
    try:
        head = path.read_text(errors="replace")[:4096]
    except OSError:
        return False
    return head.startswith(MARKDOWN_MARK) or f'"{JSON_MARK}": "moerl' in head


def _refuse_inside_run(path: Path, out: str | Path) -> None:
    folder = enclosing_run(path)
    if folder is not None:
        raise ConfigError(f"output '{out}' is inside the run directory '{folder}'; refusing to write there")


REPORT_FILE = "report.md"


def check_output_dir(out: str | Path) -> Path:
    """A report directory: new, or a report written before (replaced whole); never inside a run, never a
    folder that holds anything else."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output '{out}' is a file; give a directory for the report and its figures")
    _refuse_inside_run(path, out)
    if path.is_dir():
        files = list(path.iterdir())
        if files and not ((path / REPORT_FILE).is_file() and written_by_moerl(path / REPORT_FILE)
                          and all(f.is_file() and (f.name == REPORT_FILE or f.suffix == ".png") for f in files)):
            raise ConfigError(f"output '{out}' is a directory with other files (not a report written by "
                              f"'moerl report'); give a new directory, e.g. {path / 'report'}")
    if not path.parent.is_dir():
        raise ConfigError(f"output directory '{path.parent}' does not exist")
    return path
