"""The batched MoE-DQN engine: seed i starts from the SB3 path's weights, one batched update is S updates of
SB3's own ``MoEDQN.train`` on the same minibatches, a seed runs the same alone or in a batch, runs are
deterministic, and 16 seeds learn CartPole within 5k steps on either engine."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from moerl import MoEDQN
from moerl.core.errors import ConfigError
from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.engine.batched_dqn import BatchedDQN, linear_schedule
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.experiment import DQNRunConfig, build_model, validate

torch.set_num_threads(1)
NETWORKS = [
    {"arch": "dense"},
    {"arch": "big", "router": "softmoe", "hidden": 16},
    {"arch": "middle", "router": "topk", "hidden": 16, "balance_loss": "importance"},
    {"arch": "all", "router": "hardcoded", "hidden": 16, "experts": 8},
]


def _sb3(suite: TaskSuiteEnv, network: dict, seed: int, hp: DQNHyperParams) -> MoEDQN:
    cfg = DQNRunConfig(env="moerl/ClassicControl-MTRL-v0", seed=seed, device="cpu")
    cfg.dqn = hp
    for key, value in network.items():
        setattr(cfg.network, key, value)
    return build_model(validate(cfg), suite)


@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: "-".join(map(str, n.values())))
def test_one_batched_update_is_sb3s_update_for_every_seed(network):
    """Same starting weights, same minibatch: the batched update equals MoEDQN.train seed by seed (Adam,
    clipping, masks, aux loss included), over three updates so that Adam's state matters."""
    suite = TaskSuiteEnv("classic", "mtrl")
    hp = DQNHyperParams(max_grad_norm=0.5, aux_loss_coef=0.1)
    seeds = [0, 1, 2]
    agent = BatchedDQN(suite, seeds, network, hp)
    agent.learn(hp.learning_starts)  # fill the buffers with warm-up transitions, no update yet
    models = [_sb3(suite, network, s, hp) for s in seeds]
    for model in models:
        model.set_logger(configure(None, []))  # train() records its losses
    for i, model in enumerate(models):  # the SB3 path builds seed i's weights: the same
        for key, value in model.policy.q_net.q_net.state_dict().items():
            assert torch.equal(value, agent.q_net.state_dict_of(i)[key]), key
    for _ in range(3):
        batch = agent.buffer.sample(hp.batch_size)
        agent.buffer._streams.counter -= hp.batch_size  # train() draws this very minibatch again
        agent.train(1)
        for i, model in enumerate(models):
            samples = ReplayBufferSamples(batch.observations[i], batch.actions[i][:, None],
                                          batch.next_observations[i], batch.dones[i][:, None],
                                          batch.rewards[i][:, None], None)
            model.replay_buffer.sample = lambda *a, s=samples, **k: s  # SB3's own train() on our minibatch
            model.train(gradient_steps=1, batch_size=hp.batch_size)
    for i, model in enumerate(models):
        theirs = model.policy.q_net.q_net.state_dict()
        ours = agent.q_net.state_dict_of(i)
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_seed_runs_the_same_beside_any_neighbour_and_runs_are_deterministic():
    """Bit-equality where the computation is the same: seed 9 in the same slot of a batch of the same size,
    beside another seed, and a repeat. A batch of another size runs other kernel shapes (AVX-512/AMX BLAS
    picks kernels by shape), so seed 9 alone is compared within float32 tolerance over a short run whose
    acting is still random (no argmax over rounded Q-values can flip a trajectory)."""
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=300)
    hp = DQNHyperParams(learning_starts=200, batch_size=32)
    net = {"arch": "dense", "hidden": 32}
    pair = BatchedDQN(suite, [4, 9], net, hp).learn(900)
    again = BatchedDQN(suite, [4, 9], net, hp).learn(900)
    other_neighbour = BatchedDQN(suite, [7, 9], net, hp).learn(900)
    for key, value in pair.q_net.state_dict_of(1).items():
        assert torch.equal(value, again.q_net.state_dict_of(1)[key]), key
        assert torch.equal(value, other_neighbour.q_net.state_dict_of(1)[key]), key
    assert not torch.equal(pair.q_net.state_dict_of(0)["layers.0.linear.weight"],
                           pair.q_net.state_dict_of(1)["layers.0.linear.weight"])
    random_acting = DQNHyperParams(learning_starts=200, batch_size=32, exploration_final_eps=1.0,
                                   exploration_initial_eps=1.0)
    short_pair = BatchedDQN(suite, [4, 9], net, random_acting).learn(400)
    short_alone = BatchedDQN(suite, [9], net, random_acting).learn(400)
    start = BatchedDQN(suite, [9], net, random_acting).q_net.state_dict_of(0)
    for key, value in short_pair.q_net.state_dict_of(1).items():
        torch.testing.assert_close(value, short_alone.q_net.state_dict_of(0)[key], rtol=1e-5, atol=1e-6, msg=key)
        assert not torch.equal(value, start[key]), key  # 50 updates moved every tensor: the check can fail


def test_a_member_with_its_own_settings_trains_as_in_a_batch_of_its_own_config():
    """Issue 23: members of one batch may differ in env setting, replay capacity, discount and exploration.
    A member trains bit for bit as it does beside a seed of its own config in a batch of the same size (the
    same shapes, so the same kernels): the per-member tensors compute what the shared floats compute."""
    net = {"arch": "dense", "hidden": 32}
    a_suite, a_hp = TaskSuiteEnv("cartpole", "crl", block_steps=300), DQNHyperParams(learning_starts=200, batch_size=32)
    b_suite = TaskSuiteEnv("cartpole", "crl", block_steps=120, order="reverse", max_episode_steps=60)
    b_hp = DQNHyperParams(learning_starts=200, batch_size=32, buffer_size=250, gamma=0.9,
                          exploration_initial_eps=0.6, exploration_final_eps=0.05, exploration_fraction=0.5)
    mixed = BatchedDQN([a_suite, b_suite], [4, 9], net, [a_hp, b_hp]).learn(900)
    only_a = BatchedDQN(a_suite, [4, 7], net, a_hp).learn(900)
    only_b = BatchedDQN(b_suite, [3, 9], net, b_hp).learn(900)
    assert mixed.buffer.lengths.tolist() == [300, 250]
    for member, alone, slot in ((0, only_a, 0), (1, only_b, 1)):
        for key, value in mixed.q_net.state_dict_of(member).items():
            assert torch.equal(value, alone.q_net.state_dict_of(slot)[key]), (member, key)
    assert not torch.equal(mixed.q_net.state_dict_of(0)["layers.0.linear.weight"],
                           mixed.q_net.state_dict_of(1)["layers.0.linear.weight"])
    returns = mixed.evaluate([a_suite, b_suite], episodes=2, seed=5)
    assert returns.shape == (2, 2) and float(returns[1].max()) <= 60  # member b's own episode limit
    with pytest.raises(ConfigError, match="must share dqn.batch_size"):
        BatchedDQN([a_suite, b_suite], [4, 9], net, [a_hp, DQNHyperParams(learning_starts=200, batch_size=64)])
    BatchedDQN([a_suite, b_suite], [4, 4], net, [a_hp, b_hp])  # one seed in two configs: two runs
    with pytest.raises(ConfigError, match="the same run"):
        BatchedDQN([a_suite, a_suite], [4, 4], net, [a_hp, a_hp])


def test_members_with_their_own_learning_rate_and_epsilon_train_as_with_torchs_adam():
    """Per-member learning rates and Adam epsilons (issue 23): our member Adam computes torch's Adam update for
    each member, so a member trains as in a batch of its own config (torch's fused Adam) up to float32
    rounding; acting stays random so that no rounded argmax can fork the trajectories."""
    suite, net = TaskSuiteEnv("cartpole", "crl", block_steps=300), {"arch": "dense", "hidden": 32}
    random = {"learning_starts": 200, "batch_size": 32, "exploration_initial_eps": 1.0, "exploration_final_eps": 1.0}
    a_hp, b_hp = DQNHyperParams(**random), DQNHyperParams(**random, learning_rate=3e-4, adam_eps=1e-6)
    mixed = BatchedDQN(suite, [4, 9], net, [a_hp, b_hp])
    start = [mixed.q_net.state_dict_of(i) for i in range(2)]
    mixed.learn(500)
    own = [BatchedDQN(suite, [4, 7], net, a_hp).learn(500), BatchedDQN(suite, [3, 9], net, b_hp).learn(500)]
    for member, alone in enumerate(own):
        for key, value in mixed.q_net.state_dict_of(member).items():
            torch.testing.assert_close(value, alone.q_net.state_dict_of(member)[key], rtol=1e-5, atol=1e-6, msg=key)
            assert not torch.equal(value, start[member][key]), key  # 75 updates moved every tensor


def test_member_adam_leaves_a_member_with_learning_rate_zero_exactly_as_it_was():
    from moerl.rl.nets.member_adam import MemberAdam

    weight = torch.nn.Parameter(torch.randn(2, 3, 4))
    before = weight.detach().clone()
    opt = MemberAdam([weight], lr=torch.tensor([1e-2, 0.0]), eps=torch.tensor([1e-8, 1e-8]))
    for _ in range(5):
        opt.zero_grad()
        (weight ** 2).sum().backward()
        opt.step()
    assert torch.equal(weight[1], before[1]) and not torch.equal(weight[0], before[0])



def test_masked_member_adam_skips_left_out_members_and_otherwise_is_member_adam():
    """MaskedMemberAdam (PPO's target_kl): unmasked it is MemberAdam bit for bit; a member left out of a step
    keeps weights and moments exactly, and its later steps are bias-corrected by its own count (a member that
    skipped two of five steps ends as one that took three)."""
    from moerl.rl.nets.member_adam import MaskedMemberAdam, MemberAdam

    torch.manual_seed(0)
    start, grads = torch.randn(3, 5, 4), [torch.randn(3, 5, 4) for _ in range(5)]
    lr, eps = torch.tensor([1e-2, 2e-3, 5e-3]), torch.tensor([1e-5, 1e-8, 1e-5])
    plain, masked = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    a, b = MemberAdam([plain], lr, eps), MaskedMemberAdam([masked], lr, eps)
    for g in grads:
        plain.grad, masked.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert torch.equal(plain, masked)
    skipping = torch.nn.Parameter(start.clone())
    c = MaskedMemberAdam([skipping], lr, eps)
    own = torch.nn.Parameter(start[1:2].clone())  # member 1 alone, given only the steps it takes
    d = MaskedMemberAdam([own], lr[1:2], eps[1:2])
    for step, g in enumerate(grads):
        active = torch.tensor([True, step not in (1, 3), True])
        skipping.grad = g.clone()
        held = skipping.detach()[1].clone()
        c.step(active=active)
        if step in (1, 3):
            assert torch.equal(skipping.detach()[1], held)
        else:
            own.grad = g[1:2].clone()
            d.step()
    assert torch.equal(skipping.detach()[1], own.detach()[0]) and c.state[skipping]["step"].tolist() == [5, 3, 5]
    assert torch.equal(skipping.detach()[0], plain.detach()[0])

def test_exploration_follows_sb3s_linear_schedule():
    from stable_baselines3.common.utils import LinearSchedule

    fn = LinearSchedule(1.0, 0.05, 0.1)  # what SB3's DQN builds for its exploration rate
    for progress in (1.0, 0.97, 0.93, 0.9, 0.5, 0.0):
        assert linear_schedule(1.0, 0.05, 0.1, progress) == pytest.approx(fn(progress))


RANDOM_RETURN = 22.0  # random play on CartPole-v1


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["batched", "sb3"])
def test_sixteen_seeds_learn_cartpole_on_both_engines(engine):
    """16 seeds x 5k env steps of dense DQN on CartPole-v1 (the suite's stock task without a one-hot):
    the median over seeds of the greedy return (3 episodes each) is well above random play on both engines."""
    suite = TaskSuiteEnv(["cartpole-default"], "mtrl", task_onehot=False)
    if engine == "batched":
        agent = BatchedDQN(suite, range(16), {"arch": "dense"}).learn(5000)
        per_seed = np.median(agent.evaluate(suite, episodes=3, seed=100), axis=1).tolist()
    else:
        from stable_baselines3.common.evaluation import evaluate_policy

        per_seed = []
        for seed in range(16):
            cfg = DQNRunConfig(env="CartPole-v1", seed=seed, device="cpu")
            model = build_model(validate(cfg), TaskSuiteEnv(["cartpole-default"], "mtrl", task_onehot=False))
            model.learn(5000)
            returns, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=3, return_episode_rewards=True)
            per_seed.append(float(np.median(returns)))
    assert statistics.median(per_seed) > 4 * RANDOM_RETURN, per_seed


def test_a_hardcoded_router_that_the_suite_cannot_feed_is_refused_in_one_line():
    from moerl.core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs one expert per task: env .* has 4 tasks but --experts is 3"):
        BatchedDQN(TaskSuiteEnv("cartpole", "mtrl"), [0], {"arch": "big", "router": "hardcoded", "experts": 3})
    with pytest.raises(ConfigError, match="routes by task id, but env .* has no task one-hot"):
        BatchedDQN(TaskSuiteEnv("cartpole", "mtrl", task_onehot=False), [0], {"arch": "big", "router": "hardcoded"})


@pytest.mark.parametrize("engine", ["dqn", "ppo"])
def test_the_batched_engines_flush_denormals_on_the_cpu(engine):
    """A batched engine on the CPU flushes denormal floats to zero on its thread (moerl.core.denormals: Adam's
    decayed moments otherwise run a slow path); without it a denormal survives a multiplication by one."""
    from moerl.rl.engine.batched_ppo import BatchedPPO

    tiny = torch.tensor([1e-39], dtype=torch.float64)
    if not torch.set_flush_denormal(False):  # False: this CPU has no FTZ/DAZ (not x86 with SSE3)
        pytest.skip("this CPU cannot flush denormals (torch.set_flush_denormal is x86-only)")
    try:
        assert (tiny.float() * 1.0).item() != 0.0  # x86's default: denormals kept
        suite = TaskSuiteEnv("cartpole", "mtrl")
        (BatchedDQN if engine == "dqn" else BatchedPPO)(suite, [0, 1], {"arch": "dense", "hidden": 8})
        assert (tiny.float() * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
