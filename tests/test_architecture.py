"""Architecture guards: import-linter contracts over folders, mypy over the package, the README's map.

Why these run as tests rather than as extra steps in the README's test line: the README's one test command
(``python -m pytest -n 2``) then covers them, they run in parallel with the rest of the suite, and a
failure reads like any other failing test. The contracts are written over packages, so a new module is
guarded by the folder it lands in; there is no list of modules to keep in step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy (a dev dependency) brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    """The console script ``name`` of the running environment (not whatever is first on PATH)."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[dev]'"
    return found


def _lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("lint-imports"), "--no-logo", "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, env=env)


def test_import_contracts_hold():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"Contracts: {len(PYPROJECT['tool']['importlinter']['contracts'])} kept, 0 broken." in proc.stdout


def test_import_contracts_catch_violations(tmp_path):
    """The contracts are not vacuous: the same config on a copy of the package with bad imports fails each."""
    shutil.copytree(REPO / "moerl", tmp_path / "moerl", ignore=shutil.ignore_patterns("__pycache__", "configs"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    bad = {
        "nn/record.py": "import gymnasium",  # the shared kit is pure torch
        "routing/policies.py": "import moerl.masked.nn.linear",  # one research line uses another
        "rl/nets/qnetwork.py": "import moerl.rl.sb3.policy",  # inside rl: networks import an engine
        "runs/tables.py": "import moerl.runs.listing",  # tables <- listing <- tables: a cycle in runs/
    }
    for path, line in bad.items():
        file = tmp_path / "moerl" / path
        file.write_text(file.read_text() + f"\n{line}  # noqa\n")
    proc = _lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    n = len(PYPROJECT["tool"]["importlinter"]["contracts"])
    assert f"Contracts: 0 kept, {n} broken." in proc.stdout, proc.stdout  # each bad import breaks its contract


def test_the_lines_and_shared_layers_are_the_packages_of_moerl():
    """The top layer contract names every package of moerl (a new folder must be placed in it)."""
    layers = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    named = {m.strip() for layer in layers["layers"] for m in re.split(r"[:|]", layer)}
    packages = {f"moerl.{p.name}" for p in (REPO / "moerl").iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= named, sorted(packages - named)


@pytest.mark.slow
def test_the_package_type_checks():
    """``mypy`` with no arguments checks the whole package (py.typed ships: hints must be true)."""
    assert PYPROJECT["tool"]["mypy"]["files"] == ["moerl"]
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    expected = len(list((REPO / "moerl").rglob("*.py")))
    assert f"Success: no issues found in {expected} source files" in proc.stdout, proc.stdout


def test_the_readme_map_and_where_a_change_goes_name_real_files():
    """Every path the README's architecture section names exists, and the map names every package."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Architecture\n", 1)[1].split("\n## ", 1)[0]
    paths = set(re.findall(r"`(moerl/[\w/.]+)`", section))
    assert len(paths) >= 15, paths
    missing = sorted(p for p in paths if not (REPO / p.split(" ")[0]).exists())
    assert not missing, missing
    packages = {f"moerl/{p.name}/" for p in (REPO / "moerl").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= paths, sorted(packages - paths)


def test_modules_that_promise_no_torch_load_without_it():
    """The CLI's start-up and the registries it reads import no torch (their docstrings promise it; a hoisted
    import once broke that silently)."""
    light = ["moerl.cli", "moerl.nn.choices", "moerl.routing.config", "moerl.runs.sweep.spec", "moerl.runs.kinds",
             "moerl.masked.grid"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in light) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
