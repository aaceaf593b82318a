"""Env steps per second of the batched engine on a MinAtar suite, and where the time goes.

``BatchedDQN.learn`` on ``minatar-crl`` (or ``minatar-mtrl``) with ``moerl train``'s defaults (or ``--arch`` /
``--router``), ``--seeds`` seeds, on one torch thread, timed by wrapping the engine's own calls (the loop run
is the engine's ``advance``, not a copy of it):

* **env**: ``BatchedMinAtarSuite.step`` (the games, resets, observations, draws);
* **update**: ``BatchedDQN.train`` (minibatch sampling, the uint8 observations made float, forward, backward,
  Adam);
* **replay**: ``BatchedReplayBuffer.add``;
* **acting**: the rest of the loop (exploration draws, the greedy forward pass past ``learning_starts``, target
  copies, bookkeeping).

The replay's warm-up (``learning_starts`` steps of random actions, no updates) runs first and is not timed:
the split is that of a run's steady state. ``--torso conv`` gives the network MinAtar's conv torso;
``--minatar-dqn`` uses MinAtar's DQN settings (``configs/paper/evidence/minatar-dqn.yaml``: batch 32, an
update every step, centered RMSprop, Huber loss, 0/1 inputs) instead of ``moerl train``'s defaults (batch 128,
an update every 4 steps).

Each part in wall-clock and in this thread's CPU time (``time.thread_time``: on a shared machine the wall
clock also counts the time the process waits for a core). No evaluation runs (``moerl train`` adds its
greedy evaluations every ``eval.freq`` steps on top).

    python benchmarks/minatar_engine.py [--env minatar-crl] [--seeds 8] [--steps 5000] [--arch dense]
        [--router softmoe] [--torso conv] [--minatar-dqn] [--out /tmp/minatar_engine.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any


def _timed(fn: Callable[..., Any], wall: dict[str, float], cpu: dict[str, float], key: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall[key] += time.perf_counter() - w
            cpu[key] += time.thread_time() - c
    return run


#: MinAtar's DQN settings (configs/paper/evidence/minatar-dqn.yaml), for ``--minatar-dqn``.
MINATAR_DQN = {"optimizer": "rmsprop", "learning_rate": 2.5e-4, "batch_size": 32, "buffer_size": 100000,
               "train_freq": 1, "target_update_interval": 1000, "learning_starts": 5000, "loss": "huber"}


def measure(env: str, seeds: int, steps: int, arch: str, router: str | None, torso: str = "mlp",
            minatar_dqn: bool = False) -> dict[str, Any]:
    import torch

    from moerl.rl.batched_runs import suite_spec
    from moerl.rl.config import resolve_env
    from moerl.rl.engine.batched_dqn import BatchedDQN

    network: dict[str, Any] = {"arch": arch, **({"router": router} if router else {}), "torso": torso,
                               **({"rescale_inputs": False} if minatar_dqn else {})}
    agent = BatchedDQN(suite_spec(resolve_env(env), {}), list(range(seeds)), network,
                       dqn=MINATAR_DQN if minatar_dqn else None)
    agent.learn(agent.hp.learning_starts, steps + agent.hp.learning_starts, threads=1)  # warm-up, not timed
    wall = dict.fromkeys(("env", "update", "replay"), 0.0)
    cpu = dict(wall)
    agent.env.step = _timed(agent.env.step, wall, cpu, "env")  # type: ignore[method-assign]
    agent.train = _timed(agent.train, wall, cpu, "update")  # type: ignore[method-assign]
    agent.buffer.add = _timed(agent.buffer.add, wall, cpu, "replay")  # type: ignore[method-assign]
    w, c = time.perf_counter(), time.thread_time()
    agent.learn(agent.hp.learning_starts + steps, threads=1)
    total_wall, total_cpu = time.perf_counter() - w, time.thread_time() - c
    wall["acting"] = total_wall - sum(wall.values())
    cpu["acting"] = total_cpu - sum(cpu.values())
    n = steps * seeds
    return {
        "env": env, "seeds": seeds, "steps": steps, "network": network, "minatar_dqn": minatar_dqn,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "env_steps_per_s": {"wall": n / total_wall, "cpu": n / total_cpu},
        "seconds": {"wall": total_wall, "cpu": total_cpu},
        "parts": {key: {"wall_s": wall[key], "cpu_s": cpu[key], "share_of_cpu": cpu[key] / total_cpu,
                        "env_steps_per_cpu_s": n / cpu[key] if cpu[key] > 0 else None}
                  for key in ("env", "acting", "replay", "update")},
        "replay_bytes_per_seed": int(agent.buffer.observations.nbytes + agent.buffer.next_observations.nbytes)
        // seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="minatar-crl")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--arch", default="dense")
    parser.add_argument("--router", default=None)
    parser.add_argument("--torso", default="mlp", choices=("mlp", "conv"))
    parser.add_argument("--minatar-dqn", action="store_true", help="MinAtar's DQN settings (see above)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = measure(args.env, args.seeds, args.steps, args.arch, args.router, args.torso, args.minatar_dqn)
    rate = result["env_steps_per_s"]
    print(f"{args.env} {result['network']} x {args.seeds} seeds, {args.steps} steps: "
          f"{rate['wall']:,.0f} env steps/s wall, {rate['cpu']:,.0f} per CPU second")
    for key, part in result["parts"].items():
        print(f"  {key:7s} {part['cpu_s']:7.2f} s CPU ({100 * part['share_of_cpu']:4.1f}%), "
              f"{part['wall_s']:7.2f} s wall")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
