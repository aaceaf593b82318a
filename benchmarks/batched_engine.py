"""Aggregate env steps per second of the batched MoE-DQN engine against the SB3 path, on the same cores.

For each thread count T (``--threads 1,2``), each arch and each number of seeds S:

* batched: one process (this one, ``torch.set_num_threads(T)``) trains S seeds of cartpole-crl; after a
  warm-up that fills the buffers and passes ``learning_starts`` (so updates are included), it is timed
  over ``--steps`` env steps (fewer when S is large: ``--steps * 64 / S``, at least ``--min-steps``) and
  reports env steps per second over all seeds;
* SB3 path: T separate processes (one torch thread each, as ``moerl train`` runs) each train one seed of
  the same config for ``--steps`` env steps at the same time; their rates are summed. That is what the
  same cores give when a study runs one SB3 run per core.

Reported per point: both rates and their ratio (how many SB3-path runs one batched process replaces on the
same cores), memory per seed (replay buffer, weights, target, Adam state), and per arch the update FLOPs
per seed (``torch.utils.flop_counter`` on one update) as a ratio to dense, beside the measured time ratio
per env step to dense at the same S: where the per-seed cost follows the work, the two ratios meet.
``--profile`` adds the share of the time in the top functions (cProfile). Timings are comparable only
within one run of this script (shared, noisy machines); the JSON records the device, threads and torch.

    python benchmarks/batched_engine.py [--seeds 1,8,64,256] [--archs dense,big:softmoe] [--threads 1,2]
        [--steps 800] [--device cpu] [--out /tmp/batched_engine.json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing as mp
import platform
import pstats
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.experiment import DQNRunConfig, build_model, make_env, validate

WARMUP = 600  # env steps before timing: past learning_starts (500), so updates are included


def network(spec: str) -> dict:
    arch, _, router = spec.partition(":")
    return {"arch": arch, **({"router": router} if router else {})}


def _sb3_worker(spec: str, steps: int, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    cfg = DQNRunConfig(env="cartpole-crl", seed=0, device="cpu")
    for key, value in network(spec).items():
        setattr(cfg.network, key, value)
    env = make_env(validate(cfg))
    model = build_model(cfg, env)
    model.learn(WARMUP)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    queue.put(steps / (time.perf_counter() - start))


def sb3_rate(spec: str, steps: int, processes: int) -> float:
    """Summed env steps/s of ``processes`` SB3-path runs training at the same time, one thread each."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    workers = [ctx.Process(target=_sb3_worker, args=(spec, steps, queue)) for _ in range(processes)]
    for w in workers:
        w.start()
    rates = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(rates)


def update_flops(spec: str) -> int:
    """FLOPs of one update of one seed (target and online forwards, backward; the optimiser is not counted)."""
    agent = BatchedDQN(TaskSuiteEnv("cartpole", "crl"), [0], network(spec), DQNHyperParams())
    agent.learn(WARMUP)
    counter = FlopCounterMode(display=False)
    with counter:
        agent.train(1)
    return counter.get_total_flops()


def batched_rate(spec: str, seeds: int, steps: int, device: str, profile: bool) -> tuple[float, int, list]:
    suite = TaskSuiteEnv("cartpole", "crl")
    agent = BatchedDQN(suite, range(seeds), network(spec), DQNHyperParams(), device)
    agent.learn(WARMUP)
    prof = cProfile.Profile() if profile else None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    if prof:
        prof.enable()
    agent.learn(WARMUP + steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    top = []
    if prof:
        prof.disable()
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        rows = sorted(((v[2], f"{k[0].split('/')[-1]}:{k[2]}") for k, v in stats.items()), reverse=True)[:6]
        top = [(name, round(t / seconds, 3)) for t, name in rows]
    tensors = [*agent.q_net.parameters(), *agent.q_net_target.parameters()]
    weights = sum(t.numel() * t.element_size() for t in tensors) + 2 * sum(
        p.numel() * p.element_size() for p in agent.q_net.parameters())  # Adam's two moments
    buf = agent.buffer
    replay = sum(t.numel() * t.element_size() for t in (buf.observations, buf.next_observations, buf.actions,
                                                          buf.rewards, buf.dones))
    return seeds * steps / seconds, (weights + replay) // seeds, top


def steps_for(seeds: int, steps: int, min_steps: int) -> int:
    """Env steps to time at ``seeds`` seeds: ``steps`` up to 64 seeds, then fewer (same work per point)."""
    return max(min_steps, steps * 64 // max(seeds, 64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,8,64")
    p.add_argument("--archs", default="dense,big:softmoe")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--min-steps", type=int, default=40)
    p.add_argument("--threads", default="1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="/tmp/batched_engine.json")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    archs = args.archs.split(",")
    seed_counts = [int(x) for x in args.seeds.split(",")]
    torch.set_num_threads(1)
    flops = {spec: update_flops(spec) for spec in archs}
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for spec in archs:
            reference = sb3_rate(spec, args.steps, threads)
            torch.set_num_threads(threads)
            for s in seed_counts:
                rate, mem, top = batched_rate(spec, s, steps_for(s, args.steps, args.min_steps), args.device,
                                              args.profile)
                rows.append({"threads": threads, "arch": spec, "seeds": s, "batched_steps_per_s": round(rate),
                             "sb3_steps_per_s": round(reference), "ratio": round(rate / reference, 2),
                             "bytes_per_seed": mem, "update_flops": flops[spec], "profile": top})
                print(f"T={threads} {spec:14s} S={s:5d}  batched {rate:9.0f} steps/s  sb3 {reference:6.0f} "
                      f"({threads} runs)  ratio {rate / reference:6.2f}  {mem / 2**20:6.1f} MiB/seed", flush=True)
            torch.set_num_threads(1)
    dense = {(r["threads"], r["seeds"]): r["batched_steps_per_s"] for r in rows if r["arch"] == "dense"}
    for r in rows:
        key = (r["threads"], r["seeds"])
        r["flops_over_dense"] = round(r["update_flops"] / flops["dense"], 2) if "dense" in flops else None
        r["time_over_dense"] = round(dense[key] / r["batched_steps_per_s"], 2) if key in dense else None
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    out = {"device": device, "steps": args.steps, "torch": torch.__version__, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("| threads | arch | seeds | batched env steps/s | SB3 path env steps/s (threads x 1 run) | ratio "
          "| MiB per seed | update FLOPs / dense | time per step / dense |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['arch']} | {r['seeds']} | {r['batched_steps_per_s']:,} | {r['sb3_steps_per_s']:,} "
              f"| {r['ratio']} | {r['bytes_per_seed'] / 2**20:.1f} | {r['flops_over_dense']} | {r['time_over_dense']} |")


if __name__ == "__main__":
    main()
