"""Shared plumbing of the supervised vision learners: tensors, batches, the early-stopping fit loop.

Why one loop: the masked-expert learner and the PackNet baseline must be trained and selected the same
way (stratified validation split, early stopping on validation accuracy, best weights restored) for their
numbers to be comparable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


def training_seed(seed: int) -> int:
    """The seed of a learner's training stream: derived from ``seed`` but not equal to it, so the
    Gumbel noise and dropout masks are not the same random numbers that initialised the weights."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def tensorboard_writer(log_dir: str | Path | None):
    """A TensorBoard ``SummaryWriter`` for ``log_dir``, or None when no log directory is set."""
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


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
) -> list[EpochLog]:
    """Train for up to ``epochs``, stop after ``patience`` epochs without a better validation accuracy,
    and restore the weights of the best epoch. ``run_epoch(optimizer, epoch)`` returns
    ``(train_loss, train_acc, extra_scalars)``. The optimiser is built once here (after any freezing)."""
    opt = make_optimizer()
    best, best_state, bad = -math.inf, None, 0
    logs: list[EpochLog] = []
    for epoch in range(epochs):
        model.train()
        loss, acc, extra = run_epoch(opt, epoch)
        model.eval()
        val = float(val_accuracy())
        logs.append(EpochLog(phase, epoch, loss, acc, val, extra))
        if writer is not None:
            step = global_epoch + epoch
            writer.add_scalar(f"{phase}/train_loss", loss, step)
            writer.add_scalar(f"{phase}/train_acc", acc, step)
            writer.add_scalar(f"{phase}/val_acc", val, step)
            for k, v in extra.items():
                writer.add_scalar(f"{phase}/{k}", v, step)
        if val > best:
            best, best_state, bad = val, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return logs


def trainable(params) -> list[nn.Parameter]:
    """Parameters that still learn (frozen ones are left out so momentum cannot move them)."""
    return [p for p in params if p.requires_grad]
