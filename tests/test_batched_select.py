"""Members leaving a batch (``BatchedDQN.select``) and members with budgets of their own (per-member schedule
totals): a selected member goes on exactly where it stood, the same members in the same order continue bit
for bit, a subset continues as in the old batch up to float rounding, and each member explores on its own
schedule."""

from __future__ import annotations

import pytest
import torch

from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN, linear_schedule
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.nets.member_adam import MemberAdam

torch.set_num_threads(1)
NET = {"arch": "big", "router": "softmoe", "hidden": 16}
#: Random acting: a rounded argmax can then never fork two trajectories that should agree.
RANDOM = {"learning_starts": 100, "batch_size": 32, "exploration_initial_eps": 1.0, "exploration_final_eps": 1.0}


def _suites():
    return [TaskSuiteEnv("cartpole", "crl", block_steps=150),
            TaskSuiteEnv("cartpole", "crl", block_steps=90, order="reverse", max_episode_steps=70),
            TaskSuiteEnv("cartpole", "mtrl")]


def _state_equal(a: BatchedDQN, b: BatchedDQN) -> None:
    for x, y in zip(a.q_net.state_dict().values(), b.q_net.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    for key in ("observations", "actions", "rewards", "dones", "tasks"):
        assert torch.equal(getattr(a.buffer, key), getattr(b.buffer, key)), key
    assert all(torch.equal(v, b.env.state_dict()[k]) for k, v in a.env.state_dict().items() if k != "streams")


def test_the_same_members_in_the_same_order_continue_bit_for_bit():
    hps = [DQNHyperParams(learning_starts=100, batch_size=32),
           DQNHyperParams(learning_starts=100, batch_size=32, buffer_size=120, gamma=0.9),
           DQNHyperParams(learning_starts=100, batch_size=32, learning_rate=3e-4)]
    whole = BatchedDQN(_suites(), [1, 2, 3], NET, hps).learn(300)
    cut = BatchedDQN(_suites(), [1, 2, 3], NET, hps).learn(160)
    assert isinstance(cut.optimizer, MemberAdam)
    cut = cut.select([0, 1, 2]).learn(300)
    _state_equal(whole, cut)
    assert [a.tolist() for a in whole.log.td_loss] == [a.tolist() for a in cut.log.td_loss]


def test_a_member_taken_out_of_a_batch_goes_on_where_it_stood():
    hps = [DQNHyperParams(**RANDOM), DQNHyperParams(**RANDOM, buffer_size=120),
           DQNHyperParams(**RANDOM, learning_rate=3e-4, adam_eps=1e-6)]
    batch = BatchedDQN(_suites(), [4, 5, 6], NET, hps).learn(200)
    kept = batch.select([2, 0])
    assert kept.seeds == [6, 4] and kept.num_timesteps == 200 and kept.n_updates == batch.n_updates
    assert isinstance(kept.optimizer, MemberAdam)  # the two members' learning rates differ
    for new, old in ((0, 2), (1, 0)):  # right after select: the very same member
        for key, value in kept.q_net.state_dict_of(new).items():
            assert torch.equal(value, batch.q_net.state_dict_of(old)[key]), key
        assert int(kept.buffer.lengths[new]) == int(batch.buffer.lengths[old])
    assert torch.equal(kept._obs, batch._obs[[2, 0]])
    # both go on: the selected members' env steps, replay and streams stay exact, the weights agree up to
    # the rounding of another batch size
    batch.learn(320)
    kept.learn(320)
    for new, old in ((0, 2), (1, 0)):
        for key in ("observations", "actions", "rewards", "dones"):
            n = int(kept.buffer.lengths[new])
            assert torch.equal(getattr(kept.buffer, key)[new, :n], getattr(batch.buffer, key)[old, :n]), key
        for key, value in kept.q_net.state_dict_of(new).items():
            torch.testing.assert_close(value, batch.q_net.state_dict_of(old)[key], rtol=1e-5, atol=1e-6, msg=key)
    assert batch.num_seeds == 3  # the old engine is left as it was


def test_selecting_members_of_one_learning_rate_returns_to_torchs_fused_adam():
    hps = [DQNHyperParams(**RANDOM), DQNHyperParams(**RANDOM, learning_rate=3e-4), DQNHyperParams(**RANDOM)]
    batch = BatchedDQN(_suites(), [4, 5, 6], NET, hps).learn(200)
    kept = batch.select([0, 2])
    assert isinstance(kept.optimizer, torch.optim.Adam)
    batch.learn(280)
    kept.learn(280)
    for new, old in ((0, 0), (1, 2)):
        for key, value in kept.q_net.state_dict_of(new).items():
            torch.testing.assert_close(value, batch.q_net.state_dict_of(old)[key], rtol=1e-5, atol=1e-6, msg=key)


def test_each_member_explores_on_its_own_budget():
    hp = DQNHyperParams(learning_starts=50, exploration_initial_eps=1.0, exploration_final_eps=0.1,
                        exploration_fraction=0.5)
    batch = BatchedDQN(TaskSuiteEnv("cartpole", "crl", block_steps=100), [0, 1], {"arch": "dense", "hidden": 16}, hp)
    batch.learn(120, schedule_timesteps=[400, 1000])
    expected = [linear_schedule(1.0, 0.1, 0.5, 1 - 120 / total) for total in (400, 1000)]
    assert batch.exploration_rate.tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="one schedule total per member"):
        batch.learn(130, schedule_timesteps=[400])


@pytest.mark.parametrize("members", [[], [0, 0], [3], [-1]])
def test_bad_selections_are_refused(members):
    batch = BatchedDQN(TaskSuiteEnv("cartpole", "mtrl"), [0, 1, 2], {"arch": "dense", "hidden": 16})
    with pytest.raises(ValueError, match="distinct indices"):
        batch.select(members)
