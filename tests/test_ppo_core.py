"""MoE PPO's core (issue 26): GAE and the loss against SB3's definitions, the actor-critic network, and MoEPPO.

Real SB3 objects (its ``RolloutBuffer``, its ``PPO.train``) and real moerl envs throughout; no mocks.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger

import moerl  # noqa: F401  (registers the envs)
from moerl.core.errors import ConfigError
from moerl.rl.algos.ppo import PPOHyperParams, gae, ppo_loss
from moerl.rl.evaluation import evaluate_tasks, task_env_factories
from moerl.rl.nets.actor_critic import MoEActorCritic
from moerl.rl.nets.encoder import MoENetworkConfig
from moerl.rl.nets.obs_layout import layout_for_env
from moerl.rl.sb3.moe_ppo import MoEPPO
from moerl.rl.sb3.ppo_policy import MoEActorCriticPolicy

CARTPOLE = "moerl/CartPole-MTRL-v0"
MIXED = "moerl/ClassicControl-MTRL-v0"  # CartPole tasks lack MountainCar's third action


# --- GAE ---------------------------------------------------------------------------------------------

def _sb3_gae(rewards, values, dones, last_values, last_dones, gamma, lam):
    """SB3's ``RolloutBuffer.compute_returns_and_advantage`` on one seed's (T, N) data."""
    t_len, n = rewards.shape
    buf = RolloutBuffer(t_len, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), device="cpu",
                        gamma=gamma, gae_lambda=lam, n_envs=n)
    starts = np.concatenate([np.ones((1, n), np.float32), dones[:-1]])  # a step after a done starts an episode
    for t in range(t_len):
        buf.add(np.zeros((n, 1), np.float32), np.zeros((n, 1)), rewards[t], starts[t],
                torch.as_tensor(values[t]), torch.zeros(n))
    buf.compute_returns_and_advantage(torch.as_tensor(last_values), last_dones)
    return buf.advantages, buf.returns


def test_gae_equals_sb3_rollout_buffer_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    t_len, s, n, gamma, lam = 24, 3, 4, 0.99, 0.95
    rewards = rng.normal(size=(t_len, s, n)).astype(np.float32)
    values = rng.normal(size=(t_len, s, n)).astype(np.float32)
    dones = (rng.random((t_len, s, n)) < 0.2).astype(np.float32)
    truncated = dones * (rng.random((t_len, s, n)) < 0.5)
    final_values = (rng.normal(size=(t_len, s, n)) * truncated).astype(np.float32)  # V(final obs), truncations only
    last_values = rng.normal(size=(s, n)).astype(np.float32)
    adv, ret = gae(torch.as_tensor(rewards), torch.as_tensor(values), torch.as_tensor(dones),
                   torch.as_tensor(last_values), gamma, lam, truncated_values=torch.as_tensor(final_values))
    assert adv.shape == ret.shape == (t_len, s, n)
    for i in range(s):
        # SB3's collect_rollouts adds gamma * V(terminal obs) to a truncated step's reward, then it is done
        sb3_adv, sb3_ret = _sb3_gae(rewards[:, i] + gamma * final_values[:, i], values[:, i], dones[:, i],
                                    last_values[i], dones[-1, i], gamma, lam)
        np.testing.assert_allclose(adv[:, i].numpy(), sb3_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret[:, i].numpy(), sb3_ret, rtol=1e-5, atol=1e-5)


def test_gae_does_not_bootstrap_across_a_termination():
    rewards = torch.tensor([[[1.0]], [[1.0]]])
    values = torch.tensor([[[0.5]], [[7.0]]])
    dones = torch.tensor([[[1.0]], [[0.0]]])
    adv, _ = gae(rewards, values, dones, torch.tensor([[3.0]]), gamma=0.9, gae_lambda=1.0)
    assert adv[0, 0, 0].item() == pytest.approx(1.0 - 0.5)  # the next episode's value does not leak in
    assert adv[1, 0, 0].item() == pytest.approx(1.0 + 0.9 * 3.0 - 7.0)


# --- the loss ----------------------------------------------------------------------------------------

def _batch(s: int, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(s, b, generator=g) - 0.1
    return {
        "log_prob": old + 0.3 * torch.randn(s, b, generator=g),  # ratios well outside the clip range too
        "old_log_prob": old,
        "advantages": torch.randn(s, b, generator=g) * 2 + 0.5,
        "values": torch.randn(s, b, generator=g),
        "old_values": torch.randn(s, b, generator=g),
        "returns": torch.randn(s, b, generator=g),
        "entropy": torch.rand(s, b, generator=g),
    }


def _sb3_formula(d: dict[str, torch.Tensor], clip: float, ent: float, vf: float, clip_vf: float | None):
    """SB3's ``PPO.train`` minibatch loss, as its source writes it (one seed, 1-D tensors)."""
    adv = d["advantages"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = torch.exp(d["log_prob"] - d["old_log_prob"])
    policy_loss = -torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    values_pred = d["values"] if clip_vf is None else d["old_values"] + torch.clamp(
        d["values"] - d["old_values"], -clip_vf, clip_vf)
    value_loss = F.mse_loss(d["returns"], values_pred)
    entropy_loss = -torch.mean(d["entropy"])
    log_ratio = d["log_prob"] - d["old_log_prob"]
    kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio)
    clip_fraction = torch.mean((torch.abs(ratio - 1) > clip).float())
    return policy_loss + ent * entropy_loss + vf * value_loss, policy_loss, value_loss, kl, clip_fraction


@pytest.mark.parametrize("clip_vf", [None, 0.1])
def test_ppo_loss_at_one_seed_equals_sb3_formula(clip_vf):
    d = _batch(1, 128)
    loss, diag = ppo_loss(**d, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, clip_range_vf=clip_vf)
    ref, pg, vl, kl, cf = _sb3_formula({k: v[0] for k, v in d.items()}, 0.2, 0.01, 0.5, clip_vf)
    assert loss.shape == (1,)
    torch.testing.assert_close(loss[0], ref)
    torch.testing.assert_close(diag["policy_loss"][0], pg)
    torch.testing.assert_close(diag["value_loss"][0], vl)
    torch.testing.assert_close(diag["approx_kl"][0], kl)
    torch.testing.assert_close(diag["clip_fraction"][0], cf)
    assert 0 < cf.item() < 1  # the batch exercises the clip


def test_ppo_loss_max_value_clip_is_the_pessimistic_form():
    d = _batch(1, 64, seed=3)
    _, diag = ppo_loss(**d, clip_range=0.2, ent_coef=0.0, vf_coef=1.0, clip_range_vf=0.2, value_clip="max")
    clipped = d["old_values"] + (d["values"] - d["old_values"]).clamp(-0.2, 0.2)
    want = torch.max((d["returns"] - d["values"]) ** 2, (d["returns"] - clipped) ** 2).mean()
    torch.testing.assert_close(diag["value_loss"][0], want)


def test_seed_stacked_ppo_loss_equals_one_call_per_seed():
    d = _batch(3, 96, seed=1)
    aux = torch.rand(3, requires_grad=True)
    kw = dict(clip_range=0.2, ent_coef=0.01, vf_coef=0.5, clip_range_vf=0.3, value_clip="max", aux_loss_coef=0.01)
    leaves = {k: v.clone().requires_grad_(True) for k, v in d.items()}
    loss, diag = ppo_loss(**leaves, aux_loss=aux, **kw)
    loss.sum().backward()
    for i in range(3):
        one = {k: v[i : i + 1].clone().requires_grad_(True) for k, v in d.items()}
        aux_i = aux.detach()[i : i + 1].clone().requires_grad_(True)
        loss_i, diag_i = ppo_loss(**one, aux_loss=aux_i, **kw)
        loss_i.sum().backward()
        torch.testing.assert_close(loss[i : i + 1], loss_i)
        for key in diag:
            torch.testing.assert_close(diag[key][i : i + 1], diag_i[key])
        for key in d:  # each seed's gradients are those of its own loss
            torch.testing.assert_close(leaves[key].grad[i : i + 1], one[key].grad)
        torch.testing.assert_close(aux.grad[i : i + 1], aux_i.grad)


def test_hyperparams_defaults_and_validation():
    hp = PPOHyperParams().validate()
    assert (hp.learning_rate, hp.n_envs, hp.n_steps, hp.n_epochs, hp.n_minibatches) == (2.5e-4, 4, 128, 4, 4)
    assert (hp.gamma, hp.gae_lambda, hp.clip_range, hp.ent_coef, hp.vf_coef, hp.max_grad_norm) == (
        0.99, 0.95, 0.2, 0.01, 0.5, 0.5)
    assert hp.normalize_advantage and hp.batch_size == 128
    with pytest.raises(ConfigError, match="ppo.n_minibatches"):
        PPOHyperParams(n_minibatches=3).validate()
    with pytest.raises(ConfigError, match="value clipping"):
        PPOHyperParams(value_clip="nope").validate()
    with pytest.raises(ConfigError, match="ppo.gamma"):
        MoEPPO(env=CARTPOLE, gamma=1.5)


# --- the network -------------------------------------------------------------------------------------

def _obs(env_id: str, n: int, seed: int = 0) -> np.ndarray:
    env = gym.make(env_id)
    rows, (obs, _) = [], env.reset(seed=seed)
    for _ in range(n):
        rows.append(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    return np.stack(rows)


def _net(env_id: str, shared: bool = False, **network) -> MoEActorCritic:
    env = gym.make(env_id)
    return MoEActorCritic(layout_for_env(env), int(env.action_space.n), MoENetworkConfig(**network), shared=shared)


def test_invalid_actions_get_zero_probability_in_a_mixed_suite():
    net = _net(MIXED, arch="big", router="softmoe")
    obs = torch.as_tensor(_obs(MIXED, 400))
    logits, values = net(obs)
    probs = torch.softmax(logits, -1)
    task = net.encoder.split(obs)[1]
    lacks = ~net.encoder.valid_actions[task]
    assert lacks.any() and (~lacks).all(-1).sum() > 0  # both kinds of task in the batch
    assert torch.all(probs[lacks] == 0) and torch.all(probs[~lacks] > 0)
    assert values.shape == (400,)
    # the PPO model never samples one, and its entropy and log-probabilities stay finite
    model = MoEPPO(env=MIXED, n_steps=64, seed=0)
    model.learn(256)
    buf = model.rollout_buffer
    flat_obs = torch.as_tensor(buf.observations.reshape(-1, buf.observations.shape[-1]))
    valid = model.policy.ac.encoder.valid_actions[model.policy.ac.encoder.split(flat_obs)[1]]
    taken = torch.as_tensor(buf.actions.reshape(-1)).long()
    assert valid.gather(1, taken[:, None]).all()
    assert np.isfinite(model.logger.name_to_value["train/entropy_loss"])
    assert np.all(model.action_probs(buf.observations.reshape(-1, flat_obs.shape[-1]))[~valid.numpy()] == 0)


def test_separate_heads_get_only_their_own_gradients_shared_gets_both():
    obs = torch.as_tensor(_obs(CARTPOLE, 64))
    net = _net(CARTPOLE, arch="big", router="softmoe")
    logits, values = net(obs)
    torch.log_softmax(logits, -1)[:, 0].mean().backward()  # a policy-only loss
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.actor.parameters())
    assert all(p.grad is None for p in net.critic.parameters())
    router = [p for name, p in net.actor.named_parameters() if "router" in name or "gate" in name]
    assert router and all(p.grad.abs().sum() > 0 for p in router)
    net.zero_grad(set_to_none=True)
    net(obs)[1].pow(2).mean().backward()  # a value-only loss
    assert all(p.grad is None for p in net.actor.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.critic.parameters())
    assert not any(b.requires_grad for b in net.encoder.buffers())  # the encoder's constants are not trained
    shared = _net(CARTPOLE, shared=True, arch="big", router="softmoe")
    assert shared.critic is None and shared.actor.n_actions == 3
    shared(obs)[1].pow(2).mean().backward()
    assert all(p.grad is not None for p in shared.actor.parameters())


def test_hardcoded_router_reads_the_task_id():
    net = _net(CARTPOLE, arch="big", router="hardcoded", task_id_in_features=False)
    obs = torch.as_tensor(_obs(CARTPOLE, 1)).repeat(4, 1)
    base = net.encoder.layout.base_dim
    obs[:, base:] = torch.eye(4)  # the same state under each task's one-hot: only the router sees the task
    logits, values = net(obs)
    assert len(set(values.tolist())) == 4 and len({tuple(r) for r in logits.tolist()}) == 4
    _, _, record = net.forward_record(obs)
    assert set(record.parts()) == {"actor", "critic"}
    usage = record.actor.routing["big"].usage
    torch.testing.assert_close(usage, torch.eye(4))
    assert any(k.startswith("critic/router/big/usage") for k in record.metrics())


# --- MoEPPO ------------------------------------------------------------------------------------------

def _filled(model: MoEPPO) -> MoEPPO:
    """``model`` after one rollout collection, before its update (SB3's own ``collect_rollouts``)."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    model._update_current_progress_remaining(model.num_timesteps, model.n_steps * model.n_envs * 4)
    return model


def _params(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


def test_moeppo_train_equals_sb3_ppo_train_on_the_same_rollout():
    """SB3's own ``PPO.train`` with the same policy, weights, rollout and numpy permutation: the same update."""
    model = _filled(MoEPPO(env=CARTPOLE, n_steps=32, seed=0, policy_kwargs={"network": {"arch": "middle"}},
                           clip_range_vf=0.2))
    ref = PPO(MoEActorCriticPolicy, model.env, learning_rate=model.learning_rate, n_steps=32,
              batch_size=model.batch_size, n_epochs=model.n_epochs, clip_range=0.2, clip_range_vf=0.2,
              ent_coef=model.ent_coef, vf_coef=model.vf_coef, max_grad_norm=model.max_grad_norm,
              policy_kwargs=model.policy_kwargs, seed=1)
    ref.policy.load_state_dict(model.policy.state_dict())
    ref.policy.optimizer.load_state_dict(model.policy.optimizer.state_dict())
    ref.rollout_buffer = copy.deepcopy(model.rollout_buffer)
    ref._current_progress_remaining = model._current_progress_remaining
    ref.set_logger(Logger(folder=None, output_formats=[]))
    before = _params(model.policy)
    np.random.seed(123)
    model.train()
    np.random.seed(123)
    ref.train()
    moved = [(a - b).abs().max().item() for a, b in zip(_params(model.policy), before, strict=True)]
    assert max(moved) > 1e-4  # the update changed the weights
    for mine, theirs in zip(model.policy.parameters(), ref.policy.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    for key in ("train/value_loss", "train/policy_gradient_loss", "train/approx_kl", "train/clip_fraction"):
        assert model.logger.name_to_value[key] == pytest.approx(ref.logger.name_to_value[key], rel=1e-4, abs=1e-7)


def test_moeppo_train_equals_a_manual_update_with_the_shared_loss():
    """With a balancing loss (topk router): MoEPPO.train == epochs x minibatches of ppo_loss + Adam by hand."""
    network = {"arch": "big", "router": "topk", "topk": 1, "balance_loss": "importance"}
    model = _filled(MoEPPO(env=CARTPOLE, n_steps=32, seed=0, policy_kwargs={"network": network},
                           aux_loss_coef=0.05))
    policy = copy.deepcopy(model.policy)
    buffer = copy.deepcopy(model.rollout_buffer)
    np.random.seed(7)
    model.train()
    np.random.seed(7)
    lr = model.lr_schedule(model._current_progress_remaining)
    for group in policy.optimizer.param_groups:
        group["lr"] = lr
    for _ in range(model.n_epochs):
        for data in buffer.get(model.batch_size):
            values, log_prob, entropy, record = _evaluate(policy, data)
            loss, _ = ppo_loss(log_prob[None], data.old_log_prob[None], data.advantages[None], values[None],
                               data.old_values[None], data.returns[None], entropy[None], clip_range=0.2,
                               ent_coef=0.01, vf_coef=0.5, aux_loss=record.aux_loss().reshape(1),
                               aux_loss_coef=0.05)
            policy.optimizer.zero_grad()
            loss.sum().backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            policy.optimizer.step()
    for mine, manual in zip(model.policy.parameters(), policy.parameters(), strict=True):
        torch.testing.assert_close(mine, manual, rtol=1e-5, atol=1e-6)
    assert model.logger.name_to_value["train/aux_loss"] > 0


def _evaluate(policy: MoEActorCriticPolicy, data):
    """Log-probabilities, entropy and values straight from the network and torch's Categorical."""
    logits, values, record = policy.ac.forward_record(data.observations)
    dist = torch.distributions.Categorical(logits=logits)
    actions = data.actions.long().flatten()
    return values, dist.log_prob(actions), dist.entropy(), record


@pytest.mark.parametrize("shared", [False, True])
def test_save_load_round_trip_predicts_the_same(tmp_path, shared):
    model = MoEPPO(env=MIXED, n_steps=32, seed=0, policy_kwargs={
        "network": {"arch": "final", "router": "softmoe"}, "shared": shared})
    model.learn(128)
    obs = _obs(MIXED, 50, seed=3)
    model.save(tmp_path / "ppo.zip")
    loaded = MoEPPO.load(tmp_path / "ppo.zip", device="cpu")
    assert loaded.policy.ac.shared is shared
    np.testing.assert_array_equal(loaded.action_probs(obs), model.action_probs(obs))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.policy.predict_values(torch.as_tensor(obs)),
                                   model.policy.predict_values(torch.as_tensor(obs)))
    assert loaded.batch_size == model.batch_size and loaded.n_steps == 32


@pytest.mark.parametrize("network", [{"arch": "dense"}, {"arch": "big", "router": "softmoe"},
                                     {"arch": "big", "router": "hardcoded"}])
def test_short_learn_on_cartpole_mtrl(network):
    model = MoEPPO(env=CARTPOLE, seed=0, policy_kwargs={"network": network}, metrics_interval=1024)
    assert model.n_envs == 4 and model.batch_size == 128  # PureJaxRL's 4 envs x 128 steps, 4 minibatches
    model.learn(2048)
    assert model.num_timesteps == 2048
    logged = model.logger.name_to_value
    for key in ("train/value_loss", "train/approx_kl", "train/clip_fraction", "train/explained_variance"):
        assert np.isfinite(logged[key]), key
    tags = {tag for _, tag, _ in model.pop_metrics()}
    assert "moe/actor/dormant/tau0/all" in tags and "moe/critic/dormant/tau0/all" in tags
    if network["arch"] == "big":
        assert "moe/actor/router/big/entropy" in tags and "moe/critic/router/big/entropy" in tags


def test_moeppo_refuses_sb3_policies_and_ignored_arguments():
    with pytest.raises(ConfigError, match="unknown policy 'MlpPolicy' for MoEPPO"):
        MoEPPO("MlpPolicy", CARTPOLE)
    with pytest.raises(ConfigError, match="n_envs applies when env is an id"):
        MoEPPO(env=gym.make(CARTPOLE), n_envs=8)
    with pytest.raises(ConfigError, match="batch_size or n_minibatches, not both"):
        MoEPPO(env=CARTPOLE, batch_size=64, n_minibatches=8)
    assert MoEPPO(env=CARTPOLE, n_envs=2, n_minibatches=8).batch_size == 2 * 128 // 8


def test_per_task_greedy_evaluation_reads_a_moeppo_model():
    model = MoEPPO(env=CARTPOLE, n_steps=32, seed=0)
    model.learn(128)
    names = layout_for_env(gym.make(CARTPOLE)).task_names
    results = evaluate_tasks(model, task_env_factories(CARTPOLE, {}, names), n_episodes=1, seed=0)
    assert [r.task for r in results] == list(names)


PURE = """
import sys, torch
from moerl.rl.algos.ppo import gae, ppo_loss
from moerl.rl.nets.actor_critic import MoEActorCritic
from moerl.rl.nets.encoder import MoENetworkConfig
from moerl.rl.nets.obs_layout import ObsLayout
net = MoEActorCritic(ObsLayout(4, 2), 2, MoENetworkConfig(arch="big", router="softmoe"))
logits, values = net(torch.randn(8, 6))
adv, ret = gae(torch.randn(5, 1, 8), torch.randn(5, 1, 8), torch.zeros(5, 1, 8), torch.randn(1, 8), 0.99, 0.95)
x = torch.zeros(1, 8)
loss, _ = ppo_loss(x, x, adv[0], values[None], x, ret[0], x, clip_range=0.2, ent_coef=0.0, vf_coef=0.5)
loss.sum().backward()
print("stable_baselines3" in sys.modules)
"""


def test_the_pure_torch_side_runs_without_stable_baselines3():
    """What the batched engine will call (GAE, the loss, the network) loads no SB3."""
    out = subprocess.run([sys.executable, "-c", PURE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
