"""Packaging: the configs ship inside the package and ``--config`` finds them by short name.

The wheel test at the end installs the built wheel into a fresh virtual environment and trains one
shipped config per family from a directory outside the repository, so a file that only exists in the
source tree (a config, a data file, a module missing from the wheel) fails here and not on a user's machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moerl.config import load_yaml
from moerl.config_files import CONFIG_ROOT, resolve_config_file, shipped_configs
from moerl.errors import ConfigError

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
