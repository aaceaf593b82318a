"""``moerl report RUN_DIR...``: one markdown table over finished MoE DQN runs.

Per run: arch, router, seed, steps, steps/s, final greedy return per task, and the continual
metrics (average normalised performance, mean forgetting). Aggregation over seeds with rliable
(IQM, bootstrap CIs) is the planned next step of this command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moerl.errors import ConfigError
from moerl.experiments.rundir import RESULTS_FILE, RunDir


def load_results(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        run = RunDir.open_finished(p)
        if run.read_status().get("family") != "moe-dqn":
            raise ConfigError(f"'{p}' is not a moe-dqn run; 'moerl report' summarises MoE DQN runs")
        if not (run.path / RESULTS_FILE).is_file():
            raise ConfigError(f"'{p}' has no {RESULTS_FILE}")
        out.append(run.read_json(RESULTS_FILE))
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(results: list[dict[str, Any]]) -> str:
    tasks: list[str] = []
    for r in results:
        tasks.extend(t for t in r["final_eval"] if t not in tasks)
    head = ["arch", "router", "seed", "steps", "steps/s", *tasks, "avg perf", "forgetting (end of block)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cont = r.get("continual") or {}
        router = "-" if r["arch"] in ("dense", "wide") else r["router"]
        cells = [r["arch"], router, r["seed"], r["timesteps"], _fmt(r.get("steps_per_second"), 0)]
        cells += [_fmt(r["final_eval"].get(t, {}).get("mean_return"), 1) for t in tasks]
        cells += [_fmt(cont.get("average_performance")), _fmt(cont.get("mean_forgetting_end_of_block"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def report(paths: list[str], out: str | None = None) -> str:
    text = markdown_table(load_results(paths))
    if out:
        Path(out).write_text(text + "\n")
    return text
