"""Core-time estimates of batched groups: measured on this machine, cached under what they depend on."""

from __future__ import annotations

import json

import pytest
import torch

from moerl.rl.calibration import cache_file, calibrate, calibration_key, estimate_seconds
from moerl.rl.config import build_config


def _members(n: int, **flags):
    configs = []
    for order in ("sequential", "reverse"):
        c = build_config(None, {"env": "cartpole-crl", "arch": "dense", "timesteps": 2000, **flags})
        c.env_kwargs = {"order": order, "block_steps": 500}
        c.network.hidden = 16
        configs += [c] * (n // 2)
    return configs


def test_a_calibration_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    members = _members(4)
    torch.set_num_threads(2)
    first = calibrate(members, [0, 1, 2, 3])  # timed on one thread, as the group trains; the caller's kept
    assert first.step > 0 and first.eval_step > 0 and torch.get_num_threads() == 2
    stored = json.loads(cache_file().read_text())
    assert set(stored) == {calibration_key(members)}
    assert calibrate(members, [0, 1, 2, 3]) == first  # from the cache: a measurement would differ
    assert calibration_key(_members(2)) != calibration_key(members)  # the member count is part of the key
    assert calibration_key(_members(4, arch="big", router="softmoe")) != calibration_key(members)
    cache_file().write_text("{not json")
    again = calibrate(members, [0, 1, 2, 3])  # a damaged cache is measured again, never trusted
    assert again != first and json.loads(cache_file().read_text())[calibration_key(members)]["step"] == again.step


def test_the_estimate_grows_with_the_budget_and_the_evaluations():
    from moerl.rl.calibration import Calibration

    cal = Calibration(step=0.01, eval_step=0.002)
    members = _members(4)
    base = estimate_seconds(members, cal)
    longer = _members(4, timesteps=4000)
    assert estimate_seconds(longer, cal) > base
    # 2000 steps x 0.01 s, plus (2000 / 1000 + 2 evaluations + 10/5 final) x 500 steps x 0.002 s
    assert base == pytest.approx(2000 * 0.01 + (2 + 2 + 2) * 500 * 0.002)
