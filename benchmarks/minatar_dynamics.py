"""Env steps per second of moerl's batched MinAtar games against the ``minatar`` reference, one thread.

For each game (``--games``), N environments (``--envs``, 1,024 by default) take uniformly random actions from
the game's minimal action set (drawn beforehand, the same pool for both sides), on one torch thread:

* **ours**: one env step of the batched game is its ``step``, then ``reset`` of fresh states for the
  environments whose episode ended and ``base.put_rows_`` writing them into their rows (as the suites
  restart them), then ``observe`` of the result; the uniforms of the step and of the reset are drawn inside the timed
  loop by :class:`~moerl.core.seed_streams.SeedStreams` (one stream per env, float64, as the interface
  takes them); the minimal action index is mapped to the full set by a gather;
* **reference**: the ``minatar`` package's Gymnasium envs ``MinAtar/<Game>-v1`` (the minimal action set;
  ``minatar.gym.register_envs()`` registers them: importing ``minatar`` alone does not), made by
  ``gymnasium.make`` with ``sticky_action_prob=0.0`` (the package's default is 0.1; ours has none inside the
  game either), N of them in one ``gymnasium.vector.SyncVectorEnv`` in this process (autoreset, Gymnasium's
  default next-step mode), stepped with numpy action arrays.

The two are timed alternately in ``--rounds`` slices (``--steps`` vector steps of ours, ``--ref-steps`` of the
reference per slice), after ``--warmup`` vector steps of each, so that the machine's noise falls on both; the
rate of each is its total env steps over its total time. Time is measured twice: as the CPU time of this
thread (``time.thread_time``: both sides run on this one thread, and on a shared machine it leaves out the
time the process waits for a core) and as wall-clock time. Reported per game: both rates and ours /
reference in each (the target is 5x at 1,024 envs, one thread). ``--inference-mode`` runs our side under
``torch.inference_mode()`` (cheaper tensor operations; its tensors cannot be changed in place or saved for
backward outside that mode), to show what a caller that steps environments that way gets. The process runs
with the batched engines' allocator settings (:func:`moerl.core.cpu_allocator.keep_freed_memory`: freed
memory stays in the heap instead of being page-faulted in anew each step), as training runs the games; they
are process-wide, so the reference runs under them too; ``--malloc-defaults`` keeps glibc's defaults. Timings are
comparable only within one run of this script (shared, noisy machines); the JSON records the machine, torch,
gymnasium and minatar versions and the settings.

    python benchmarks/minatar_dynamics.py [--games asterix,breakout,freeway,seaquest,space_invaders]
        [--envs 1024] [--steps 100] [--ref-steps 10] [--rounds 5] [--warmup 50] [--inference-mode]
        [--malloc-defaults] [--out /tmp/minatar_dynamics.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import platform
import time

import numpy as np
import torch

from moerl.core.cpu_allocator import keep_freed_memory
from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.minatar.asterix import Asterix
from moerl.rl.envs.minatar.base import put_rows_
from moerl.rl.envs.minatar.breakout import Breakout
from moerl.rl.envs.minatar.freeway import Freeway
from moerl.rl.envs.minatar.seaquest import Seaquest
from moerl.rl.envs.minatar.space_invaders import SpaceInvaders

GAMES = {"asterix": Asterix, "breakout": Breakout, "freeway": Freeway, "seaquest": Seaquest,
         "space_invaders": SpaceInvaders}
TARGET = 5.0
_PURPOSE = 31  # the SeedStreams purpose of the benchmark's draws


class Ours:
    """N batched games stepped as a suite steps them (see the module docstring)."""

    def __init__(self, name: str, envs: int, actions: np.ndarray, device: str, inference_mode: bool = False) -> None:
        self.game = GAMES[name]()
        self.mode = torch.inference_mode if inference_mode else contextlib.nullcontext
        self.dev = torch.device(device)
        self.streams = SeedStreams(range(envs), _PURPOSE, self.dev)
        self.minimal = torch.tensor(self.game.spec.minimal_actions, device=self.dev)
        self.actions = torch.as_tensor(actions, device=self.dev)
        self.t = 0
        with self.mode():
            self.state = self.game.reset(self.streams.uniform(self.game.draws_per_reset, dtype=torch.float64))
            self.obs = self.game.observe(self.state)

    def run(self, steps: int) -> None:
        with self.mode():
            self._run(steps)

    def _run(self, steps: int) -> None:
        game, streams = self.game, self.streams
        for _ in range(steps):
            action = self.minimal[self.actions[self.t % len(self.actions)]]
            self.t += 1
            nxt, _, terminal = game.step(self.state, action, streams.uniform(game.draws_per_step, dtype=torch.float64))
            u_reset = streams.uniform(game.draws_per_reset, dtype=torch.float64)
            ended = terminal.nonzero().squeeze(1)
            self.state = put_rows_(nxt, ended, game.reset(u_reset.index_select(0, ended))) if len(ended) else nxt
            self.obs = game.observe(self.state)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)


class Reference:
    """N ``minatar`` Gymnasium envs in one ``SyncVectorEnv`` (see the module docstring)."""

    def __init__(self, name: str, envs: int, actions: np.ndarray) -> None:
        import gymnasium as gym
        import minatar.gym

        env_id = f"MinAtar/{name.title().replace('_', '')}-v1"
        if env_id not in gym.registry:
            minatar.gym.register_envs()
        self.vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, sticky_action_prob=0.0) for _ in range(envs)])
        self.vec.reset(seed=0)
        self.actions = actions
        self.t = 0

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.vec.step(self.actions[self.t % len(self.actions)])
            self.t += 1


def timed(runner: Ours | Reference, steps: int) -> np.ndarray:
    """(CPU time of this thread, wall-clock time) of ``steps`` vector steps."""
    cpu, wall = time.thread_time(), time.perf_counter()
    runner.run(steps)
    return np.array([time.thread_time() - cpu, time.perf_counter() - wall])


def measure(name: str, args: argparse.Namespace) -> dict:
    n_actions = len(GAMES[name].spec.minimal_actions)
    actions = np.random.default_rng(0).integers(0, n_actions, (max(args.steps, args.ref_steps) * 4, args.envs))
    ours = Ours(name, args.envs, actions, args.device, args.inference_mode)
    ref = Reference(name, args.envs, actions)
    ours.run(args.warmup)
    ref.run(args.warmup)
    t_ours, t_ref = np.zeros(2), np.zeros(2)
    for _ in range(args.rounds):
        t_ours += timed(ours, args.steps)
        t_ref += timed(ref, args.ref_steps)
    ours_rate = args.envs * args.steps * args.rounds / t_ours
    ref_rate = args.envs * args.ref_steps * args.rounds / t_ref
    row = {"game": name, "envs": args.envs}
    for i, clock in enumerate(("cpu", "wall")):
        row |= {f"ours_steps_per_s_{clock}": round(ours_rate[i]), f"reference_steps_per_s_{clock}": round(ref_rate[i]),
                f"ratio_{clock}": round(ours_rate[i] / ref_rate[i], 2)}
    row["meets_target"] = bool(ours_rate[0] >= TARGET * ref_rate[0])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--games", default=",".join(GAMES))
    p.add_argument("--envs", type=int, default=1024)
    p.add_argument("--steps", type=int, default=100, help="vector steps of ours per slice")
    p.add_argument("--ref-steps", type=int, default=10, help="vector steps of the reference per slice")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=50, help="vector steps of each side before timing")
    p.add_argument("--device", default="cpu", help="where ours runs (the reference is numpy on the CPU)")
    p.add_argument("--inference-mode", action="store_true", help="run ours under torch.inference_mode()")
    p.add_argument("--malloc-defaults", action="store_true",
                   help="keep glibc's allocator defaults (not the batched engines' keep_freed_memory)")
    p.add_argument("--out", default="/tmp/minatar_dynamics.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    kept = False if args.malloc_defaults else keep_freed_memory()
    rows = []
    for name in args.games.split(","):
        row = measure(name, args)
        rows.append(row)
        print(f"{name:15s} ours {row['ours_steps_per_s_cpu']:10,} env steps/s  reference "
              f"{row['reference_steps_per_s_cpu']:8,}  ratio {row['ratio_cpu']:6.2f} (CPU time; wall-clock "
              f"{row['ratio_wall']:.2f})", flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    versions = {pkg: importlib.metadata.version(pkg) for pkg in ("gymnasium", "minatar", "numpy")}
    out = {"device": device, "threads": 1, "torch": torch.__version__, **versions, "sticky_action_prob": 0.0,
           "allocator": "keep_freed_memory" if kept else "glibc defaults",
           "reference": "gymnasium.vector.SyncVectorEnv of gymnasium.make('MinAtar/<Game>-v1', sticky_action_prob=0)",
           "settings": vars(args), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\n| game | envs | ours env steps/s | reference env steps/s (SyncVectorEnv) | ratio | >= {TARGET:g}x "
          "| ratio, wall-clock |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['game']} | {r['envs']:,} | {r['ours_steps_per_s_cpu']:,} | {r['reference_steps_per_s_cpu']:,} "
              f"| {r['ratio_cpu']} | {'yes' if r['meets_target'] else 'no'} | {r['ratio_wall']} |")
    print("(env steps per second of CPU time of the one thread both run on; the last column the same ratio in "
          f"wall-clock time; allocator: {out['allocator']})")


if __name__ == "__main__":
    main()
