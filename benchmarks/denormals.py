"""Training time of a batched engine (DQN or PPO) with denormal floats flushed to zero and without, side by side.

For each variant (``--archs``), ``--seeds`` seeds of ``--env`` train ``--steps`` env steps on the batched
engine of ``--algo`` (moerl's defaults) in a fresh process (the flag is per thread and process-wide for torch, so each side gets its own), once
with ``torch.set_flush_denormal(False)`` after the engine is built (x86's default: denormals computed) and once
with the engine's default (flushed: :mod:`moerl.core.denormals`), ``--rounds`` times alternating so that a
loaded machine's noise falls on both. Reported per variant: the median CPU time of ``learn`` on each side,
their ratio, and whether the final weights of the two sides are bit for bit equal (the flag must not change
training). One torch thread. Timings compare only within one run of this script.

    python benchmarks/denormals.py [--algo dqn|ppo] [--env cartpole-crl] [--block-steps 5000]
        [--archs dense,big:softmoe,big:topk] [--seeds 10] [--steps 20000] [--rounds 1] [--out /tmp/denormals.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One side: build the engine, set the flag, train, print the CPU time, save the weights."""
    import torch

    from moerl.rl.engine.batched_dqn import BatchedDQN
    from moerl.rl.engine.batched_ppo import BatchedPPO
    from moerl.rl.envs.suite import TaskSuiteEnv

    torch.set_num_threads(1)
    arch, *router = args.arch.split(":")
    suite_name, setting = args.env.split("-")
    suite = TaskSuiteEnv(suite_name, setting, **({"block_steps": args.block_steps} if setting == "crl" else {}))
    engine = BatchedDQN if args.algo == "dqn" else BatchedPPO
    agent = engine(suite, list(range(args.seeds)), {"arch": arch, **({"router": router[0]} if router else {})})
    torch.set_flush_denormal(args.flush == "on")  # the engine turned it on; "off" turns it back off
    start = time.thread_time()
    agent.learn(args.steps)
    print(json.dumps({"cpu_s": time.thread_time() - start}))
    nets = {"q": agent.q_net} if args.algo == "dqn" else {"actor": agent.actor, "critic": agent.critic}
    torch.save({f"{name}.{k}": v for name, net in nets.items() if net is not None
                for k, v in net.state_dict().items()}, args.weights)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="dqn", choices=("dqn", "ppo"))
    p.add_argument("--env", default="cartpole-crl", help="a classic suite: cartpole-crl, mountaincar-mtrl, ...")
    p.add_argument("--block-steps", type=int, default=5000)
    p.add_argument("--archs", default="dense,big:softmoe,big:topk")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default="/tmp/denormals.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--flush", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            times: dict[str, list[float]] = {"off": [], "on": []}
            for r in range(args.rounds):
                for flush in ("off", "on"):
                    cmd = [sys.executable, __file__, "--child", "--algo", args.algo, "--arch", arch, "--flush", flush,
                           "--env", args.env,
                           "--block-steps", str(args.block_steps), "--seeds", str(args.seeds), "--steps",
                           str(args.steps), "--weights", f"{tmp}/{flush}-{r}.pt"]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    times[flush].append(json.loads(out.strip().splitlines()[-1])["cpu_s"])
            a, b = torch.load(f"{tmp}/off-0.pt"), torch.load(f"{tmp}/on-0.pt")
            same = all(torch.equal(a[k], b[k]) for k in a)
            off, on = statistics.median(times["off"]), statistics.median(times["on"])
            rows.append({"arch": arch, "cpu_s_denormals": round(off, 1), "cpu_s_flushed": round(on, 1),
                         "ratio": round(off / on, 2), "bit_identical": same})
            print(f"{arch:12s} denormals {off:7.1f} s  flushed {on:7.1f} s  ratio {off / on:.2f}  "
                  f"weights bit-identical: {same}", flush=True)
    Path(args.out).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k not in (
        "child", "arch", "flush", "weights")}, "torch": torch.__version__, "rows": rows}, indent=2))
    print("\n| variant | CPU s, denormals | CPU s, flushed | ratio | weights bit-identical |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['cpu_s_denormals']} | {r['cpu_s_flushed']} | {r['ratio']} | "
              f"{'yes' if r['bit_identical'] else 'no'} |")


if __name__ == "__main__":
    main()
