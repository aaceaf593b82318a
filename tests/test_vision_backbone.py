"""Backbones: convnet on 8x8 and 28x28; resnet18 (torchvision) forward/backward and local weights only."""

import pytest
import torch

from moerl.errors import ConfigError
from moerl.nn.backbones import build_backbone

torch.set_num_threads(1)


def _torchvision_problem() -> str | None:
    try:
        import torchvision.models  # noqa: F401
    except ImportError:
        return "torchvision is not installed (optional extra 'vision')"
    except Exception as exc:  # installed but unusable (e.g. CUDA wheel next to CPU-only torch)
        return f"torchvision is installed but fails to import: {type(exc).__name__}: {exc}"
    return None


PROBLEM = _torchvision_problem()
needs_tv = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


@pytest.mark.parametrize("size", [8, 28])
def test_convnet_any_size(size):
    net = build_backbone("convnet", 32)
    out = net(torch.rand(3, 1, size, size))
    assert out.shape == (3, 32)


@needs_tv
def test_resnet18_forward_backward_small_inputs():
    net = build_backbone("resnet18", frozen=False)
    out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 512)
    out.sum().backward()
    assert net.net.conv1.weight.grad is not None


@needs_tv
def test_resnet18_frozen_keeps_bn_in_eval_and_loads_local_weights(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet18", weights=str(path))
    net.train()
    assert not net.net.bn1.training
    assert not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.net.conv1.weight, ref.conv1.weight)


@needs_tv
def test_resnet18_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("resnet18", weights=str(tmp_path / "nope.pt"))


@pytest.mark.skipif(PROBLEM is None, reason="torchvision works here; this checks the error without it")
def test_resnet18_without_working_torchvision_is_a_clear_error():
    with pytest.raises(ConfigError, match="torchvision"):
        build_backbone("resnet18")


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="valid choices: convnet, resnet18"):
        build_backbone("vgg")
