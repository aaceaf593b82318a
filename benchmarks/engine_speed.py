"""The batched engine before issue 23 against its defaults now (and compiled updates), per architecture and
member count, side by side in one run.

Three ``BatchedDQN`` engines of cartpole-crl train in this process on one torch thread, per architecture
(``--archs``) and member count (``--members``):

* ``before``: the engine as it computed before this work: eager updates, every expert on every token
  (``expert_compute: dense``);
* ``now``: the engine's defaults today (``expert_compute: auto``: `hardcoded` and `topk` experts computed only
  on their tokens in the updates; eager);
* ``compiled``: ``compile: on`` (opt-in; its updates take the dense compute).

Each is warmed up past ``learning_starts`` (the compiled one compiles there), then all are timed over the same
env steps, alternating in ``--rounds`` slices in rotating order, so that the machine's noise falls on all of
them. Reported per point: member env steps per second (acting, physics, replay, updates; no evaluation), the
ratios to ``before``, and the update's GFLOP/s (``torch.utils.flop_counter`` of one dense-compute update over
the measured time of ``now``'s update) as a share of the largest ``bmm`` of the network's shapes timed alone
here. Per member count, what grouping a sweep's runs buys is the row of 64 (or 35) members against 8-10.

    python benchmarks/engine_speed.py [--archs all] [--members 1,8,64,256] [--steps 800] [--rounds 4]
        [--out /tmp/engine_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from compiled_steps import ALL_ARCHS, WARMUP, bmm_peak, network, steps_for, update_flops, update_seconds

from moerl.nn.choices import ROUTED_COMPUTE_ROUTERS
from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv

VARIANTS = ("before", "now", "compiled")


def engines(spec: str, members: int) -> dict[str, BatchedDQN]:
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=25_000)
    hp = DQNHyperParams(learning_starts=100)
    seeds = list(range(members))
    net = network(spec)
    before = {**net, "expert_compute": "dense"} if net.get("router") in ROUTED_COMPUTE_ROUTERS else net
    return {"before": BatchedDQN(suite, seeds, before, hp), "now": BatchedDQN(suite, seeds, net, hp),
            "compiled": BatchedDQN(suite, seeds, net, hp, compile=True)}


def measure(spec: str, members: int, steps: int, rounds: int) -> dict:
    agents = engines(spec, members)
    for agent in agents.values():
        agent.learn(WARMUP)
    n = steps_for(members, steps)
    spent = dict.fromkeys(agents, 0.0)
    names = list(agents)
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            agent = agents[name]
            start = time.perf_counter()
            agent.learn(agent.num_timesteps + n // rounds)
            spent[name] += time.perf_counter() - start
    rate = {name: members * (n // rounds) * rounds / spent[name] for name in agents}
    upd = {name: update_seconds(agent) for name, agent in agents.items()}
    flops = update_flops(agents["before"])  # the FLOPs of the computation itself (dense compute)
    peak = bmm_peak(members, experts=1 if spec == "dense" else 4)
    return {"arch": spec, "members": members, **{k: round(v) for k, v in rate.items()},
            "now/before": round(rate["now"] / rate["before"], 2),
            "compiled/before": round(rate["compiled"] / rate["before"], 2),
            "update_ms": {k: round(v * 1e3, 2) for k, v in upd.items()},
            "gflops_now": round(flops / upd["now"] / 1e9, 1), "bmm_peak_gflops": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="all", help=f"comma-separated, or 'all' ({ALL_ARCHS})")
    parser.add_argument("--members", default="1,8,64,256")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="/tmp/engine_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = ALL_ARCHS.split(",") if args.archs == "all" else args.archs.split(",")
    results = []
    print("| arch | members | before (member steps/s) | now | compiled | now / before | compiled / before "
          "| update ms before / now / compiled | update GFLOP/s now (bmm peak) |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for spec in archs:
        for members in map(int, args.members.split(",")):
            r = measure(spec, members, args.steps, args.rounds)
            results.append(r)
            ms = r["update_ms"]
            print(f"| {spec} | {members} | {r['before']:,} | {r['now']:,} | {r['compiled']:,} | {r['now/before']} "
                  f"| {r['compiled/before']} | {ms['before']} / {ms['now']} / {ms['compiled']} "
                  f"| {r['gflops_now']} ({r['bmm_peak_gflops']}) |", flush=True)
            with open(args.out, "w") as f:
                json.dump({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                           "threads": 1, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
