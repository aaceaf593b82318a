"""The conv torso's seed-stacked convolution: one grouped conv (moerl's) against the alternatives, and whole networks.

Part 1, the op: ``G`` groups (seeds, or seeds x experts) of MinAtar's conv (3x3, 16 channels, no padding) on
``N`` channel-last 10x10 grids each, computed four ways, checked equal before timing:

* ``grouped-cl``: :func:`moerl.nn.conv.grid_conv_relu`, one ``conv2d(groups=G)`` on the channel-last input seen as
  channels-last NCHW (what the networks run);
* ``grouped-nchw``: the same grouped conv on a channels-first copy ``(N, G * C, H, W)``;
* ``unfold-bmm``: im2col (``F.unfold``) then one ``bmm`` over the groups;
* ``loop``: one ``conv2d`` per group (what S separate networks do).

Part 2, whole networks: the forward + backward of a :class:`~moerl.rl.nets.batched.BatchedQNetwork` of S seeds with
``torso: conv`` (and, for scale, the same network with the MLP torso) against a loop over S plain networks.

Reported: best-of-``--rounds`` milliseconds per call (forward / forward+backward for the op), one CPU thread by
default, with the batched engine's allocator settings (:func:`moerl.core.cpu_allocator.keep_freed_memory`).
Timings move with the machine's load: the variants of one table row alternate within every round, so compare
numbers of one row.

    python benchmarks/grid_conv.py [--seeds 8 64] [--rows 1 32 128] [--channels 6] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from moerl.core.cpu_allocator import keep_freed_memory
from moerl.core.seeding import seeded
from moerl.nn.conv import grid_conv_relu
from moerl.rl.nets.batched import BatchedQNetwork
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig

Conv = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def grouped_nchw(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    g, n, h, wd, c = x.shape
    o = w.shape[1]
    xi = x.permute(1, 0, 4, 2, 3).reshape(n, g * c, h, wd)
    y = torch.relu(F.conv2d(xi, w.reshape(g * o, c, 3, 3), b.reshape(g * o), groups=g))
    return y.view(n, g, o, h - 2, wd - 2).permute(1, 0, 3, 4, 2)


def unfold_bmm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    g, n, h, wd, c = x.shape
    o = w.shape[1]
    patches = F.unfold(x.reshape(g * n, h, wd, c).permute(0, 3, 1, 2), 3)  # (G * N, C * 9, positions)
    patches = patches.view(g, n, c * 9, -1).transpose(2, 3).reshape(g, -1, c * 9)
    y = torch.relu(torch.baddbmm(b.unsqueeze(1), patches, w.reshape(g, o, c * 9).transpose(1, 2)))
    return y.view(g, n, h - 2, wd - 2, o)


def loop(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.relu(F.conv2d(x[i].permute(0, 3, 1, 2), w[i], b[i])).permute(0, 2, 3, 1)
                        for i in range(x.shape[0])])


OPS: dict[str, Conv] = {"grouped-cl": grid_conv_relu, "grouped-nchw": grouped_nchw, "unfold-bmm": unfold_bmm,
                        "loop": loop}


def best_ms(steps: dict[str, Callable[[], object]], repeats: int, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` ms per call of each step, the steps alternating within every round (so a change in the
    machine's load hits all of them alike)."""
    for step in steps.values():
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(repeats):
                step()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1e3)
    return best


def ops(seeds: list[int], rows: list[int], channels: int, rounds: int) -> None:
    print(f"conv op, C={channels}, ms per call: forward / forward+backward (best of {rounds})")
    print(f"{'G':>4} {'N':>4}  " + "  ".join(f"{name:>15}" for name in OPS))
    for g in seeds:
        for n in rows:
            gen = torch.Generator().manual_seed(0)
            x = (torch.rand(g, n, 10, 10, channels, generator=gen) < 0.2).float()
            w = torch.randn(g, 16, channels, 3, 3, generator=gen).requires_grad_()
            b = torch.randn(g, 16, generator=gen).requires_grad_()
            reference = loop(x, w, b)
            for name, op in OPS.items():
                torch.testing.assert_close(op(x, w, b), reference, rtol=1e-4, atol=1e-4, msg=name)
            repeats = max(2, 2000 // (g * max(n, 8)))
            steps: dict[str, Callable[[], object]] = {}
            for name, op in OPS.items():
                steps[f"{name} forward"] = lambda op=op, x=x, w=w, b=b: op(x, w, b)
                steps[f"{name} both"] = lambda op=op, x=x, w=w, b=b: op(x, w, b).sum().backward()
            best = best_ms(steps, repeats, rounds)
            cells = [f"{best[f'{name} forward']:7.2f}/{best[f'{name} both']:7.2f}" for name in OPS]
            print(f"{g:>4} {n:>4}  " + "  ".join(f"{c:>15}" for c in cells), flush=True)


def networks(seeds: list[int], batch: int, channels: int, rounds: int, archs: list[str]) -> None:
    grid, tasks, actions = (10, 10, channels), 3, 5
    in_features = 100 * channels + tasks
    print(f"\nwhole networks, batch {batch}, ms per forward+backward (best of {rounds}): batched | loop of plain")
    for arch in archs:
        for torso in ("conv", "mlp"):
            cfg = QNetworkConfig(arch=arch, router="softmoe", experts=4, torso=torso)
            for s in seeds:
                batched = BatchedQNetwork.from_seeds(in_features, actions, cfg, list(range(s)), grid)
                plain = []
                for seed in range(s):
                    with seeded(seed):
                        plain.append(MoEQNetwork(in_features, actions, cfg, grid))
                gen = torch.Generator().manual_seed(1)
                x = (torch.rand(s, batch, in_features, generator=gen) < 0.2).float()
                task = torch.randint(0, tasks, (s, batch), generator=gen)
                torch.testing.assert_close(batched(x, task)[0], plain[0](x[0], task[0]), rtol=1e-4, atol=1e-5)
                best = best_ms({
                    "batched": lambda b=batched, x=x, task=task: b(x, task).square().sum().backward(),
                    "loop": lambda plain=plain, x=x, task=task: [p(x[i], task[i]).square().sum().backward()
                                                                 for i, p in enumerate(plain)],
                }, max(1, 64 // s), rounds)
                ours, theirs = best["batched"], best["loop"]
                print(f"  {arch:>6} {torso:>4} S={s:<3} {ours:8.2f} | {theirs:8.2f}  ({theirs / ours:.1f}x)",
                      flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[8, 64], help="groups (seeds) to time")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 32, 128], help="grids per group (batch sizes)")
    p.add_argument("--channels", type=int, default=6, help="grid channels (6: the default MinAtar suite)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--archs", nargs="*", default=["dense", "middle"],
                   help="softmoe archs of part 2 (none: skip it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the batched engine does: activations stay in the heap, not page-faulted in anew
    ops(args.seeds, args.rows, args.channels, args.rounds)
    if args.archs:
        networks(args.seeds, max(args.rows), args.channels, args.rounds, args.archs)


if __name__ == "__main__":
    main()
