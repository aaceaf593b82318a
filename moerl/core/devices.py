"""One device resolver for every family: ``auto`` means the same thing everywhere.

``auto`` follows Stable-Baselines3's ``get_device("auto")``: the CUDA GPU when torch sees one, else the CPU.
Written here (plain torch) rather than imported from SB3 so that the supervised families, which do not use
SB3, resolve devices without importing it; a test checks that both agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moerl.core.errors import ConfigError
from moerl.core.registry import Registry

if TYPE_CHECKING:  # torch is imported when a device is resolved, not when the CLI builds its help
    import torch

DEVICES = Registry("device", {
    "auto": "the CUDA GPU when torch sees one, else the CPU (as SB3's get_device)",
    "cpu": "the CPU",
    "cuda": "the first CUDA GPU (cuda:N picks another); refused when torch sees none",
})


def check_device(name: str) -> str:
    """Validate a device name (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) without resolving it."""
    base, _, index = str(name).partition(":")
    if base == "cuda" and index and index.isdigit():
        return name
    return DEVICES.check(name)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The :class:`torch.device` for ``name``; a one-line :class:`ConfigError` for an unusable one."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' was asked for but torch sees no CUDA GPU; valid choices: cpu, auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{name}' does not exist: torch sees {torch.cuda.device_count()} CUDA GPU(s)"
            )
    return torch.device(name)
