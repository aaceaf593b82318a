"""Aggregate env steps per second of the batched MoE-DQN engine against the SB3 path, in one process.

For each arch and each number of seeds S, the batched engine trains S seeds of cartpole-crl for
``--steps`` env steps (after a warm-up that fills the buffers and reaches the first updates); the SB3
path trains one seed of the same config for the same steps. Both use the same threads
(``--threads``). Reported: the batched engine's env steps per second over all seeds, the SB3 path's
per run, their ratio (how many SB3 runs on the same cores one batched process replaces), memory per
seed (replay buffer + weights + Adam state), and the share of the batched step spent in each part
(``--profile``). Timings are only comparable within one run of this script (shared, noisy machines).

    python benchmarks/batched_engine.py [--seeds 1,8,64] [--archs dense,big:softmoe] [--steps 2000]
        [--threads 1] [--device cpu] [--out /tmp/batched_engine.json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import time

import torch

from moerl.agents.batched_dqn import BatchedDQN
from moerl.agents.moe_dqn import DQNHyperParams
from moerl.envs.suite import TaskSuiteEnv
from moerl.experiments.moe_dqn import DQNRunConfig, build_model, make_env, validate

WARMUP = 600  # env steps before timing: past learning_starts (500), so updates are included


def network(spec: str) -> dict:
    arch, _, router = spec.partition(":")
    return {"arch": arch, **({"router": router} if router else {})}


def sb3_rate(spec: str, steps: int) -> float:
    cfg = DQNRunConfig(env="cartpole-crl", seed=0, device="cpu")
    for key, value in network(spec).items():
        setattr(cfg.network, key, value)
    env = make_env(validate(cfg))
    model = build_model(cfg, env)
    model.learn(WARMUP)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,8,64")
    p.add_argument("--archs", default="dense,big:softmoe")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="/tmp/batched_engine.json")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.archs.split(","):
        reference = sb3_rate(spec, args.steps)
        for s in (int(x) for x in args.seeds.split(",")):
            rate, mem, top = batched_rate(spec, s, args.steps, args.device, args.profile)
            rows.append({"arch": spec, "seeds": s, "batched_steps_per_s": round(rate), "sb3_steps_per_s": round(reference),
                         "ratio": round(rate / reference, 2), "bytes_per_seed": mem, "profile": top})
            print(f"{spec:14s} S={s:5d}  batched {rate:9.0f} steps/s  sb3 {reference:6.0f}/run  "
                  f"ratio {rate / reference:6.2f}  {mem / 2**20:6.1f} MiB/seed", flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    out = {"device": device, "threads": args.threads, "steps": args.steps, "torch": torch.__version__, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("| arch | seeds | batched env steps/s | SB3 path steps/s (one run) | ratio | MiB per seed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['seeds']} | {r['batched_steps_per_s']:,} | {r['sb3_steps_per_s']:,} | "
              f"{r['ratio']} | {r['bytes_per_seed'] / 2**20:.1f} |")


if __name__ == "__main__":
    main()
