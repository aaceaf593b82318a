"""PackNet: task-1 weights survive task 2 bitwise; task-1 inference ignores task-2 weights."""

import torch

from moerl.masked.nn.packnet import PackNet
from moerl.masked.packnet import PackNetLearner
from moerl.masked.suites import build_suite

torch.set_num_threads(1)


def test_task1_weights_unchanged_and_inference_ignores_task2():
    suite = build_suite("digits-split")
    learner = PackNetLearner(suite, arch="packnet", schedule="sequential", epochs=2, batch_size=32, lr=3e-3)
    learner.learn_task(0)
    model = learner.model
    owned = [(layer.owner == 1).clone() for layer in model.packed_layers()]
    w1 = [layer.weight.detach().clone() for layer in model.packed_layers()]
    biases = [layer.bias.detach().clone() for layer in model.packed_layers()]
    x = torch.as_tensor(suite.tasks[0].x_test).float().unsqueeze(1) / 255
    with torch.no_grad():
        out1 = model(x, 1).clone()
    assert all(o.any() for o in owned)
    learner.learn_task(1)
    for layer, o, w, b in zip(model.packed_layers(), owned, w1, biases, strict=True):
        assert layer.owner.dtype == torch.uint8
        assert torch.equal(layer.weight.detach()[o], w[o])
        assert torch.equal(layer.bias.detach(), b)
        assert (layer.owner == 2).any()
    with torch.no_grad():
        assert torch.equal(model(x, 1), out1)
    # perturbing task-2 weights does not change task-1 inference
    with torch.no_grad():
        for layer in model.packed_layers():
            layer.weight[layer.owner == 2] += 1.0
        assert torch.equal(model(x, 1), out1)
        assert not torch.equal(model(x, 2), model(x, 2) * 0)


def test_prune_ratio_respected():
    net = PackNet([3], feature_dim=8, expert_dims=[8, 4])
    net.prune(1, 0.75)
    for layer in net.packed_layers():
        frac = float((layer.owner == 1).float().mean())
        assert abs(frac - 0.25) < 0.02
        assert (layer.weight[layer.owner == 0] == 0).all()
