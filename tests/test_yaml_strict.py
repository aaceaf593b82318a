"""Config files say what their writer meant, or are refused: YAML 1.1's octal and base-60 integers and a
repeated key (which YAML keeps silently, the last one winning) are one-line errors, exit 2, no run made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from moerl.cli import main
from moerl.core.config import load_yaml, parse_yaml


@pytest.mark.parametrize("body, words", [
    ("seed: 010\n", "'010' is ambiguous (YAML 1.1 reads it as 8)"),
    ("timesteps: 1:30\n", "'1:30' is ambiguous (YAML 1.1 reads it as 90)"),
    ("seed: 1\nseed: 2\n", "duplicate key 'seed' (line 3)"),
    ("network:\n  arch: big\n  arch: dense\n", "duplicate key 'arch' (line 4)"),
])
def test_ambiguous_yaml_is_refused(tmp_path, capsys, body, words):
    config = tmp_path / "c.yaml"
    config.write_text("env: cartpole-crl\n" + body)
    assert main(["train", "--config", str(config), "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "runs").exists()


def test_plain_numbers_still_read_as_numbers():
    assert parse_yaml("a: 0\nb: -5\nc: 0x1F\nd: 1_000\ne: 5e-4\nf: 0.5\ng: '010'") == {
        "a": 0, "b": -5, "c": 31, "d": 1000, "e": 5e-4, "f": 0.5, "g": "010"}


def test_every_shipped_config_and_sweep_file_still_loads():
    root = Path(__file__).resolve().parents[1]
    files = [*(root / "moerl" / "configs").rglob("*.yaml"), *(root / "configs").rglob("*.yaml")]
    assert len(files) > 20
    for path in files:
        assert isinstance(load_yaml(path), dict), path



@pytest.mark.parametrize("command, body, words", [
    ("train", "env: CartPole-v1\ndqn: {learning_rate: [0.1\nseed: 1\n",
     "at line 3, column 5: expected ',' or ']', but got ':' (while parsing a flow sequence started at line 2"),
    ("train", "env: CartPole-v1\n  timesteps: 5\n", "at line 2, column 12: mapping values are not allowed here"),
    ("train", 'env: "CartPole-v1\n', "at line 2, column 1: found unexpected end of stream (while scanning a quoted"),
    ("sweep", "seeds: [0\nbase: {env: CartPole-v1}\n",
     "at line 2, column 5: expected ',' or ']'"),
])
def test_invalid_yaml_names_the_file_line_and_column(tmp_path, capsys, command, body, words):
    """PyYAML's own first line ("while parsing a flow sequence") says neither what is wrong nor where: the
    refusal names the file, the line and column of the problem, and what it is."""
    config = tmp_path / "c.yaml"
    config.write_text(body)
    args = ["--config", str(config)] if command == "train" else [str(config), "--dry-run"]
    assert main([command, *args, "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    kind = "config" if command == "train" else "sweep"
    assert err.count("\n") == 1 and f"{kind} file '{config}' is not valid YAML at line" in err and words in err, err
    assert not (tmp_path / "runs").exists()


def test_a_huge_bad_value_is_shortened_so_the_valid_choices_show(tmp_path):
    """A 500 KB bad value in a config file: the one-line error keeps the start and end of the value, its size
    and the whole list of valid choices (the line cap used to cut the choices off)."""
    config = tmp_path / "c.yaml"
    config.write_text("env: CartPole-v1\narch: " + "x" * 250_000 + "y" * 250_000 + "\n")
    proc = subprocess.run([sys.executable, "-m", "moerl", "train", "--config", str(config), "--logdir",
                           str(tmp_path / "runs")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown arch 'xxxx" in proc.stderr and "yyyy' (500,000 characters)" in proc.stderr
    assert proc.stderr.rstrip().endswith("valid choices: all, big, dense, final, middle, wide"), proc.stderr
    assert len(proc.stderr) < 300
