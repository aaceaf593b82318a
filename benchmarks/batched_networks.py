"""S seeds at once (moerl.rl.nets.batched.BatchedQNetwork) vs a Python loop over S plain MoEQNetworks.

One "update" is the forward + backward of a Q-network on a batch for every seed: the batched network
does it in one pass over stacked weights (one ``baddbmm`` per layer for all seeds), the reference loops
over S plain networks (what S independent SB3 runs would do, minus everything else). Both are checked to
compute the same Q-values before timing. Reported per (network, S): milliseconds per update, both ways,
and loop / batched (> 1: batched is faster). A table is printed and the numbers are written as JSON to
``--out``.

On CPU, large S is limited by memory, not arithmetic: every activation of the batch is a tensor of
several MB, which glibc's malloc hands back to the operating system when it is freed (mmap/munmap), so
each update page-faults its activations in again (high system time). Raising glibc's thresholds, e.g.
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824``, or
preloading jemalloc/tcmalloc, removes most of that; the JSON records which ``MALLOC_*`` variables were set.

    python benchmarks/batched_networks.py [--seeds 1 8 64 256] [--batch 128] [--hidden 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from moerl.rl.nets.batched import BatchedQNetwork
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig

NETWORKS = {
    "dense": {"arch": "dense"},
    "big-softmoe-4": {"arch": "big", "router": "softmoe", "experts": 4},
}


def time_per_call(step: Callable[[], None], repeats: int, min_seconds: float) -> float:
    """Seconds per call: a few warm-up calls, then at least ``repeats`` calls and ``min_seconds``."""
    for _ in range(3):
        step()
    calls, start = 0, time.perf_counter()
    while calls < repeats or time.perf_counter() - start < min_seconds:
        step()
        calls += 1
    return (time.perf_counter() - start) / calls


def bench(name: str, seeds: int, args: argparse.Namespace) -> dict[str, float | int | str]:
    cfg = QNetworkConfig(hidden=args.hidden, **NETWORKS[name])  # type: ignore[arg-type]
    batched = BatchedQNetwork.from_seeds(args.in_features, args.actions, cfg, list(range(seeds)))
    nets: list[MoEQNetwork] = [batched.network(i) for i in range(seeds)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(seeds, args.batch, args.in_features, generator=g)
    with torch.no_grad():
        diff = max((batched(x)[i] - net(x[i])).abs().max().item() for i, net in enumerate(nets))
    assert diff < 1e-5, f"batched and plain networks disagree by {diff}"

    def batched_update() -> None:
        batched.zero_grad(set_to_none=True)
        batched(x).pow(2).mean(dim=(1, 2)).sum().backward()

    def loop_update() -> None:
        for i, net in enumerate(nets):
            net.zero_grad(set_to_none=True)
            net(x[i]).pow(2).mean().backward()

    t_batched = time_per_call(batched_update, args.repeats, args.min_seconds)
    t_loop = time_per_call(loop_update, max(1, args.repeats // max(1, seeds // 8)), args.min_seconds)
    row: dict[str, float | int | str] = {
        "network": name, "seeds": seeds, "batched_ms": 1e3 * t_batched, "loop_ms": 1e3 * t_loop,
        "loop_over_batched": t_loop / t_batched, "max_abs_diff": diff,
    }
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--in-features", type=int, default=8)
    parser.add_argument("--actions", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls at least (the loop: fewer at large S)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time each variant at least this long")
    parser.add_argument("--out", type=Path, default=Path("/tmp/moerl-bench/batched_networks.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, hidden {args.hidden}")
    print(f"{'network':<16} {'S':>5} {'batched ms':>11} {'loop ms':>10} {'loop/batched':>13} {'max |diff|':>11}")
    for name in args.networks:
        for seeds in args.seeds:
            row = bench(name, seeds, args)
            rows.append(row)
            print(f"{name:<16} {seeds:>5} {row['batched_ms']:>11.2f} {row['loop_ms']:>10.2f} "
                  f"{row['loop_over_batched']:>13.2f} {row['max_abs_diff']:>11.1e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "machine": platform.machine(), "threads": args.threads,
            "batch": args.batch, "hidden": args.hidden, "in_features": args.in_features, "actions": args.actions,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"}}
    args.out.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
