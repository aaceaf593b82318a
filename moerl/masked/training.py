"""Shared plumbing of the supervised vision learners: tensors, batches, the early-stopping fit loop.

Why one loop: the masked-expert learner and the PackNet baseline must be trained and selected the same
way (stratified validation split, early stopping on validation accuracy, best weights restored) for their
numbers to be comparable.

Resumable at epoch granularity: :class:`FitState` is everything the loop itself carries from one epoch to
the next (epochs done, best validation accuracy and the weights it was reached with, the patience count,
the epoch logs, the optimiser's state). A learner keeps the state of the phase it is in, saves it with its
model and random streams at an epoch end (:func:`fit` calls ``on_epoch_end`` there), and a fresh learner
that loads it re-enters :func:`fit` with it and continues bit for bit. Why epochs and not batches: a
checkpoint at an epoch end needs no position inside the shuffled batch order nor a half-summed epoch loss,
and an epoch of these datasets is seconds long, so a kill loses little.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from moerl.core.config import to_dict
from moerl.core.errors import ConfigError
from moerl.core.seeding import TorchStream
from moerl.masked.config import MaskedExpertsConfig


def training_seed(seed: int) -> int:
    """The seed of a learner's training stream: derived from ``seed`` but not equal to it, so the
    Gumbel noise and dropout masks are not the same random numbers that initialised the weights."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def tensorboard_writer(log_dir: str | Path | None, purge_step: int | None = None):
    """A TensorBoard ``SummaryWriter`` for ``log_dir``, or None when no log directory is set.

    ``purge_step`` (a resumed learner): TensorBoard drops the events at or after this step that earlier
    event files hold, i.e. what a killed process logged after its last checkpoint and is logged again now.
    """
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, H, W)`` (or float in [0, 1]) -> float ``(N, 1, H, W)`` in [0, 1]."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x


def batched(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index batches over ``range(n)``, shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Apply ``fn`` over ``x`` in chunks (evaluation, feature caching)."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)], dim=0)


@dataclass
class EpochLog:
    phase: str
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float
    extra: dict

    @classmethod
    def from_dict(cls, data: dict) -> EpochLog:
        return cls(**data)


@dataclass
class FitState:
    """What :func:`fit` carries across epochs, after a whole number of them (see the module docstring).

    ``done``: patience ran out (no further epoch); ``complete``: the loop ended and the best weights were
    restored, so the phase is over. ``optimizer`` is the optimiser's ``state_dict()`` after the last epoch;
    like ``best_state`` it is saved with the learner and loaded into the optimiser a resumed fit builds.
    """

    epoch: int = 0
    best: float = -math.inf
    best_state: dict | None = None
    bad: int = 0
    done: bool = False
    complete: bool = False
    logs: list[EpochLog] = field(default_factory=list)
    optimizer: dict | None = None

    def to_dict(self) -> dict:
        """Plain containers and tensors only (a checkpoint loads with ``torch.load(weights_only=True)``)."""
        out = {k: getattr(self, k) for k in ("epoch", "best", "best_state", "bad", "done", "complete",
                                             "optimizer")}
        out["logs"] = [asdict(log) for log in self.logs]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FitState:
        return cls(**{**data, "logs": [EpochLog.from_dict(log) for log in data["logs"]]})


def fit(
    model: nn.Module,
    make_optimizer: Callable[[], torch.optim.Optimizer],
    run_epoch: Callable[[torch.optim.Optimizer, int], tuple[float, float, dict]],
    val_accuracy: Callable[[], float],
    *,
    epochs: int,
    patience: int,
    phase: str,
    writer=None,
    global_epoch: int = 0,
    state: FitState | None = None,
    on_epoch_end: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitState:
    """Train for up to ``epochs``, stop after ``patience`` epochs without a better validation accuracy,
    and restore the weights of the best epoch. ``run_epoch(optimizer, epoch)`` returns
    ``(train_loss, train_acc, extra_scalars)``. The optimiser is built once here (after any freezing).

    ``state`` continues a fit from where it was saved (its optimiser state is loaded into the new
    optimiser); it is updated in place and returned. After each epoch ``on_epoch_end()`` is called (the
    state, the model and the caller's random streams are then all at that epoch's end: a checkpoint
    taken there continues exactly); then, if ``should_stop()`` is true, the fit returns at once with
    ``state.complete`` false and the best weights *not* restored, so that a resumed fit does that.
    TensorBoard scalars go to step ``global_epoch + epoch`` and are flushed each epoch, so that the events
    of every epoch a checkpoint covers are on disk when it is written.
    """
    state = FitState() if state is None else state
    opt = make_optimizer()
    if state.optimizer is not None:
        opt.load_state_dict(state.optimizer)
    while not state.done and state.epoch < epochs:
        epoch = state.epoch
        model.train()
        loss, acc, extra = run_epoch(opt, epoch)
        model.eval()
        val = float(val_accuracy())
        state.logs.append(EpochLog(phase, epoch, loss, acc, val, extra))
        if writer is not None:
            step = global_epoch + epoch
            writer.add_scalar(f"{phase}/train_loss", loss, step)
            writer.add_scalar(f"{phase}/train_acc", acc, step)
            writer.add_scalar(f"{phase}/val_acc", val, step)
            for k, v in extra.items():
                writer.add_scalar(f"{phase}/{k}", v, step)
            writer.flush()
        if val > state.best:
            state.best, state.best_state, state.bad = val, copy.deepcopy(model.state_dict()), 0
        else:
            state.bad += 1
            state.done = state.bad >= patience
        state.epoch = epoch + 1
        state.optimizer = opt.state_dict()
        if on_epoch_end is not None:
            on_epoch_end()
        if should_stop is not None and should_stop():
            return state
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    state.complete = True
    state.best_state, state.optimizer = None, None  # the phase is over: free the copies
    return state


def trainable(params) -> list[nn.Parameter]:
    """Parameters that still learn (frozen ones are left out so momentum cannot move them)."""
    return [p for p in params if p.requires_grad]


#: Config keys a loaded state may differ in: where and how fast it runs, where the data lie, how often the
#: caller checkpoints; none changes what is computed on one device.
_FREE_KEYS = frozenset({"device", "threads", "data_dir", "checkpoint_every"})


class ResumableLearner:
    """The stop / checkpoint surface both vision learners share (a mixin; the learners add their model).

    * ``on_epoch_end``: None or a callable run after every epoch, at a point where :meth:`state_dict`
      continues exactly (``moerl train`` writes its checkpoints there);
    * ``request_stop()``: end ``learn()`` at the next epoch end (a signal handler may call it); ``stopped``
      then says that ``learn()`` returned early;
    * ``state_dict()`` / ``load_state_dict()``: everything training depends on. A fresh learner built with
      the same config and data that loads it continues with ``learn()`` as the saved one would have, bit
      for bit. The dict holds plain containers and tensors (``torch.load(weights_only=True)`` reads it) and
      shares tensors with the live learner, as ``nn.Module.state_dict`` does: save it before training on.

    Phases: a learner trains in phases (a dataset, PackNet's fine-tuning stage); the one in progress is
    ``_pending`` (its name, dataset, stage, epoch budget and :class:`FitState`), so a checkpoint can only
    fall inside a phase, at an epoch end, or after the last one. What a phase does once, before its first
    epoch (adding an expert) or after its last (freezing, pruning, the accuracy matrix), is therefore never
    half done in a checkpoint.
    """

    arch: str = ""
    config: MaskedExpertsConfig
    history: list[EpochLog]
    rng: np.random.Generator
    stream: TorchStream
    train_seconds: float
    tasks_learned: int

    def _init_resumable(self) -> None:
        self.on_epoch_end: Callable[[], None] | None = None
        self.stop_requested = False
        self.stopped = False
        self._pending: dict | None = None
        self._purge_step: int | None = None
        self._learn_start: float | None = None

    @property
    def epochs_done(self) -> int:
        """Epochs trained so far over all phases (the TensorBoard step of the next one)."""
        return len(self.history) + (len(self._pending["fit"].logs) if self._pending is not None else 0)

    @property
    def last_epoch_log(self) -> EpochLog | None:
        """The log of the last epoch trained (in the phase in progress, else the last phase), for the console."""
        if self._pending is not None and self._pending["fit"].logs:
            return self._pending["fit"].logs[-1]
        return self.history[-1] if self.history else None

    def request_stop(self) -> None:
        """Stop ``learn()`` at the end of the current epoch (a clean point for a checkpoint)."""
        self.stop_requested = True

    def _begin(self, tensorboard_log: str | Path | None):
        """Start of ``learn()``: the writer (purging what a killed process logged after the loaded state)."""
        writer = tensorboard_writer(tensorboard_log, self._purge_step)
        self._purge_step = None
        self.stopped = False
        self._learn_start = time.perf_counter()
        return writer

    def _end(self, writer) -> None:
        if writer is not None:
            writer.close()
        assert self._learn_start is not None
        self.train_seconds += time.perf_counter() - self._learn_start
        self._learn_start = None

    def _phase_state(self, phase: str, epochs: int, **where: object) -> FitState:
        """The FitState of ``phase``: the pending one when resuming it, else a fresh one made pending."""
        if self._pending is None or self._pending["phase"] != phase:
            self._pending = {"phase": phase, "epochs": epochs, **where, "fit": FitState()}
        return self._pending["fit"]

    def _fit_hooks(self) -> dict:
        return {"on_epoch_end": self._epoch_end, "should_stop": lambda: self.stop_requested}

    def _epoch_end(self) -> None:
        if self.on_epoch_end is not None:
            self.on_epoch_end()

    def _halted(self, state: FitState) -> bool:
        """After a fit: True when it stopped early on request (the caller returns at once)."""
        if state.complete:
            return False
        self.stopped, self.stop_requested = True, False
        return True

    def _phase_done(self, state: FitState) -> None:
        self.history.extend(state.logs)
        self._pending = None

    def _common_state(self) -> dict:

        seconds = self.train_seconds
        if self._learn_start is not None:
            seconds += time.perf_counter() - self._learn_start
        pending = None
        if self._pending is not None:
            pending = {**self._pending, "fit": self._pending["fit"].to_dict()}
        return {
            "arch": self.arch, "config": to_dict(self.config), "rng": self.rng.bit_generator.state,
            "stream": self.stream.state_dict(), "history": [asdict(h) for h in self.history],
            "tasks_learned": self.tasks_learned, "pending": pending, "train_seconds": seconds,
        }

    def _load_common_state(self, state: dict) -> None:

        if state.get("arch") != self.arch:
            raise ConfigError(f"this state is of arch '{state.get('arch')}', not '{self.arch}'")
        ours, theirs = to_dict(self.config), dict(state["config"])
        differ = sorted(k for k in ours.keys() | theirs.keys()
                        if k not in _FREE_KEYS and ours.get(k) != theirs.get(k))
        if differ:
            raise ConfigError(f"this state was saved by a learner with another config ({', '.join(differ)})")
        self.rng.bit_generator.state = state["rng"]
        self.stream.load_state_dict(state["stream"])
        self.history = [EpochLog.from_dict(h) for h in state["history"]]
        self.tasks_learned = int(state["tasks_learned"])
        pending = state["pending"]
        self._pending = None if pending is None else {**pending, "fit": FitState.from_dict(pending["fit"])}
        self.train_seconds = float(state["train_seconds"])
        self.stopped = self.stop_requested = False
        self._purge_step = self.epochs_done
