"""Packaging: the configs ship inside the package and ``--config`` finds them by short name.

The wheel test at the end installs the built wheel into a fresh virtual environment and trains one
shipped config per family from a directory outside the repository, so a file that only exists in the
source tree (a config, a data file, a module missing from the wheel) fails here and not on a user's machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

import pytest

from moerl.core.config import load_yaml
from moerl.core.config_files import CONFIG_ROOT, resolve_config_file, shipped_configs
from moerl.core.errors import ConfigError
from moerl.runs.provenance import UNKNOWN_COMMIT

REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_are_the_yaml_files_of_the_package():
    names = shipped_configs()
    on_disk = sorted(p.relative_to(CONFIG_ROOT).with_suffix("").as_posix() for p in CONFIG_ROOT.rglob("*.yaml"))
    assert names == on_disk and len(names) >= 30
    assert {"dqn/rlzoo-cartpole", "routing/quick-digits", "vision/quick"} <= set(names)
    assert CONFIG_ROOT == REPO / "moerl" / "configs"  # inside the package, hence shipped as package data


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_is_a_yaml_mapping(name):
    assert isinstance(load_yaml(resolve_config_file(name)), dict)


@pytest.mark.parametrize("text", [
    "dqn/rlzoo-cartpole", "dqn/rlzoo-cartpole.yaml", "configs/dqn/rlzoo-cartpole.yaml",
    "./configs/dqn/rlzoo-cartpole.yaml",
])
def test_shipped_names_resolve_with_or_without_suffix_and_old_prefix(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ directory here: the name must come from the package
    assert resolve_config_file(text) == CONFIG_ROOT / "dqn" / "rlzoo-cartpole.yaml"


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "dqn" / "rlzoo-cartpole.yaml"
    mine.parent.mkdir()
    mine.write_text("env: CartPole-v1\n")
    assert resolve_config_file("dqn/rlzoo-cartpole.yaml") == Path("dqn/rlzoo-cartpole.yaml")
    assert resolve_config_file(str(mine)) == mine
    assert resolve_config_file("dqn/rlzoo-cartpole") == CONFIG_ROOT / "dqn" / "rlzoo-cartpole.yaml"


@pytest.mark.parametrize("text,hint", [
    ("dqn/big-sofmoe", "(did you mean 'dqn/big-softmoe'?)"),
    ("configs/vision/G7c.yaml", "(did you mean 'vision/G7"),
    ("big-softmoe", "(did you mean 'dqn/big-softmoe'?)"),  # the family is missing
    ("/nonexistent/x.yaml", ""),
])
def test_unknown_config_is_one_line_with_a_hint_and_the_shipped_names(text, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_config_file(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config '{text}' does not exist")
    assert hint in message
    assert message.endswith("shipped configs: " + ", ".join(shipped_configs()))


def test_a_directory_is_not_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dqn").mkdir()
    for text in ("dqn", "configs/dqn", "vision/"):
        with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
            resolve_config_file(text)


# --- the built wheel, installed into a fresh virtual environment -------------------------------------

#: One shipped config per family, with budgets small enough for CI (seconds each).
FAMILY_RUNS = {
    "moe-dqn": ["--config", "dqn/big-softmoe", "--env", "cartpole-mtrl", "--timesteps", "300",
                "--set", "dqn.learning_starts=50", "--set", "dqn.batch_size=32", "--set", "eval.episodes=1",
                "--set", "eval.final_episodes=1", "--set", "network.hidden=16"],
    "routing": ["--config", "routing/quick-digits", "--epochs", "1", "--set", "samples_per_epoch=256",
                "--set", "channels=4", "--set", "hidden=8"],
    "masked-experts": ["--config", "vision/quick", "--epochs", "1", "--set", "batch_size=64"],
}

_SKIP_ANYWHERE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    ".import_linter_cache",
)
#: Only at the top of the tree: ``runs/`` there is the user's results, ``moerl/runs/`` is a package.
_SKIP_AT_TOP = {"build", "dist", "runs"}


def _skip_when_copying(folder: str, names: list[str]) -> set[str]:
    skipped = set(_SKIP_ANYWHERE(folder, names))
    return skipped | (_SKIP_AT_TOP & set(names) if Path(folder).resolve() == REPO else set())


def _build_wheel(out: Path) -> tuple[Path, str]:
    """``pip wheel --no-deps`` on a copy of the source tree (a stale ``build/`` could leak into the wheel),
    made a git checkout of its own with one commit, as a clone is; returns the wheel and that commit."""
    src = out / "src"
    shutil.copytree(REPO, src, ignore=_skip_when_copying)
    git = ["git", "-C", str(src), "-c", "user.name=moerl tests", "-c", "user.email=tests@moerl.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "the built tree"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out / "dist"), str(src)]
    try:  # our setuptools is recent enough: build offline; else pip fetches setuptools>=68 (PyPI)
        if int(metadata.version("setuptools").split(".")[0]) >= 68:
            cmd.insert(4, "--no-build-isolation")
    except metadata.PackageNotFoundError:
        pass
    subprocess.run(cmd, check=True)
    (wheel,) = (out / "dist").glob("moerl-*.whl")
    return wheel, commit


def _fresh_venv(where: Path) -> tuple[Path, Path]:
    """A venv without pip whose ``sys.path`` also sees this environment's site-packages through a ``.pth``.

    The dependencies (torch, SB3, ...) are thus importable without reinstalling them, but the editable
    moerl of this environment is not: ``.pth`` files inside a directory added by a ``.pth`` line are not
    processed, so its import finder never activates, and the venv's own site-packages comes first.
    """
    venv.create(where, with_pip=False, symlinks=os.name != "nt")
    python = where / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_moerl_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return python, site


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains_every_family_from_shipped_configs(tmp_path):
    wheel, commit = _build_wheel(tmp_path / "build")
    python, site = _fresh_venv(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True)
    work = tmp_path / "elsewhere"  # outside the repository: nothing from the source tree can be imported
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), *args], cwd=work, env=env, capture_output=True, text=True)

    where = run("-c", "import moerl, moerl.core.config_files as c; print(moerl.__file__); print(len(c.shipped_configs()))")
    assert where.returncode == 0, where.stderr
    module_file, count = where.stdout.split()
    assert Path(module_file).resolve().is_relative_to(site.resolve())
    assert int(count) == len(shipped_configs())  # every config made it into the wheel

    for family, args in FAMILY_RUNS.items():
        proc = run("-m", "moerl", "train", *args, "--logdir", "runs", "--run-name", family, "--no-progress")
        assert proc.returncode == 0, f"{family}: {proc.stderr[-2000:]}"
        status = json.loads((work / "runs" / family / "status.json").read_text())
        assert status["status"] == "finished" and status["family"] == family
        # stack.json names the commit the wheel was built from (it was null for every non-editable install)
        (record,) = json.loads((work / "runs" / family / "stack.json").read_text())
        assert (record["commit"], record["dirty"], record["commit_source"]) == (commit, False, "build"), record

    # Without the build's record (an sdist, a copy without .git) the commit is said to be unknown, not null.
    (site / "moerl" / "_build_info.json").unlink()
    proc = run("-m", "moerl", "train", *FAMILY_RUNS["moe-dqn"], "--logdir", "runs", "--run-name", "no-record",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = json.loads((work / "runs" / "no-record" / "stack.json").read_text())
    assert record["commit"] is None and record["commit_source"] == UNKNOWN_COMMIT
