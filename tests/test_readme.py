"""Every ```python block of README.md runs, as a user would paste it, in a fresh interpreter.

Why: the README is the first thing a user copies from; an API change that breaks a snippet must fail CI.
Each block runs in its own subprocess in an empty temporary directory (files it writes stay there).
Snippets keep realistic budgets for a reader; the test lowers the integer literal given to ``.learn(...)``
to :data:`TINY_STEPS` so the suite stays fast. Nothing else is changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
