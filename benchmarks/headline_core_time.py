"""Core time of the headline study side by side: 10 seeds in one batched process vs 10 SB3-path runs.

Runs, at the same time, two child processes on the same machine:

* ``moerl train --env cartpole-crl --arch big --router softmoe --seeds 0-9`` (the batched engine, ``auto``);
* the same config with ``--engine sb3``, the seeds one after another (what a study without the batched
  engine does), in a second process.

Reported: each side's CPU time (user + system of the process and its children, from ``getrusage``: the
core time, which contention inflates far less than wall time) and wall time, and the ratio batched / SB3.
Both sides share the machine for the same period, so their conditions match. Writes JSON to ``--out``.

    python benchmarks/headline_core_time.py [--seeds 0-9] [--logdir /tmp/headline] [--out /tmp/headline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HEADLINE = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe"]


def _run(args: list[str], logdir: str) -> dict[str, float]:
    """Run ``moerl train`` in a child process; its wall time and CPU time (the child's rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", *HEADLINE, *args, "--logdir", logdir,
                             "--no-progress"], stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"moerl train {' '.join(args)} failed (status {status})")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--logdir", default="/tmp/headline")
    p.add_argument("--out", default="/tmp/headline_core_time.json")
    args = p.parse_args()
    from moerl.core.seeding import parse_seeds

    seeds = parse_seeds(args.seeds)
    results: dict[str, dict[str, float]] = {}

    def batched() -> None:
        results["batched"] = _run(["--seeds", args.seeds], f"{args.logdir}/batched")

    def sb3() -> None:
        total = {"wall_s": 0.0, "cpu_s": 0.0}
        for seed in seeds:
            one = _run(["--seed", str(seed), "--engine", "sb3"], f"{args.logdir}/sb3")
            total = {k: total[k] + one[k] for k in total}
        results["sb3"] = total

    import threading

    threads = [threading.Thread(target=batched), threading.Thread(target=sb3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ratio = results["batched"]["cpu_s"] / results["sb3"]["cpu_s"]
    out = {"seeds": seeds, "cpus": os.cpu_count(), "batched": results["batched"], "sb3": results["sb3"],
           "cpu_ratio_batched_over_sb3": round(ratio, 3)}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"batched ({len(seeds)} seeds, one process): {results['batched']['cpu_s']:.0f} CPU s, "
          f"{results['batched']['wall_s']:.0f} s wall")
    print(f"SB3 path ({len(seeds)} runs, one after another): {results['sb3']['cpu_s']:.0f} CPU s, "
          f"{results['sb3']['wall_s']:.0f} s wall")
    print(f"core time batched / SB3: {ratio:.2f}")


if __name__ == "__main__":
    main()
