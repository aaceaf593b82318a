"""Training cost of routing (WPL) vs cross-stitch as tasks (and blocks) grow: 2, 3, 5, 10.

Run::

    nice -n 10 python benchmarks/routing_scaling.py [--batches 10] [--tasks 2,3,5,10] [--hidden 48,128] \
        [--figure docs/routing-figures/routing-scaling.png]

Why: the paper's claim is that routing's per-sample training cost stays roughly constant as tasks
and blocks are added (each sample runs through one block per layer), while cross-stitch runs every
task's column on every sample, so its cost grows linearly. We time a fixed number of training
mini-batches (64 samples, one torch thread) for (a) the full model on 28x28 inputs (trunk + heads)
and (b) the routed/cross-stitch FC part alone on 128-d features, where the difference lives.
Inputs are random: timing does not depend on image content. Each number is the median of 3 repeats.
With a fixed number of samples per task, a task's training time is proportional to this per-batch cost, so
the figure (``--figure``) plots it against the number of tasks: flat = the paper's "constant per task",
a straight rising line = its "linear" cross-stitch. Widths: 48 (the paper's appendix), 128 (its text).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from moerl.routing.data import MTLDataset, MTLSplit
from moerl.routing.trainer import RoutingLearner


def _random_dataset(n_tasks: int, n: int = 2048, side: int = 28) -> MTLDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    split = MTLSplit(np.arange(n), rng.integers(0, n_tasks, n), rng.integers(0, 2, n))
    return MTLDataset("timing", images, split, split, [f"t{i}" for i in range(n_tasks)], 2)


def time_full(algo: str, n_tasks: int, batches: int, hidden: int = 48) -> float:
    ds = _random_dataset(n_tasks)
    learner = RoutingLearner(ds, algo=algo, samples_per_epoch=64 * batches, hidden=hidden)
    learner.learn(1)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        learner.learn(1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batches


def time_head(algo: str, n_tasks: int, batches: int, hidden: int = 48) -> float:
    """FC part only: routed head with WPL routes vs the cross-stitch columns, 128-d inputs."""
    from moerl.routing.baselines import CrossStitchAllFC
    from moerl.routing.nets import RoutedFC
    from moerl.routing.policies import WPLRouter

    torch.manual_seed(0)
    v = torch.randn(64, 128)
    task = torch.randint(0, n_tasks, (64,))
    y = torch.randint(0, 2, (64,))
    if algo == "wpl":
        head = RoutedFC(128, n_tasks, 2, hidden=hidden)
        router = WPLRouter(n_tasks, [n_tasks] * 3, [128, hidden, hidden])

        def fwd():
            h = v
            for d in range(3):
                h = head.step(h, d, router.act(h.detach(), task, d))
            return h
        params = head.parameters()
    else:
        cs = CrossStitchAllFC((8, 8), n_tasks, 2, hidden=hidden, channels=32)  # trunk unused here
        cs.layers[0] = torch.nn.ModuleList(torch.nn.Linear(128, hidden) for _ in range(n_tasks))

        def fwd():
            cols = [layer(v) for layer in cs.layers[0]]
            for li in range(1, 3):
                mixed = torch.einsum("ij,jbh->ibh", cs.alphas[li - 1], torch.relu(torch.stack(cols)))
                cols = [layer(mixed[i]) for i, layer in enumerate(cs.layers[li])]
            return torch.stack(cols)[task, torch.arange(64)]
        params = cs.parameters()
    opt = torch.optim.SGD(params, lr=0.01)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(batches):
            loss = torch.nn.functional.cross_entropy(fwd(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batches


def plot(rows: list[dict], path: str) -> None:
    """Two panels (full model, FC part only): ms per batch against tasks, one line per algo and width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, part, title in zip(axes, ("full", "head"), ("full model (trunk + FC), 28x28 inputs",
                                                        "routed FC / cross-stitch columns only"), strict=True):
        for hidden in sorted({r["hidden"] for r in rows}):
            mine = [r for r in rows if r["hidden"] == hidden]
            for algo, style in (("wpl", "-o"), ("cross-stitch-all-fc", "--s")):
                name = "routing (WPL)" if algo == "wpl" else "cross-stitch"
                ax.plot([r["tasks"] for r in mine], [1e3 * r[f"{algo}_{part}"] for r in mine], style,
                        label=f"{name}, width {hidden}")
        ax.set_xlabel("tasks (= blocks per routed layer)")
        ax.set_ylabel("ms per training batch of 64")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Training cost per batch as tasks grow (one CPU thread; per-task time is proportional)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _positive_ints(text: str) -> list[int]:
    """argparse type: ``48,128`` -> [48, 128]; anything else is refused with one line (exit 2)."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'")
    return values


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--tasks", type=_positive_ints, default=[2, 3, 5, 10])
    p.add_argument("--hidden", type=_positive_ints, default=[48],
                   help="comma-separated widths of the routed / cross-stitch FC layers")
    p.add_argument("--figure", default=None, help="write the figure here (PNG)")
    a = p.parse_args()
    if a.figure and not Path(a.figure).resolve().parent.is_dir():  # refused now, not after the timings
        p.error(f"--figure: folder '{Path(a.figure).parent}' does not exist")
    print("batch 64, one torch thread; ms per training batch")
    print("| H | tasks = blocks/layer | routing full | cross-stitch full | CS/routing "
          "| routing FC-only | cross-stitch FC-only | CS/routing |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for hidden in a.hidden:
        for n in a.tasks:
            row = {"hidden": hidden, "tasks": n}
            for algo in ("wpl", "cross-stitch-all-fc"):  # side by side, in one run
                row[f"{algo}_full"] = time_full(algo, n, a.batches, hidden)
                row[f"{algo}_head"] = time_head(algo, n, a.batches * 5, hidden)
            rows.append(row)
            rf, cf, rh, ch = (row[k] for k in ("wpl_full", "cross-stitch-all-fc_full", "wpl_head",
                                                "cross-stitch-all-fc_head"))
            print(f"| {hidden} | {n} | {1e3 * rf:.1f} | {1e3 * cf:.1f} | {cf / rf:.2f} | {1e3 * rh:.2f} "
                  f"| {1e3 * ch:.2f} | {ch / rh:.2f} |", flush=True)
    if a.figure:
        plot(rows, a.figure)
        print(f"figure: {a.figure}")


if __name__ == "__main__":
    main()
