"""MaskedMoE: continual add_expert/freeze_expert keeps old outputs bitwise; routing purity on two domains."""

import numpy as np
import pytest
import torch

from moerl.masked.learner import MaskedExpertLearner
from moerl.masked.suites import build_suite

torch.set_num_threads(1)
FAST = dict(batch_size=32, lr=3e-3, mask_lr=3e-3)


@pytest.fixture(scope="module")
def digits_split():
    return build_suite("digits-split")


@pytest.mark.parametrize("mask", ["lu", "fixed"])
def test_add_expert_keeps_old_dataset_outputs_bitwise(digits_split, mask):
    learner = MaskedExpertLearner(digits_split, schedule="sequential", experts=1, mask=mask, epochs=2, **FAST)
    learner.learn_task(0)
    x = torch.as_tensor(digits_split.tasks[0].x_test).float().unsqueeze(1) / 255
    route = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        before = learner.model.head_forward(learner.model.features(x), route=route)[0].clone()
    learner.learn_task(1)
    assert learner.model.num_experts == 2 and learner.model.classes == [5, 5]
    assert learner.model.gate.num_experts == 2
    with torch.no_grad():
        after = learner.model.head_forward(learner.model.features(x), route=route)[0]
    assert torch.equal(after[:, :5], before)
    for layer in learner.model.experts[0].layers:
        assert layer.frozen and layer.frozen_mask.dtype == torch.uint8
    # the new expert learned dataset 1 and was then frozen in turn
    assert learner.model.experts[1].frozen
    assert learner.accuracy_matrix[1][1] > 0.3  # chance is 0.2
    cont = learner.continual()["task_aware"]
    assert cont["forgetting"] == 0.0


def test_gate_widened_with_zero_row():
    from moerl.masked.nn.gates import GumbelGate

    gate = GumbelGate(6, 2)
    old = gate.linear.weight.detach().clone()
    gate.add_output()
    assert gate.linear.weight.shape == (3, 6)
    assert torch.equal(gate.linear.weight[:2], old)
    assert (gate.linear.weight[2] == 0).all() and gate.linear.bias[2] == 0


def test_gate_is_argmax_at_eval():
    from moerl.masked.nn.gates import GumbelGate

    gate = GumbelGate(4, 3).eval()
    f = torch.randn(10, 4)
    w = gate(f)
    assert torch.equal(w.argmax(-1), gate.logits(f).argmax(-1))
    assert torch.equal(w.sum(-1), torch.ones(10))
    assert set(w.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.slow
def test_two_separable_domains_get_separate_experts():
    """Original vs inverted digits, two experts, LU masks, no balancing loss: the argmax gate routes by domain.

    Purity is 0.5 when routing ignores the domain and 1.0 when each domain has its own expert. Measured
    over seeds 0-7 (torch 2.13.0+cpu, numpy 2.4.6; 12 epochs, this config), on the code before and after
    the learners got their own random streams (which changed every run's random numbers):
      before: 0.66 1.00 0.79 0.75 0.95 0.97 0.95 1.00 (median 0.95)
      after:  0.64 0.76 0.90 0.96 0.95 0.97 1.00 0.96 (median 0.955)
    So separation is the rule but not guaranteed per seed: about 1 run in 3 stays below 0.85, which is
    why "median of 3 seeds >= 0.85" (the earlier assertion, with balance=0.5) flipped between stacks.
    What holds robustly is the mean over 3 seeds well above 0.5: the lowest mean of any 3 of the 16 runs
    above is 0.68, a typical one 0.89; we assert >= 0.7. The balancing loss does not help here: with
    balance=0.5 (LU) the purities were 0.64 0.60 0.91 0.98 0.93 1.00 0.50 0.50 before and
    0.57 0.91 0.93 0.50 0.59 0.58 0.50 0.92 after (median 0.585), and 2-3 of 8 runs did not learn at all
    (accuracy at chance, 0.05 over 20 classes), so this test uses the seed's setting, balance=0.
    """
    suite = build_suite("digits-inverted")
    purities = []
    for seed in range(3):
        learner = MaskedExpertLearner(suite, experts=2, balance=0.0, epochs=12, patience=12, seed=seed, **FAST)
        purities.append(learner.learn().evaluate("test")["routing"]["purity"])
    assert np.mean(purities) >= 0.7, purities
