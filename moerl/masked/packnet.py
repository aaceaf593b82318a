"""PackNet baseline learner (sequential datasets), same surface as :class:`MaskedExpertLearner`.

Per dataset t: train the free weights (earlier owners' gradients zeroed) with early stopping on
validation accuracy, prune the smallest-magnitude ``prune_ratio`` of the weights t took (they return to
the free pool, set to 0), fine-tune the kept ones for ``finetune_epochs``. Inference for dataset t uses
the weights owned by datasets ``1..t`` and head t, so it is always task-aware (PackNet needs the task id).

Randomness as in :mod:`moerl.masked.learner`: parameters built inside ``seeded(seed)``, batch order
from ``np.random.default_rng(seed)``, any torch randomness while training from the learner's own
:class:`~moerl.core.seeding.TorchStream`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from moerl.core.config import from_dict, to_dict
from moerl.core.devices import resolve_device
from moerl.core.errors import ConfigError, check_choice
from moerl.core.seeding import TorchStream, seeded
from moerl.masked.config import MaskedExpertsConfig
from moerl.masked.metrics import accuracy_matrix_summary
from moerl.masked.nn.backbones import build_backbone
from moerl.masked.nn.packnet import PackNet
from moerl.masked.suites import VisionSuite
from moerl.masked.training import (
    EpochLog,
    ResumableLearner,
    batched,
    fit,
    map_batches,
    to_input,
    trainable,
    training_seed,
)


class PackNetLearner(ResumableLearner):
    """Trains a :class:`~moerl.masked.nn.packnet.PackNet` dataset by dataset; stopping and resuming as
    :class:`~moerl.masked.training.ResumableLearner` describes."""

    arch = "packnet"

    def __init__(
        self,
        suite: VisionSuite | None,
        config: MaskedExpertsConfig | None = None,
        tensorboard_log: str | Path | None = None,
        _classes: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        cfg = dataclasses.replace(config or MaskedExpertsConfig(arch="packnet", schedule="sequential"), **kwargs)
        cfg.validate()
        if cfg.arch != "packnet":
            raise ConfigError(f"PackNetLearner trains arch 'packnet', got '{cfg.arch}'")
        self.config, self.suite, self.tensorboard_log = cfg, suite, tensorboard_log
        self.device = resolve_device(cfg.device)
        self.rng = np.random.default_rng(cfg.seed)  # batch order
        self.stream = TorchStream(training_seed(cfg.seed))
        classes = _classes if _classes is not None else suite.classes  # type: ignore[union-attr]
        with seeded(cfg.seed):
            backbone = None
            if cfg.backbone != "convnet":  # resnet18: a frozen feature extractor, only the MLP is packed
                backbone = build_backbone(cfg.backbone, cfg.feature_dim, cfg.backbone_weights, True)
            self.model = PackNet(classes, cfg.feature_dim, cfg.expert_dims, backbone).to(self.device)
        self.tasks_learned = 0
        self.history: list[EpochLog] = []
        self.accuracy_matrix: list[list[float]] = []
        self.train_seconds = 0.0
        self._init_resumable()

    def _data(self, task: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.suite is not None
        x, y = self.suite.tasks[task].split(split)
        return to_input(x).to(self.device), torch.as_tensor(y).to(self.device)

    @torch.no_grad()
    def _accuracy(self, task: int, split: str) -> float:
        self.model.eval()
        x, y = self._data(task, split)
        logits = map_batches(lambda b: self.model(b, task + 1), x)
        return float((logits.argmax(-1) == y).float().mean())

    def learn(self, epochs: int | None = None) -> PackNetLearner:
        """Train each remaining dataset in turn; returns early, with ``stopped`` true, on :meth:`request_stop`
        (a learner that loaded a :meth:`state_dict` continues the stage it was saved in)."""
        if self.suite is None:
            raise ConfigError("this learner has no data (loaded for prediction); pass a suite to train")
        writer = self._begin(self.tensorboard_log)
        try:
            while self.tasks_learned < len(self.suite.tasks) and not self.stopped:
                self.learn_task(self.tasks_learned, epochs, writer)
        finally:
            self._end(writer)
        return self

    def learn_task(self, task: int, epochs: int | None = None, writer=None) -> None:
        """Train dataset ``task`` (the next one), prune, fine-tune; earlier datasets' weights stay fixed.

        Stopped on request (``stopped`` true), the dataset stays pending; calling this again continues it.
        """
        if self.suite is None:
            raise ConfigError("this learner has no data (loaded for prediction); pass a suite to train")
        if task != self.tasks_learned:
            raise ConfigError(f"datasets are learned in order; next is {self.tasks_learned}, got {task}")
        with self.stream:
            self._learn_task(task, epochs or self.config.epochs, writer)

    def _learn_task(self, task: int, epochs: int, writer) -> None:
        cfg = self.config
        t1 = task + 1
        self.model.start_task(t1)  # idempotent: also right when the dataset is resumed
        x, y = self._data(task, "train")
        name = self.suite.tasks[task].name  # type: ignore[union-attr]
        phase = f"task{t1}-{name}"
        stage = self._pending["stage"] if self._pending is not None else "train"

        def make_opt() -> torch.optim.Optimizer:
            return torch.optim.Adam(trainable(self.model.parameters()), lr=cfg.lr)

        def epoch_fn(training: bool):
            def run_epoch(opt: torch.optim.Optimizer, epoch: int) -> tuple[float, float, dict]:
                tot, correct = 0.0, 0
                for idx in batched(len(y), cfg.batch_size, self.rng):
                    logits = self.model(x[idx], t1, training=training)
                    loss = F.cross_entropy(logits, y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.model.mask_gradients(t1)
                    opt.step()
                    tot += float(loss.detach()) * len(idx)
                    correct += int((logits.argmax(-1) == y[idx]).sum())
                return tot / len(y), correct / len(y), {}
            return run_epoch

        def val() -> float:
            return self._accuracy(task, "val")

        # Training uses free weights too; early stopping on the inference path would be misleading
        # before pruning, so validation here uses the training-time weights.
        def val_train_path() -> float:
            with torch.no_grad():
                xv, yv = self._data(task, "val")
                logits = map_batches(lambda b: self.model(b, t1, training=True), xv)
                return float((logits.argmax(-1) == yv).float().mean())

        if stage == "train":
            state = self._phase_state(phase, epochs, task=task, stage="train")
            fit(self.model, make_opt, epoch_fn(True), val_train_path, epochs=int(self._pending["epochs"]),  # type: ignore[index]
                patience=cfg.patience, phase=phase, writer=writer, global_epoch=len(self.history), state=state,
                **self._fit_hooks())
            if self._halted(state):
                return
            self._phase_done(state)
            self.model.prune(t1, cfg.prune_ratio)
        if cfg.finetune_epochs > 0:
            state = self._phase_state(f"{phase}-finetune", cfg.finetune_epochs, task=task, stage="finetune")
            fit(self.model, make_opt, epoch_fn(False), val, epochs=cfg.finetune_epochs, patience=cfg.patience,
                phase=f"{phase}-finetune", writer=writer, global_epoch=len(self.history), state=state,
                **self._fit_hooks())
            if self._halted(state):
                return
            self._phase_done(state)
        self.tasks_learned = t1
        self.accuracy_matrix.append([self._accuracy(j, "test") for j in range(t1)])

    @torch.no_grad()
    def predict(self, x: np.ndarray | torch.Tensor, task: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Labels of dataset ``task`` (local class ids) and the task index (PackNet needs the task id;
        it has no gate and no sampling, so unlike the masked-expert learner there is no ``deterministic``)."""
        self.model.eval()
        logits = map_batches(lambda b: self.model(b, task + 1), to_input(x).to(self.device))
        return logits.argmax(-1).cpu().numpy(), np.full(len(logits), task)

    def evaluate(self, split: str = "test", suite: VisionSuite | None = None) -> dict[str, Any]:
        if suite is not None:
            self.suite = suite
        if self.suite is None:
            raise ConfigError("evaluate needs the data: pass suite=build_suite(...)")
        check_choice("split", split, ("train", "val", "test"))
        per = {}
        for t in range(self.tasks_learned):
            acc = self._accuracy(t, split)
            per[self.suite.tasks[t].name] = {"accuracy_task_aware": acc, "accuracy": None,
                                             "n": int(len(self.suite.tasks[t].split(split)[1]))}
        return {"split": split, "datasets": per,
                "mean_accuracy": None,
                "mean_accuracy_task_aware": float(np.mean([v["accuracy_task_aware"] for v in per.values()])),
                "ownership": self.model.ownership()}

    def continual(self) -> dict[str, Any] | None:
        if len(self.accuracy_matrix) < 2:
            return None
        return {"task_aware": accuracy_matrix_summary(self.accuracy_matrix)}

    def state_dict(self) -> dict[str, Any]:
        """Everything training depends on (see :class:`~moerl.masked.training.ResumableLearner`):
        the model's ``state_dict`` (the owner buffers included), which parameters learn, the accuracy
        matrix, the random streams and the pending stage (``train`` or ``finetune``) of the pending dataset."""
        state = self._common_state()
        state.update({
            "model": self.model.state_dict(),
            "requires_grad": {name: p.requires_grad for name, p in self.model.named_parameters()},
            "accuracy_matrix": self.accuracy_matrix,
        })
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a learner with the same config and data)."""
        self._load_common_state(state)
        self.model.load_state_dict(state["model"])
        for name, p in self.model.named_parameters():
            p.requires_grad_(bool(state["requires_grad"][name]))
        self.model.eval()
        self.accuracy_matrix = [list(row) for row in state["accuracy_matrix"]]

    def save(self, path: str | Path) -> None:
        torch.save({"arch": "packnet", "config": to_dict(self.config), "classes": [h.out_features for h in
                    self.model.heads], "tasks_learned": self.tasks_learned,
                    "state_dict": self.model.state_dict()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, suite: VisionSuite | None = None, device: str = "cpu") -> PackNetLearner:
        blob = torch.load(Path(path), map_location=resolve_device(device), weights_only=False)
        cfg = from_dict(MaskedExpertsConfig, blob["config"])
        cfg.device = device
        learner = cls(suite, cfg, _classes=blob["classes"])
        learner.model.load_state_dict(blob["state_dict"])
        learner.tasks_learned = int(blob["tasks_learned"])
        learner.model.eval()
        return learner
