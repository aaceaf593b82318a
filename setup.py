"""Build hook: the wheel records the git commit it was built from (``moerl/_build_info.json``).

Why: ``stack.json`` names the moerl commit behind every run, read from the git checkout when moerl runs from
one (an editable install). A plain ``pip install .`` (the README's first line) runs a copy in site-packages
with no ``.git`` beside it, so the commit must be written at build time or it is lost. Everything else about
the package is in ``pyproject.toml``. :func:`checkout_commit` repeats the two git calls of
``moerl.runs.provenance.source_commit`` on purpose: pip builds in an isolated environment without moerl's
dependencies, and importing any part of moerl imports Gymnasium (its env registration).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUILD_INFO = "_build_info.json"


def checkout_commit(root: Path) -> dict[str, object] | None:
    """``{"commit", "dirty"}`` of the git checkout at ``root`` (its own ``.git``), else None."""
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changes)} if commit else None


class BuildWithCommit(build_py):
    """``build_py`` that also writes the checkout's commit into the built package (never into the source)."""

    def run(self) -> None:
        super().run()
        info = checkout_commit(ROOT)
        if info is not None and not getattr(self, "editable_mode", False):  # an editable install reads .git
            target = Path(self.build_lib) / "moerl" / BUILD_INFO
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(info) + "\n")


setup(cmdclass={"build_py": BuildWithCommit})
