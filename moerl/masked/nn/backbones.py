"""Feature extractors for the masked-expert vision models.

``convnet`` (default) is a small conv net for 28x28 (and 8x8) grey images, trained from scratch.
``resnet18`` is ResNet-18 (:mod:`moerl.masked.nn.resnet`, torchvision's architecture and parameter names) with
its classifier removed (512 features). Weights come only from a local file, e.g. a torchvision ImageNet
checkpoint the user already has (no download at run time; these machines reach only package registries).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from moerl.core.errors import ConfigError
from moerl.core.registry import Registry
from moerl.masked.nn.resnet import ResNet18

BACKBONES = Registry("backbone", {
    "convnet": "small conv net for grey images, trained from scratch (default)",
    "resnet18": "ResNet-18 features (512), frozen by default; weights only from a local file",
})


class ConvNet(nn.Module):
    """conv(1->16)-ReLU-pool, conv(16->32)-ReLU-pool, adaptive pool to 4x4, linear to ``out_dim``.

    The adaptive pool makes it work for any input size (8x8 digits in tests, 28x28 MNIST-style data).
    No batch norm: the function depends only on weights, which keeps freezing simple.
    """

    def __init__(self, out_dim: int = 256, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * 16, out_dim), nn.ReLU(),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResNet18Features(nn.Module):
    """ResNet-18 without its final layer; grey inputs are repeated to 3 channels.

    Args:
        weights: path to a local state dict (torchvision's ``resnet18`` keys, e.g. an ImageNet
            checkpoint the user already has); ``None`` means random initialisation.
        frozen: stop gradients and keep batch norm in eval mode (its running statistics stay fixed).
    """

    def __init__(self, weights: str | Path | None = None, frozen: bool = True) -> None:
        super().__init__()
        net = ResNet18()
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"resnet18 weights file '{path}' does not exist; moerl never downloads weights: "
                    "put a torchvision resnet18 state dict there or leave backbone_weights empty"
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ConfigError(
                    f"resnet18 weights file '{path}' does not match torchvision's resnet18 "
                    f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})"
                )
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512
        self.frozen = frozen
        if frozen:
            for p in self.net.parameters():
                p.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> ResNet18Features:
        super().train(mode)
        if self.frozen:
            self.net.eval()  # batch norm statistics stay fixed
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


def build_backbone(
    name: str, feature_dim: int = 256, weights: str | None = None, frozen: bool | None = None
) -> nn.Module:
    """Build backbone ``name``; ``frozen=None`` means the default (resnet18: frozen, convnet: trained)."""
    BACKBONES.check(name)
    if name == "convnet":
        if weights is not None:
            raise ConfigError("backbone_weights applies only to backbone 'resnet18'")
        net = ConvNet(feature_dim)
        if frozen:
            freeze_module(net)
        return net
    return ResNet18Features(weights=weights, frozen=True if frozen is None else frozen)


def freeze_module(module: nn.Module) -> None:
    """Stop all gradients of ``module`` (its function no longer changes)."""
    for p in module.parameters():
        p.requires_grad_(False)
