"""Eager against compiled updates of the batched engine, per architecture and member count, in one run.

For each architecture (``--archs``) and member count (``--members``) two ``BatchedDQN`` engines of
cartpole-crl train side by side in this process on one torch thread: today's eager engine and the same engine
with ``compile=True``. Each is warmed up past ``learning_starts`` (the compiled one compiles there: its compile
time is reported), then both are timed over the same env steps, alternating in ``--rounds`` slices so that
the machine's noise falls on both. Reported per point: member env steps per second of each (acting, physics,
replay and updates; no evaluation), their ratio, the compile time and after how many member env steps the
compiled engine has paid it back, and the update's GFLOP/s (``torch.utils.flop_counter`` of one update over its
measured time) as a share of the largest ``bmm`` of the network's shapes timed alone here.

    python benchmarks/compiled_steps.py [--archs dense,big:softmoe] [--members 1,8,64,256]
        [--steps 800] [--rounds 4] [--out /tmp/compiled_steps.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv

WARMUP = 300  # env steps before timing: past learning_starts, so the compiled engine has compiled
ALL_ARCHS = ("dense,middle:softmoe,middle:topk,middle:hardcoded,all:softmoe,all:topk,all:hardcoded,"
             "big:softmoe,big:topk,big:hardcoded")


def network(spec: str) -> dict:
    arch, _, router = spec.partition(":")
    return {"arch": arch, **({"router": router} if router else {})}


def steps_for(members: int, steps: int) -> int:
    """Env steps to time: ``steps`` up to 64 members, fewer beyond (a multiple of train_freq)."""
    return max(80, steps * 64 // max(members, 64) // 4 * 4)


def update_seconds(agent: BatchedDQN, repeats: int = 20) -> float:
    start = time.perf_counter()
    agent.train(repeats)
    return (time.perf_counter() - start) / repeats


def update_flops(agent: BatchedDQN) -> int:
    with FlopCounterMode(display=False) as counter:
        agent.train(1)
    return counter.get_total_flops()


def bmm_peak(members: int, width: int = 128, batch: int = 128, experts: int = 4) -> float:
    """GFLOP/s of the largest product an update of these shapes runs (members x experts hidden layers)."""
    a = torch.randn(members * experts, batch, width)
    b = torch.randn(members * experts, width, width)
    torch.bmm(a, b)
    n = 20
    start = time.perf_counter()
    for _ in range(n):
        torch.bmm(a, b)
    return 2 * members * experts * batch * width * width * n / (time.perf_counter() - start) / 1e9


def measure(spec: str, members: int, steps: int, rounds: int) -> dict:
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=25_000)
    hp = DQNHyperParams(learning_starts=100)
    seeds = list(range(members))
    engines = {"eager": BatchedDQN(suite, seeds, network(spec), hp),
               "compiled": BatchedDQN(suite, seeds, network(spec), hp, compile=True)}
    warm = {}
    for name, agent in engines.items():
        start = time.perf_counter()
        agent.learn(WARMUP)
        warm[name] = time.perf_counter() - start
    compile_seconds = max(warm["compiled"] - warm["eager"], 0.0)
    n = steps_for(members, steps)
    spent = dict.fromkeys(engines, 0.0)
    for k in range(rounds):
        order = list(engines.items()) if k % 2 == 0 else list(reversed(engines.items()))
        for name, agent in order:
            start = time.perf_counter()
            agent.learn(agent.num_timesteps + n // rounds)
            spent[name] += time.perf_counter() - start
    rate = {name: members * (n // rounds) * rounds / spent[name] for name in engines}
    upd = {name: update_seconds(agent) for name, agent in engines.items()}
    flops = update_flops(engines["eager"])
    peak = bmm_peak(members, experts=1 if spec == "dense" else 4)
    saved_per_step = 1 / rate["eager"] - 1 / rate["compiled"]  # seconds per member env step
    return {"arch": spec, "members": members, "eager": round(rate["eager"]), "compiled": round(rate["compiled"]),
            "ratio": round(rate["compiled"] / rate["eager"], 2), "compile_s": round(compile_seconds, 1),
            "payback_member_steps": round(compile_seconds / saved_per_step) if saved_per_step > 0 else None,
            "update_ms": {k: round(v * 1e3, 2) for k, v in upd.items()},
            "gflops": {k: round(flops / v / 1e9, 1) for k, v in upd.items()}, "bmm_peak_gflops": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="dense,big:softmoe")
    parser.add_argument("--members", default="1,8,64,256")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="/tmp/compiled_steps.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = ALL_ARCHS.split(",") if args.archs == "all" else args.archs.split(",")
    results = []
    print("| arch | members | eager (member steps/s) | compiled | ratio | compile s | payback (member steps) "
          "| update ms eager / compiled | GFLOP/s eager / compiled (bmm peak) |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for spec in archs:
        for members in map(int, args.members.split(",")):
            r = measure(spec, members, args.steps, args.rounds)
            results.append(r)
            print(f"| {spec} | {members} | {r['eager']:,} | {r['compiled']:,} | {r['ratio']} | {r['compile_s']} "
                  f"| {r['payback_member_steps'] if r['payback_member_steps'] is not None else 'never'} "
                  f"| {r['update_ms']['eager']} / {r['update_ms']['compiled']} "
                  f"| {r['gflops']['eager']} / {r['gflops']['compiled']} ({r['bmm_peak_gflops']}) |", flush=True)
            with open(args.out, "w") as f:
                json.dump({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                           "threads": 1, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
