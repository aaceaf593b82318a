"""Continual metrics on hand-made evaluation curves with known answers."""

import pytest

from moerl.rl.continual import continual_metrics

SCHEDULE = [{"block": 0, "task_name": "a", "start_step": 0}, {"block": 1, "task_name": "b", "start_step": 100}]


def rows(task, points):
    return [{"step": s, "task": task, "normalized": v} for s, v in points]


def test_average_performance_and_forgetting():
    data = rows("a", [(0, 0.0), (50, 0.6), (100, 0.8), (150, 0.5), (200, 0.3)]) + \
        rows("b", [(0, 0.1), (50, 0.1), (100, 0.1), (150, 0.7), (200, 0.9)])
    m = continual_metrics(data, SCHEDULE, block_steps=100)
    assert m["final_normalized"] == {"a": 0.3, "b": 0.9}
    assert m["average_performance"] == pytest.approx(0.6)
    # a: end of its block (step 100) 0.8 -> final 0.3; best 0.8; b is trained last: not counted
    assert m["forgetting_end_of_block"] == {"a": pytest.approx(0.5)}
    assert m["forgetting_best"] == {"a": pytest.approx(0.5)}
    assert m["mean_forgetting_end_of_block"] == pytest.approx(0.5)


def test_end_of_block_uses_last_evaluation_before_the_boundary():
    data = rows("a", [(0, 0.0), (90, 0.4), (130, 0.9), (200, 0.2)]) + rows("b", [(0, 0.0), (200, 0.5)])
    m = continual_metrics(data, SCHEDULE, block_steps=100)
    assert m["forgetting_end_of_block"]["a"] == pytest.approx(0.2)  # 0.4 at step 90 - 0.2
    assert m["forgetting_best"]["a"] == pytest.approx(0.7)  # best 0.9 - 0.2


def test_forward_transfer_against_single_task_reference():
    data = rows("a", [(0, 0.0), (200, 0.0)]) + rows("b", [(0, 0.5), (100, 0.5), (200, 0.5)])
    reference = {"b": rows("b", [(0, 0.2), (100, 0.2)])}
    m = continual_metrics(data, SCHEDULE, block_steps=100, reference=reference)
    assert m["forward_transfer"] == {"b": pytest.approx(0.3)}  # 0.5 vs 0.2 throughout b's block
    assert m["mean_forward_transfer"] == pytest.approx(0.3)


def test_mtrl_has_only_average_performance():
    m = continual_metrics(rows("a", [(0, 0.2), (10, 0.4)]), [], block_steps=0)
    assert m == {"final_normalized": {"a": 0.4}, "average_performance": pytest.approx(0.4)}
