"""``dqn.optimizer: adam | rmsprop``: MinAtar's DQN optimiser (centered RMSprop, alpha 0.95, eps 0.01) on both
engines, the same update on each; Adam stays the default and out of run ids."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from moerl import MoEDQN
from moerl.core.errors import ConfigError
from moerl.rl.algos.dqn import RMSPROP_KWARGS, DQNHyperParams, optimizer_of
from moerl.rl.config import build_config
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.experiment import DQNRunConfig, build_model, validate
from moerl.runs.kinds import config_id

torch.set_num_threads(1)


def test_both_engines_build_minatars_rmsprop():
    suite = TaskSuiteEnv("classic", "mtrl")
    hp = DQNHyperParams(optimizer="rmsprop", learning_rate=2.5e-4)
    assert optimizer_of(hp) == (torch.optim.RMSprop, {"alpha": 0.95, "eps": 0.01, "centered": True})
    model = MoEDQN("MoEPolicy", suite, optimizer="rmsprop", learning_rate=2.5e-4, seed=0)
    agent = BatchedDQN(suite, [0, 1], {"arch": "dense"}, hp)
    for opt in (model.policy.optimizer, agent.optimizer):
        assert isinstance(opt, torch.optim.RMSprop)
        group = opt.param_groups[0]
        assert {k: group[k] for k in RMSPROP_KWARGS} == RMSPROP_KWARGS and group["lr"] == 2.5e-4
    adam = MoEDQN("MoEPolicy", suite, seed=0)  # the default: Adam with adam_eps, its policy_kwargs as before
    assert isinstance(adam.policy.optimizer, torch.optim.Adam) and "optimizer_class" not in adam.policy_kwargs


def test_one_batched_rmsprop_update_is_sb3s_for_every_seed():
    """Same weights, same minibatches: three RMSprop updates of the batched engine equal SB3's own train() per
    seed (RMSprop is elementwise, so on stacked parameters it is one RMSprop per seed)."""
    suite = TaskSuiteEnv("classic", "mtrl")
    hp = DQNHyperParams(optimizer="rmsprop", learning_rate=1e-3, batch_size=32)
    network, seeds = {"arch": "middle", "router": "softmoe", "hidden": 16}, [0, 1]
    agent = BatchedDQN(suite, seeds, network, hp)
    agent.learn(hp.learning_starts)
    models = []
    for seed in seeds:
        cfg = DQNRunConfig(env="moerl/ClassicControl-MTRL-v0", seed=seed, device="cpu")
        cfg.dqn = hp
        for key, value in network.items():
            setattr(cfg.network, key, value)
        model = build_model(validate(cfg), suite)
        model.set_logger(configure(None, []))
        models.append(model)
    for _ in range(3):
        batch = agent.buffer.sample(hp.batch_size)
        agent.buffer._streams.counter -= hp.batch_size  # train() draws this very minibatch again
        agent.train(1)
        for i, model in enumerate(models):
            samples = ReplayBufferSamples(batch.observations[i], batch.actions[i][:, None],
                                          batch.next_observations[i], batch.dones[i][:, None],
                                          batch.rewards[i][:, None], None)
            model.replay_buffer.sample = lambda *a, s=samples, **k: s
            model.train(gradient_steps=1, batch_size=hp.batch_size)
    for i, model in enumerate(models):
        assert isinstance(model.policy.optimizer, torch.optim.RMSprop)
        ours = agent.q_net.state_dict_of(i)
        for key, value in model.policy.q_net.q_net.state_dict().items():
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_the_config_key_is_checked_and_adam_stays_out_of_run_ids():
    config = build_config(None, {"env": "cartpole-mtrl"}, ["dqn.optimizer=rmsprop"])
    assert config.dqn.optimizer == "rmsprop"
    with pytest.raises(ConfigError, match="unknown optimizer 'sgd'"):
        build_config(None, {"env": "cartpole-mtrl"}, ["dqn.optimizer=sgd"])
    with pytest.raises(ConfigError, match="dqn.adam_eps applies to optimizer adam"):
        build_config(None, {"env": "cartpole-mtrl"}, ["dqn.optimizer=rmsprop", "dqn.adam_eps=1e-8"])
    base = {"env": "cartpole-mtrl", "dqn": {"learning_rate": 1e-3}}
    assert config_id({**base, "dqn": {**base["dqn"], "optimizer": "adam"}}) == config_id(base)
    assert config_id({**base, "dqn": {**base["dqn"], "optimizer": "rmsprop"}}) != config_id(base)
    with pytest.raises(ConfigError, match="learning rates of their own need dqn.optimizer adam"):
        BatchedDQN(TaskSuiteEnv("classic", "mtrl"), [0, 1], {"arch": "dense"},
                   [DQNHyperParams(optimizer="rmsprop", learning_rate=lr) for lr in (1e-3, 3e-4)])


def test_a_batched_rmsprop_run_resumed_from_its_state_equals_the_uninterrupted_run():
    """MinAtar's DQN settings train with centered RMSprop and their runs resume across processes: a checkpoint
    (``state_dict`` through ``torch.save`` and ``torch.load``) taken mid-run carries RMSprop's running averages
    (squared and, centered, plain), so the resumed engine ends bit for bit where the uninterrupted one does."""
    import io

    suite = TaskSuiteEnv("cartpole", "crl", block_steps=300)
    hp = DQNHyperParams(optimizer="rmsprop", learning_rate=1e-3, learning_starts=100, batch_size=16)
    network, seeds = {"arch": "big", "router": "softmoe", "hidden": 16}, [0, 1]
    whole = BatchedDQN(suite, seeds, network, hp).learn(900)
    first = BatchedDQN(suite, seeds, network, hp).learn(500, 900)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=False)
    assert {"square_avg", "grad_avg"} <= set(next(iter(state["optimizer"]["state"].values())))
    resumed = BatchedDQN(suite, seeds, network, hp)
    resumed.load_state_dict(state)
    resumed.learn(900)
    for i in range(len(seeds)):
        start = first.q_net.state_dict_of(i)
        for key, value in whole.q_net.state_dict_of(i).items():
            assert torch.equal(resumed.q_net.state_dict_of(i)[key], value), key
        assert any(not torch.equal(start[k], v) for k, v in whole.q_net.state_dict_of(i).items())  # it trained on
    for a, b in zip(resumed.optimizer.state.values(), whole.optimizer.state.values(), strict=True):
        assert torch.equal(a["square_avg"], b["square_avg"]) and torch.equal(a["grad_avg"], b["grad_avg"])
