"""Backbones: convnet on 8x8 and 28x28; resnet18 forward/backward and local weights only."""

import pytest
import torch

from moerl.core.errors import ConfigError
from moerl.masked.nn.backbones import build_backbone
from moerl.masked.nn.resnet import ResNet18

torch.set_num_threads(1)


@pytest.mark.parametrize("size", [8, 28])
def test_convnet_any_size(size):
    net = build_backbone("convnet", 32)
    out = net(torch.rand(3, 1, size, size))
    assert out.shape == (3, 32)


def test_resnet18_has_torchvision_layout():
    """Key names and shapes of torchvision's resnet18, so its checkpoints load unchanged."""
    state = ResNet18().state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer2.0.downsample.1.running_var": (128,),
        "layer3.1.bn2.weight": (256,), "layer4.1.conv2.weight": (512, 512, 3, 3), "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "layer1.0.downsample.0.weight" not in state  # no projection where shapes match
    n_params = sum(p.numel() for p in ResNet18().parameters())
    assert n_params == 11_689_512  # torchvision's resnet18 parameter count


def test_resnet18_forward_backward_small_inputs():
    net = build_backbone("resnet18", frozen=False)
    out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 512)
    out.sum().backward()
    assert net.net.conv1.weight.grad is not None and net.net.conv1.weight.grad.abs().sum() > 0


def test_resnet18_frozen_keeps_bn_in_eval_and_loads_local_weights(tmp_path):
    torch.manual_seed(5)
    ref = ResNet18()
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet18", weights=str(path))
    net.train()
    assert not net.net.bn1.training
    assert not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.net.conv1.weight, ref.conv1.weight)
    assert torch.equal(net.net.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_resnet18_weights_with_wrong_keys_are_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(3)}, path)
    with pytest.raises(ConfigError, match="does not match"):
        build_backbone("resnet18", weights=str(path))


def test_resnet18_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("resnet18", weights=str(tmp_path / "nope.pt"))


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="valid choices: convnet, resnet18"):
        build_backbone("vgg")
