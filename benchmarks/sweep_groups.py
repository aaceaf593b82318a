"""Sweep groups against today's jobs of 10 seeds: per-member speed by member count, and one group end to end.

Two measurements, each side by side in one run on one torch thread per process:

1. ``members``: env steps of all members per second of one ``BatchedDQN`` process on cartpole-crl, for 10, 30
   and 64 members (``--members``), dense and big/softmoe (``--archs``); timed over ``--steps`` env steps after
   a warm-up past the first updates. The ratio to 10 members is what grouping a study's runs buys per step.
2. ``group``: the 40 single-task reference runs of one variant (``--group-arch``, default dense) in
   ``configs/paper/full-cartpole.yaml`` (4 fixed tasks x 10 seeds x 25k steps, or ``--group-timesteps``), trained
   by ``moerl sweep`` as one group with today's defaults and again as the sweep ran them before issue 23
   (``--max-members 1``: 4 jobs of 10 seeds; ``network.expert_compute: dense`` where the router now routes),
   one after the other; each side's CPU time (``getrusage`` of the sweep and its children) and the dry run's
   estimate of it.

    python benchmarks/sweep_groups.py [--part members|group|both] [--group-arch big/topk] [--group-timesteps N]
        [--out /tmp/sweep_groups.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"dense": {"arch": "dense"}, "big/softmoe": {"arch": "big", "router": "softmoe"},
         "big/topk": {"arch": "big", "router": "topk"}, "big/hardcoded": {"arch": "big", "router": "hardcoded", "experts": 4}}


def members_speed(counts: list[int], archs: list[str], steps: int) -> dict[str, dict[int, float]]:
    """Member env steps per second of one process, per architecture and member count."""
    import torch

    from moerl.rl.algos.dqn import DQNHyperParams
    from moerl.rl.engine.batched_dqn import BatchedDQN
    from moerl.rl.envs.suite import TaskSuiteEnv

    torch.set_num_threads(1)
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=25_000)
    out: dict[str, dict[int, float]] = {}
    for arch in archs:
        out[arch] = {}
        for count in counts:
            agent = BatchedDQN(suite, list(range(count)), ARCHS[arch], DQNHyperParams(learning_starts=100))
            agent.learn(200)
            start = time.perf_counter()
            agent.learn(200 + steps)
            out[arch][count] = steps * count / (time.perf_counter() - start)
            print(f"members: {arch:12s} {count:3d} members  {out[arch][count]:8.0f} member env steps/s", flush=True)
    return out


def _reference_sweep(folder: Path, arch: str, timesteps: int | None, before: bool) -> Path:
    """The single-task references of ``arch`` in full-cartpole.yaml as a sweep file of their own; ``before``:
    with the expert compute of the engine before issue 23 (dense), for the routers that now route."""
    full = yaml.safe_load((ROOT / "configs" / "paper" / "full-cartpole.yaml").read_text())
    full["settings"] = [{**s, **({"timesteps": timesteps} if timesteps else {})}
                        for s in full["settings"] if "env_kwargs.fixed_task" in s]
    variant = dict(ARCHS[arch])
    if before and variant.get("router") in ("topk", "hardcoded"):
        variant["network.expert_compute"] = "dense"
    full["variants"] = [variant]
    full["name"] = "refs"
    full.pop("logdir", None)
    path = folder / f"refs-{'before' if before else 'now'}.yaml"
    path.write_text(yaml.safe_dump(full, sort_keys=False))
    return path


def _dry_run(path: Path, logdir: Path, extra: list[str]) -> str:
    """The last line of ``moerl sweep --dry-run`` (its estimate)."""
    done = subprocess.run([sys.executable, "-m", "moerl", "sweep", str(path), "--logdir", str(logdir), *extra,
                           "--dry-run"], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def _child_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def group_end_to_end(folder: Path, arch: str, timesteps: int | None) -> dict[str, dict[str, float]]:
    """CPU seconds and dry-run estimates of the references of ``arch`` as one group (today's defaults) and as 4
    jobs of 10 seeds (``--max-members 1``) computing as the engine did before issue 23."""
    out: dict[str, dict[str, float]] = {}
    for side, extra, before in (("group of 40", [], False), ("4 jobs of 10 seeds", ["--max-members", "1"], True)):
        path = _reference_sweep(folder, arch, timesteps, before)
        logdir = folder / side.replace(" ", "-")
        dry = _dry_run(path, logdir, extra)
        estimate = float(dry.split("estimated ")[1].split(" core-hours")[0]) * 3600
        before_cpu = _child_cpu()
        subprocess.run([sys.executable, "-m", "moerl", "sweep", str(path), "--workers", "1", "--logdir", str(logdir),
                        *extra], check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        out[side] = {"cpu_s": _child_cpu() - before_cpu, "estimate_s": estimate}
        print(f"group: {arch} {side:20s} {out[side]['cpu_s']:7.1f} s CPU (dry run: {estimate:.0f} s)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="both", choices=["members", "group", "both"])
    p.add_argument("--members", default="10,30,64", help="member counts for the per-member speed")
    p.add_argument("--archs", default="dense,big/softmoe", help=f"of {', '.join(ARCHS)}")
    p.add_argument("--steps", type=int, default=600, help="env steps timed per member count")
    p.add_argument("--group-arch", default="dense", help=f"the references of which variant: {', '.join(ARCHS)}")
    p.add_argument("--group-timesteps", type=int, help="budget per reference run (default: the sweep's 25k)")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    results: dict[str, object] = {}
    if args.part in ("members", "both"):
        counts = [int(c) for c in args.members.split(",")]
        speed = members_speed(counts, args.archs.split(","), args.steps)
        results["members"] = speed
        for arch, by_count in speed.items():
            base = by_count[counts[0]]
            print(f"members: {arch}: " + ", ".join(f"{c} members {v / base:.2f}x" for c, v in by_count.items()))
    if args.part in ("group", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            group = group_end_to_end(Path(tmp), args.group_arch, args.group_timesteps)
        results["group"] = group
        ratio = group["4 jobs of 10 seeds"]["cpu_s"] / group["group of 40"]["cpu_s"]
        print(f"group: 4 jobs of 10 seeds / group of 40 = {ratio:.2f} (CPU time)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
