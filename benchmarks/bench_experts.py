"""Batched experts (one baddbmm over the expert dimension) vs a Python loop over nn.Linear experts.

The loop is the reference implementation: what a straightforward MoE layer does. Both compute the
same thing (checked below before timing). Reported: forward+backward time per call and the ratio
loop / batched (> 1 means batched is faster).

    python benchmarks/bench_experts.py [--experts 4] [--batch 128] [--width 128] [--repeats 300]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from moerl.nn import ExpertMLP


class LoopExperts(nn.Module):
    """Reference: each expert its own nn.Sequential, applied one after the other."""

    def __init__(self, batched: ExpertMLP):
        super().__init__()
        self.nets = nn.ModuleList()
        for e in range(batched.num_experts):
            layers = []
            for i, bl in enumerate(batched.layers):
                lin = nn.Linear(bl.in_features, bl.out_features)
                with torch.no_grad():
                    lin.weight.copy_(bl.weight[e].t())
                    lin.bias.copy_(bl.bias[e, 0])
                layers.append(lin)
                if i < len(batched.layers) - 1:
                    layers.append(nn.ReLU())
            self.nets.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (E, N, in)
        return torch.stack([net(x[e]) for e, net in enumerate(self.nets)])


def time_fwd_bwd(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    for _ in range(20):
        module(x).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, 1 thread, {args.experts} experts, batch {args.batch}")
    print(f"{'expert shape':<28} {'batched ms':>10} {'loop ms':>10} {'loop/batched':>13}")
    shapes = {
        "one layer (middle)": (args.width, args.width),
        "whole Q-net (big)": (4, args.width, args.width, 2),
    }
    for name, sizes in shapes.items():
        batched = ExpertMLP(args.experts, sizes)
        loop = LoopExperts(batched)
        x = torch.randn(args.experts, args.batch, sizes[0])
        torch.testing.assert_close(batched(x), loop(x))
        tb = time_fwd_bwd(batched, x, args.repeats)
        tl = time_fwd_bwd(loop, x, args.repeats)
        print(f"{name:<28} {tb * 1e3:>10.3f} {tl * 1e3:>10.3f} {tl / tb:>13.2f}")


if __name__ == "__main__":
    main()
