"""Placements and metrics: shapes, parameter counts, dormant neurons on known activations."""

import pytest
import torch

from moerl.nn import ARCHS, ROUTERS, ForwardRecord
from moerl.nn.metrics import dormant_fraction, dormant_scores, forward_metrics
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig, count_parameters

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("router", ROUTERS)
def test_every_placement_builds_and_records(arch, router):
    net = MoEQNetwork(6, 3, QNetworkConfig(arch=arch, hidden=16, router=router, experts=2))
    rec = ForwardRecord()
    q = net(torch.randn(5, 6), torch.tensor([0, 1, 0, 1, 1]), rec)
    assert q.shape == (5, 3)
    moe_layers = {"dense": 0, "wide": 0, "middle": 1, "final": 1, "all": 3, "big": 1}[arch]
    assert len(rec.routing) == moe_layers
    metrics = forward_metrics(rec)
    assert "dormant/tau0.1/all" in metrics
    if moe_layers:
        assert any(k.endswith("usage_expert1") for k in metrics)


def test_parameter_counts_follow_the_placement():
    def n(arch, experts=4):
        cfg = QNetworkConfig(arch=arch, hidden=32, router="hardcoded", experts=experts)
        return count_parameters(MoEQNetwork(4, 2, cfg))

    dense = 4 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
    assert n("dense") == dense
    assert n("big") == 4 * dense  # hardcoded: no router parameters, four whole networks
    assert n("middle") == dense + 3 * (32 * 32 + 32)
    wide = 4 * 128 + 128 + 128 * 128 + 128 + 128 * 2 + 2
    assert n("wide") == wide


def test_dormant_scores_on_hand_made_activations():
    # neuron means |h|: 0, 1, 2, 5 -> layer mean 2 -> scores 0, .5, 1, 2.5
    h = torch.tensor([[0.0, 1.0, 2.0, 5.0], [0.0, 1.0, 2.0, 5.0]])
    torch.testing.assert_close(dormant_scores(h), torch.tensor([0.0, 0.5, 1.0, 2.5]))
    assert dormant_fraction(h, 0.0) == 0.25
    assert dormant_fraction(h, 0.5) == 0.5
    assert dormant_fraction(h, 0.1) == 0.25
    # tiny but non-zero activity: dormant at tau 0.025, not at tau 0
    h2 = torch.tensor([[0.01, 1.0, 1.0, 1.0]])
    assert dormant_fraction(h2, 0.0) == 0.0
    assert dormant_fraction(h2, 0.025) == 0.25


def test_dormant_expert_layer_counts_only_processed_rows():
    # expert 0 processed rows 0,1 (active); expert 1 processed nothing -> its neurons are dormant
    values = torch.ones(2, 3, 2)
    processed = torch.tensor([[True, True, False], [False, False, False]])
    scores = dormant_scores(values, processed)
    assert scores.shape == (2, 2)
    assert torch.all(scores[1] == 0) and torch.all(scores[0] > 0)
    assert dormant_fraction(values, 0.0, processed) == 0.5


def test_all_silent_layer_is_fully_dormant():
    assert dormant_fraction(torch.zeros(4, 3), 0.0) == 1.0


def test_usage_metric_sums_to_one_for_softmoe_and_topk1():
    for router in ("softmoe", "topk"):
        net = MoEQNetwork(4, 2, QNetworkConfig(arch="big", hidden=8, router=router, experts=3))
        rec = ForwardRecord()
        net(torch.randn(20, 4), None, rec)
        m = forward_metrics(rec)
        total = sum(v for k, v in m.items() if "usage_expert" in k)
        assert total == pytest.approx(1.0, abs=1e-5)
