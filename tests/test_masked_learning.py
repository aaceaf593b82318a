"""The full model learns on sklearn digits (two domains); early stopping restores the best weights."""

import numpy as np
import torch

from moerl.masked.learner import MaskedExpertLearner
from moerl.masked.learners import load_learner
from moerl.masked.suites import build_suite
from moerl.masked.training import fit

torch.set_num_threads(1)


def test_beats_chance_by_wide_margin_on_digits_split():
    suite = build_suite("digits-split")
    accs = []
    for seed in range(2):
        learner = MaskedExpertLearner(suite, experts=2, mask="lu", epochs=8, batch_size=32, lr=3e-3,
                                      mask_lr=3e-3, seed=seed)
        accs.append(learner.learn().evaluate("test")["mean_accuracy"])
    assert min(accs) > 0.6, accs  # chance is 0.1 over the 10 classes of both datasets


def test_early_stopping_restores_best_validation_weights():
    model = torch.nn.Linear(2, 1)
    vals = iter([0.5, 0.9, 0.3, 0.2, 0.1])
    snapshots = []

    def run_epoch(opt, epoch):
        with torch.no_grad():
            model.weight.add_(1.0)
        snapshots.append(model.weight.detach().clone())
        return 0.0, 0.0, {}

    state = fit(model, lambda: torch.optim.SGD(model.parameters(), lr=0.1), run_epoch, lambda: next(vals),
                epochs=5, patience=2, phase="p")
    assert len(state.logs) == 4 and state.complete  # stopped after two epochs without improvement
    assert torch.equal(model.weight.detach(), snapshots[1])


def test_save_load_round_trip(tmp_path):
    suite = build_suite("digits-split")
    learner = MaskedExpertLearner(suite, schedule="sequential", experts=1, epochs=1, batch_size=64).learn()
    learner.save(tmp_path / "m.pt")
    again = load_learner(tmp_path / "m.pt", suite)
    x = suite.tasks[1].x_test[:20]
    for task in (None, 0, 1):
        a, _ = learner.predict(x, task=task)
        b, _ = again.predict(x, task=task)
        assert np.array_equal(a, b)
    assert again.evaluate("test")["mean_accuracy"] == learner.evaluate("test")["mean_accuracy"]
