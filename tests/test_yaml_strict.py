"""Config files say what their writer meant, or are refused: YAML 1.1's octal and base-60 integers and a
repeated key (which YAML keeps silently, the last one winning) are one-line errors, exit 2, no run made."""

from __future__ import annotations

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

