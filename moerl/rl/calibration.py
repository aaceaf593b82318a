"""Core-time estimates of batched groups, from a short timing on this machine.

Why measure instead of a table: the cost of a member's env step depends on the architecture, on how many
members share the process and on the CPU (which kernels its vector units get, its caches), so figures
measured elsewhere mislead. A calibration builds the group's engine (the real configs, the real member
count), lets it warm up past the first updates, then times:

* ``step``: seconds per env step of the whole group, updates included (a step before ``learning_starts``
  costs less, so charging every step at this rate slightly over-estimates); for a PPO group, one whole
  rollout and its update timed after a first one (rollouts of ``n_envs x n_steps`` steps per member);
* ``eval_step``: seconds per step of one evaluation batch (every member x task x episode, one greedy forward
  and one env step each); an evaluation is charged as if every episode ran to the longest episode limit
  (untrained agents end episodes early, trained ones often reach the limit).

* ``compile``: seconds the warm-up took, when the group compiles its updates (``compile: on``): an upper
  bound of the compile time, which a group pays once per process.

The estimate of a group is ``timesteps * step + evaluations * limit * eval_step`` plus the final evaluation
and the compile time; for members with budgets of their own (a member leaves the group at its budget), the
mean over members of each term, i.e. a step's cost taken as proportional to the members still training.
It leaves out the process's start (imports, building the networks) and writing the runs: measured end to end
on a group of 40 dense CartPole runs it was 13% under the real core time (docs/batched-engine.md).
Measurements are cached in ``<cache>/moerl/calibration.json`` (``XDG_CACHE_HOME`` or ``~/.cache``) under a
key of everything they depend on (network, update shape, member count, suite, CPU capability, torch version),
so a dry run measures each kind of group once per machine. The timing runs on one torch thread, as the
group's own process trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moerl.core.config import to_dict
from moerl.core.threads import TRAINING_THREADS, torch_threads

#: Env steps timed per calibration, after the warm-up: 50 updates at ``train_freq`` 4.
TIMED_STEPS = 200
#: Evaluation steps timed per calibration.
TIMED_EVAL_STEPS = 30


@dataclass(frozen=True)
class Calibration:
    """Measured seconds per env step of a group (updates included) and per evaluation step."""

    step: float
    eval_step: float
    compile: float = 0.0


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "moerl" / "calibration.json"


def calibration_key(configs: list[Any]) -> str:
    """What a calibration depends on: the shared network and update, the member count, the suites, the CPU."""
    first = to_dict(configs[0])
    section = {"ppo": first["ppo"]} if "ppo" in first else {
        "dqn": {k: v for k, v in first["dqn"].items() if k != "buffer_size"}}
    parts = {
        "network": first["network"], **section,
        "members": len(configs), "envs": sorted({c.env for c in configs}), "eval": first["eval"]["episodes"],
        "cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "device": first["device"], "compile": _compiles(configs),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibrate(configs: list[Any], seeds: list[int]) -> Calibration:
    """Time the group's engine on this machine (see the module docstring); cached by :func:`calibration_key`."""
    key = calibration_key(configs)
    path = cache_file()
    cache: dict[str, Any] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}  # a damaged cache is measured again, never trusted
    if isinstance(cache.get(key), dict):
        return Calibration(float(cache[key]["step"]), float(cache[key]["eval_step"]),
                           float(cache[key].get("compile", 0.0)))
    measured = _measure(configs, seeds)
    cache[key] = {"step": measured.step, "eval_step": measured.eval_step, "compile": measured.compile,
                  "when": time.strftime("%Y-%m-%d")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    tmp.replace(path)
    return measured


def _compiles(configs: list[Any]) -> bool:
    """Whether the group's process compiles its updates (``compile: on``)."""
    return configs[0].compile == "on"


def _measure(configs: list[Any], seeds: list[int]) -> Calibration:
    with torch_threads(TRAINING_THREADS):  # timed as the group's process trains: on one torch thread
        return _time_group(configs, seeds)


def _time_group(configs: list[Any], seeds: list[int]) -> Calibration:
    import dataclasses

    from moerl.rl.batched_runs import suite_spec
    from moerl.rl.config import engine_device, resolve_env
    from moerl.rl.engine.batched_dqn import BatchedDQN
    from moerl.rl.envs.batched_suites import make_batched_suite

    first = configs[0]
    specs = [suite_spec(resolve_env(c.env), c.env_kwargs) for c in configs]
    compiled = _compiles(configs)
    if getattr(first, "algo", "dqn") == "ppo":
        agent, step = _time_ppo(configs, specs, seeds)
        compile_seconds = 0.0
    else:
        warm = min(first.dqn.learning_starts, 100)  # the warm-up only fills the buffers: keep it short
        hps = [dataclasses.replace(c.dqn, learning_starts=warm) for c in configs]
        agent = BatchedDQN(specs, seeds, first.network, hps, engine_device(first), compile=compiled)
        start = time.perf_counter()
        agent.learn(warm + 10 * first.dqn.train_freq)
        compile_seconds = time.perf_counter() - start if compiled else 0.0
        start = time.perf_counter()
        agent.learn(agent.num_timesteps + TIMED_STEPS)
        step = (time.perf_counter() - start) / TIMED_STEPS
    tasks = specs[0].num_tasks
    episodes = first.eval.episodes
    env = make_batched_suite([s for s in specs for _ in range(tasks * episodes)],
                             list(range(len(specs) * tasks * episodes)), agent.device)
    obs = env.reset()
    start = time.perf_counter()
    for _ in range(TIMED_EVAL_STEPS):
        actions = agent.greedy_actions(obs.reshape(len(specs), tasks * episodes, -1)).reshape(-1)
        obs = env.step(actions, validate=False).obs
    eval_step = (time.perf_counter() - start) / TIMED_EVAL_STEPS
    return Calibration(step, eval_step, compile_seconds)


def _time_ppo(configs: list[Any], specs: list[Any], seeds: list[int]) -> tuple[Any, float]:
    """A PPO group's engine and its seconds per env step: one rollout with its update, timed after a first
    (which allocates); a rollout is the smallest piece BatchedPPO trains."""
    from moerl.rl.batch_engines import PPOBatchEngine
    from moerl.rl.config import engine_device

    agent = PPOBatchEngine.build(configs, specs, seeds, engine_device(configs[0]), False)
    rollout = configs[0].ppo.n_envs * configs[0].ppo.n_steps
    total = 1_000 * rollout  # the learning-rate anneal of a long run: a calibration's steps train at full rate
    agent.learn(rollout, schedule_timesteps=total)
    start = time.perf_counter()
    agent.learn(2 * rollout, schedule_timesteps=total)
    return agent, (time.perf_counter() - start) / rollout


def estimate_seconds(configs: list[Any], calibration: Calibration) -> float:
    """Seconds the group takes on this machine (see the module docstring): training steps, the periodic
    evaluations and the final one, each evaluation charged at the longest episode limit."""
    from moerl.rl.batched_runs import suite_spec
    from moerl.rl.config import default_timesteps, resolve_env

    first = configs[0]
    budgets = [c.timesteps or default_timesteps(c) for c in configs]
    limit = max(int(suite_spec(resolve_env(c.env), c.env_kwargs).episode_limits.max()) for c in configs)
    final = first.eval.final_episodes / max(first.eval.episodes, 1)  # relative size of the final batch
    # Members with budgets of their own leave the group at them, and the group's cost per step (calibrated
    # with every member) is taken as proportional to the members it still holds: each member is charged its
    # share, 1/members of a group step per step of its own budget, and of each of its own evaluations (at
    # 0, every freq, at the end, and the final one). With one budget this is budget x step, as before.
    members = len(configs)
    steps = sum(budgets) / members
    evaluations = sum((b // first.eval.freq if first.eval.freq else 0) + 2 + final for b in budgets) / members
    return steps * calibration.step + evaluations * limit * calibration.eval_step + calibration.compile
