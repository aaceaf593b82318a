"""The routing paper's Table 2 analogue (WPL routing-all-fc and the four baselines) and its Fig. 4 analogue
(every router) with seeds, as ordinary ``moerl train`` run directories, then ``moerl report`` over them.

    python scripts/routing_seeds.py --env mnist-mtl --seeds 0-2 --epochs 20 --samples-per-epoch 8000 \\
        --momentum 0.9 --logdir runs/routing-mnist-seeds
    moerl report runs/routing-mnist-seeds

Resumable: a run directory that already finished (``<algo>_s<seed>`` under ``--logdir``) is kept, so the
command can be stopped and started again. Every router gets the collaboration weight ``--rho`` (the
paper: 0.3 on MNIST-MTL, 0 on CIFAR-MTL); the baselines have no router. Why a script and not
``moerl sweep``: sweeps expand MoE DQN configs; this is the same loop for the routing family, kept to the CLI so every run is what a user's
``moerl train`` would make.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ALGOS = ("wpl", "task-specific-1-fc", "task-specific-all-fc", "soft-mixture-all-fc", "cross-stitch-all-fc")
#: The paper's Fig. 4 (influence of the RL algorithm, on CIFAR-MTL): every router, WPL among them.
FIG4_ALGOS = ("wpl", "q-tabular", "q-approx", "reinforce", "reinforce-single", "dispatched-reinforce")


def main(argv: list[str] | None = None) -> int:
    from moerl.cli import main as moerl
    from moerl.core.errors import ConfigError
    from moerl.core.seeding import parse_seeds
    from moerl.routing.config import ALGOS as ALL_ALGOS
    from moerl.routing.config import ROUTING_POLICIES
    from moerl.runs.rundir import RunDir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="mnist-mtl")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--algos", default=",".join(ALGOS),
                   help="comma-separated routing algos, or 'table2' (WPL and the baselines, the default), 'fig4' "
                        "(every router) or 'all'")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--samples-per-epoch", type=int, default=8000)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--rho", type=float, default=0.3,
                   help="the routers' collaboration weight (the paper: 0.3 on MNIST-MTL, 0 on CIFAR-MTL)")
    p.add_argument("--logdir", default="runs/routing-seeds")
    args = p.parse_args(argv)
    named = {"table2": ALGOS, "fig4": FIG4_ALGOS, "all": tuple(dict.fromkeys(ALGOS + FIG4_ALGOS))}
    algos = named.get(args.algos) or tuple(args.algos.split(","))
    try:
        seeds = parse_seeds(args.seeds)
        for algo in algos:  # all refused before any run starts
            ALL_ALGOS.check(algo)
    except ConfigError as exc:
        print(f"routing_seeds: {exc}", file=sys.stderr)
        return 2
    for algo in algos:
        for seed in seeds:
            name = f"{args.env}_{algo}_s{seed}"
            run_dir = Path(args.logdir) / name
            if RunDir(run_dir).read_status().get("status") == "finished":
                print(f"[routing-seeds] {name}: finished before, kept", flush=True)
                continue
            if run_dir.exists():  # stopped or crashed: continue it from its last checkpoint
                if moerl(["train", "--resume", str(run_dir), "--no-progress"]) != 0:
                    return 1
                continue
            extra = ["--set", f"rho={args.rho}"] if algo in ROUTING_POLICIES else []  # baselines have no router
            rc = moerl(["train", "--env", args.env, "--algo", algo, "--epochs", str(args.epochs), "--seed", str(seed),
                        "--set", f"samples_per_epoch={args.samples_per_epoch}", "--set", f"momentum={args.momentum}",
                        *extra, "--logdir", args.logdir, "--run-name", name, "--no-progress"])
            if rc != 0:
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
