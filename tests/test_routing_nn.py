"""Routed network and baselines: batched == per-sample routing, no gradient for unused blocks, sharing."""

from __future__ import annotations

import pytest
import torch

from moerl.routing.baselines import BASELINES, TaskSpecific1FC, TaskSpecificAllFC, make_baseline
from moerl.routing.nets import RoutedConvNet, RoutedFC

torch.set_num_threads(1)


@pytest.mark.parametrize("mode,allow_pass", [("layered", False), ("recursive", True)])
def test_batched_routing_equals_per_sample(mode, allow_pass):
    torch.manual_seed(0)
    head = RoutedFC(12, n_blocks=4, n_classes=3, hidden=8, mode=mode, n_middle=2, allow_pass=allow_pass).double()
    v = torch.randn(16, 12, dtype=torch.float64)
    routes = torch.stack([torch.randint(0, head.n_actions(d), (16,)) for d in range(head.n_depths)], 1)
    out = head(v, routes)
    out.sum().backward()
    g_batched = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
    head.zero_grad(set_to_none=True)
    rows = [head(v[i:i + 1], routes[i:i + 1]) for i in range(16)]
    torch.stack(rows).sum().backward()
    g_single = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
    torch.testing.assert_close(out, torch.cat(rows), rtol=0, atol=1e-12)
    assert g_batched.keys() == g_single.keys()
    for n in g_batched:
        torch.testing.assert_close(g_batched[n], g_single[n], rtol=0, atol=1e-12)


def test_unused_blocks_get_no_gradient_and_pass_is_identity():
    head = RoutedFC(6, n_blocks=4, n_classes=2, hidden=5, mode="recursive", n_middle=1, allow_pass=True)
    v = torch.randn(8, 6)
    routes = torch.tensor([[0, 4, 1]] * 4 + [[1, 4, 1]] * 4)  # PASS (4) in the middle, blocks 2, 3 never used
    head(v, routes).sum().backward()
    for i, block in enumerate(head.input_blocks):
        assert all((p.grad is not None) == (i in (0, 1)) for p in block.parameters())
    assert all(p.grad is None for p in head.middle_blocks.parameters())
    for i, block in enumerate(head.output_blocks):
        assert all((p.grad is not None) == (i == 1) for p in block.parameters())
    h = head.step(v, 0, routes[:, 0])
    assert torch.equal(head.step(h, 1, routes[:, 1]), h)


def test_trunk_handles_28x28_and_8x8():
    for shape in ((28, 28), (8, 8)):
        net = RoutedConvNet(shape, n_tasks=3, n_classes=2, hidden=8, channels=4)
        out = net(torch.rand(5, 1, *shape), torch.zeros(5, 3, dtype=torch.long))
        assert out.shape == (5, 2)
    assert RoutedConvNet((28, 28), 2, 2, channels=32).trunk.out_dim == 32 * 2 * 2


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_train(name):
    torch.manual_seed(0)
    model = make_baseline(name, (8, 8), n_tasks=3, n_classes=2, hidden=16, channels=8)
    x, t, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 3, (torch.arange(32) // 3) % 2
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def _grads_for_task(model, task: int) -> set[str]:
    model.zero_grad(set_to_none=True)
    x = torch.rand(4, 1, 8, 8)
    model(x, torch.full((4,), task)).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_task_specific_nets_share_exactly_what_they_should():
    one = TaskSpecific1FC((8, 8), 3, 2, hidden=8, channels=4)
    g0, g1 = _grads_for_task(one, 0), _grads_for_task(one, 1)
    shared = {n for n in g0 & g1}
    assert all(n.startswith(("trunk.", "shared.")) for n in shared)
    assert {n for n, _ in one.named_parameters() if n.startswith("shared.")} <= shared
    assert g0 - shared == {"heads.0.weight", "heads.0.bias"}
    allfc = TaskSpecificAllFC((8, 8), 3, 2, hidden=8, channels=4)
    g0, g2 = _grads_for_task(allfc, 0), _grads_for_task(allfc, 2)
    assert all(n.startswith("trunk.") for n in g0 & g2)
    assert all(n.startswith("columns.0.") for n in g0 - g2) and len(g0 - g2) == 6  # 3 layers x (W, b)
    n_shared = sum(p.numel() for n, p in allfc.named_parameters() if n.startswith("trunk."))
    assert n_shared == sum(p.numel() for p in allfc.trunk.parameters())
