"""The one config of the masked-expert vision line (masked-moe and PackNet) and its named choices.

Why its own module: both learners (:mod:`moerl.masked.learner`, :mod:`moerl.masked.packnet`) read
this config, and :mod:`moerl.masked.learners` picks between them; keeping the config here means
neither learner imports the other. It imports no torch-heavy code of its own beyond the registries'
owners (:mod:`moerl.masked.nn.linear`, :mod:`moerl.masked.nn.backbones`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moerl.core.config import from_dict
from moerl.core.devices import check_device
from moerl.core.errors import ConfigError, check_positive
from moerl.core.registry import Registry
from moerl.core.seeding import check_seed
from moerl.masked.nn.backbones import BACKBONES
from moerl.masked.nn.linear import MASK_KINDS, MASK_MODES
from moerl.masked.suites import check_suite_name

VISION_ARCHS = Registry("arch", {
    "masked-moe": "Gumbel gate over masked-MLP experts on a backbone (MaskedExpertLearner)",
    "packnet": "PackNet baseline: one network, weights pruned and owned per dataset (PackNetLearner)",
})
SCHEDULES = Registry("schedule", {
    "joint": "all datasets at once; the gate learns the routing from the task loss",
    "sequential": "datasets one after another; an expert per dataset, earlier ones frozen",
})
GATE_REMEDIES = Registry("gate_remedy", {
    "replay": "replay stored features of earlier datasets into the gate's loss",
    "none": "no remedy: shows the gate drifting to the newest expert",
})


@dataclass
class MaskedExpertsConfig:
    """Everything a masked-expert or PackNet run needs; filled by :func:`moerl.core.config.from_dict`."""

    env: str = "fashion+animal"
    arch: str = "masked-moe"
    schedule: str = "joint"
    # model
    backbone: str = "convnet"
    backbone_weights: str | None = None
    freeze_backbone: bool | None = None  # None: resnet18 frozen, convnet trained
    feature_dim: int = 256
    experts: int = 2
    expert_dims: list[int] = field(default_factory=lambda: [256, 128, 128, 64])
    mask: str = "lu"
    mask_mode: str = "topk"
    density: float = 0.5
    rank: int = 32
    dropout: float = 0.0
    # losses and gate
    balance: float = 0.0
    density_penalty: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.5
    gate_remedy: str = "replay"
    replay_per_task: int = 200
    # PackNet
    prune_ratio: float = 0.5
    finetune_epochs: int = 1
    # optimisation
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    mask_lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    # data
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_train: int | None = None
    max_val: int | None = None
    max_test: int | None = None
    data_dir: str | None = None
    # run
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    #: ``moerl train`` writes a checkpoint every this many epochs (counted over all phases; also on the first
    #: SIGINT / SIGTERM), from which ``moerl train --resume RUN_DIR`` continues exactly. Not read by the
    #: learners themselves: it changes nothing that is trained.
    checkpoint_every: int = 1

    def validate(self) -> MaskedExpertsConfig:
        """Raise a one-line ConfigError for any impossible value (before any run directory exists)."""
        check_suite_name(self.env)
        VISION_ARCHS.check(self.arch)
        SCHEDULES.check(self.schedule)
        BACKBONES.check(self.backbone)
        MASK_KINDS.check(self.mask)
        MASK_MODES.check(self.mask_mode)
        GATE_REMEDIES.check(self.gate_remedy)
        check_device(self.device)
        check_seed(self.seed)
        for name in ("feature_dim", "experts", "rank", "epochs", "batch_size", "patience", "threads",
                     "checkpoint_every"):
            check_positive(name, getattr(self, name))
        for name in ("lr", "mask_lr", "tau_start", "tau_end"):
            check_positive(name, getattr(self, name))
        for name in ("balance", "density_penalty", "weight_decay", "replay_per_task", "finetune_epochs"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"density must be in (0, 1], got {self.density}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.prune_ratio < 1.0:
            raise ConfigError(f"prune_ratio must lie strictly between 0 and 1, got {self.prune_ratio}")
        if self.tau_end > self.tau_start:
            raise ConfigError(f"tau_end ({self.tau_end}) must not exceed tau_start ({self.tau_start})")
        if not self.expert_dims or any(d <= 0 for d in self.expert_dims):
            raise ConfigError(f"expert_dims must be a non-empty list of positive widths, got {self.expert_dims}")
        for name in ("max_train", "max_val", "max_test"):
            v = getattr(self, name)
            if v is not None:
                check_positive(name, v)
        if self.arch == "masked-moe" and self.schedule == "sequential" and self.experts != 1:
            raise ConfigError(
                f"experts={self.experts} with schedule 'sequential': a sequential run starts with 1 expert "
                "and adds one per dataset; set experts: 1"
            )
        if self.arch == "packnet" and self.schedule != "sequential":
            raise ConfigError("arch 'packnet' trains datasets one after another; set schedule: sequential")
        if self.backbone_weights is not None and self.backbone != "resnet18":
            raise ConfigError("backbone_weights applies only to backbone 'resnet18'")
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> MaskedExpertsConfig:
        return from_dict(cls, data).validate()

