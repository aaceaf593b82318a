"""Env steps per second of the batched MoE-PPO engine against MoEPPO (the SB3 path), side by side in one run.

Issue 26's speed target: batched PPO on one CPU thread, 64 seeds of a classic suite, dense and big/softmoe,
>= 10x MoEPPO's env steps/s per core with the same per-seed settings. Both engines here run
moerl/CartPole-MTRL-v0's suite (cartpole-mtrl) with the same PPO settings per seed: ``--n-envs``
environments, ``--n-steps`` steps per rollout, ``--epochs`` epochs of ``--minibatches`` minibatches
(PureJaxRL's 4, 128, 4, 4 by default), on one torch thread (this process).

* MoEPPO: one seed, one process (this one): after one warm-up rollout and update, timed over ``--rollouts``
  rollouts and updates; env steps/s of that seed.
* BatchedPPO at each S of ``--seeds``: one warm-up rollout and update, then ``--rollouts`` timed; env
  steps/s summed over the S seeds.

Printed per arch and S: both rates and their ratio (how many MoEPPO processes, each on its own core, one
batched process on one core replaces). Timings compare only within one run of this script: the machine may
be shared and loaded (say so when reporting).

    python benchmarks/ppo_engine.py [--seeds 1,8,64] [--archs dense,big:softmoe] [--rollouts 2]
        [--n-envs 4] [--n-steps 128] [--epochs 4] [--minibatches 4] [--out /tmp/ppo_engine.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import moerl  # noqa: F401  (registers the envs)
from moerl.rl.algos.ppo import PPOHyperParams
from moerl.rl.engine.batched_ppo import BatchedPPO
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.sb3.moe_ppo import MoEPPO

ENV_ID = "moerl/CartPole-MTRL-v0"


def network(spec: str) -> dict:
    arch, _, router = spec.partition(":")
    return {"arch": arch, **({"router": router} if router else {})}


def sb3_rate(spec: str, hp: PPOHyperParams, rollouts: int) -> float:
    """MoEPPO's env steps/s (one seed, this process, one torch thread) over ``rollouts`` rollouts+updates."""
    per_rollout = hp.n_envs * hp.n_steps
    model = MoEPPO(env=ENV_ID, n_envs=hp.n_envs, n_steps=hp.n_steps, n_epochs=hp.n_epochs,
                   n_minibatches=hp.n_minibatches, seed=0, policy_kwargs={"network": network(spec)})
    model.learn(per_rollout, threads=1)
    start = time.perf_counter()
    model.learn(per_rollout * rollouts, reset_num_timesteps=False, threads=1)
    return per_rollout * rollouts / (time.perf_counter() - start)


def batched_rate(spec: str, hp: PPOHyperParams, seeds: int, rollouts: int, device: str) -> float:
    """BatchedPPO's env steps/s summed over ``seeds`` seeds, over ``rollouts`` rollouts+updates."""
    per_rollout = hp.n_envs * hp.n_steps
    agent = BatchedPPO(TaskSuiteEnv("cartpole", "mtrl"), list(range(seeds)), network(spec), hp, device=device)
    total = per_rollout * (rollouts + 1)
    agent.learn(per_rollout, schedule_timesteps=total, threads=1)
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    agent.learn(total, threads=1)  # learn ends at the boundary: the log is on the host, the work done
    return seeds * per_rollout * rollouts / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,8,64")
    p.add_argument("--archs", default="dense,big:softmoe")
    p.add_argument("--rollouts", type=int, default=2)
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--n-steps", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="/tmp/ppo_engine.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    hp = PPOHyperParams(n_envs=args.n_envs, n_steps=args.n_steps, n_epochs=args.epochs,
                        n_minibatches=args.minibatches).validate()
    print(f"cartpole-mtrl, per seed: {hp.n_envs} envs x {hp.n_steps} steps, {hp.n_epochs} epochs x "
          f"{hp.n_minibatches} minibatches of {hp.batch_size}; one torch thread; {args.rollouts} timed rollouts; "
          f"device {args.device}; torch {torch.__version__}; {platform.processor() or platform.machine()}")
    rows = []
    for spec in args.archs.split(","):
        sb3 = sb3_rate(spec, hp, args.rollouts)
        for s in (int(x) for x in args.seeds.split(",")):
            rate = batched_rate(spec, hp, s, args.rollouts, args.device)
            rows.append({"arch": spec, "seeds": s, "batched_steps_per_s": rate, "moeppo_steps_per_s": sb3,
                         "ratio": rate / sb3})
            print(f"{spec:>12}  S={s:<4d} batched {rate:9.0f} env steps/s   MoEPPO (1 seed, 1 process) "
                  f"{sb3:7.0f}   ratio {rate / sb3:6.1f}x", flush=True)
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "rows": rows, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
