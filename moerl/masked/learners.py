"""Pick the vision learner for a config, or for a saved model: the one place that knows both learners.

Why a module of its own: :class:`~moerl.masked.learner.MaskedExpertLearner` and
:class:`~moerl.masked.packnet.PackNetLearner` share a config (:mod:`moerl.masked.config`) but
not code; choosing between them here keeps each learner free of imports of the other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moerl.masked.config import MaskedExpertsConfig
from moerl.masked.learner import MaskedExpertLearner
from moerl.masked.packnet import PackNetLearner
from moerl.masked.suites import VisionSuite

VisionLearner = MaskedExpertLearner | PackNetLearner


def make_learner(
    suite: VisionSuite, config: MaskedExpertsConfig, tensorboard_log: str | Path | None = None
) -> VisionLearner:
    """The learner for ``config.arch`` (``masked-moe`` or ``packnet``)."""
    cls = PackNetLearner if config.arch == "packnet" else MaskedExpertLearner
    return cls(suite, config, tensorboard_log=tensorboard_log)


def load_learner(path: str | Path, suite: VisionSuite | None = None, device: str = "cpu") -> VisionLearner:
    """Reload a model saved by either learner's ``save`` (the file records its arch)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    cls = PackNetLearner if blob.get("arch") == "packnet" else MaskedExpertLearner
    return cls.load(path, suite, device)
