"""Seeding and device contract of the vision learners (masked-moe and PackNet).

A learner's weights and results must depend on its own seed only: building or training another learner
before, after or in between, or drawing from torch's global generator, must change nothing (bitwise).
Constructors must not reseed the global torch generator.
"""

import numpy as np
import pytest
import torch

from moerl.core.devices import resolve_device
from moerl.core.errors import ConfigError
from moerl.masked.config import MaskedExpertsConfig
from moerl.masked.learner import MaskedExpertLearner
from moerl.masked.learners import load_learner, make_learner
from moerl.masked.packnet import PackNetLearner
from moerl.masked.suites import build_suite

torch.set_num_threads(1)
SMALL = dict(epochs=1, batch_size=64, max_train=200, max_val=60, max_test=60, expert_dims=[32, 16])


@pytest.fixture(scope="module")
def suite():
    return build_suite("digits-split", max_train=200, max_val=60, max_test=60)


def _masked(suite, seed, **kw):
    # dropout > 0 and joint Gumbel routing: training draws torch random numbers every step
    cfg = MaskedExpertsConfig(env="digits-split", seed=seed, dropout=0.2, **{**SMALL, **kw})
    return make_learner(suite, cfg)


def _packnet(suite, seed):
    cfg = MaskedExpertsConfig(env="digits-split", arch="packnet", schedule="sequential", seed=seed, **SMALL)
    return make_learner(suite, cfg)


def _state(learner):
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in learner.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("build", [_masked, _packnet], ids=["masked-moe", "packnet"])
def test_learners_do_not_depend_on_each_other_or_the_global_stream(suite, build):
    """Orders A,B / B,A / interleaved (per dataset) give bitwise the weights of each learner alone."""
    alone = {s: _state(build(suite, s).learn()) for s in (1, 2)}
    assert not _same(alone[1], alone[2])  # the seed matters
    # order B, A, with global draws in between
    b = build(suite, 2)
    torch.rand(7)
    a = build(suite, 1)
    b.learn()
    torch.randn(3)
    a.learn()
    assert _same(_state(a), alone[1]) and _same(_state(b), alone[2])
    # interleaved, dataset by dataset (joint masked-moe trains both datasets at once: sequential here)
    if build is _masked:
        return
    a, b = build(suite, 1), build(suite, 2)
    for t in range(2):
        a.learn_task(t)
        torch.rand(5)
        b.learn_task(t)
    assert _same(_state(a), alone[1]) and _same(_state(b), alone[2])


def test_interleaved_sequential_masked_experts_match_alone(suite):
    """Sequential schedule: add_expert draws new parameters mid-run, from the learner's own stream."""
    kw = dict(schedule="sequential", experts=1)
    alone = {s: _state(_masked(suite, s, **kw).learn()) for s in (3, 4)}
    a, b = _masked(suite, 3, **kw), _masked(suite, 4, **kw)
    for t in range(2):
        b.learn_task(t)
        torch.rand(11)
        a.learn_task(t)
    assert _same(_state(a), alone[3]) and _same(_state(b), alone[4])


def test_stochastic_predict_uses_the_learners_stream(suite):
    x = suite.tasks[0].x_test
    runs = []
    for _ in range(2):
        learner = _masked(suite, 5)
        torch.manual_seed(123 + len(runs))  # a different global state each time
        runs.append(learner.predict(x, deterministic=False)[1])
    assert np.array_equal(runs[0], runs[1])


def test_construction_and_training_leave_the_global_torch_stream_alone(suite):
    torch.manual_seed(99)
    expected = torch.rand(4)
    torch.manual_seed(99)
    _masked(suite, 6).learn()
    _packnet(suite, 6).learn()
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("arch", ["masked-moe", "packnet"])
def test_device_setting_takes_effect(suite, tmp_path, arch):
    kw = dict(arch="packnet", schedule="sequential") if arch == "packnet" else {}
    cfg = MaskedExpertsConfig(env="digits-split", device="auto", **{**SMALL, **kw})
    learner = make_learner(suite, cfg)
    want = resolve_device("auto")
    assert learner.device == want
    assert {p.device for p in learner.model.parameters()} == {want}
    learner.save(tmp_path / "m.pt")
    again = load_learner(tmp_path / "m.pt", suite, device="cpu")
    assert {p.device for p in again.model.parameters()} == {torch.device("cpu")}


def test_bad_device_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown device 'gpu'.*valid choices"):
        MaskedExpertsConfig(device="gpu").validate()


def test_learner_modules_do_not_import_each_other():
    import ast
    from pathlib import Path

    import moerl.masked.learner as me
    import moerl.masked.packnet as pn

    for mod, other in ((me, "moerl.masked.packnet"), (pn, "moerl.masked.learner")):
        tree = ast.parse(Path(mod.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert other not in imported
    assert isinstance(make_learner(build_suite("digits-split"), MaskedExpertsConfig(
        env="digits-split", arch="packnet", schedule="sequential")), PackNetLearner)
    assert isinstance(make_learner(build_suite("digits-split"), MaskedExpertsConfig(env="digits-split")),
                      MaskedExpertLearner)
