"""TensorBoard that tells a MoE DQN run's story without configuring it: a custom-scalars layout and the task
schedule as a series on the same charts.

Why: TensorBoard's default scalars page gives every tag its own card, sorted by name, so the per-task
evaluation returns of a continual run are scattered over cards with no sign of where the tasks switch. The
custom-scalars plugin (``SummaryWriter.add_custom_scalars``; its own "CUSTOM SCALARS" tab) reads a layout
from the event file: here a ``returns`` category with every task's evaluation return on one chart and the
normalised returns with their mean on another, then one chart of expert usage per task and MoE layer, then
the training curves. Chart tags are regular expressions, as the plugin reads them.

Task switches: on continual suites (more than one block) the active task is written as a step function
beside the evaluations, ``eval/task_schedule`` = (task id + 1) / number of tasks (on the normalised-return
and usage charts, whose scale is [0, 1]) and ``eval/task_schedule_returns`` = the same times the largest
return bound (on the raw-return chart). It is written along the evaluations (each switch since the previous
evaluation as a jump at its start step), never ahead of the run; on the SB3 path each checkpoint also writes
the jumps up to its step, so that a run resumed there (which purges the events after that step) neither
loses nor repeats a point; the batched engine writes every event at evaluations and purges from the
checkpoint's last evaluation. A text entry ``task schedule`` says which level is which task.

Both engines write the same layout and series (:class:`~moerl.rl.sb3.callbacks.PerTaskEvalCallback` on the
SB3 path, ``moerl.rl.batched_runs`` on the batched one). Nothing here draws random numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from moerl.rl.record import AUX_LOSS_TAG, LOSS_TAG

#: The active task, (task id + 1) / number of tasks: on the [0, 1] charts (normalised returns, usage).
SCHEDULE_TAG = "eval/task_schedule"
#: The same step function times the largest return bound: on the raw evaluation-return chart.
SCHEDULE_RETURNS_TAG = "eval/task_schedule_returns"
#: The text entry that names each level of the schedule series.
SCHEDULE_TEXT_TAG = "task schedule"


def _escape(text: str) -> str:
    """``re.escape`` without escaping ``-`` (task names have dashes; ``\\-`` is not valid in every regex dialect)."""
    return re.escape(text).replace("\\-", "-")


def _exact(tag: str) -> str:
    return f"^{_escape(tag)}$"


def layout(tasks: Sequence[str], layers: Sequence[str], normalised: bool) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout: ``{category: {chart title: ["Multiline", [tag regex, ...]]}}``.

    ``tasks``: the evaluation tasks; ``layers``: the MoE layers with a router (none for dense and wide);
    ``normalised``: whether the run has return bounds (normalised returns and the schedule series).
    """
    schedule = [_exact(SCHEDULE_TAG)] if normalised else []
    returns: dict[str, list[Any]] = {
        "evaluation return per task (+ task schedule)":
            ["Multiline", ["^eval/return/", *([_exact(SCHEDULE_RETURNS_TAG)] if normalised else [])]],
    }
    if normalised:
        returns["normalised return per task and their mean (+ task schedule)"] = [
            "Multiline", ["^eval/normalized/", _exact("eval/normalized_mean"), *schedule]]
        returns["mean normalised return"] = ["Multiline", [_exact("eval/normalized_mean")]]
    usage = {f"{task} | {layer}: expert usage (+ task schedule)":
             ["Multiline", [f"^{_escape(f'eval_usage/{task}/{layer}/')}expert[0-9]+$", *schedule]]
             for task in tasks for layer in layers}
    training = {"training return per task": ["Multiline", ["^train/return/"]],
                "loss": ["Multiline", [_exact(LOSS_TAG), _exact(AUX_LOSS_TAG)]]}
    return {"returns": returns, **({"expert usage": usage} if usage else {}), "training": training}


def usage_layers(usage_keys: Sequence[str]) -> list[str]:
    """MoE layer names, in first-seen order, from ``eval_usage/<task>/<layer>/expert<e>`` tags."""
    out: list[str] = []
    for key in usage_keys:
        layer = key.split("/")[-2]
        if layer not in out:
            out.append(layer)
    return out


class TaskSchedule:
    """The CRL schedule as a step function: the value of the active task at any env step.

    ``schedule``: the suite's blocks (``start_step``, ``task_id``, ``task_name``; dicts or objects with those
    attributes); ``tasks``: the suite's task names (their count sets the levels); ``return_scale``: the largest
    return bound (the raw-return chart's scale).
    """

    def __init__(self, schedule: Sequence[Any], tasks: Sequence[str], return_scale: float) -> None:
        def field(block: Any, name: str) -> Any:
            return block[name] if isinstance(block, Mapping) else getattr(block, name)

        self.blocks = sorted((int(field(b, "start_step")), int(field(b, "task_id")), str(field(b, "task_name")))
                             for b in schedule)
        self.levels = max(len(tasks), 1)
        self.return_scale = float(return_scale)

    @property
    def switches(self) -> bool:
        """Whether there is anything to show (a schedule of more than one block)."""
        return len(self.blocks) > 1

    def level(self, step: int) -> float:
        """(task id + 1) / number of tasks of the block active at ``step``."""
        task = self.blocks[0][1]
        for start, task_id, _ in self.blocks:
            if start <= step:
                task = task_id
        return (task + 1) / self.levels

    def points(self, previous: int, step: int, end: bool = True) -> list[tuple[int, float]]:
        """The series' points in ``(previous, step]`` (``previous`` -1: none written yet): a jump (the old level
        at ``start - 1``, the new one at ``start``) for each block that started in between, then (``end``)
        ``step`` itself."""
        out: dict[int, float] = {}
        for start, _, _ in self.blocks:
            if previous < start <= step and start > 0:
                out.setdefault(max(start - 1, previous + 1), self.level(start - 1))
                out[start] = self.level(start)
        if end:
            out[step] = self.level(step)
        return sorted(out.items())

    def text(self) -> str:
        """Markdown naming each level of the series and the blocks (a text card beside the charts)."""
        names = {task_id: name for _, task_id, name in self.blocks}
        lines = [f"`{SCHEDULE_TAG}` = (task id + 1) / {self.levels}; `{SCHEDULE_RETURNS_TAG}` = that x "
                 f"{self.return_scale:g}.", "", "| level | task |", "|---|---|"]
        lines += [f"| {(t + 1) / self.levels:.3g} | {names[t]} |" for t in sorted(names)]
        lines += ["", "| block starts at step | task |", "|---|---|"]
        lines += [f"| {start} | {name} |" for start, _, name in self.blocks]
        return "\n".join(lines)


def write_schedule(writer: Any, schedule: TaskSchedule, previous: int, step: int, end: bool = True) -> None:
    """Write the schedule series in ``(previous, step]`` (and, when nothing was written yet, its text card).

    ``end=False`` writes the jumps only, not a point at ``step``: what a checkpoint writes, so that every point
    up to a checkpoint's step is on disk before it (a run resumed there purges only later events)."""
    if not schedule.switches:
        return
    if previous < 0:
        writer.add_text(SCHEDULE_TEXT_TAG, schedule.text(), 0)
    for at, value in schedule.points(previous, step, end):
        writer.add_scalar(SCHEDULE_TAG, value, at)
        writer.add_scalar(SCHEDULE_RETURNS_TAG, value * schedule.return_scale, at)


def return_scale(bounds: Mapping[str, tuple[float, float]]) -> float:
    """The raw-return chart's scale: the largest upper return bound (1 without bounds)."""
    return max((float(hi) for _, hi in bounds.values()), default=1.0)


def tensorboard_writer(logger: Any) -> Any:
    """The ``SummaryWriter`` behind an SB3 logger's TensorBoard output (None when it has none)."""
    for fmt in getattr(logger, "output_formats", []):
        writer = getattr(fmt, "writer", None)
        if writer is not None and hasattr(writer, "add_custom_scalars"):
            return writer
    return None
