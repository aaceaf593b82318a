"""TensorBoard reads without configuring: the custom-scalars layout and the task-schedule series of real tiny
MoE DQN runs (both engines), read back from the event files as TensorBoard reads them."""

from __future__ import annotations

import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from moerl.cli import main
from moerl.rl.tb_layout import SCHEDULE_RETURNS_TAG, SCHEDULE_TAG, TaskSchedule

TASKS = ["cartpole-default", "cartpole-longheavy", "cartpole-lowgrav", "cartpole-mirror"]
TINY = ["--env", "cartpole-crl", "--timesteps", "600", "--seeds", "0", "--set", "env_kwargs.block_steps=150",
        "--set", "eval.freq=200", "--set", "dqn.learning_starts=50", "--set", "dqn.batch_size=32",
        "--set", "eval.episodes=2", "--set", "eval.final_episodes=2", "--set", "network.hidden=16", "--no-progress"]


def _read(run):
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors("custom_scalars__config__")  # written once per run
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    charts = {c.title: {ch.title: list(ch.multiline.tag) for ch in c.chart} for c in layout.category}
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return charts, scalars, acc.Tags()["tensors"]


def _matching(patterns, tags):
    return sorted(t for t in tags if any(re.match(p, t) for p in patterns))


@pytest.fixture(scope="module", params=["sb3", "batched"])
def topk_run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    assert main(["train", *TINY, "--arch", "big", "--router", "topk", "--engine", request.param,
                 "--logdir", str(root)]) == 0
    (run,) = root.iterdir()
    return run


def test_returns_come_first_with_every_task_and_the_schedule_on_one_chart(topk_run):
    charts, scalars, tensors = _read(topk_run)
    assert list(charts) == ["returns", "expert usage", "training"]
    returns = charts["returns"]
    raw = returns["evaluation return per task (+ task schedule)"]
    assert _matching(raw, scalars) == sorted([*(f"eval/return/{t}" for t in TASKS), SCHEDULE_RETURNS_TAG])
    norm = returns["normalised return per task and their mean (+ task schedule)"]
    assert _matching(norm, scalars) == sorted([*(f"eval/normalized/{t}" for t in TASKS), "eval/normalized_mean",
                                               SCHEDULE_TAG])
    assert "task schedule/text_summary" in tensors
    # the default scalars page sorts tag groups by name: the first group is the evaluation returns
    assert sorted({tag.split("/")[0] for tag in scalars})[0] == "eval"
    assert not [tag for tag in scalars if tag.startswith("crl/")]


def test_one_usage_chart_per_task_and_layer_with_the_schedule(topk_run):
    charts, scalars, _ = _read(topk_run)
    usage = charts["expert usage"]
    assert len(usage) == len(TASKS)  # arch big: one MoE layer
    for task in TASKS:
        (patterns,) = [p for title, p in usage.items() if title.startswith(f"{task} | big:")]
        assert _matching(patterns, scalars) == sorted([*(f"eval_usage/{task}/big/expert{e}" for e in range(4)),
                                                      SCHEDULE_TAG])


def test_the_schedule_is_a_step_function_at_the_block_starts(topk_run):
    _, scalars, _ = _read(topk_run)
    series = dict(scalars[SCHEDULE_TAG])
    # blocks of 150 steps: task k from 150 k; level (k + 1) / 4; a jump at each start, then every evaluation
    assert series == {0: 0.25, 149: 0.25, 150: 0.5, 200: 0.5, 299: 0.5, 300: 0.75, 400: 0.75, 449: 0.75, 450: 1.0,
                      600: 1.0}
    assert dict(scalars[SCHEDULE_RETURNS_TAG]) == {step: 500.0 * v for step, v in series.items()}
    evals = [step for step, _ in scalars["eval/return/cartpole-default"]]
    assert evals == [0, 200, 400, 600] and set(evals) <= set(series)


def test_a_dense_run_has_no_usage_charts(tmp_path):
    assert main(["train", *TINY, "--arch", "dense", "--engine", "sb3", "--logdir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    charts, scalars, _ = _read(run)
    assert list(charts) == ["returns", "training"]
    assert _matching(charts["training"]["training return per task"], scalars) == [f"train/return/{t}" for t in TASKS]


def test_schedule_points_between_evaluations():
    blocks = [{"start_step": 100 * k, "task_id": k % 2, "task_name": f"t{k % 2}"} for k in range(4)]
    schedule = TaskSchedule(blocks, ["t0", "t1"], 200.0)
    assert schedule.points(-1, 0) == [(0, 0.5)]
    assert schedule.points(0, 250) == [(99, 0.5), (100, 1.0), (199, 1.0), (200, 0.5), (250, 0.5)]
    assert schedule.points(299, 300) == [(300, 1.0)]  # a switch right after an evaluation: no point repeated
    assert not TaskSchedule(blocks[:1], ["t0"], 1.0).switches  # one block (MTRL, a single task): no series
