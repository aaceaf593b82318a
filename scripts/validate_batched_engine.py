"""Do the two engines of an RL algorithm agree? 10 seeds per engine per config, IQMs with 95% bootstrap CIs.

For each config (env x network) the SB3 path trains seeds 0-9 one after another (``--engine sb3``) and the
batched engine trains them together (``--engine batched``), both with moerl's defaults and the env's default
budget (``--timesteps`` overrides it for a quicker look; say so when reporting). The score of a run is its
final greedy normalised return per task (``results.json``: ``final_eval``; a run pinned to one task by
``env_kwargs.fixed_task``: that task's alone); per engine we report rliable's
interquartile mean over runs x tasks with a 95% stratified-bootstrap CI, and the CI of the difference of
the IQMs (SB3 minus batched; an interval containing 0 means no difference detected).

``--algo ppo`` runs the same check for MoE PPO (``MoEPPO`` against ``BatchedPPO``, PPO's defaults, its runs
under ``<out>/ppo/``); ``--set KEY=VALUE`` (repeatable) passes settings to every run, e.g. one MinAtar game:
``--configs minatar-crl:dense --set env_kwargs.fixed_task=1``.

Long (about an hour of CPU per config and engine at the default budgets) and resumable: finished run
directories are kept and skipped, an unfinished one is trained again; ``--configs`` runs a part.

    python scripts/validate_batched_engine.py --out runs/validation [--algo dqn|ppo] [--configs cartpole-crl:dense,...]
        [--seeds 0-9] [--timesteps N] [--set KEY=VALUE ...] [--engines sb3,batched] [--report docs/batched-validation.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

CONFIGS = ("CartPole-v1:dense", "CartPole-v1:big:softmoe", "cartpole-crl:dense", "cartpole-crl:big:softmoe",
           "cartpole-crl:big:hardcoded")


def _args(config: str) -> tuple[str, list[str]]:
    env, arch, *router = config.split(":")
    flags = ["--env", env, "--arch", arch, *(["--router", router[0]] if router else [])]
    return env, flags


def _finished(path: Path) -> bool:
    try:
        return json.loads((path / "status.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def run_config(out: Path, config: str, engine: str, seeds: list[int], timesteps: int | None,
               algo: str = "dqn", settings: tuple[str, ...] = ()) -> list[Path]:
    """Train what is missing of ``config`` x ``engine`` under ``out``; return the seeds' run directories."""
    from moerl.cli import main

    _, flags = _args(config)
    flags += [*(["--algo", algo] if algo != "dqn" else []), *(x for kv in settings for x in ("--set", kv))]
    name = config.replace(":", "_").replace("/", "-")
    logdir = out / engine / name
    paths = [logdir / f"{name}_s{seed}" for seed in seeds]
    todo = [seed for seed, path in zip(seeds, paths, strict=True) if not _finished(path)]
    for seed, path in zip(seeds, paths, strict=True):
        if seed in todo and path.exists():
            shutil.rmtree(path)  # an interrupted attempt: train it again
    extra = ["--timesteps", str(timesteps)] if timesteps else []
    if todo and engine == "batched":
        # a batch trains together: one unfinished member means the batch is trained again
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
        todo = seeds
    if todo:
        spec = ",".join(map(str, todo))
        code = main(["train", *flags, *extra, "--seeds", spec, "--engine", engine, "--logdir", str(logdir),
                     "--run-name", name, "--no-progress"])
        if code != 0:
            sys.exit(f"training {config} with {engine} failed (exit {code})")
    return paths


def scores(paths: list[Path]) -> np.ndarray:
    """(runs, tasks) final normalised returns (plain Gymnasium ids: by the game's bounds, e.g. 0-500). A run
    pinned to one task (``env_kwargs.fixed_task``) is scored on that task alone: the others, evaluated too,
    were never trained and would only add near-zero scores to both sides."""
    import yaml

    from moerl.rl.envs.attributes import normalized_return
    from moerl.rl.envs.games import GAMES

    bounds = {game.gym_id: game.return_bounds for game in GAMES.values()}
    rows = []
    for path in paths:
        results = json.loads((path / "results.json").read_text())
        final = results["final_eval"]
        tasks = sorted(final)
        fixed = (yaml.safe_load((path / "config.yaml").read_text()).get("env_kwargs") or {}).get("fixed_task")
        if fixed is not None:
            tasks = [list(final)[int(fixed)] if str(fixed).isdigit() else str(fixed)]
        rows.append([final[t]["normalized"] if final[t]["normalized"] is not None
                     else normalized_return(final[t]["mean_return"], bounds[results["env_id"]])
                     for t in tasks])
    return np.asarray(rows, dtype=float)


def compare(sb3: np.ndarray, batched: np.ndarray, reps: int = 2000) -> dict[str, list[float]]:
    """IQM and 95% CI per engine, and the CI of the IQM difference (rliable's stratified bootstrap)."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(0)  # rliable draws its bootstrap samples from numpy's global generator
    point, ci = rly.get_interval_estimates({"sb3": sb3, "batched": batched},
                                           lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    diff_point, diff_ci = rly.get_interval_estimates(
        {"diff": (sb3, batched)}, lambda x, y: np.array([metrics.aggregate_iqm(x) - metrics.aggregate_iqm(y)]),
        reps=reps)
    return {"sb3": [float(point["sb3"][0]), *map(float, ci["sb3"][:, 0])],
            "batched": [float(point["batched"][0]), *map(float, ci["batched"][:, 0])],
            "difference": [float(diff_point["diff"][0]), *map(float, diff_ci["diff"][:, 0])]}


def main() -> None:
    from moerl.core.seeding import parse_seeds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/validation")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--timesteps", type=int)
    p.add_argument("--engines", default="sb3,batched")
    p.add_argument("--algo", choices=("dqn", "ppo"), default="dqn", help="the algorithm whose engines are compared")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of every run")
    p.add_argument("--report", help="also write the markdown table to this file")
    args = p.parse_args()
    out, seeds = Path(args.out) / ("ppo" if args.algo == "ppo" else ""), parse_seeds(args.seeds)
    lines = ["| config | SB3 path IQM [95% CI] | batched IQM [95% CI] | difference [95% CI] |", "|---|---|---|---|"]
    results = {}
    for config in args.configs.split(","):
        paths = {engine: run_config(out, config, engine, seeds, args.timesteps, args.algo, tuple(args.set))
                 for engine in args.engines.split(",")}
        if set(paths) != {"sb3", "batched"}:
            continue
        res = compare(scores(paths["sb3"]), scores(paths["batched"]))
        results[config] = res
        cells = [f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]" for v in (res["sb3"], res["batched"], res["difference"])]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    record = {"seeds": seeds, "timesteps": args.timesteps, "results": results}
    if args.algo != "dqn":  # DQN's record stays as it was
        record = {"algo": args.algo, **record, "settings": args.set}
    (out / "validation.json").write_text(json.dumps(record, indent=2) + "\n")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.report:
        Path(args.report).write_text(table)


if __name__ == "__main__":
    main()
