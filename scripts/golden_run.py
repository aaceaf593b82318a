"""The golden run: a short run of the study's engine whose numbers must not move unnoticed.

The full study (configs/paper/full-*.yaml) trains for days from a frozen checkout; its numbers are those of the
engine at that commit. A later change that moves the engine's numerics (a kernel, an order of operations, a
random stream) makes new runs differ from the study's, and CI must say so. This script trains every study
variant (dense, wide, middle / final / all x softmoe / topk, big x softmoe / topk / hardcoded) on cartpole-crl
and mountaincar-crl for a few hundred steps, 2 seeds each, on the batched engine at the study's settings
(scaled down: short blocks, early learning), and records per (suite, variant):

* ``init``: a hash of the initial weights (torch's seeded initialisation);
* ``warmup``: the training episodes that end before learning starts (random valid actions from the seed
  streams, float64 physics): the same on every CPU (a last-bit difference of a float64 ``sin`` would have to
  flip an episode's end);
* ``first_losses``: the first updates' TD losses, computed from the same weights and replay on every CPU
  (equal within float32 rounding across CPUs);
* ``digest``: a hash of everything the run computed: final weights, every loss, every episode, the greedy
  evaluation after training. Bit-identical only on the same software stack and kind of CPU.

``tests/golden/study-numerics.json`` holds one record per kind of CPU it was made on (torch's CPU capability,
the CPU model and its AMX and AVX-512 flags: BLAS kernels differ by shape on CPUs with AMX) and which results
the records stand for. ``tests/test_golden_run.py`` reruns it: on a kind of CPU that has a record, everything
must match that record bit for bit; on another, the first record's warm-up episodes exactly and its first
losses within float32 tolerance (the initial weights to the last bit and later steps may differ there:
vectorised maths and BLAS kernels round differently, and a greedy action at a near-tie flips with rounding).
CI machines are of several kinds, and the study runs on whichever machine a session has: a record per kind is
what lets CI check the study's numerics bit for bit on more of them.

    python scripts/golden_run.py            # compare with the record, exit 1 on a difference
    python scripts/golden_run.py --write    # (re)write this CPU kind's record, keeping the other kinds'

When it fails on the recorded CPU, the change moved the study's numerics: the record's ``results`` name the
runs computed with the old numerics; rerun them (their commands are there) or say in the change which results
predate it, then ``--write``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import moerl  # noqa: F401  (registers the moerl/ envs)
from moerl.rl.engine.batched_dqn import BatchedDQN

RECORD = Path(__file__).resolve().parents[1] / "tests" / "golden" / "study-numerics.json"
SUITES = {"cartpole-crl": "moerl/CartPole-CRL-v0", "mountaincar-crl": "moerl/MountainCar-CRL-v0"}
#: The study's 11 variants (configs/paper/full-cartpole.yaml), at their default sizes.
VARIANTS = {
    "dense": {"arch": "dense"}, "wide": {"arch": "wide"},
    "middle/softmoe": {"arch": "middle", "router": "softmoe"}, "middle/topk": {"arch": "middle", "router": "topk"},
    "final/softmoe": {"arch": "final", "router": "softmoe"}, "final/topk": {"arch": "final", "router": "topk"},
    "all/softmoe": {"arch": "all", "router": "softmoe"}, "all/topk": {"arch": "all", "router": "topk"},
    "big/softmoe": {"arch": "big", "router": "softmoe"}, "big/topk": {"arch": "big", "router": "topk"},
    "big/hardcoded": {"arch": "big", "router": "hardcoded", "experts": 4},
}
SEEDS = (0, 1)
STEPS = 600
BLOCK = 150
#: The study's DQN settings (the schema's defaults) scaled to a few hundred steps.
DQN = {"learning_starts": 400, "batch_size": 32, "train_freq": 4, "target_update_interval": 100,
       "exploration_fraction": 0.1}
FIRST_UPDATES = 3
EVAL_EPISODES = 2
#: Tolerance of the first losses on another kind of CPU (float32 rounding of a few updates: ~1e-6).
RTOL = 1e-4


def cpu_kind() -> dict[str, Any]:
    """The CPU facts that choose kernels: torch's capability, the CPU model and its AMX and AVX-512 flags
    (strict on purpose: a CPU that differs in any of them is compared within tolerances, never bit for bit)."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"capability": torch.backends.cpu.get_cpu_capability(), "model": model,
            "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512": sorted(f for f in flags if f.startswith("avx512"))}


def _sha(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def _weights(agent: BatchedDQN) -> list[bytes]:
    state = agent.q_net.state_dict()
    return [name.encode() + state[name].detach().contiguous().numpy().tobytes() for name in sorted(state)]


def one_run(env_id: str, network: dict[str, Any]) -> dict[str, Any]:
    """Train one variant on one suite for :data:`STEPS` steps and return its record (see the module docs)."""
    suite = gym.make(env_id, block_steps=BLOCK).unwrapped
    agent = BatchedDQN(suite, list(SEEDS), network=network, dqn=DQN)
    init = _sha(_weights(agent))
    agent.learn(STEPS)
    log = agent.pop_log()
    episodes = [[int(step), int(s), int(length)]
                for step, done, _task, _ret, lengths in log.episodes
                for s in np.flatnonzero(done) for length in [lengths[s]]]
    losses = np.stack(log.td_loss) if log.td_loss else np.zeros((0, len(SEEDS)))
    returns = agent.evaluate(suite, EVAL_EPISODES, seed=0, tasks=list(range(suite.num_tasks)))
    digest = _sha([*_weights(agent), losses.astype(np.float32).tobytes(), json.dumps(episodes).encode(),
                   np.asarray(returns, dtype=np.float64).tobytes()])
    return {"init": init, "warmup": [e for e in episodes if e[0] <= DQN["learning_starts"]],
            "first_losses": losses[:FIRST_UPDATES].tolist(), "digest": digest}


def run_all() -> dict[str, dict[str, Any]]:
    torch.set_num_threads(1)
    return {f"{suite}:{label}": one_run(env_id, network)
            for suite, env_id in SUITES.items() for label, network in VARIANTS.items()}


def differences(recorded: dict[str, Any], now: dict[str, Any], same_cpu: bool) -> list[str]:
    """What differs between the record's runs and these: everything on the recorded kind of CPU; elsewhere
    the warm-up episodes and the first losses beyond :data:`RTOL`."""
    out = []
    if set(recorded) != set(now):
        return [f"runs differ: recorded {sorted(recorded)}, now {sorted(now)}"]
    for key, rec in recorded.items():
        new = now[key]
        if rec["warmup"] != new["warmup"]:
            out.append(f"{key}: the warm-up episodes differ (the change moved the random streams or the physics)")
        if same_cpu and rec["init"] != new["init"]:
            out.append(f"{key}: the initial weights differ (the change moved the initialisation)")
        a, b = np.array(rec["first_losses"], dtype=float), np.array(new["first_losses"], dtype=float)
        if a.shape != b.shape or not np.allclose(a, b, rtol=RTOL, atol=1e-7):
            out.append(f"{key}: first losses {b.tolist()} differ from the record's {a.tolist()} beyond rtol {RTOL}")
        if same_cpu and rec["digest"] != new["digest"]:
            out.append(f"{key}: the run's digest {new['digest']} differs from the record's {rec['digest']}")
    return out


def records_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of a record file, one per kind of CPU (a file written before there were several holds its
    one record at the top level)."""
    if "records" in data:
        return list(data["records"])
    return [{k: data[k] for k in ("cpu", "torch", "numpy", "runs") if k in data}] if "runs" in data else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the record from this run")
    parser.add_argument("--record", default=str(RECORD), help="the record file")
    args = parser.parse_args(argv)
    path = Path(args.record)
    now = run_all()
    if args.write:
        old = json.loads(path.read_text()) if path.is_file() else {}
        record = {"cpu": cpu_kind(), "torch": torch.__version__, "numpy": np.__version__, "runs": now}
        others = [r for r in records_of(old) if r.get("cpu") != record["cpu"]]
        data = {"results": old.get("results", []), "records": [*others, record]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
        print(f"golden_run: wrote the record of {record['cpu']} to {path} ({len(now)} runs; "
              f"{len(others)} other kind(s) of CPU kept)")
        return 0
    if not path.is_file():
        print(f"golden_run: no record at '{path}' (write one with --write)", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    records = records_of(data)
    mine = [r for r in records if r["cpu"] == cpu_kind()]
    same_cpu = bool(mine)
    record = mine[0] if mine else records[0]
    problems = differences(record["runs"], now, same_cpu)
    how = ("bit for bit (this kind of CPU has a record)" if same_cpu else
           f"warm-up episodes and first losses only: this CPU {cpu_kind()} is none of the records' "
           f"{[r['cpu']['model'] for r in records]}")
    if not problems:
        print(f"golden_run: {len(now)} runs match the record, {how}")
        return 0
    print(f"golden_run: the study's numerics moved ({how}):")
    for problem in problems:
        print(f"  {problem}")
    print("Results computed with the recorded numerics (rerun them, or say in the change which predate it):")
    for result in data.get("results", []):
        print(f"  - {result}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
