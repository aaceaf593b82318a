"""Every ```python block of README.md runs, as a user would paste it, in a fresh interpreter.

Why: the README is the first thing a user copies from; an API change that breaks a snippet must fail CI.
Each block runs in its own subprocess in an empty temporary directory (files it writes stay there).
Snippets keep realistic budgets for a reader; the test lowers the integer literal given to ``.learn(...)``
to :data:`TINY_STEPS` so the suite stays fast. Nothing else is changed.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy (a dev dependency) brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
TINY_STEPS = 600  # > the default learning_starts (500), so a few gradient updates run as well
_LEARN = re.compile(r"(\.learn\(\s*(?:total_timesteps\s*=\s*)?)(\d[\d_]*)")


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced blocks whose info string is ``python`` (in order)."""
    return [m.group(1) for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", markdown, re.M | re.S)]


def shrink_budgets(code: str, steps: int = TINY_STEPS) -> str:
    """Replace integer literals passed to ``.learn(...)`` by ``steps`` (only when they are larger)."""
    return _LEARN.sub(lambda m: m.group(1) + str(min(steps, int(m.group(2).replace("_", "")))), code)


BLOCKS = python_blocks((REPO / "README.md").read_text())


def test_extraction_and_budget_rewrite():
    text = "x\n```python\nm.learn(10_000)\nm.learn(total_timesteps=50)\n```\n```bash\nls\n```\n```python\n1\n```\n"
    assert python_blocks(text) == ["m.learn(10_000)\nm.learn(total_timesteps=50)\n", "1\n"]
    assert shrink_budgets("m.learn(10_000)\nm.learn(total_timesteps=50)") == (
        f"m.learn({TINY_STEPS})\nm.learn(total_timesteps=50)"
    )
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, tmp_path):
    code = shrink_budgets(BLOCKS[index])
    script = tmp_path / f"readme_block{index}.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}  # one torch thread, as the suite runs under pytest -n 2
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"README python block {index} failed:\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"


def _marked_block(markdown: str, marker: str) -> list[str]:
    """Lines of the fenced block right after ``<!-- marker -->`` (what .ci/run executes)."""
    match = re.search(rf"^<!-- {marker} -->\n```\w*\n(.*?)^```", markdown, re.M | re.S)
    assert match, f"README.md has no block marked <!-- {marker} -->"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_first_screen_is_two_commands_with_torch_pinned():
    """A fresh machine needs exactly two lines: install + headline run, and install + tests (run by CI)."""
    text = (REPO / "README.md").read_text()
    (install,) = _marked_block(text, "ci:install")
    (tests,) = _marked_block(text, "ci:test")
    assert install.endswith("moerl train --env cartpole-crl --arch big --router softmoe")
    assert "scripts/install-data.sh" in tests and "ruff check ." in tests and "pytest -n 2" in tests
    for line in (install, tests):
        assert line.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
        # torch is installed pinned before anything that depends on it (else pip pulls a multi-GB CUDA build)
        installs = re.findall(r"pip install ([^&]+)", line)
        assert installs[0].strip() == "torch==2.13.0", installs
    assert text.index("<!-- ci:install -->") < text.index("<!-- ci:test -->") < text.index("## Contents")
    assert "ci:install" in (REPO / ".ci" / "run").read_text() and "ci:test" in (REPO / ".ci" / "run").read_text()


# --- the first line's install gives what the README's commands import -----------------------------------

#: Third-party modules moerl imports that the first line's install need not give, each with the install the
#: README names for the commands that use it (``moerl sweep --backend ray``; the ``digits-mtl`` test data; the
#: MinAtar suites, whose package is GPL-3.0 and optional).
SEPARATE_INSTALLS = {"ray": '".[ray]"', "sklearn": '-e ".[dev]"', "minatar": '".[minatar]"'}


def imported_modules(package: Path) -> dict[str, str]:
    """Top-level third-party module -> one file of ``package`` that imports it (lazy imports included)."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != package.name:
                    found.setdefault(top, str(path.relative_to(package.parent)))
    return found


def installed_closure(requirements: list[str]) -> set[str]:
    """Distribution names that installing ``requirements`` brings, following the installed packages'
    metadata (the extras each requirement names included, environment markers evaluated here)."""
    todo, seen = [Requirement(text) for text in requirements], set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(key)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(Requirement(str(sub).split(";")[0]))
    return {name for name, _ in seen}


def install_extras(line: str) -> set[str]:
    """The extras of the ``pip install ... .[a,b]`` of moerl itself in a README line (none for a bare ``.``)."""
    targets = [m.group(1) for part in re.findall(r"pip install ([^&]+)", line)
               for m in re.finditer(r"""(?:^|\s)["']?\.(\[[^\]]*\])?["']?(?=\s|$)""", part)]
    assert len(targets) == 1, f"no single install of moerl itself in {line!r}"
    return {e.strip() for e in targets[0].strip("[]").split(",")} if targets[0] else set()


def test_install_line_gives_every_module_the_readmes_commands_import():
    """``moerl report`` crashed with "No module named 'scipy'" after the first line's install (``.``): scipy
    and rliable live in the ``stats`` extra. Every third-party module moerl imports must come with the first
    line's install (core dependencies and the extras it names, with what they pull in), or be one the README
    gives its own install line for."""
    text = (REPO / "README.md").read_text()
    (install,) = _marked_block(text, "ci:install")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = install_extras(install)
    assert extras <= set(project["optional-dependencies"]), extras
    requirements = [*project["dependencies"], *(r for e in sorted(extras) for r in project["optional-dependencies"][e])]
    given = installed_closure(requirements)
    provides = metadata.packages_distributions()
    missing = {module: where for module, where in imported_modules(REPO / "moerl").items()
               if module not in SEPARATE_INSTALLS
               and not any(canonicalize_name(d) in given for d in provides.get(module, []))}
    assert not missing, f"the README's install ({install}) does not give: {missing}"
    assert {"scipy", "rliable"} <= set(imported_modules(REPO / "moerl"))  # what moerl report imports
    for module, install_text in SEPARATE_INSTALLS.items():
        assert install_text in text, f"README names no install for {module} ({install_text})"


def test_install_extras_reads_the_pip_target():
    line = 'pip install torch==2.13.0 && pip install -c constraints.txt ".[stats, ray]" && moerl train'
    assert install_extras(line) == {"stats", "ray"}
    assert install_extras("pip install torch==2.13.0 && pip install -c constraints.txt . && moerl train") == set()
    assert install_extras('pip install -c constraints.txt -e ".[dev]" && bash scripts/install-data.sh') == {"dev"}
