"""The batched MoE-PPO engine (issue 26): seed i starts from the SB3 path's weights, one batched update on a
rollout is SB3's own ``MoEPPO.train`` on the same rollout and permutation, a seed runs the same alone or in
a batch, gradients reach actor, critic and routers, resume is exact, advance reads nothing on the host, and
dense PPO learns CartPole within a few thousand steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import Logger

import moerl  # noqa: F401  (registers the envs)
from moerl.core.errors import ConfigError
from moerl.rl.algos.ppo import PPOHyperParams
from moerl.rl.engine.batched_ppo import BatchedPPO, per_seed
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.sb3.moe_ppo import MoEPPO
from tests.test_engine_purity import no_host_reads

torch.set_num_threads(1)
CARTPOLE = "moerl/CartPole-MTRL-v0"
SMALL = {"n_envs": 2, "n_steps": 32, "n_epochs": 2, "n_minibatches": 2}
CONSTANT = {**SMALL, "anneal_lr": False}  # a one-rollout run anneals its only update to lr 0


def _sb3_model(seed: int, network: dict, hp: PPOHyperParams, shared: bool, env: str = CARTPOLE) -> MoEPPO:
    model = MoEPPO(env=env, n_envs=hp.n_envs, n_steps=hp.n_steps, n_epochs=hp.n_epochs,
                   n_minibatches=hp.n_minibatches, aux_loss_coef=hp.aux_loss_coef, clip_range_vf=hp.clip_range_vf,
                   anneal_clip=hp.anneal_clip, target_kl=hp.target_kl, learning_rate=hp.learning_rate, seed=seed, policy_kwargs={"network": network, "shared": shared})
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _weights(agent: BatchedPPO, i: int) -> dict[str, torch.Tensor]:
    """Seed i's weights under the SB3 policy's names (``ac.actor.*``, ``ac.critic.*``)."""
    out = {f"ac.actor.{k}": v for k, v in agent.actor.state_dict_of(i).items()}
    if agent.critic is not None:
        out.update({f"ac.critic.{k}": v for k, v in agent.critic.state_dict_of(i).items()})
    return out


def _fill(model: MoEPPO, rollout, i: int, gamma: float) -> None:
    """SB3's rollout buffer holding seed i's part of our rollout, as SB3's collect_rollouts would store it
    (a truncated step's reward bootstrapped with gamma * V(final obs)), with SB3's own GAE."""
    buf = model.rollout_buffer
    buf.reset()
    dones = rollout.dones[:, i].numpy().astype(np.float32)
    for t in range(rollout.obs.shape[0]):
        start = np.ones_like(dones[0]) if t == 0 else dones[t - 1]
        reward = (rollout.rewards[:, i] + gamma * rollout.truncated_values[:, i])[t].numpy()
        buf.add(rollout.obs[t, i].numpy(), rollout.actions[t, i].numpy()[:, None], reward, start,
                rollout.values[t, i].clone(), rollout.log_probs[t, i].clone())
    buf.compute_returns_and_advantage(rollout.last_values[i].clone(), dones[-1])


def _update_on_one_rollout(agent: BatchedPPO, hp: PPOHyperParams):
    """One rollout from a reset and one update of a run of four rollouts: ``(rollout, total env steps, the
    permutations the update drew, its diagnostics)`` (the permutations are drawn first and the stream rewound,
    so the update draws the same ones and SB3 can be given them)."""
    agent._obs = agent.env.reset().reshape(agent.num_seeds, hp.n_envs, -1)
    rollout = agent.collect()
    total = 4 * hp.n_envs * hp.n_steps
    counter = agent._permutations.counter
    order = agent.draw_permutations()
    agent._permutations.counter = counter
    agent.update(rollout, total)
    return rollout, total, order, agent.pop_log().updates[-1][1]


NETWORKS = [({"arch": "middle", "hidden": 32}, False, False),
            ({"arch": "big", "router": "topk", "topk": 1, "balance_loss": "importance", "hidden": 16}, False, False),
            ({"arch": "final", "router": "softmoe", "hidden": 16}, True, False),
            ({"arch": "dense", "hidden": 32}, False, True)]


@pytest.mark.parametrize("network, shared, anneal_clip", NETWORKS,
                         ids=["middle", "big-topk-aux", "final-softmoe-shared", "dense-anneal-clip"])
def test_one_batched_update_is_moeppos_update_on_the_same_rollout(network, shared, anneal_clip, monkeypatch):
    """The rollout is collected once (by the batched engine, with a truncation in it) and fed to both; SB3's
    ``RolloutBuffer.get`` gets the same per-seed permutation (numpy's global one, injected): the weights after
    the update (2 epochs x 2 minibatches: Adam's state matters) agree within float32 tolerance. With
    ``anneal_clip`` both clip at 0.2 x the progress left (0.15 after the first of four rollouts)."""
    suite = TaskSuiteEnv("cartpole", "mtrl", max_episode_steps=20)  # truncations inside a 32-step rollout
    hp = PPOHyperParams(**SMALL, aux_loss_coef=0.05, clip_range_vf=0.2, anneal_clip=anneal_clip).validate()
    seeds = [0, 3]
    agent = BatchedPPO(suite, seeds, network, hp, shared=shared)
    models = [_sb3_model(s, network, hp, shared) for s in seeds]
    for i, model in enumerate(models):  # the SB3 path builds seed i's weights: the same
        theirs = model.policy.state_dict()
        for key, value in _weights(agent, i).items():
            assert torch.equal(value, theirs[key]), key
    rollout, total, order, diag = _update_on_one_rollout(agent, hp)
    assert bool((rollout.truncated_values != 0).any())  # the bootstrap is exercised
    for i, model in enumerate(models):
        _fill(model, rollout, i, hp.gamma)
        perms = iter(order[i].numpy())
        monkeypatch.setattr(np.random, "permutation", lambda n, perms=perms: next(perms))
        model.num_timesteps = agent.num_timesteps
        model._current_progress_remaining = 1.0 - agent.num_timesteps / total
        before = {k: v.clone() for k, v in model.policy.state_dict().items()}
        model.train()
        after = model.policy.state_dict()
        ours = _weights(agent, i)
        for key, value in ours.items():
            torch.testing.assert_close(value, after[key], rtol=1e-5, atol=1e-6, msg=key)
        assert max((after[k] - before[k]).abs().max().item() for k in ours) > 1e-4  # the update moved them
        sb3 = model.logger.name_to_value
        assert diag["value_loss"][i] == pytest.approx(sb3["train/value_loss"], rel=1e-4)
        assert diag["clip_fraction"][i] == pytest.approx(sb3["train/clip_fraction"], abs=1e-6)
        assert diag["clip_range"][i] == pytest.approx(sb3["train/clip_range"], rel=1e-6)
        assert sb3["train/clip_range"] == pytest.approx(0.15 if anneal_clip else 0.2)
        assert diag["explained_variance"][i] == pytest.approx(sb3["train/explained_variance"], rel=1e-4, abs=1e-5)
        if network.get("balance_loss"):
            assert diag["aux_loss"][i] == pytest.approx(sb3["train/aux_loss"], rel=1e-4)



def test_target_kl_stops_each_seed_as_sb3_does(monkeypatch):
    """``target_kl`` per seed: three seeds of one batch stop after different numbers of epochs (SB3 counts 1, 2
    and 1 of 3 here: lr 0.01 makes the KL grow within an update), and each seed's weights, approximate KL
    (mean over its last epoch) and loss diagnostics (over the minibatches it computed) are SB3's."""
    suite = TaskSuiteEnv("cartpole", "mtrl", max_episode_steps=20)
    hp = PPOHyperParams(**{**SMALL, "n_epochs": 3}, learning_rate=0.01, target_kl=1e-4).validate()
    seeds, network = [0, 3, 5], {"arch": "middle", "hidden": 32}
    agent = BatchedPPO(suite, seeds, network, hp)
    models = [_sb3_model(s, network, hp, False) for s in seeds]
    rollout, total, order, diag = _update_on_one_rollout(agent, hp)
    epochs = []
    for i, model in enumerate(models):
        _fill(model, rollout, i, hp.gamma)
        perms = iter(order[i].numpy())
        monkeypatch.setattr(np.random, "permutation", lambda n, perms=perms: next(perms))
        model.num_timesteps = agent.num_timesteps
        model._current_progress_remaining = 1.0 - agent.num_timesteps / total
        model.train()
        epochs.append(model._n_updates)
        after = model.policy.state_dict()
        for key, value in _weights(agent, i).items():
            torch.testing.assert_close(value, after[key], rtol=1e-5, atol=1e-6, msg=key)
        sb3 = model.logger.name_to_value
        assert diag["approx_kl"][i] == pytest.approx(sb3["train/approx_kl"], rel=1e-4)
        assert diag["value_loss"][i] == pytest.approx(sb3["train/value_loss"], rel=1e-4)
        assert diag["clip_fraction"][i] == pytest.approx(sb3["train/clip_fraction"], abs=1e-6)
    assert epochs == [1, 2, 1]  # the seeds stopped apart, all before the last epoch

def test_flattening_follows_sb3s_environment_major_order():
    x = torch.arange(3 * 2 * 4).reshape(3, 2, 4)  # (T, S, N)
    flat = per_seed(x)
    assert flat.shape == (2, 12) and flat[1, 2 * 3 + 1] == x[1, 1, 2]  # index n * T + t


def test_a_seed_runs_the_same_beside_any_neighbour_and_alone_within_rounding():
    """Bitwise in the same slot of a batch of the same size, beside another seed, and on a repeat; alone
    (other kernel shapes) within float32 tolerance over one rollout and update."""
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=100)
    net, hp = {"arch": "big", "router": "softmoe", "hidden": 16}, dict(CONSTANT)
    pair = BatchedPPO(suite, [4, 9], net, hp).learn(384)
    again = BatchedPPO(suite, [4, 9], net, hp).learn(384)
    other = BatchedPPO(suite, [7, 9], net, hp).learn(384)
    for key, value in pair.actor.state_dict_of(1).items():
        assert torch.equal(value, again.actor.state_dict_of(1)[key]), key
        assert torch.equal(value, other.actor.state_dict_of(1)[key]), key
    for key, value in pair.critic.state_dict_of(1).items():
        assert torch.equal(value, other.critic.state_dict_of(1)[key]), key
    short_pair = BatchedPPO(suite, [4, 9], net, hp).learn(64)
    alone = BatchedPPO(suite, [9], net, hp).learn(64)
    start = BatchedPPO(suite, [9], net, hp).actor.state_dict_of(0)
    for key, value in short_pair.actor.state_dict_of(1).items():
        torch.testing.assert_close(value, alone.actor.state_dict_of(0)[key], rtol=1e-5, atol=1e-6, msg=key)
        assert not torch.equal(value, start[key]), key
    ep_pair, ep_alone = short_pair.log.finished(1), alone.log.finished(0)
    np.testing.assert_array_equal(ep_pair["return"], ep_alone["return"])


@pytest.mark.parametrize("shared", [False, True])
def test_gradients_reach_actor_critic_and_routers(shared):
    agent = BatchedPPO(TaskSuiteEnv("cartpole", "mtrl"), [0, 1], {"arch": "big", "router": "softmoe", "hidden": 16},
                       CONSTANT, shared=shared)
    before = [p.detach().clone() for p in agent.parameters()]
    agent.learn(64)
    names = [n for n, _ in agent.actor.named_parameters()] + (
        [] if agent.critic is None else [f"critic.{n}" for n, _ in agent.critic.named_parameters()])
    assert any("router" in n or "gate" in n for n in names)
    for name, old, new in zip(names, before, agent.parameters(), strict=True):
        for i in range(2):  # every tensor of every seed moved: actor, critic (or the shared head), routers
            assert not torch.equal(old[i], new[i]), (name, i)


def test_resumed_equals_uninterrupted_bit_for_bit():
    suite = TaskSuiteEnv("classic", "crl", block_steps=64)
    net = {"arch": "middle", "router": "topk", "topk": 1, "balance_loss": "importance", "hidden": 16}
    hp = {**SMALL, "aux_loss_coef": 0.1}
    whole = BatchedPPO(suite, [0, 1, 2], net, hp, metrics_interval=64).learn(512)
    first = BatchedPPO(suite, [0, 1, 2], net, hp, metrics_interval=64).learn(256, schedule_timesteps=512)
    state = first.state_dict()
    resumed = BatchedPPO(suite, [0, 1, 2], net, hp, metrics_interval=64)
    resumed.load_state_dict(state)
    resumed.learn(512)
    for a, b in ((whole.actor, resumed.actor), (whole.critic, resumed.critic)):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), key
    ours, theirs = whole.pop_log(), resumed.pop_log()
    assert len(ours.updates) == len(theirs.updates) == 8 and len(ours.metrics) == len(theirs.metrics) > 0
    for (s1, d1), (s2, d2) in zip(ours.updates, theirs.updates, strict=True):
        assert s1 == s2 and all(np.array_equal(d1[k], d2[k], equal_nan=True) for k in d1)
    assert len(ours.episodes) == len(theirs.episodes) > 0


@pytest.mark.parametrize("arch, router", [("dense", None), ("big", "topk")])
def test_advance_reads_nothing_on_the_host_and_logs_as_learn(arch, router):
    network = {"arch": arch, "hidden": 8, **({"router": router, "balance_loss": "importance"} if router else {})}
    suite = TaskSuiteEnv("classic", "crl", block_steps=48)

    def make() -> BatchedPPO:
        return BatchedPPO(suite, [0, 1], network, {**SMALL, "aux_loss_coef": 0.1}, metrics_interval=64)

    with no_host_reads():
        with pytest.raises(AssertionError, match="host read"):
            bool(torch.ones(1))
        chunked = make().advance(256)
    assert chunked._pending.updates and chunked._pending.episodes and chunked._pending.metrics
    log, reference = chunked.pop_log(), make().learn(256).pop_log()
    assert len(log.episodes) == len(reference.episodes) > 0
    for ours, theirs in zip(log.updates, reference.updates, strict=True):
        assert all(np.array_equal(ours[1][k], theirs[1][k], equal_nan=True) for k in ours[1])


def test_invalid_actions_are_never_taken_and_evaluation_is_per_task():
    suite = TaskSuiteEnv("classic", "mtrl")  # CartPole tasks lack MountainCar's third action
    agent = BatchedPPO(suite, [0, 1], {"arch": "big", "router": "hardcoded", "experts": 8, "hidden": 16}, SMALL)
    agent._obs = agent.env.reset().reshape(2, SMALL["n_envs"], -1)
    rollout = agent.collect()
    valid = agent.encoder.valid_actions[rollout.tasks]
    assert (~valid).any() and valid.gather(-1, rollout.actions[..., None]).all()
    assert torch.isfinite(rollout.log_probs).all()
    returns = agent.evaluate(suite, 2, seed=0, tasks=[0, 4])
    assert returns.shape == (2, 2, 2)
    greedy = agent.predict(rollout.obs[0])
    assert greedy.shape == (2, SMALL["n_envs"])


def test_bad_settings_are_refused_in_one_line():
    suite = TaskSuiteEnv("cartpole", "mtrl")
    with pytest.raises(ConfigError, match="ppo.n_minibatches"):
        BatchedPPO(suite, [0], None, {"n_minibatches": 3})
    with pytest.raises(ConfigError, match="must share ppo.n_steps"):
        BatchedPPO(suite, [0, 1], None, [{"n_steps": 32}, {"n_steps": 64}])
    with pytest.raises(ConfigError, match="BatchedPPO runs moerl's task suites"):
        BatchedPPO(object(), [0])


def test_members_with_their_own_learning_rate_and_gamma():
    suite = TaskSuiteEnv("cartpole", "mtrl")
    a, b = dict(SMALL), {**SMALL, "learning_rate": 1e-3, "gamma": 0.9, "adam_eps": 1e-6}
    mixed = BatchedPPO([suite, suite], [4, 9], {"arch": "dense", "hidden": 16}, [a, b]).learn(128)
    own_b = BatchedPPO(suite, [9], {"arch": "dense", "hidden": 16}, b).learn(128)
    for key, value in mixed.actor.state_dict_of(1).items():
        torch.testing.assert_close(value, own_b.actor.state_dict_of(0)[key], rtol=1e-5, atol=1e-6, msg=key)
    lrs = mixed.log.updates[0][1]["learning_rate"]
    assert lrs[1] == pytest.approx(4 * lrs[0])


def test_a_minatar_suite_runs_a_few_rollouts_with_the_conv_torso():
    from moerl.rl.envs.minatar_suite import MinAtarSuiteEnv

    suite = MinAtarSuiteEnv(["breakout", "space_invaders"], "mtrl")
    agent = BatchedPPO(suite, [0, 1], {"arch": "big", "router": "softmoe", "torso": "conv", "hidden": 16},
                       {"n_envs": 2, "n_steps": 16, "n_epochs": 1, "n_minibatches": 2}, metrics_interval=32)
    agent.learn(96)
    log = agent.pop_log()
    assert agent.num_timesteps == 96 and len(log.updates) == 3
    assert all(np.isfinite(d["value_loss"]).all() for _, d in log.updates)
    assert any(k.startswith("critic/router/big") for k in log.metrics[0][1])
    assert agent.evaluate(suite, 1, seed=0, tasks=[0, 1]).shape == (2, 2, 1)


def test_dense_ppo_improves_its_training_return_on_cartpole_mtrl():
    """4 seeds x 8,192 env steps (4 envs x 128 steps, PureJaxRL's layout) on moerl/CartPole-MTRL-v0's suite at
    learning rate 3e-3 (annealed): the mean return of each seed's last 20 training episodes over its first 20.
    Measured 3.6, 4.2 and 4.5 for seeds 0-3, 4-7 and 8-11; asserted > 2. (At the default 2.5e-4 neither
    engine improves within 12k steps: 1.05-1.15 here, MoEPPO the same.)"""
    agent = BatchedPPO(TaskSuiteEnv("cartpole", "mtrl"), [0, 1, 2, 3], {"arch": "dense"},
                       {"learning_rate": 3e-3}).learn(8192)
    log = agent.pop_log()
    first = [log.finished(i)["return"][:20].mean() for i in range(4)]
    last = [log.finished(i)["return"][-20:].mean() for i in range(4)]
    assert np.mean(last) > 2 * np.mean(first), (first, last)
