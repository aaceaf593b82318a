"""What one run of each study variant costs beside its training time: parameters, greedy inference latency per
step and memory per run, on both engines (issue 24's cost item; training time per env step comes from the runs
themselves: ``scripts/study_cost.py``).

For each variant (``--archs``, the study's 11 by default) on ``--env`` with the study's settings for it
(``--block-steps``: the replay buffer holds one CRL block, as the study's runs do):

* **parameters**: the online Q-network's (the target network doubles them in memory);
* **greedy latency, SB3 engine**: ``MoEDQN.predict(obs, deterministic=True)`` on one observation, median over
  ``--calls`` calls (what acting in a Gymnasium loop costs per step: SB3's preprocessing, the forward, the
  action mask);
* **greedy latency per member, batched engine**: ``BatchedDQN.greedy_actions`` of one observation per member
  at ``--members`` members, median call time over the members;
* **memory per run**: the bytes a run's tensors hold once built: online and target weights, the optimiser's
  state after one step (Adam's two moments), and the replay buffer (SB3's numpy arrays on the SB3 engine; the
  batched engine's tensors over its members). Activations of an update are transient and left out.

One torch thread; the latencies are medians within one run of this script (noisy machines: compare variants
within one run, not across runs).

    python benchmarks/variant_cost.py [--env cartpole-crl] [--block-steps 25000] [--members 64] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import moerl  # noqa: F401  (registers the moerl/ envs)
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.registration import resolve_env_id
from moerl.rl.sb3.moe_dqn import MoEDQN

STUDY_ARCHS = ("dense,wide,middle:softmoe,middle:topk,final:softmoe,final:topk,all:softmoe,all:topk,"
               "big:softmoe,big:topk,big:hardcoded")


def network_of(arch: str) -> dict[str, str]:
    name, _, router = arch.partition(":")
    return {"arch": name, **({"router": router} if router else {})}


def tensor_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return tensor_bytes([v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)])


def median_seconds(call, calls: int) -> float:
    for _ in range(min(100, calls)):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sb3_cost(env_id: str, network: dict[str, str], buffer: int, calls: int) -> dict[str, float]:
    env = gym.make(env_id)
    model = MoEDQN("MoEPolicy", env, buffer_size=buffer, learning_starts=0, batch_size=32, seed=0,
                   policy_kwargs={"network": network})
    model.learn(64)  # one optimiser step at least: Adam's state exists
    obs, _ = env.reset(seed=0)
    latency = median_seconds(lambda: model.predict(obs, deterministic=True), calls)
    q_net, target = model.policy.q_net, model.policy.q_net_target
    rb = model.replay_buffer
    replay = sum(getattr(rb, name).nbytes for name in ("observations", "next_observations", "actions", "rewards",
                                                        "dones", "timeouts") if getattr(rb, name, None) is not None)
    weights = tensor_bytes(list(q_net.parameters()) + list(target.parameters()))
    env.close()
    return {"parameters": sum(p.numel() for p in q_net.q_net.parameters()), "latency_us": 1e6 * latency,
            "memory_bytes": weights + optimizer_bytes(model.policy.optimizer) + replay}


def batched_cost(env_id: str, network: dict[str, str], buffer: int, members: int, calls: int) -> dict[str, float]:
    suite = gym.make(env_id).unwrapped
    agent = BatchedDQN(suite, list(range(members)), network=network,
                       dqn={"buffer_size": buffer, "learning_starts": 0, "batch_size": 32})
    agent.learn(64)  # one optimiser step at least
    obs = torch.as_tensor(np.stack([suite.observation_space.sample() for _ in range(members)]), dtype=torch.float32)[:, None]
    with torch.no_grad():
        latency = median_seconds(lambda: agent.greedy_actions(obs), max(calls // 10, 50))
    weights = tensor_bytes(list(agent.q_net.parameters()) + list(agent.q_net_target.parameters()))
    b = agent.buffer
    replay = tensor_bytes([b.observations, b.next_observations, b.actions, b.rewards, b.dones, b.tasks])
    return {"latency_us": 1e6 * latency / members,
            "memory_bytes": (weights + optimizer_bytes(agent.optimizer) + replay) / members}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="cartpole-crl")
    parser.add_argument("--archs", default=STUDY_ARCHS)
    parser.add_argument("--block-steps", type=int, default=25000, help="replay capacity: one CRL block")
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env_id = resolve_env_id(args.env)
    rows = []
    print(f"{args.env} ({env_id}), replay {args.block_steps:,}, batched at {args.members} members, one thread, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| variant | parameters | greedy us/step, SB3 | greedy us/step per member, batched | MiB per run, SB3 | "
          "MiB per run, batched |")
    print("|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        network = network_of(arch)
        one = sb3_cost(env_id, network, args.block_steps, args.calls)
        many = batched_cost(env_id, network, args.block_steps, args.members, args.calls)
        label = arch.replace(":", "/")
        rows.append({"variant": label, **one, **{f"batched_{k}": v for k, v in many.items()}})
        print(f"| {label} | {one['parameters']:,} | {one['latency_us']:.0f} | {many['latency_us']:.1f} | "
              f"{one['memory_bytes'] / 2**20:.1f} | {many['memory_bytes'] / 2**20:.1f} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": args.env, "rows": rows, "torch": torch.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
