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
     "cpu_capability": "AVX512", "cpu_model": "Intel(R) Xeon(R) Processor",
     "blas": {"blas": "mkl", "lapack": "mkl", "mkl": "2024.2", "onednn": "v3.12.0", "parallel": "OpenMP"},
     "started": "2026-11-23T18:30:00", "host": "..."}

Why the CPU: the same stack computes different float roundings on different CPUs, because torch picks its
kernels by the instruction set it finds (``cpu_capability``: ``torch.backends.cpu.get_cpu_capability()``,
e.g. AVX2 or AVX512) and its BLAS and oneDNN (MKL on x86 builds, parsed from ``torch.__config__``) pick
theirs; one rounding apart, a run's greedy episodes diverge and its numbers with them. A run reproduces
bit for bit on the same stack and the same kind of CPU; ``scripts/check_results.py`` compares exactly only
when the CPU capability equals the one a README block records, and statistically otherwise.

``commit`` is the git commit of the moerl source, ``dirty`` whether tracked files differed from it, and
``commit_source`` where they were read (:func:`commit_record`): ``checkout`` (moerl runs from a git checkout,
an editable install), ``build`` (a wheel built from a checkout, ``pip install .``: the build wrote
``moerl/_build_info.json``), ``pip`` (``pip install git+URL@REV``: pip's ``direct_url.json``), or
:data:`UNKNOWN_COMMIT` with ``commit`` null, said in words rather than left as a bare null.
"""

from __future__ import annotations

import os
import platform
import re
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


def cpu_capability() -> str | None:
    """The instruction set torch's CPU kernels use here (``AVX2``, ``AVX512``, ``DEFAULT``...), or None."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word for it), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def blas_info(config: str | None = None, parallel: str | None = None) -> dict[str, str | None]:
    """The linear-algebra libraries torch was built with, short: BLAS and LAPACK, the MKL and oneDNN versions
    and the parallel backend, parsed from ``torch.__config__.show()`` and ``parallel_info()`` (or the texts
    given); None for what the build does not say."""
    if config is None or parallel is None:
        import torch

        config = torch.__config__.show() if config is None else config
        parallel = torch.__config__.parallel_info() if parallel is None else parallel

    def find(pattern: str, text: str) -> str | None:
        match = re.search(pattern, text)
        return match.group(1) if match else None

    return {
        "blas": find(r"BLAS_INFO=([^,\s]+)", config),
        "lapack": find(r"LAPACK_INFO=([^,\s]+)", config),
        "mkl": find(r"Math Kernel Library Version ([\d.]+)", config),
        "onednn": find(r"(?:MKL-DNN|oneDNN) (v[\d.]+)", config),
        "parallel": find(r"ATen parallel backend: (\S+)", parallel),
    }


def blas_text(blas: dict[str, Any] | None) -> str | None:
    """``mkl 2024.2, oneDNN v3.12.0`` from :func:`blas_info`'s record, or None when it names nothing."""
    if not blas:
        return None
    library = " ".join(filter(None, [blas.get("blas"), blas.get("mkl")]))
    onednn = f"oneDNN {blas['onednn']}" if blas.get("onednn") else ""
    return ", ".join(p for p in (library, onednn) if p) or None


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
        "cpu_capability": cpu_capability(), "cpu_model": cpu_model(), "blas": blas_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
    }


def stack_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two runs to count as made by the same stack: moerl's commit (and whether it
    was modified), Python, the result-shaping packages, and the CPU capability and BLAS torch computes
    with (they change float rounding). The machine's name and thread count are shown, not compared."""
    packages = record.get("packages") or {}
    return (record.get("commit"), record.get("dirty"), record.get("python"),
            tuple(sorted((k, v) for k, v in packages.items())), record.get("cpu_capability"),
            blas_text(record.get("blas")))


def describe(record: dict[str, Any]) -> str:
    """One line naming a stack: commit, Python, package versions, and the CPU capability and BLAS when the
    record has them (``scripts/check_results.py`` reads the capability from this line)."""
    commit = record.get("commit")
    head = f"moerl {record.get('moerl')} @ {commit[:10] if commit else record.get('commit_source') or 'no git commit'}"
    if record.get("dirty"):
        head += " (modified)"
    packages = ", ".join(f"{k} {v}" for k, v in (record.get("packages") or {}).items() if v)
    line = f"{head}; Python {record.get('python')}; {packages}"
    if record.get("cpu_capability"):
        line += f"; CPU capability {record['cpu_capability']}"
    blas = blas_text(record.get("blas"))
    if blas:
        line += f"; BLAS {blas}"
    return line


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
