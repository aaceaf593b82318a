"""A DQN sweep file's arithmetic, and what it would take on a GPU: an estimate from counted FLOPs, not a timing.

Why an estimate: no GPU was lent to this project, and ``moerl sweep FILE --dry-run`` prices a sweep from a
timing on *this* machine only. The studies this is for (``configs/paper/minatar.yaml``) are bound by their
updates (a MinAtar DQN run at 64 seeds spends ~96% of its CPU time in them, README "Task suites", MinAtar's "Speed of the dynamics"), so their FLOPs
say most of what a faster device would change.

Per job of the sweep (its configs resolved as ``moerl sweep`` resolves them): the FLOPs of one update of one
seed, counted by torch's ``FlopCounterMode`` on the batched engine built with the job's own env, network and
batch size after its replay warm-up (the target network's forward, the online network's forward and
backward; the optimiser, replay sampling and the games are left out), times its updates (``timesteps /
train_freq x gradient_steps``, after ``learning_starts``), plus one greedy forward per env step, times its
seeds. Then the hours those FLOPs take at the sustained rates given (``--tflops``): **assumptions** about
what these small batched matrix products and 3x3 convs sustain on one data-centre GPU in float32 (far below
its peak; measure before relying on them), not measurements.

    python scripts/study_flops.py configs/paper/minatar.yaml [--tflops 5,20] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
#: env_kwargs that set the schedule (which task when), not what an update computes.
SCHEDULE_KEYS = ("order", "block_steps", "cycles", "fixed_task", "max_episode_steps")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def per_seed_flops(config: Any) -> tuple[float, float]:
    """(FLOPs of one update, FLOPs of one greedy step) of one seed of ``config`` (a DQNRunConfig)."""
    from moerl.rl.batch_engines import suite_spec
    from moerl.rl.config import resolve_env
    from moerl.rl.engine.batched_dqn import BatchedDQN

    spec = suite_spec(resolve_env(config.env), config.env_kwargs)
    hp = config.dqn
    agent = BatchedDQN(spec, [0], config.network, hp)
    agent.learn(max(hp.learning_starts, hp.batch_size) + 1)
    counter = FlopCounterMode(display=False)
    with counter:
        agent.train(1)
    update = counter.get_total_flops()
    obs = torch.as_tensor(spec.observation_space.sample(), dtype=torch.float32)[None, None]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        agent.greedy_actions(obs)
    return float(update), float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep")
    parser.add_argument("--tflops", default="5,20", help="sustained float32 TFLOP/s to price the FLOPs at")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from moerl.core.config import from_dict
    from moerl.core.errors import ConfigError
    from moerl.rl.config import DQNRunConfig, default_timesteps
    from moerl.runs.sweep.spec import load_sweep

    try:
        rates = [float(x) for x in args.tflops.split(",")]
        spec = load_sweep(Path(args.sweep))
    except (ValueError, ConfigError) as exc:
        print(f"study_flops: error: {exc}", file=sys.stderr)
        return 2
    cache: dict[str, tuple[float, float]] = {}
    rows = []
    for job in spec.jobs:
        if job.config.get("algo", "dqn") != "dqn":
            print(f"study_flops: error: job {job.name} is not DQN (this script counts DQN updates)", file=sys.stderr)
            return 2
        config = from_dict(DQNRunConfig, dict(job.config))
        steps = config.timesteps or default_timesteps(config)
        # an update's FLOPs depend on the suite's games, the network and the batch, not on the schedule
        suite = {k: v for k, v in config.env_kwargs.items() if k not in SCHEDULE_KEYS}
        key = json.dumps([config.env, suite, job.config.get("network"), config.dqn.batch_size], sort_keys=True,
                         default=str)
        if key not in cache:
            cache[key] = per_seed_flops(config)
        update, act = cache[key]
        hp = config.dqn
        updates = max(0, steps - hp.learning_starts) // hp.train_freq * hp.gradient_steps
        flops = len(job.seeds) * (updates * update + steps * act)
        rows.append({"job": job.name, "seeds": len(job.seeds), "steps": steps, "update_flops": update,
                     "act_flops": act, "flops": flops})
        print(f"{job.name:55s} {len(job.seeds):3d} seeds x {steps:>11,} steps: {update / 1e6:9.2f} MFLOP per "
              f"update, {flops / 1e15:10.2f} PFLOP", flush=True)
    total = sum(r["flops"] for r in rows)
    print(f"\n{len(rows)} jobs, {sum(r['seeds'] for r in rows)} runs: {total / 1e15:,.1f} PFLOP of updates and "
          f"greedy acting")
    for rate in rates:
        print(f"  at a sustained {rate:g} TFLOP/s (an assumption, see --help): {total / (rate * 1e12) / 3600:,.1f} "
              f"GPU-hours")
    if args.out:
        Path(args.out).write_text(json.dumps({"sweep": args.sweep, "rows": rows, "total_flops": total,
                                              "tflops_assumed": rates}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
