"""What produced a run: moerl's commit, the versions of the packages that shape results, the machine.

Why: the same command and seed give different numbers on another software stack (a new torch or
gymnasium changes kernels, float rounding or an environment's physics), and a results table is only
reproducible with the stack that made it. Every run directory therefore keeps ``stack.json``, a list
with one record per session that trained it (a resumed run adds one), and ``moerl report`` shows the
stacks it read and warns when a comparison mixes several. ``constraints.txt`` at the repository root pins
the stack the README's results came from (``pip install -c constraints.txt .``).

A record::

    {"moerl": "0.1.0", "commit": "62d3c8d...", "dirty": false, "commit_source": "checkout", "python": "3.11.2",
     "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6", ...}, "platform": "Linux-...",
     "cpu": "x86_64", "cpu_count": 2, "torch_threads": 1, "device": "cpu", "gpu": null,
     "started": "2026-11-23T18:30:00", "host": "..."}

``commit`` is the git commit of the moerl source, ``dirty`` whether tracked files differed from it, and
``commit_source`` where they were read (:func:`commit_record`): ``checkout`` (moerl runs from a git checkout,
an editable install), ``build`` (a wheel built from a checkout, ``pip install .``: the build wrote
``moerl/_build_info.json``), ``pip`` (``pip install git+URL@REV``: pip's ``direct_url.json``), or
:data:`UNKNOWN_COMMIT` with ``commit`` null, said in words rather than left as a bare null.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions can change a result (kernels, physics, algorithms, statistics).
RESULT_PACKAGES = ("torch", "numpy", "gymnasium", "stable-baselines3", "scipy", "rliable", "pandas")
STACK_FILE = "stack.json"


def package_versions(names: tuple[str, ...] = RESULT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def source_commit(path: Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding moerl's source, or ``(None, None)`` (a wheel install,
    no git, or a source tree that is not a repository)."""
    root = path or Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(changes)


#: ``commit_source`` when the commit cannot be known: an install from an sdist or a copy without ``.git``.
UNKNOWN_COMMIT = "unknown (installed, not a checkout, and not built from one)"
#: Written into the package by the wheel build (``setup.py``) when it is built from a git checkout.
BUILD_INFO = Path(__file__).resolve().parents[1] / "_build_info.json"


def build_commit(path: Path = BUILD_INFO) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` the wheel build recorded, or ``(None, None)``."""
    import json

    try:
        info = json.loads(path.read_text())
        return str(info["commit"]), bool(info["dirty"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def pip_vcs_commit() -> str | None:
    """The commit pip installed moerl from (``pip install git+URL@REV``: ``direct_url.json``), or None."""
    import json

    try:
        text = metadata.distribution("moerl").read_text("direct_url.json")
        commit = json.loads(text or "{}").get("vcs_info", {}).get("commit_id")
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        return None
    return str(commit) if commit else None


def commit_record() -> dict[str, Any]:
    """``commit``, ``dirty`` and ``commit_source`` of the running moerl (see the module docstring): the live
    checkout first (it is what runs), then the build's record, then pip's, else said to be unknown."""
    commit, dirty = source_commit()
    if commit is not None:
        return {"commit": commit, "dirty": dirty, "commit_source": "checkout"}
    commit, dirty = build_commit()
    if commit is not None:
        return {"commit": commit, "dirty": dirty, "commit_source": "build"}
    commit = pip_vcs_commit()
    if commit is not None:
        return {"commit": commit, "dirty": False, "commit_source": "pip"}
    return {"commit": None, "dirty": None, "commit_source": UNKNOWN_COMMIT}


def stack_record(device: str | None = None) -> dict[str, Any]:
    """The record of the current process (see the module docstring)."""
    import torch

    commit = commit_record()
    gpu = None
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return {
        "moerl": package_versions(("moerl",))["moerl"], **commit, "python": platform.python_version(),
        "packages": package_versions(), "platform": platform.platform(), "cpu": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": None if device is None else str(device), "gpu": gpu,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
    }


def stack_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two runs to count as made by the same stack: moerl's commit (and whether it
    was modified), Python and the result-shaping packages. The machine and thread count are shown, not
    compared (the same stack gives the same numbers on CPU)."""
    packages = record.get("packages") or {}
    return (record.get("commit"), record.get("dirty"), record.get("python"),
            tuple(sorted((k, v) for k, v in packages.items())))


def describe(record: dict[str, Any]) -> str:
    """One line naming a stack: commit, Python and package versions."""
    commit = record.get("commit")
    head = f"moerl {record.get('moerl')} @ {commit[:10] if commit else record.get('commit_source') or 'no git commit'}"
    if record.get("dirty"):
        head += " (modified)"
    packages = ", ".join(f"{k} {v}" for k, v in (record.get("packages") or {}).items() if v)
    return f"{head}; Python {record.get('python')}; {packages}"


def read_stacks(run_path: Path) -> list[dict[str, Any]]:
    """The records of a run directory's ``stack.json`` (empty for runs made before it existed)."""
    import json

    try:
        records = json.loads((Path(run_path) / STACK_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def stacks_markdown(run_paths: list[Path]) -> tuple[str, str | None]:
    """A Markdown section naming the software stacks of ``run_paths`` (runs per stack) and a warning when
    they are more than one: numbers from different stacks may differ for that reason alone. A resumed run
    trained on two stacks counts under each; a run without ``stack.json`` counts as an unknown stack."""
    runs_of: dict[tuple[Any, ...], list[str]] = {}
    names: dict[tuple[Any, ...], str] = {}
    for path in run_paths:
        records = read_stacks(path) or [{}]
        for record in records:
            key = stack_key(record) if record else ("unknown",)
            names[key] = describe(record) if record else "unknown (the run has no stack.json: made before moerl recorded it)"
            runs_of.setdefault(key, [])
            if path.name not in runs_of[key]:
                runs_of[key].append(path.name)
    lines = ["## Software stacks", ""]
    lines += [f"- {names[key]}: {len(runs)} run(s)" for key, runs in runs_of.items()]
    warning = None
    if len(runs_of) > 1:
        warning = (f"**Warning**: these runs come from {len(runs_of)} different software stacks (see 'Software "
                   "stacks'); differences between them may come from the stack rather than the method.")
    return "\n".join(lines), warning
