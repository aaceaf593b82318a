"""The batched replay buffer against SB3's: the same stored transitions (timeouts handled as SB3 does), uniform
sampling over the filled part from each seed's own stream, and a state round trip."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from moerl.rl.algos.replay import BatchedReplayBuffer


def _transitions(rng: np.random.Generator, n: int, obs_dim: int):
    for _ in range(n):
        obs = rng.normal(size=(3, obs_dim)).astype(np.float32)
        nxt = rng.normal(size=(3, obs_dim)).astype(np.float32)
        yield obs, nxt, rng.integers(0, 2, 3), rng.normal(size=3).astype(np.float32), rng.random(3) < 0.1, \
            rng.random(3) < 0.1


def test_stores_what_sb3_stores_and_samples_what_sb3_would_for_the_same_indices():
    rng = np.random.default_rng(0)
    obs_dim, capacity = 5, 16
    ours = BatchedReplayBuffer([0, 1, 2], capacity, obs_dim)
    theirs = [ReplayBuffer(capacity, spaces.Box(-np.inf, np.inf, (obs_dim,)), spaces.Discrete(2),
                           handle_timeout_termination=True) for _ in range(3)]
    for obs, nxt, act, rew, term, trunc in _transitions(rng, 40, obs_dim):  # wraps around twice
        trunc &= ~term
        ours.add(torch.as_tensor(obs), torch.as_tensor(nxt), torch.as_tensor(act), torch.as_tensor(rew),
                 torch.as_tensor(term))
        for i, buf in enumerate(theirs):
            buf.add(obs[i:i + 1], nxt[i:i + 1], act[i:i + 1], rew[i:i + 1], (term | trunc)[i:i + 1],
                    [{"TimeLimit.truncated": bool(trunc[i])}])
    assert len(ours) == capacity and ours.added == 40
    for i, buf in enumerate(theirs):
        inds = np.arange(capacity)
        sb3 = buf._get_samples(inds)
        np.testing.assert_array_equal(ours.observations[i].numpy(), sb3.observations.numpy())
        np.testing.assert_array_equal(ours.next_observations[i].numpy(), sb3.next_observations.numpy())
        np.testing.assert_array_equal(ours.actions[i].numpy(), sb3.actions.numpy()[:, 0])
        np.testing.assert_array_equal(ours.rewards[i].numpy(), sb3.rewards.numpy()[:, 0])
        np.testing.assert_array_equal(ours.dones[i].numpy(), sb3.dones.numpy()[:, 0])  # timeouts not done


def test_samples_are_uniform_over_the_filled_part_and_per_seed():
    buf = BatchedReplayBuffer([3, 4], capacity=1000, obs_dim=1)
    for k in range(10):
        buf.add(torch.full((2, 1), float(k)), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2),
                torch.zeros(2, dtype=torch.bool))
    seen = torch.cat([buf.sample(500).observations[:, :, 0] for _ in range(10)], dim=1)
    assert set(seen.flatten().tolist()) == set(map(float, range(10)))  # only what was stored, all of it
    counts = torch.stack([torch.bincount(seen[i].long(), minlength=10) for i in range(2)]).double()
    assert float(((counts - 500) ** 2 / 500).sum(1).max()) < 40  # chi-square, 9 dof
    alone = BatchedReplayBuffer([4], capacity=1000, obs_dim=1)
    for k in range(10):
        alone.add(torch.full((1, 1), float(k)), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1),
                  torch.zeros(1, dtype=torch.bool))
    assert torch.equal(torch.cat([alone.sample(500).observations[0, :, 0] for _ in range(10)]), seen[1])


def test_state_round_trip_continues_the_same_samples():
    buf = BatchedReplayBuffer([0, 1], capacity=8, obs_dim=2)
    for k in range(5):
        buf.add(torch.full((2, 2), float(k)), torch.zeros(2, 2), torch.ones(2), torch.zeros(2),
                torch.zeros(2, dtype=torch.bool))
    buf.sample(3)
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in buf.state_dict().items()}
    expected = buf.sample(4).observations
    copy = BatchedReplayBuffer([0, 1], capacity=8, obs_dim=2)
    copy.load_state_dict(state)
    assert torch.equal(copy.sample(4).observations, expected) and len(copy) == 5


def test_members_with_their_own_capacity_store_and_sample_as_each_would_alone():
    """Issue 23: members of one batch may hold replay buffers of different sizes; each wraps at its own
    capacity and samples exactly what a buffer of that size alone samples (its own stream, its own fill)."""
    seeds, capacities = [5, 6, 7], [3, 8, 5]
    mixed = BatchedReplayBuffer(seeds, capacities, obs_dim=1)
    alone = [BatchedReplayBuffer([seed], cap, obs_dim=1) for seed, cap in zip(seeds, capacities, strict=True)]
    for k in range(11):  # wraps the 3- and 5-row members, not the 8-row one
        obs = torch.tensor([[10.0 * i + k] for i in range(3)])
        mixed.add(obs, obs + 0.5, torch.full((3,), k), torch.ones(3), torch.zeros(3, dtype=torch.bool))
        for i, buf in enumerate(alone):
            buf.add(obs[i : i + 1], obs[i : i + 1] + 0.5, torch.full((1,), k), torch.ones(1),
                    torch.zeros(1, dtype=torch.bool))
        if k in (1, 6, 10):
            got = mixed.sample(16)
            for i, buf in enumerate(alone):
                one = buf.sample(16)
                assert torch.equal(got.observations[i], one.observations[0])
                assert torch.equal(got.next_observations[i], one.next_observations[0])
    assert mixed.lengths.tolist() == [3, 8, 5]
    assert sorted(mixed.observations[0, :3, 0].tolist()) == [8.0, 9.0, 10.0]  # the newest 3 of member 0


def test_a_checkpoint_written_before_per_seed_capacities_loads():
    buf = BatchedReplayBuffer([0], capacity=4, obs_dim=1)
    state = buf.state_dict()
    del state["added"]
    state.update(pos=2, full=True)
    buf.load_state_dict(state)
    assert (len(buf), buf.added % buf.capacity) == (4, 2)
