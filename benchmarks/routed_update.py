"""The batched engine end to end with ``network.expert_compute: dense`` (today) against ``routed``, in one run.

For each architecture (``--archs``, ``arch:router``) and member count (``--members``) two ``BatchedDQN`` engines
of cartpole-crl (4 tasks, so 4 experts; default sizes: width 128, minibatch 128) train side by side in this
process on one torch thread, the same seeds: one with the dense expert compute, one with the routed compute.
Each is warmed up past ``learning_starts``; then, alternating in ``--rounds`` slices so that the machine's
noise falls on both, they are timed (a) over the same env steps (member env steps per second: acting, physics,
replay and updates; no evaluation) and (b) on ``--updates`` updates at a time (ms per update, median over the
rounds). Reported: both, and routed / dense for steps/s, dense / routed for update time (> 1: routed faster).

    python benchmarks/routed_update.py [--archs middle:hardcoded,big:hardcoded,middle:topk,big:topk]
        [--members 8,64] [--steps 400] [--updates 10] [--rounds 4] [--out /tmp/routed_update.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv

WARMUP = 200  # env steps before timing: past learning_starts
COMPUTES = ("dense", "routed")


def network(spec: str, compute: str) -> dict:
    arch, _, router = spec.partition(":")
    return {"arch": arch, "router": router, "expert_compute": compute}


def measure(spec: str, members: int, steps: int, updates: int, rounds: int) -> dict:
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=25_000)
    hp = DQNHyperParams(learning_starts=100)
    seeds = list(range(members))
    engines = {c: BatchedDQN(suite, seeds, network(spec, c), hp) for c in COMPUTES}
    for agent in engines.values():
        agent.learn(WARMUP)
        agent.metrics_interval = 10**9  # time the plain update, not the metrics pass
    n = max(4, steps // rounds // 4 * 4)
    spent = dict.fromkeys(engines, 0.0)
    update_ms: dict[str, list[float]] = {c: [] for c in engines}
    for k in range(rounds):
        order = list(engines.items()) if k % 2 == 0 else list(reversed(engines.items()))
        for name, agent in order:
            start = time.perf_counter()
            agent.learn(agent.num_timesteps + n)
            spent[name] += time.perf_counter() - start
            start = time.perf_counter()
            agent.train(updates)
            update_ms[name].append((time.perf_counter() - start) / updates * 1e3)
    rate = {name: members * n * rounds / spent[name] for name in engines}
    ms = {name: statistics.median(v) for name, v in update_ms.items()}
    return {"arch": spec, "members": members, "steps_per_s": {k: round(v) for k, v in rate.items()},
            "steps_ratio": round(rate["routed"] / rate["dense"], 2),
            "update_ms": {k: round(v, 2) for k, v in ms.items()}, "update_ratio": round(ms["dense"] / ms["routed"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="middle:hardcoded,big:hardcoded,middle:topk,big:topk")
    parser.add_argument("--members", default="8,64")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="/tmp/routed_update.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    print("| arch | members | update ms dense | routed | dense/routed | member steps/s dense | routed "
          "| routed/dense |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for spec in args.archs.split(","):
        for members in map(int, args.members.split(",")):
            r = measure(spec, members, args.steps, args.updates, args.rounds)
            results.append(r)
            print(f"| {spec} | {members} | {r['update_ms']['dense']} | {r['update_ms']['routed']} "
                  f"| {r['update_ratio']} | {r['steps_per_s']['dense']:,} | {r['steps_per_s']['routed']:,} "
                  f"| {r['steps_ratio']} |", flush=True)
            with open(args.out, "w") as f:
                json.dump({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                           "threads": 1, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
