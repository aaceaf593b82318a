"""Env steps per second of MoE DQN per architecture, beside Stable-Baselines3's stock DQN.

The reference is SB3's own ``DQN("MlpPolicy")`` with the same hyper-parameters and hidden widths
(dense [h, h]); every moerl arch runs in the same process, one after the other, on CartPole-v1 with
moerl's default config (dopamine classic-control settings, width 128, 4 experts). Reported:
steps/s and the ratio to the SB3 reference (1.0 = as fast as stock SB3 DQN).

    python benchmarks/bench_dqn_speed.py [--steps 5000] [--hidden 128] [--archs dense,middle,...]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.monitor import Monitor

from moerl.rl.experiment import DQNRunConfig, build_model, validate
from moerl.rl.nets.qnetwork import count_parameters
from moerl.rl.sb3.moe_dqn import default_buffer_size


def sb3_reference(cfg: DQNRunConfig, hidden: int) -> DQN:
    d = cfg.dqn
    env = Monitor(gym.make("CartPole-v1"))
    return DQN("MlpPolicy", env, learning_rate=d.learning_rate,
               buffer_size=d.buffer_size or default_buffer_size(env), learning_starts=d.learning_starts, batch_size=d.batch_size,
               gamma=d.gamma, train_freq=d.train_freq, target_update_interval=d.target_update_interval,
               exploration_initial_eps=d.exploration_initial_eps, exploration_final_eps=d.exploration_final_eps,
               max_grad_norm=d.max_grad_norm,
               policy_kwargs={"net_arch": [hidden, hidden], "optimizer_kwargs": {"eps": d.adam_eps}},
               seed=0, device="cpu")


def steps_per_second(model, steps: int) -> float:
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--archs", default="dense,wide,middle:softmoe,middle:topk,final:softmoe,all:softmoe,"
                                      "big:softmoe,big:topk")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = validate(DQNRunConfig(env="CartPole-v1", device="cpu"))
    base.network.hidden = args.hidden
    ref = steps_per_second(sb3_reference(base, args.hidden), args.steps)
    print(f"CartPole-v1, {args.steps} steps, hidden {args.hidden}, {args.experts} experts, 1 torch thread")
    print(f"{'model':<24} {'params':>8} {'steps/s':>9} {'vs SB3 DQN':>11}")
    print(f"{'SB3 DQN MlpPolicy (ref)':<24} {'':>8} {ref:>9.0f} {1.0:>11.2f}")
    for spec in args.archs.split(","):
        arch, _, router = spec.partition(":")
        cfg = validate(DQNRunConfig(env="CartPole-v1", device="cpu"))
        cfg.network.arch, cfg.network.router = arch, router or "softmoe"
        cfg.network.hidden, cfg.network.experts = args.hidden, args.experts
        model = build_model(cfg, Monitor(gym.make("CartPole-v1")))
        sps = steps_per_second(model, args.steps)
        n = count_parameters(model.policy.q_net.q_net)
        print(f"{spec:<24} {n:>8} {sps:>9.0f} {sps / ref:>11.2f}")


if __name__ == "__main__":
    main()
