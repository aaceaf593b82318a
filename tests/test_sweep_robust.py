"""``moerl sweep`` under bad input and signals, black-box: unsafe sweep names, a key given twice, a device or a
Ray address that cannot work, a read-only logdir (one line, exit 2, before anything runs), and SIGTERM / SIGINT
(the children stop and save, the record says so, a relaunch finishes everything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TINY = {"env": "CartPole-v1", "timesteps": 600, "eval.freq": 300, "eval.episodes": 1, "eval.final_episodes": 1,
        "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8}


def _moerl(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moerl", *args], capture_output=True, text=True, cwd=cwd, **kwargs)


def _refused(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("moerl: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, shown", [("../../escape", "'../../escape'"), ("a b", "'a b'"), ("x;rm", "'x;rm'"),
                                         ("a\tb", "'a\\tb'"), (".hidden", "'.hidden'")])
def test_unsafe_sweep_names_are_refused(tmp_path, name, shown):
    """A sweep's name is the folder of its default logdir (``runs/<name>``): held to the run-name rule, so
    ``../../escape`` cannot put the runs outside ``runs/`` (dry run and launch alike)."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": name, "seeds": "0", "base": TINY}))
    for extra in (["--dry-run"], []):
        _refused(_moerl("sweep", str(path), *extra, cwd=tmp_path),
                 f"sweep name {shown} is not valid: it must be one folder name of at most 120 characters: "
                 "letters, digits and . _ - + = , @")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    assert not (tmp_path.parent / "escape").exists()


def test_a_file_name_that_is_no_valid_sweep_name_says_to_set_one(tmp_path):
    path = tmp_path / "my study.yaml"
    path.write_text(yaml.safe_dump({"seeds": "0", "base": TINY}))
    _refused(_moerl("sweep", str(path), "--dry-run", cwd=tmp_path), "(it is the file's name: set 'name:'")
    path.write_text(yaml.safe_dump({"name": "my-study", "seeds": "0", "base": TINY}))
    proc = _moerl("sweep", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and "runs/my-study" in proc.stdout, proc.stderr


@pytest.mark.parametrize("sweep, words", [
    ({"base": {**TINY, "dqn": {"learning_rate": 0.01}, "dqn.learning_rate": 0.1}},
     "'base' gives 'dqn.learning_rate' twice (as 'dqn: {...}' and as 'dqn.learning_rate'); keep one"),
    ({"base": TINY, "variants": [{"arch": "dense"}, {"arch": "big", "network": {"arch": "dense"}}]},
     "'variants' entry 2 gives 'network.arch' twice (as 'arch' and as 'network: {...}')"),
    ({"base": TINY, "settings": [{"env_kwargs": {"max_episode_steps": 50}, "env_kwargs.max_episode_steps": 60}]},
     "'settings' entry 1 gives 'env_kwargs.max_episode_steps' twice"),
    ({"base": TINY, "grid": {"dqn.gamma": [0.9, 0.95], "dqn": [{"gamma": 0.8}]}},
     "'grid' gives 'dqn.gamma' twice (as 'dqn: {...}' and as 'dqn.gamma')"),
])
def test_a_key_given_twice_in_one_mapping_is_refused(tmp_path, capsys, sweep, words):
    """Nested and dotted (or flat-named and nested) spellings of one key side by side: one would win
    silently, so the sweep is refused in one line naming the key, as config files refuse ``arch`` beside
    ``network.arch``."""
    from moerl.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"seeds": "0", "logdir": str(tmp_path / "out"), **sweep}))
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_the_parts_of_a_run_combine_key_by_key(tmp_path, capsys):
    """A variant's nested ``dqn: {gamma: ..}`` overrides ``dqn.gamma`` alone: the base's learning rate is
    kept (it used to be dropped with the rest of the base's ``dqn`` keys), so both files give one config."""
    from moerl.cli import main

    ids = []
    for name, sweep in (("nested", {"base": {**TINY, "dqn.learning_rate": 0.1}, "variants": [{"dqn": {"gamma": 0.9}}]}),
                        ("flat", {"base": {**TINY, "dqn.learning_rate": 0.1, "dqn.gamma": 0.9}})):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"seeds": "0", "logdir": str(tmp_path / name), **sweep}))
        assert main(["sweep", str(path), "--dry-run"]) == 0
        ids.append(capsys.readouterr().out.split()[1])
    assert ids[0] == ids[1]
