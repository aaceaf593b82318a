"""Joint training of a routed network and its router (the paper's Algorithm 2), and of the baselines.

Why a batched trainer beside the Gymnasium env: routing one sample per episode is faithful but slow;
here a whole mini-batch is routed at once (grouped by task for the decision, by block for the
application), the blocks take one SGD step on the task loss along the chosen routes, and the router
takes one update on the batch's traces, with separate losses as in the paper. Rewards come from the
same rule as the env's (:func:`moerl.routing.mdp.route_rewards`).

:class:`RoutingLearner` offers SB3's surface: ``RoutingLearner(dataset, algo="wpl", ...)``,
``learn(epochs)``, ``predict((x, task))``, ``evaluate()`` (per-task accuracy), ``save``/``load``.
For the baselines (``task-specific-1-fc`` ...) there is no router and training is plain SGD.

Seeds and devices: the model is built inside :func:`~moerl.core.seeding.seeded` (its parameters depend on
``config.seed`` only), training draws torch randomness from the learner's own
:class:`~moerl.core.seeding.TorchStream` and numpy randomness from its own generator, so two learners built or
trained in any order, or interleaved, give the results each gives alone. ``config.device`` is resolved
once by :func:`moerl.core.devices.resolve_device`; model, router networks and every batch live there.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from moerl.core.devices import resolve_device
from moerl.core.seeding import TorchStream, seeded
from moerl.routing.baselines import BASELINES as BASELINE_MODELS
from moerl.routing.baselines import make_baseline
from moerl.routing.collisions import route_collisions, task_routes
from moerl.routing.config import ALGOS, BASELINES, ROUTING_POLICIES, LearnerConfig, validate_learner
from moerl.routing.data import MTLDataset, MTLSplit
from moerl.routing.mdp import UsageStats, route_rewards
from moerl.routing.nets import RoutedConvNet, RoutedFC
from moerl.routing.policies import Router, Trace, make_router

__all__ = ["ALGOS", "LearnerConfig", "RoutingLearner", "route_collisions", "task_routes"]

if tuple(BASELINE_MODELS) != BASELINES.names:  # the registry is the one list of names
    raise ImportError(f"baseline models {list(BASELINE_MODELS)} do not match the registry {list(BASELINES.names)}")


class RoutingLearner:
    """A routed network + router (or a baseline) trained on an :class:`MTLDataset`."""

    def __init__(self, dataset: MTLDataset, config: LearnerConfig | None = None, **kwargs: Any):
        self.dataset = dataset
        base = config or LearnerConfig()
        # a run config (a subclass with run-only keys) is reduced to the learner's own keys
        fields = {f.name for f in dataclasses.fields(LearnerConfig)}
        self.config = LearnerConfig(**{k: v for k, v in dataclasses.asdict(base).items() if k in fields})
        self.config = validate_learner(dataclasses.replace(self.config, **kwargs))
        c = self.config
        self.device = resolve_device(c.device)
        self.rng = np.random.default_rng(c.seed)
        self.stream = TorchStream(c.seed)
        self.router: Router | None = None
        with seeded(c.seed):  # parameters depend on the seed only, never on what was built before
            if c.algo in ROUTING_POLICIES:
                self.model: nn.Module = RoutedConvNet(
                    dataset.image_shape, dataset.n_tasks, dataset.n_classes, hidden=c.hidden, channels=c.channels,
                    mode=c.mode, n_middle=c.n_middle, allow_pass=c.allow_pass)  # type: ignore[arg-type]
            else:
                self.model = make_baseline(ALGOS.check(c.algo), dataset.image_shape, dataset.n_tasks,
                                           dataset.n_classes, hidden=c.hidden, channels=c.channels)
        self.model.to(self.device)
        if c.algo in ROUTING_POLICIES:
            head = self._head()
            depth_actions = [head.n_actions(d) for d in range(head.n_depths)]
            kw: dict[str, Any] = {"gamma": c.gamma, "seed": c.seed, "device": self.device}
            if c.router_lr is not None:
                kw["lr"] = c.router_lr
            if c.algo in ("q-tabular", "q-approx"):
                kw["epsilon"] = c.epsilon
            if c.algo == "wpl":
                kw.update(min_prob=c.min_prob, form=c.wpl_form, baseline=c.wpl_baseline, own_prior=c.wpl_own_prior)
            self.router = make_router(c.algo, dataset.n_tasks, depth_actions,
                                      [head.dim_in(d) for d in range(head.n_depths)], **kw)
            self.usage = UsageStats(head.n_depths, max(depth_actions), c.collab_reward)
            self.choice_counts = np.zeros((dataset.n_tasks, head.n_depths, max(depth_actions)))
        else:
            assert c.algo in BASELINES
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum)
        self.epoch = 0
        #: The epoch in progress when :meth:`learn` returned early (order, next batch, losses so far).
        self._cursor: dict[str, Any] | None = None
        self._stop = False

    def _head(self) -> RoutedFC:
        """The routed FC layers of a routing model (baselines have none)."""
        return cast(RoutedConvNet, self.model).head

    @property
    def is_routing(self) -> bool:
        return self.router is not None

    # -- one mini-batch ----------------------------------------------------------------------------
    def _route(self, x: torch.Tensor, task: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, Trace]:
        """Forward pass choosing blocks depth by depth; returns logits and the (reward-less) trace."""
        assert self.router is not None
        head = self._head()
        v = cast(RoutedConvNet, self.model).trunk(x)
        states, actions = [], []
        for d in range(head.n_depths):
            s = v.detach()
            a = self.router.act(s, task, d, deterministic=deterministic)
            states.append(s)
            actions.append(a)
            v = head.step(v, d, a)
        routes = torch.stack(actions, 1).cpu().numpy()
        trace = Trace(states, task, routes, np.zeros(routes.shape), np.zeros(len(task)), self.router.pop_extra())
        return v, trace

    def _decision_probs(self, trace: Trace) -> np.ndarray:
        """(B, n_depths, max_actions) probabilities of the decisions in ``trace`` (zero-padded)."""
        probs = trace.extra["probs"]
        out = np.zeros((len(trace.actions), len(probs), self.choice_counts.shape[2]))
        for d, p in probs.items():
            out[:, d, : p.shape[1]] = p
        return out

    def train_batch(self, x: torch.Tensor, task: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One SGD step of the blocks on the task loss along the sampled routes, then one router update."""
        with self.stream:
            return self._train_batch(x.to(self.device), task.to(self.device), y.to(self.device))

    def _train_batch(self, x: torch.Tensor, task: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.model.train()
        if self.router is None:
            logits = self.model(x, task)
        else:
            logits, trace = self._route(x, task, deterministic=False)
        loss = nn.functional.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        out = {"loss": loss.item()}
        if self.router is not None:
            trace.rewards, trace.r_final = route_rewards(logits.detach(), y, trace.actions, self.usage, self.config.rho)
            self.usage.update(trace.actions, self._decision_probs(trace) if self.usage.mode == "probability" else None)
            tn = task.cpu().numpy()
            for d in range(trace.actions.shape[1]):
                np.add.at(self.choice_counts[:, d], (tn, trace.actions[:, d]), 1.0)
            out.update(self.router.update(trace))
        return out

    def rewards_for_routes(self, x: torch.Tensor, task: torch.Tensor, y: torch.Tensor,
                           routes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rewards (immediate (B, n), final (B,)) the trainer would give these routes now (eval mode)."""
        self.model.eval()
        with torch.no_grad():
            logits = self.model(x.to(self.device), torch.as_tensor(routes, device=self.device).long())
        return route_rewards(logits, y, routes, self.usage, self.config.rho)

    # -- epochs ------------------------------------------------------------------------------------
    def current_lr(self) -> float:
        c = self.config
        return c.lr * (0.1 ** (self.epoch // c.lr_decay_every)) if c.lr_decay_every > 0 else c.lr

    @property
    def batches_per_epoch(self) -> int:
        """Mini-batches in one epoch (``samples_per_epoch`` or the whole training split)."""
        c = self.config
        n = len(self.dataset.train)
        per_epoch = min(c.samples_per_epoch, n) if c.samples_per_epoch > 0 else n
        return (per_epoch + c.batch_size - 1) // c.batch_size

    def learn(self, epochs: int, callback: Callable[[int, RoutingLearner, dict[str, float]], None] | None = None,
              progress: bool = False, on_batch: Callable[[int], None] | None = None) -> RoutingLearner:
        """Train ``epochs`` more epochs; ``callback(epoch, learner, stats)`` runs after each.

        ``progress``: a tqdm bar; ``on_batch(b)``: called after mini-batch ``b`` (0-based) of the epoch in
        progress (``moerl train``'s console); neither changes what is trained.

        An epoch left unfinished by :meth:`request_stop` counts as the first of them and continues where it
        stopped (its batch order and losses are kept), so stopping, saving :meth:`state_dict`, loading it
        into a fresh learner and learning on gives the very same weights as never stopping.
        """
        c = self.config
        n = len(self.dataset.train)
        per_epoch = min(c.samples_per_epoch, n) if c.samples_per_epoch > 0 else n
        n_batches = (per_epoch + c.batch_size - 1) // c.batch_size
        self._stop = False
        bar = None
        if progress:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            done = self._cursor["next"] if self._cursor else 0
            bar = tqdm(total=epochs * n_batches, initial=done, desc=c.algo, unit="batch", leave=False)
        target = self.epoch + epochs
        try:
            while self.epoch < target:
                for g in self.optimizer.param_groups:
                    g["lr"] = self.current_lr()
                if self._cursor is None:
                    if self.is_routing:
                        self.choice_counts[:] = 0
                    self._cursor = {"order": self.rng.permutation(n)[:per_epoch], "next": 0, "losses": []}
                cursor = self._cursor
                order, losses = cursor["order"], cursor["losses"]
                while cursor["next"] < n_batches:
                    if self._stop:
                        return self
                    b = cursor["next"]
                    rows = order[b * c.batch_size:(b + 1) * c.batch_size]
                    if len(rows) >= 2:  # batch norm needs two samples
                        losses.append(self.train_batch(*self.dataset.tensors(self.dataset.train, rows))["loss"])
                    cursor["next"] = b + 1
                    if bar is not None:
                        bar.update(1)
                    if on_batch is not None:
                        on_batch(b)
                self._cursor = None
                self.epoch += 1
                if callback is not None:
                    callback(self.epoch, self, {"loss": float(np.mean(losses)) if losses else float("nan")})
                if self._stop:
                    return self
        finally:
            if bar is not None:
                bar.close()
        return self

    def request_stop(self) -> None:
        """Ask :meth:`learn` to return after the current mini-batch (a signal handler calls this)."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        """True when :meth:`request_stop` was called during the last :meth:`learn` (which then returned early,
        or had just trained its last batch): the caller saves a checkpoint either way."""
        return self._stop

    # -- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, obs: tuple[torch.Tensor, torch.Tensor], state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels for ``obs = (x, task)``; the second value is the routes (B, depths) or None (baselines)."""
        x, task = obs
        x, task = x.to(self.device), task.to(self.device)
        self.model.eval()
        if self.router is None:
            return self.model(x, task).argmax(1).cpu().numpy(), None
        logits, trace = self._route(x, task, deterministic=deterministic)
        return logits.argmax(1).cpu().numpy(), trace.actions

    def evaluate(self, split: str = "test", batch_size: int = 1000) -> dict[str, Any]:
        """Per-task accuracy on ``split``, plus the mean and (routing) the routes taken per task.

        Routing learners also return ``task_routes`` (each task's most frequent full greedy route) and
        the route-collision measures of :func:`~moerl.routing.collisions.route_collisions` on them
        (with the per-task accuracies, so what a collision costs can be read).
        """
        data: MTLSplit = getattr(self.dataset, split)
        preds, routes = [], []
        for s in range(0, len(data), batch_size):
            rows = np.arange(s, min(s + batch_size, len(data)))
            x, t, _ = self.dataset.tensors(data, rows)
            p, r = self.predict((x, t))
            preds.append(p)
            if r is not None:
                routes.append(r)
        pred = np.concatenate(preds)
        hit = pred == data.label
        per_task = [float(hit[data.task == k].mean()) for k in range(self.dataset.n_tasks)]
        out: dict[str, Any] = {"accuracy": float(np.mean(per_task)), "per_task": per_task}
        if routes:
            all_routes = np.concatenate(routes)
            out["route_counts"] = self._route_counts(all_routes, data.task)
            greedy = task_routes(all_routes, data.task, self.dataset.n_tasks)
            out["task_routes"] = greedy.tolist()
            out.update(route_collisions(greedy, per_task))
        return out

    def _route_counts(self, routes: np.ndarray, task: np.ndarray) -> list[list[list[int]]]:
        """(task, depth, action) counts of the greedy routes."""
        n_actions = self.choice_counts.shape[2]
        counts = np.zeros((self.dataset.n_tasks, routes.shape[1], n_actions), dtype=np.int64)
        for d in range(routes.shape[1]):
            np.add.at(counts[:, d], (task, routes[:, d]), 1)
        return counts.tolist()

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything training depends on, to continue it exactly (a checkpoint; see :meth:`save` for the model).

        Weights, SGD momentum, the router's state with its own random generators, the collaboration
        history, the epoch counter, the learner's random generators, and the epoch in progress (batch
        order, next batch, losses and block choices so far). Copies, so later training does not alter it.
        """
        state: dict[str, Any] = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
            "rng": self.rng.bit_generator.state, "stream": self.stream.state_dict(), "cursor": self._cursor,
        }
        if self.router is not None:
            state["router"] = {"state": self.router.get_state(), "rng": self.router.rng.bit_generator.state,
                               "stream": self.router.stream.state_dict()}
            state["usage"] = self.usage.counts
            state["choice_counts"] = self.choice_counts
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a learner built with the same config and dataset."""
        state = copy.deepcopy(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.rng.bit_generator.state = state["rng"]
        self.stream.load_state_dict(state["stream"])
        self._cursor = state["cursor"]
        if self.router is not None:
            self.router.set_state(state["router"]["state"])
            self.router.rng.bit_generator.state = state["router"]["rng"]
            self.router.stream.load_state_dict(state["router"]["stream"])
            self.usage.counts = np.asarray(state["usage"])
            self.choice_counts = np.asarray(state["choice_counts"])

    def save(self, path: str | Path) -> None:
        """The trained model for :meth:`load` (prediction, evaluation); training state is :meth:`state_dict`."""
        data: dict[str, Any] = {"config": dataclasses.asdict(self.config), "model": self.model.state_dict(),
                                "epoch": self.epoch, "dataset": self.dataset.name}
        if self.router is not None:
            data["router"] = {"class": type(self.router).__name__, "state": self.router.get_state()}
            data["usage"] = self.usage.counts
        torch.save(data, path)

    @classmethod
    def load(cls, path: str | Path, dataset: MTLDataset, device: str | None = None) -> RoutingLearner:
        """Rebuild a saved learner; ``device`` overrides the saved config's device."""
        data = torch.load(path, weights_only=False, map_location="cpu")
        config = LearnerConfig(**data["config"])
        learner = cls(dataset, config if device is None else dataclasses.replace(config, device=device))
        learner.model.load_state_dict(data["model"])
        learner.epoch = data["epoch"]
        if learner.router is not None:
            learner.router.set_state(data["router"]["state"])
            learner.usage.counts = np.asarray(data["usage"])
        return learner
