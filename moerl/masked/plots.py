"""PNG plots of a masked-expert run: learning curves, routing heat map, mask density per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_plots(run_path: Path, learner, results: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    # learning curves
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    hist = learner.history
    xs = np.arange(len(hist))
    a1.plot(xs, [h.train_loss for h in hist], label="train loss")
    a2.plot(xs, [h.train_acc for h in hist], label="train acc (batches)")
    a2.plot(xs, [h.val_acc for h in hist], label="val acc")
    for i in range(1, len(hist)):
        if hist[i].phase != hist[i - 1].phase:
            for a in (a1, a2):
                a.axvline(i - 0.5, color="grey", lw=0.8, ls="--")
    a1.set_xlabel("epoch (all phases)")
    a2.set_xlabel("epoch (all phases)")
    a1.legend()
    a2.legend()
    a2.set_ylim(0, 1)
    fig.tight_layout()
    written.append(run_path / "learning_curves.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    routing = results["test"].get("routing")
    if routing:
        counts = np.asarray(routing["counts"], dtype=float)
        frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.6 + 0.9 * counts.shape[1], 1.2 + 0.6 * counts.shape[0]))
        ax.imshow(frac, vmin=0, vmax=1, cmap="viridis")
        names = list(results["test"]["datasets"])
        ax.set_yticks(range(len(names)), names)
        ax.set_xticks(range(counts.shape[1]), [f"expert {k}" for k in range(counts.shape[1])])
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center",
                        color="black" if frac[i, j] > 0.5 else "white")
        ax.set_title(f"test routing (purity {routing['purity']:.2f})")
        fig.tight_layout()
        written.append(run_path / "routing.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)

    dens = results["test"].get("mask_density")
    own = results["test"].get("ownership")
    if dens or own:
        fig, ax = plt.subplots(figsize=(5, 3))
        if dens:
            width = 0.8 / len(dens)
            for k, d in enumerate(dens):
                ax.bar(np.arange(len(d)) + k * width, d, width, label=f"expert {k}")
            ax.set_ylabel("mask density")
        else:
            keys = sorted({k for row in own for k in row})
            bottom = np.zeros(len(own))
            for k in keys:
                v = np.array([row.get(k, 0.0) for row in own])
                ax.bar(np.arange(len(own)), v, bottom=bottom, label=k)
                bottom += v
            ax.set_ylabel("fraction of weights (PackNet owner)")
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(run_path / "mask_density.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written
