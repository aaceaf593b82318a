"""Architecture guards: import-linter contracts, mypy over the public modules, and the README's map.

Why these run as tests rather than as extra steps in the README's test line: the README's one test command
(``python -m pytest -n 2``) then covers them, they run in parallel with the rest of the suite, and a
failure reads like any other failing test. The map test keeps the README's per-research-line table and
the research-line contracts in ``pyproject.toml`` identical, and every module of the package in exactly
one cell, so a new module has to be placed (and is then guarded) before CI passes.
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
LINES = {"MoE DQN": "MoE DQN", "routing networks": "routing", "masked experts": "masked experts"}


def _tool(name: str) -> str:
    """The console script ``name`` of the running environment (not whatever is first on PATH)."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[dev]'"
    return found


def _package_modules() -> set[str]:
    """Every module of the package, ``__init__`` files left out (they only re-export)."""
    return {
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for path in (REPO / "moerl").rglob("*.py")
        if path.name != "__init__.py"
    }


def _readme_map() -> dict[str, dict[str, set[str]]]:
    """The README's architecture table as ``{column: {layer: {module, ...}}}``."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- architecture-map -->\n", 1)[1]
    rows = [line for line in block.splitlines() if line.startswith("|")][: 2 + 7]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table: dict[str, dict[str, set[str]]] = {column: {} for column in header[1:]}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        layer = cells[0]
        package = "moerl" if layer in ("cli", "root") else f"moerl.{layer}"
        for column, cell in zip(header[1:], cells[1:], strict=True):
            table[column][layer] = {f"{package}.{name}" for name in re.findall(r"`(\w+)\.py`", cell)}
    return table


def _line_contracts() -> dict[str, dict[str, list[str]]]:
    """The research-line contracts of pyproject.toml, by line name (as in their ``name``)."""
    out = {}
    for contract in PYPROJECT["tool"]["importlinter"]["contracts"]:
        match = re.match(r"Research line (.+?) imports neither", contract["name"])
        if match:
            out[match.group(1)] = contract
    return out


def test_import_contracts_hold():
    proc = subprocess.run([_tool("lint-imports"), "--no-logo", "--no-cache"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"Contracts: {len(PYPROJECT['tool']['importlinter']['contracts'])} kept, 0 broken." in proc.stdout


def test_import_contracts_catch_violations(tmp_path):
    """The contracts are not vacuous: the same config on a copy of the package with three bad imports fails."""
    shutil.copytree(REPO / "moerl", tmp_path / "moerl", ignore=shutil.ignore_patterns("__pycache__", "configs"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    bad = {
        "nn/record.py": "import gymnasium",  # moerl.nn is pure torch
        "nn/experts.py": "import moerl.envs.suite",  # a lower layer imports a higher one
        "agents/routers.py": "import moerl.nn.masked_linear",  # the routing line uses the vision line
    }
    for path, line in bad.items():
        file = tmp_path / "moerl" / path
        file.write_text(file.read_text() + f"\n{line}  # noqa\n")
    proc = subprocess.run([_tool("lint-imports"), "--no-logo", "--no-cache"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    broken = {m.group(1).split(":")[0] for m in re.finditer(r"^(.+) BROKEN( \(.*\))?$", proc.stdout, re.M)}
    assert broken == {
        "Layers",  # nn -> envs
        "moerl.nn is pure torch",  # directly, and through envs.suite
        "No import cycles between sibling modules or packages",  # envs -> nn -> envs
        "Research line routing imports neither the MoE DQN nor the masked-experts line",
    }, proc.stdout


@pytest.mark.slow
def test_public_modules_type_check():
    """``mypy`` with no arguments checks the configured public modules (py.typed ships: hints must be true)."""
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    expected = sum(
        1 if p.endswith(".py") else len(list((REPO / p).rglob("*.py")))
        for p in PYPROJECT["tool"]["mypy"]["files"]
    )
    assert f"Success: no issues found in {expected} source files" in proc.stdout, proc.stdout


def test_mypy_covers_the_public_modules():
    checked = PYPROJECT["tool"]["mypy"]["files"]
    for required in ("moerl/nn", "moerl/envs", "moerl/data", "moerl/errors.py", "moerl/config.py",
                     "moerl/config_files.py", "moerl/registry.py", "moerl/devices.py", "moerl/seeding.py"):
        assert required in checked


def test_readme_map_places_every_module_exactly_once():
    table = _readme_map()
    placed = [module for column in table.values() for cell in column.values() for module in cell]
    duplicates = sorted({m for m in placed if placed.count(m) > 1})
    assert not duplicates, f"in more than one cell of the README's architecture map: {duplicates}"
    assert set(placed) == _package_modules(), (
        f"missing from the map: {sorted(_package_modules() - set(placed))}; "
        f"not in the package: {sorted(set(placed) - _package_modules())}"
    )


def test_readme_map_and_research_line_contracts_agree():
    table, contracts = _readme_map(), _line_contracts()
    assert set(contracts) == set(LINES.values())
    members = {line: set().union(*table[column].values()) for column, line in LINES.items()}
    for line, contract in contracts.items():
        others = set().union(*(m for name, m in members.items() if name != line))
        assert set(contract["source_modules"]) == members[line], line
        assert set(contract["forbidden_modules"]) == others, line
