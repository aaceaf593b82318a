"""Supervised learner for masked-expert vision models (seed 000) with an SB3-like surface.

``MaskedExpertLearner(suite, **kwargs).learn()`` trains, ``predict(x, deterministic=True)`` returns
``(labels, experts)``, ``evaluate(split)`` returns per-dataset numbers, ``save(path)`` /
``MaskedExpertLearner.load(path)`` round-trip the model. ``arch="packnet"`` selects the PackNet baseline
(:mod:`moerl.masked.packnet`) through :func:`moerl.masked.learners.make_learner`.

Schedules
---------
``joint``       all datasets at once, ``experts`` experts, the Gumbel gate learns the routing from the task
                loss alone (plus the optional balancing loss).
``sequential``  datasets one after another (continual). Phase 1 trains backbone + expert 1 + head 1; then
                the backbone, expert 1 and head 1 are frozen, an expert and a classifier block are added,
                and phase 2 trains them with routing forced to the new expert (the task id is known
                while training). The gate is trained as a dataset classifier on the features; its remedy
                against drift (``gate_remedy="replay"``) mixes a small buffer of stored *features* of old
                datasets into its loss; ``"none"`` shows the drift (everything goes to the newest expert).
                Evaluation reports task-agnostic (gate) and task-aware (route by known task id) accuracy.

Model selection uses only the stratified validation split (early stopping, best weights restored).
The test split is only used for reporting, at the end of each phase (the continual accuracy matrix).

Randomness (see :mod:`moerl.core.seeding`): parameters are built inside ``seeded(seed)``; Gumbel noise,
dropout, replay draws and added experts use the learner's own :class:`~moerl.core.seeding.TorchStream`;
batch order uses ``np.random.default_rng(seed)``. So a learner's results depend on its seed alone, not
on what else was built or trained before, after or between its calls.
"""

from __future__ import annotations

import dataclasses
import math
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
from moerl.masked.metrics import (
    accuracy_matrix_summary,
    best_matched_routing,
    routing_purity,
    utilisation,
)
from moerl.masked.nn.backbones import build_backbone
from moerl.masked.nn.experts import MaskedMoE
from moerl.masked.nn.gates import balance_loss, gate_entropy
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


def _tau(cfg: MaskedExpertsConfig, progress: float) -> float:
    """Linear anneal from tau_start to the floor tau_end over the first 3/4 of a phase."""
    frac = min(1.0, progress / 0.75)
    return cfg.tau_start + (cfg.tau_end - cfg.tau_start) * frac


class MaskedExpertLearner(ResumableLearner):
    """Trains a :class:`~moerl.masked.nn.experts.MaskedMoE` on a :class:`VisionSuite`.

    Args:
        suite: the datasets (``None`` only when loading a saved model for prediction).
        config: a :class:`MaskedExpertsConfig`; keyword arguments override its fields.
        tensorboard_log: directory for TensorBoard event files (``None``: none written).

    Stopping and resuming (:class:`~moerl.masked.training.ResumableLearner`): ``request_stop()``,
    ``on_epoch_end``, ``state_dict()`` / ``load_state_dict()``.
    """

    arch = "masked-moe"

    def __init__(
        self,
        suite: VisionSuite | None,
        config: MaskedExpertsConfig | None = None,
        tensorboard_log: str | Path | None = None,
        _structure: dict | None = None,
        **kwargs: Any,
    ) -> None:
        cfg = dataclasses.replace(config or MaskedExpertsConfig(), **kwargs).validate()
        if cfg.arch != "masked-moe":
            raise ConfigError(f"MaskedExpertLearner trains arch 'masked-moe', got '{cfg.arch}' (use make_learner)")
        self.config = cfg
        self.suite = suite
        self.device = resolve_device(cfg.device)
        self.tensorboard_log = tensorboard_log
        self.rng = np.random.default_rng(cfg.seed)  # batch order, replay subsets
        self.stream = TorchStream(training_seed(cfg.seed))  # Gumbel noise, dropout, replay draws
        if _structure is None:
            assert suite is not None
            classes = suite.classes if cfg.schedule == "joint" else suite.classes[:1]
            _structure = {"classes": classes, "num_experts": cfg.experts}
        self.model = self._build_model(_structure)
        self.history: list[EpochLog] = []
        # sequential: test accuracy on datasets seen so far after each phase (reporting only)
        self.accuracy_matrix: list[list[float]] = []  # task-aware: routed by task id, own classes
        self.accuracy_matrix_agnostic: list[list[float]] = []  # gate routing, all classes
        self.tasks_learned = 0 if _structure is None else int(_structure.get("tasks_learned", 0))
        self._feature_cache: dict[tuple[int, str], torch.Tensor] = {}
        self._replay: list[tuple[torch.Tensor, int]] = []  # (features, expert) of earlier datasets
        self.train_seconds = 0.0
        self._init_resumable()

    def _build_model(self, structure: dict) -> MaskedMoE:
        """The model of ``structure`` (classes, number of experts, frozen experts), built from the seed."""
        cfg = self.config
        with seeded(cfg.seed):
            backbone = build_backbone(cfg.backbone, cfg.feature_dim, cfg.backbone_weights, cfg.freeze_backbone)
            model = MaskedMoE(
                backbone, structure["num_experts"], structure["classes"], expert_dims=cfg.expert_dims,
                mask=cfg.mask, density=cfg.density, rank=cfg.rank, mask_mode=cfg.mask_mode, dropout=cfg.dropout,
                seed=cfg.seed,
            ).to(self.device)
        for k in structure.get("frozen_experts", []):
            model.freeze_expert(k)
        return model

    # ---------------------------------------------------------------------------------- data helpers
    def _backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.model.backbone.parameters())

    def _inputs(self, task: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.suite is not None
        x, y = self.suite.tasks[task].split(split)
        return to_input(x).to(self.device), torch.as_tensor(y).to(self.device) + self.suite.offsets[task]

    def _features(self, task: int, split: str) -> torch.Tensor:
        """Backbone features, cached when the backbone is frozen (its function cannot change)."""
        key = (task, split)
        if key not in self._feature_cache:
            x, _ = self._inputs(task, split)
            self.model.backbone.eval()
            self._feature_cache[key] = map_batches(self.model.features, x)
        return self._feature_cache[key]

    # ---------------------------------------------------------------------------------- training
    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        mask_ids = {id(p) for p in self.model.mask_parameters()}
        params = trainable(self.model.parameters())
        groups = [
            {"params": [p for p in params if id(p) not in mask_ids], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            # No weight decay on mask factors: it would shrink scores towards the dead all-zero start.
            {"params": [p for p in params if id(p) in mask_ids], "lr": cfg.mask_lr, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]])

    def learn(self, epochs: int | None = None) -> MaskedExpertLearner:
        """Train what remains: the whole suite at once (joint) or each remaining dataset in turn (sequential);
        a learner that has learned every dataset trains no further.

        Returns early, with ``stopped`` true, when :meth:`request_stop` was called; a learner that loaded a
        :meth:`state_dict` continues the phase it was saved in (with that phase's epoch budget).
        """
        if self.suite is None:
            raise ConfigError("this learner has no data (loaded for prediction); pass a suite to train")
        writer = self._begin(self.tensorboard_log)
        try:
            if self.config.schedule == "joint":
                if self.tasks_learned < len(self.suite.tasks):
                    with self.stream:
                        complete = self._train_phase(list(range(len(self.suite.tasks))), epochs, writer, "joint")
                    if complete:
                        self.tasks_learned = len(self.suite.tasks)
            else:
                while self.tasks_learned < len(self.suite.tasks) and not self.stopped:
                    self.learn_task(self.tasks_learned, epochs, writer)
        finally:
            self._end(writer)
        return self

    def learn_task(self, task: int, epochs: int | None = None, writer=None) -> None:
        """Sequential schedule: train dataset ``task``, then freeze what it owns (backbone, expert, head).

        Stopped on request (``stopped`` true), the dataset stays pending; calling this again continues it.
        """
        assert self.suite is not None
        if task != self.tasks_learned:
            raise ConfigError(f"datasets are learned in order; next is {self.tasks_learned}, got {task}")
        with self.stream:
            if task > 0 and self._pending is None:  # a pending dataset got its expert before it was saved
                self.model.add_expert(self.suite.classes[task])
            complete = self._train_phase([task], epochs, writer, f"task{task + 1}-{self.suite.tasks[task].name}")
        if not complete:
            return
        self.model.freeze_expert(task)
        self.model.freeze_head(task)
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        self._feature_cache.clear()  # features from here on are those of the frozen backbone
        n = min(self.config.replay_per_task, len(self.suite.tasks[task].y_train))
        if n > 0:
            idx = torch.as_tensor(self.rng.choice(len(self.suite.tasks[task].y_train), n, replace=False))
            self._replay.append((self._features(task, "train")[idx], task))
        self.tasks_learned = task + 1
        seen = range(self.tasks_learned)
        self.accuracy_matrix.append(
            [self._accuracy(j, "test", task_aware=True, route_expert=j) for j in seen]
        )
        self.accuracy_matrix_agnostic.append([self._accuracy(j, "test") for j in seen])

    def _train_phase(self, tasks: list[int], epochs: int | None, writer, phase: str) -> bool:
        """Train ``phase`` (or continue it when it is pending); False when stopped on request."""
        cfg = self.config
        state = self._phase_state(phase, epochs or cfg.epochs)
        epochs = int(self._pending["epochs"])  # type: ignore[index]  # a resumed phase keeps its budget
        sequential = cfg.schedule == "sequential"
        frozen_bb = self._backbone_frozen()
        xs, ys, ts = [], [], []
        for t in tasks:
            x, y = (self._features(t, "train"), self._inputs(t, "train")[1]) if frozen_bb else self._inputs(t, "train")
            xs.append(x)
            ys.append(y)
            ts.append(torch.full_like(y, t))
        X, Y, T = torch.cat(xs), torch.cat(ys), torch.cat(ts)
        n = len(Y)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total_steps = max(1, epochs * steps_per_epoch)
        step = {"i": state.epoch * steps_per_epoch}  # the tau schedule runs on this phase's batch count
        replay = self._replay if (sequential and cfg.gate_remedy == "replay") else []
        train_gate = sequential and self.model.num_experts > 1

        def run_epoch(opt: torch.optim.Optimizer, epoch: int) -> tuple[float, float, dict]:
            tot_loss, correct, seen = 0.0, 0, 0
            ent_sum, gate_acc = 0.0, 0.0
            for idx in batched(n, cfg.batch_size, self.rng):
                self.model.gate.tau = _tau(cfg, step["i"] / total_steps)
                step["i"] += 1
                xb, yb, tb = X[idx], Y[idx], T[idx]
                feats = xb if frozen_bb else self.model.features(xb)
                route = tb if sequential else None  # sequential: task id known while training
                logits, weights, gate_logits = self.model.head_forward(feats, route=route)
                loss = F.cross_entropy(logits, yb)
                if cfg.balance > 0 and not sequential:
                    loss = loss + cfg.balance * balance_loss(weights)
                if cfg.density_penalty > 0:
                    loss = loss + cfg.density_penalty * self.model.density_penalty().to(loss.device)
                if train_gate:
                    g_logits, g_target = gate_logits, tb
                    if replay:
                        per = max(1, len(idx) // (2 * len(replay)))
                        rf = [f[torch.randint(len(f), (per,))] for f, _ in replay]
                        rt = [torch.full((per,), k, dtype=torch.long, device=tb.device) for _, k in replay]
                        g_logits = torch.cat([gate_logits, self.model.gate.logits(torch.cat(rf))])
                        g_target = torch.cat([tb, *rt])
                    loss = loss + F.cross_entropy(g_logits, g_target)
                    gate_acc += float((gate_logits.argmax(-1) == tb).float().sum())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(-1) == yb).sum())
                seen += len(idx)
                ent_sum += float(gate_entropy(weights.detach())) * len(idx)
            extra = {"tau": self.model.gate.tau, "gate_weight_entropy": ent_sum / seen}
            if train_gate:
                extra["gate_train_acc"] = gate_acc / seen
            return tot_loss / seen, correct / seen, extra

        def val_acc() -> float:
            accs = [self._accuracy(t, "val", task_aware=sequential) for t in tasks]
            return float(np.mean(accs))

        fit(self.model, self._optimizer, run_epoch, val_acc, epochs=epochs, patience=cfg.patience, phase=phase,
            writer=writer, global_epoch=len(self.history), state=state, **self._fit_hooks())
        if self._halted(state):
            return False
        self._phase_done(state)
        return True

    # ---------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def _outputs(self, task: int, split: str, route: torch.Tensor | None = None):
        self.model.eval()
        feats = self._features(task, split) if self._backbone_frozen() else map_batches(
            self.model.features, self._inputs(task, split)[0])
        logits, weights, gate_logits = self.model.head_forward(feats, route=route, deterministic=True)
        return logits, weights, gate_logits

    def _accuracy(self, task: int, split: str, task_aware: bool = False, route_expert: int | None = None) -> float:
        assert self.suite is not None
        _, y = self._inputs(task, split)
        route = None if route_expert is None else torch.full_like(y, route_expert)
        logits = self._outputs(task, split, route)[0]
        return float((self._predict_labels(logits, task if task_aware else None) == y).float().mean())

    def _predict_labels(self, logits: torch.Tensor, task: int | None) -> torch.Tensor:
        if task is None:
            return logits.argmax(-1)
        lo = self.model.offsets[task]
        return logits[:, lo : lo + self.model.classes[task]].argmax(-1) + lo

    @torch.no_grad()
    def predict(
        self, x: np.ndarray | torch.Tensor, deterministic: bool = True, task: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict global labels (dataset d's class c is ``offset_d + c``) and the expert used.

        ``deterministic=True`` routes by the gate's argmax; ``False`` samples the Gumbel-softmax gate.
        ``task`` restricts the prediction to that dataset's classes and routes to its expert when the
        schedule was sequential (task-aware inference).
        """
        self.model.eval()
        xt = to_input(x).to(self.device)
        feats = map_batches(self.model.features, xt)
        route = None
        if task is not None and self.config.schedule == "sequential":
            route = torch.full((len(xt),), task, dtype=torch.long, device=self.device)
        with self.stream:  # deterministic=False samples Gumbel noise from the learner's own stream
            logits, weights, _ = self.model.head_forward(feats, route=route, deterministic=deterministic)
        return self._predict_labels(logits, task).cpu().numpy(), weights.argmax(-1).cpu().numpy()

    def evaluate(self, split: str = "test", suite: VisionSuite | None = None) -> dict[str, Any]:
        """Per-dataset accuracy (task-agnostic, task-aware, forced routing), routing and mask statistics."""
        if suite is not None:
            self.suite = suite
            self._feature_cache.clear()
        if self.suite is None:
            raise ConfigError("evaluate needs the data: pass suite=build_suite(...)")
        check_choice("split", split, ("train", "val", "test"))
        n_tasks = min(len(self.suite.tasks), len(self.model.classes))
        E = self.model.num_experts
        counts = np.zeros((n_tasks, E), dtype=np.int64)
        per: dict[str, dict[str, float]] = {}
        entropies = []
        for t in range(n_tasks):
            logits, weights, gate_logits = self._outputs(t, split)
            _, y = self._inputs(t, split)
            counts[t] = np.bincount(weights.argmax(-1).cpu().numpy(), minlength=E)
            entropies.append(float(gate_entropy(torch.softmax(gate_logits, -1))))
            per[self.suite.tasks[t].name] = {
                "accuracy": float((self._predict_labels(logits, None) == y).float().mean()),
                "accuracy_task_aware": float((self._predict_labels(logits, t) == y).float().mean()),
                "n": int(len(y)),
            }
        purity = routing_purity(counts)
        matched, assign = best_matched_routing(counts)
        for t in range(n_tasks):
            expert = t if self.config.schedule == "sequential" else assign[t]
            per[self.suite.tasks[t].name]["accuracy_forced_routing"] = self._accuracy(t, split, route_expert=expert)
            per[self.suite.tasks[t].name]["forced_expert"] = int(expert)
        return {
            "split": split,
            "datasets": per,
            "mean_accuracy": float(np.mean([v["accuracy"] for v in per.values()])),
            "mean_accuracy_task_aware": float(np.mean([v["accuracy_task_aware"] for v in per.values()])),
            "routing": {
                "counts": counts.tolist(), "purity": purity, "best_matched_accuracy": matched,
                "assignment": assign, "utilisation": utilisation(counts), "gate_entropy": entropies,
            },
            "mask_density": [e.densities() for e in self.model.expert_list],
        }

    def continual(self) -> dict[str, Any] | None:
        if not self.accuracy_matrix or len(self.accuracy_matrix) < 2:
            return None
        return {"task_aware": accuracy_matrix_summary(self.accuracy_matrix),
                "task_agnostic": accuracy_matrix_summary(self.accuracy_matrix_agnostic)}

    # ---------------------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        structure = self.model.structure()
        structure["tasks_learned"] = self.tasks_learned
        torch.save({"arch": "masked-moe", "config": to_dict(self.config), "structure": structure,
                    "state_dict": self.model.state_dict()}, Path(path))

    def state_dict(self) -> dict[str, Any]:
        """Everything training depends on (see :class:`~moerl.masked.training.ResumableLearner`).

        Besides the model's ``state_dict``: its structure (experts, classifier blocks, frozen experts), which
        parameters still learn (frozen heads and backbone are not in a state dict), the experts' generator
        (an expert added later draws from it), the gate's temperature (an attribute), the replay features,
        the accuracy matrices, the random streams and the pending phase. Not saved: the feature cache of a
        frozen backbone, recomputed on demand (the backbone is evaluated in eval mode, so bit for bit alike).
        """
        state = self._common_state()
        state.update({
            "structure": self.model.structure(),
            "model": self.model.state_dict(),
            "requires_grad": {name: p.requires_grad for name, p in self.model.named_parameters()},
            "expert_generator": self.model.expert_generator.get_state(),
            "tau": self.model.gate.tau,
            "replay": [(features, task) for features, task in self._replay],
            "accuracy_matrix": self.accuracy_matrix,
            "accuracy_matrix_agnostic": self.accuracy_matrix_agnostic,
        })
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a learner with the same config and data)."""
        self._load_common_state(state)
        self.model = self._build_model(state["structure"])
        self.model.load_state_dict(state["model"])
        for name, p in self.model.named_parameters():
            p.requires_grad_(bool(state["requires_grad"][name]))
        self.model.expert_generator.set_state(state["expert_generator"])
        self.model.gate.tau = float(state["tau"])
        self.model.eval()
        self._replay = [(features.to(self.device), int(task)) for features, task in state["replay"]]
        self.accuracy_matrix = [list(row) for row in state["accuracy_matrix"]]
        self.accuracy_matrix_agnostic = [list(row) for row in state["accuracy_matrix_agnostic"]]
        self._feature_cache.clear()

    @classmethod
    def load(cls, path: str | Path, suite: VisionSuite | None = None, device: str = "cpu") -> MaskedExpertLearner:
        blob = torch.load(Path(path), map_location=resolve_device(device), weights_only=False)
        cfg = from_dict(MaskedExpertsConfig, blob["config"])
        cfg.device = device
        learner = cls(suite, cfg, _structure=blob["structure"])
        learner.model.load_state_dict(blob["state_dict"])
        learner.model.eval()
        return learner

