"""The torch task suites against the Gymnasium ones: one step from the same state and action, whole CRL runs
(switching at the same steps), episode statistics of a fixed policy, per-seed streams, and the counter RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams, splitmix64, stream_key
from moerl.rl.envs.batched import BatchedTaskSuite
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.envs.tasks import TASKS

ALL_TASKS = list(TASKS)


# -- the counter RNG -------------------------------------------------------------------------------------
def test_seed_streams_match_the_python_reference_bit_for_bit():
    streams = SeedStreams([0, 7, 2**32 - 1], purpose=3)
    first, second = streams.bits(5), streams.bits(2, 3)
    for i, seed in enumerate([0, 7, 2**32 - 1]):
        key = stream_key(seed, 3)
        got = [int(v) & (2**64 - 1) for v in torch.cat([first[i], second[i].flatten()]).tolist()]
        assert got == [splitmix64(key, k) for k in range(11)]


def test_seed_streams_are_per_seed_and_uniform():
    a = SeedStreams([4, 5, 6], purpose=1).uniform(10_000, dtype=torch.float64)
    alone = SeedStreams([5], purpose=1).uniform(10_000, dtype=torch.float64)
    assert torch.equal(a[1], alone[0])  # a seed's numbers do not depend on the seeds beside it
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(SeedStreams([5], purpose=2).uniform(10), SeedStreams([5], purpose=1).uniform(10))
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert abs(float(a.mean()) - 0.5) < 0.01 and abs(float(a.var()) - 1 / 12) < 0.005
    ints = SeedStreams([1], purpose=9).integers(7, 70_000)[0]
    counts = torch.bincount(ints, minlength=7).double()
    assert int(ints.min()) == 0 and int(ints.max()) == 6
    assert float(((counts - 10_000) ** 2 / 10_000).sum()) < 30  # chi-square, 6 dof (p ~ 4e-5)


# -- one step from the same state -------------------------------------------------------------------------
def _set_gym_state(env: TaskSuiteEnv, state: np.ndarray) -> None:
    game = env.tasks[env.current_task].game
    inner = env._envs[env.current_task]
    inner.state = np.array(state[:4] if game == "cartpole" else state[:2], dtype=np.float64)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_one_step_from_the_same_state_and_action_agrees_with_gymnasium(task):
    env = TaskSuiteEnv([task], "mtrl")
    rng = np.random.default_rng(0)
    n = 64
    batched = BatchedTaskSuite(env, seeds=range(n))
    batched.reset()
    cartpole = TASKS[task].game == "cartpole"
    if cartpole:
        states = rng.uniform([-2.3, -3, -0.2, -3], [2.3, 3, 0.2, 3], size=(n, 4))
    else:
        states = np.zeros((n, 4))
        states[:, 0] = rng.uniform(-1.2, 0.6, n)
        states[:, 1] = rng.uniform(-0.07, 0.07, n)
        states[:4, :2] = [[-1.2, -0.07], [0.49, 0.07], [0.5, 0.0], [-1.19, -0.05]]  # clip, goal edges
    actions = rng.integers(0, env.action_space.n, n)
    batched.state = torch.as_tensor(states)
    out = batched.step(torch.as_tensor(actions))
    for i in range(n):
        env.reset(seed=i)
        _set_gym_state(env, states[i])
        obs, reward, terminated, truncated, info = env.step(int(actions[i]))
        final = out.final_obs[i].numpy()
        np.testing.assert_allclose(final, obs, rtol=1e-6, atol=1e-7)
        assert out.reward[i].item() == reward
        assert bool(out.terminated[i]) == terminated and bool(out.truncated[i]) == truncated
        assert bool(out.invalid_action[i]) == info["invalid_action"]


# -- whole runs: CRL switching, truncation, one-hot -------------------------------------------------------
def _lockstep(env: TaskSuiteEnv, seed: int, steps: int) -> int:
    """Run the Gymnasium suite and a one-env batched suite side by side, copying each initial state from
    Gymnasium (their random numbers differ by design); everything else must agree. Returns the switches."""
    batched = BatchedTaskSuite(env, seeds=[seed])
    obs, info = env.reset(seed=seed)
    b_obs = batched.reset()
    switches, last = 0, info["task_id"]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        assert int(batched.task[0]) == env.current_task
        state = np.zeros(4)
        inner = env._envs[env.current_task].state
        state[: len(inner)] = inner
        batched.state[0] = torch.as_tensor(state)
        b_obs = batched.observation()
        np.testing.assert_allclose(b_obs[0].numpy(), obs, rtol=1e-6, atol=1e-7)
        action = int(rng.integers(0, env.action_space.n))
        obs, reward, terminated, truncated, info = env.step(action)
        out = batched.step(torch.tensor([action]))
        np.testing.assert_allclose(out.final_obs[0].numpy(), obs, rtol=1e-5, atol=1e-6)
        assert (bool(out.terminated[0]), bool(out.truncated[0]), out.reward[0].item()) == (
            terminated, truncated, reward)
        if terminated or truncated:
            obs, info = env.reset()
            switches += info["task_id"] != last
            last = info["task_id"]
    return switches


@pytest.mark.parametrize(("tasks", "order"), [("cartpole", "random"), ("classic", "sequential"),
                                              ("mountaincar", "reverse")])
def test_crl_runs_switch_at_the_same_steps_as_the_gymnasium_suite(tasks, order):
    env = TaskSuiteEnv(tasks, "crl", block_steps=120, cycles=2, order=order, max_episode_steps=60)
    switches = _lockstep(env, seed=3, steps=len(env.schedule()) * 120 + 50)
    assert switches >= len(env.schedule()) - 2


def test_random_order_schedules_are_the_gymnasium_suites_per_seed():
    env = TaskSuiteEnv("classic", "crl", block_steps=100, cycles=3, order="random")
    batched = BatchedTaskSuite(env, seeds=[0, 1, 2])
    for i, seed in enumerate([0, 1, 2]):
        env.reset(seed=seed)
        assert batched.schedule_tasks[i].tolist() == [b["task_id"] for b in env.schedule()]


def test_mtrl_task_frequencies_and_episode_lengths_of_a_fixed_policy_agree():
    """Statistical agreement where the random numbers differ: tasks drawn per episode, episode lengths."""
    env = TaskSuiteEnv("cartpole", "mtrl", task_probs=[0.4, 0.3, 0.2, 0.1])
    n, steps = 256, 400
    batched = BatchedTaskSuite(env, seeds=range(n))
    batched.reset()
    lengths_b: dict[int, list[int]] = {t: [] for t in range(4)}
    for _ in range(steps):
        obs = batched.observation()
        action = (obs[:, 2] > 0.05).long()  # a fixed, mediocre policy: episodes of ~10-100 steps
        action = torch.where(batched.task == 3, 1 - action, action)  # mirrored task: the mirrored policy
        out = batched.step(action)
        for i in torch.nonzero(out.done).flatten().tolist():
            lengths_b[int(out.task_id[i])].append(int(out.episode_length[i]))
    lengths_g: dict[int, list[int]] = {t: [] for t in range(4)}
    obs, info = env.reset(seed=0)
    while sum(map(len, lengths_g.values())) < sum(map(len, lengths_b.values())):
        action = int(obs[2] > 0.05)
        action = 1 - action if info["task_id"] == 3 else action
        obs, _, terminated, truncated, info2 = env.step(action)
        steps_in = env._episode_steps
        if terminated or truncated:
            lengths_g[info2["task_id"]].append(steps_in)
            obs, info = env.reset()
    total_b = sum(map(len, lengths_b.values()))
    for t, p in enumerate([0.4, 0.3, 0.2, 0.1]):
        share = len(lengths_b[t]) / total_b
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / total_b) + 0.02, (t, share)
        mb, mg = np.mean(lengths_b[t]), np.mean(lengths_g[t])
        se = np.sqrt(np.var(lengths_b[t]) / len(lengths_b[t]) + np.var(lengths_g[t]) / len(lengths_g[t]))
        assert abs(mb - mg) < 4 * se + 1.0, (t, mb, mg)


def test_a_seed_runs_the_same_alone_or_in_a_batch_and_the_state_round_trips():
    env = TaskSuiteEnv("classic", "mtrl")
    many, alone = BatchedTaskSuite(env, seeds=[8, 9, 10]), BatchedTaskSuite(env, seeds=[9])
    many.reset(), alone.reset()
    gen = torch.Generator().manual_seed(0)
    saved = None
    for k in range(300):
        a = torch.randint(0, 3, (3,), generator=gen)
        out_many, out_alone = many.step(a), alone.step(a[1:2])
        # three environments against one: other vector widths for the elementwise physics, so float32
        # tolerance (a rounding difference would have to cross a termination threshold to change `done`)
        torch.testing.assert_close(out_many.obs[1], out_alone.obs[0])
        assert torch.equal(out_many.done[1], out_alone.done[0])
        if k == 150:
            saved = many.state_dict()
            rest = [torch.randint(0, 3, (3,), generator=torch.Generator().manual_seed(j)) for j in range(50)]
            expected = [many.step(r).obs for r in rest]
            break
    copy = BatchedTaskSuite(env, seeds=[8, 9, 10])
    copy.load_state_dict(saved)
    for r, e in zip(rest, expected, strict=True):
        assert torch.equal(copy.step(r).obs, e)


def test_bad_actions_are_refused():
    batched = BatchedTaskSuite(TaskSuiteEnv("cartpole", "mtrl"), seeds=[0, 1])
    batched.reset()
    with pytest.raises(ValueError, match=r"action 2 is not in Discrete\(2\)"):
        batched.step(torch.tensor([0, 2]))


# -- members of one batch with their own settings ---------------------------------------------------------
def _member_specs() -> list[TaskSuiteEnv]:
    return [
        TaskSuiteEnv("cartpole", "crl", block_steps=50, order="sequential"),
        TaskSuiteEnv("cartpole", "crl", block_steps=80, cycles=2, order="reverse"),
        TaskSuiteEnv("cartpole", "crl", block_steps=40, order="random"),
        TaskSuiteEnv("cartpole", "mtrl", task_probs=[0.7, 0.1, 0.1, 0.1]),
        TaskSuiteEnv("cartpole", "crl", fixed_task=2),
        TaskSuiteEnv("cartpole", "mtrl", max_episode_steps=30),
    ]


def test_a_batch_of_suites_with_their_own_settings_steps_each_as_it_would_alone():
    """Members of one batch may differ in setting (CRL order, block length, cycles, MTRL probabilities, a fixed
    task, episode limits): each follows exactly the tasks, blocks and episode ends it follows alone. States
    agree to float64 rounding (vectorised and scalar kernels of cos/sin may differ in the last bit)."""
    specs, seeds = _member_specs(), [3, 1, 4, 1, 5, 9]
    mixed = BatchedTaskSuite(specs, seeds)
    alone = [BatchedTaskSuite(spec, [seed]) for spec, seed in zip(specs, seeds, strict=True)]
    obs = mixed.reset()
    for i, single in enumerate(alone):
        torch.testing.assert_close(obs[i : i + 1], single.reset())
    rng = np.random.default_rng(0)
    switches = 0
    for _ in range(700):
        actions = torch.as_tensor(rng.integers(0, 2, size=len(specs)))
        out = mixed.step(actions)
        for i, single in enumerate(alone):
            one = single.step(actions[i : i + 1])
            assert (int(out.task_id[i]), bool(out.terminated[i]), bool(out.truncated[i])) == (
                int(one.task_id[0]), bool(one.terminated[0]), bool(one.truncated[0]))
            assert int(mixed.block[i]) == int(single.block[0])
            torch.testing.assert_close(out.obs[i : i + 1], one.obs, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(mixed.state[i : i + 1], single.state, rtol=1e-9, atol=1e-12)
        switches += int((mixed.block > 0).sum())
    assert switches > 0 and int(mixed.block[1]) > int(mixed.block[0]) >= 1  # the schedules really differ
    assert int(mixed.task[4]) == 2 and bool((mixed.episode_steps[5] <= 30).item())


def test_a_batch_refuses_suites_whose_networks_would_read_other_observations():
    with pytest.raises(ValueError, match="must share their task_names"):
        BatchedTaskSuite([TaskSuiteEnv("cartpole"), TaskSuiteEnv("mountaincar")], [0, 1])
    with pytest.raises(ValueError, match="must share their task_onehot"):
        BatchedTaskSuite([TaskSuiteEnv("cartpole"), TaskSuiteEnv("cartpole", task_onehot=False)], [0, 1])
