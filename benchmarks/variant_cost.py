"""What one run of each study variant costs beside its training time: parameters, greedy inference latency per
step and memory per run, on both engines (issue 24's cost item; training time per env step comes from the runs
themselves: ``scripts/study_cost.py``).

For each variant (``--archs``, the study's 11 by default) on ``--env`` with the study's settings for it
(``--block-steps``: the CRL block, from which the replay capacity follows as in the study's runs,
``default_capacity``: Dopamine's 50k, or one block where the block is shorter):

* **parameters**: the online Q-network's (the target network doubles them in memory);
* **greedy latency, SB3 engine**: ``MoEDQN.predict(obs, deterministic=True)`` on one observation, median over
  the timed calls (what acting in a Gymnasium loop costs per step: SB3's preprocessing, the forward, the
  action mask);
* **greedy latency per member, batched engine**: ``BatchedDQN.greedy_actions`` of one observation per member
  at ``--members`` members, the median call time divided by the members, and the bytes of online weights one
  call reads;
* **memory per run**: the bytes a run's tensors hold once built: online and target weights, the optimiser's
  state after one step (Adam's two moments), and the replay buffer (SB3's numpy arrays on the SB3 engine; the
  batched engine's tensors over its members). Activations of an update are transient and left out.

One torch thread. Every variant is built first; then all latencies are timed in interleaved rounds (each
variant's and engine's slice of calls once per round), so that the load of a shared machine falls on all of
them alike: at 64 members a batched greedy call is one matrix-vector product per member, bound by reading every
member's weights from memory (the table gives those bytes), and so by other processes' memory traffic. The
latencies are medians within one run of this script (compare variants within one run, not across runs).

    python benchmarks/variant_cost.py [--env cartpole-crl] [--block-steps 25000] [--members 64] [--rounds 20]
        [--calls 50] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import moerl  # noqa: F401  (registers the moerl/ envs)
from moerl.rl.algos.dqn import default_capacity
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


def sb3_build(env_id: str, network: dict[str, str], buffer: int) -> tuple[dict[str, float], Callable[[], object]]:
    """An SB3 run of the variant after one optimiser step: its parameters and memory, and one greedy step."""
    env = gym.make(env_id)
    model = MoEDQN("MoEPolicy", env, buffer_size=buffer, learning_starts=0, batch_size=32, seed=0,
                   policy_kwargs={"network": network})
    model.learn(64)  # one optimiser step at least: Adam's state exists
    obs, _ = env.reset(seed=0)
    q_net, target = model.policy.q_net, model.policy.q_net_target
    rb = model.replay_buffer
    replay = sum(getattr(rb, name).nbytes for name in ("observations", "next_observations", "actions", "rewards",
                                                        "dones", "timeouts") if getattr(rb, name, None) is not None)
    weights = tensor_bytes(list(q_net.parameters()) + list(target.parameters()))
    facts = {"parameters": sum(p.numel() for p in q_net.q_net.parameters()),
             "memory_bytes": weights + optimizer_bytes(model.policy.optimizer) + replay}
    return facts, lambda: model.predict(obs, deterministic=True)


def batched_build(env_id: str, network: dict[str, str], buffer: int,
                  members: int) -> tuple[dict[str, float], Callable[[], object]]:
    """A batched run of the variant at ``members`` members after one optimiser step: its memory per member,
    the bytes of online weights one greedy call reads, and one greedy call (one observation per member)."""
    suite = gym.make(env_id).unwrapped
    agent = BatchedDQN(suite, list(range(members)), network=network,
                       dqn={"buffer_size": buffer, "learning_starts": 0, "batch_size": 32})
    agent.learn(64)  # one optimiser step at least
    obs = torch.as_tensor(np.stack([suite.observation_space.sample() for _ in range(members)]), dtype=torch.float32)[:, None]
    online = tensor_bytes(list(agent.q_net.parameters()))
    weights = online + tensor_bytes(list(agent.q_net_target.parameters()))
    b = agent.buffer
    replay = tensor_bytes([b.observations, b.next_observations, b.actions, b.rewards, b.dones, b.tasks])
    agent.buffer = None  # measured; greedy acting never reads it, and 11 variants' buffers would crowd memory

    def greedy() -> object:
        with torch.no_grad():
            return agent.greedy_actions(obs)

    return {"memory_bytes": (weights + optimizer_bytes(agent.optimizer) + replay) / members,
            "weights_read_bytes": online}, greedy


def interleaved_medians(calls: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds of each call, timed in ``rounds`` rounds of ``per_round`` calls, every call's slice once per
    round, so that the machine's load (others' memory traffic, above all) falls on all of them alike."""
    for call in calls.values():
        for _ in range(min(20, per_round)):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="cartpole-crl")
    parser.add_argument("--archs", default=STUDY_ARCHS)
    parser.add_argument("--block-steps", type=int, default=25000,
                        help="the CRL block; the replay holds min(50k, one block), as the study's runs")
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20, help="rounds of interleaved timing")
    parser.add_argument("--calls", type=int, default=50, help="calls per variant, engine and round")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env_id = resolve_env_id(args.env)
    facts: dict[str, dict[str, float]] = {}
    calls: dict[str, Callable[[], object]] = {}
    labels = [arch.replace(":", "/") for arch in args.archs.split(",")]
    capacity = default_capacity(args.block_steps)
    for arch, label in zip(args.archs.split(","), labels, strict=True):
        one, calls[f"{label} sb3"] = sb3_build(env_id, network_of(arch), capacity)
        many, calls[f"{label} batched"] = batched_build(env_id, network_of(arch), capacity, args.members)
        facts[label] = {**one, **{f"batched_{k}": v for k, v in many.items()}}
    medians = interleaved_medians(calls, args.rounds, args.calls)
    print(f"{args.env} ({env_id}), blocks of {args.block_steps:,}, replay {capacity:,}, batched at {args.members} members, one thread, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}; latencies: medians "
          f"of {args.rounds} x {args.calls} calls per variant and engine, interleaved")
    print("| variant | parameters | greedy us/step, SB3 | greedy us/step per member, batched | online weights one "
          "batched call reads, MiB | MiB per run, SB3 | MiB per run, batched |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for label in labels:
        row = {"variant": label, **facts[label], "latency_us": 1e6 * medians[f"{label} sb3"],
               "batched_latency_us": 1e6 * medians[f"{label} batched"] / args.members}
        rows.append(row)
        print(f"| {label} | {row['parameters']:,} | {row['latency_us']:.0f} | {row['batched_latency_us']:.1f} | "
              f"{row['batched_weights_read_bytes'] / 2**20:.1f} | {row['memory_bytes'] / 2**20:.1f} | "
              f"{row['batched_memory_bytes'] / 2**20:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": args.env, "rows": rows, "torch": torch.__version__, "settings": vars(args)}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
