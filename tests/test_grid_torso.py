"""``network.torso: conv``: MinAtar's conv torso on the grid of the MinAtar suites' observations.

The conv is MinAtar's (3x3, 16 channels, stride 1, no padding: 10x10 -> 8x8) on the grid the layout names; the
one-hot follows the conv features; seed-stacked networks run S seeds (and big's E experts) as one grouped conv
and equal S plain networks (also tests/test_nn_batched.py's conv cases); the SB3 policy and the batched
engine's networks hold the same weights and give the same Q-values; gradients reach the conv and only the
parts they should; a suite without a grid is refused in one line; a short CLI run trains it.
"""

from __future__ import annotations

import importlib.util
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moerl.cli import main
from moerl.core.errors import ConfigError
from moerl.core.seeding import seeded
from moerl.nn import ForwardRecord, forward_metrics
from moerl.nn.conv import GridSpec, GridTorso, grid_conv_relu
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.nets.batched import BatchedQNetwork
from moerl.rl.nets.encoder import MoENetworkConfig
from moerl.rl.nets.obs_layout import ObsLayout, check_layout_fits, layout_for_env
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig
from moerl.runs.kinds import config_id

torch.set_num_threads(1)
needs_minatar = pytest.mark.skipif(importlib.util.find_spec("minatar") is None, reason="needs the minatar extra")

#: The default MinAtar suite's layout: SpaceInvaders' 6 channels are the most of its three games, 3 tasks.
GRID, TASKS, ACTIONS = (10, 10, 6), 3, 5
IN = 600 + TASKS
PLACEMENTS = [
    {"arch": "dense"},
    {"arch": "wide", "experts": 2},
    {"arch": "middle", "router": "topk"},
    {"arch": "final", "router": "hardcoded", "experts": 3},
    {"arch": "all", "router": "softmoe"},
    {"arch": "all", "router": "topk", "topk": 2},
    {"arch": "all", "router": "hardcoded", "experts": 3},
    {"arch": "big", "router": "softmoe"},
    {"arch": "big", "router": "topk", "balance_loss": "load"},
    {"arch": "big", "router": "hardcoded", "experts": 3},
]
ids = ["-".join(str(v) for v in p.values()) for p in PLACEMENTS]


def conv_config(**kw) -> QNetworkConfig:
    return QNetworkConfig(**{"hidden": 64, "experts": 3, "torso": "conv", **kw})


def observations(n: int, seed: int = 0, lead: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Random MinAtar-like features: a 0/1 grid, then the task's one-hot; and the task ids."""
    g = torch.Generator().manual_seed(seed)
    grid = (torch.rand(*lead, n, 600, generator=g) < 0.1).float()
    task = torch.randint(0, TASKS, (*lead, n), generator=g)
    return torch.cat([grid, F.one_hot(task, TASKS).float()], -1), task


# ------------------------------------------------------------------------------------------- shapes
def test_the_conv_is_minatars_on_the_row_column_channel_grid():
    """The torso convolves obs[:600].reshape(10, 10, 6) as nn.Conv2d (16 channels, 3x3, no padding) would, then
    flattens the 8x8x16 output (row, column, channel) and appends the one-hot."""
    torso = GridTorso(GridSpec(GRID, TASKS), tokens=False)
    x, _ = observations(5)
    out = torso(x)
    assert out.shape == (5, 1024 + TASKS) and torso.out_features == 1024 + TASKS
    reference = torch.nn.Conv2d(6, 16, 3)
    with torch.no_grad():
        reference.weight.copy_(torso.conv.weight)
        reference.bias.copy_(torso.conv.bias)
    grid = x[:, :600].reshape(5, 10, 10, 6).permute(0, 3, 1, 2)  # (N, C, H, W) for nn.Conv2d
    expected = torch.relu(reference(grid))  # (5, 16, 8, 8)
    torch.testing.assert_close(out[:, :1024], expected.permute(0, 2, 3, 1).reshape(5, 1024))
    assert torch.equal(out[:, 1024:], x[:, 600:])
    tokens = GridTorso(GridSpec(GRID, TASKS), tokens=True)
    tokens.load_state_dict(torso.state_dict())
    per_position = tokens(x).reshape(5, 64, 16 + TASKS)  # one token per position: its 16 channels, the one-hot
    torch.testing.assert_close(per_position[..., :16], expected.flatten(2).transpose(1, 2))
    assert torch.equal(per_position[..., 16:], x[:, None, 600:].expand(5, 64, TASKS))


@pytest.mark.parametrize("placement", PLACEMENTS, ids=ids)
def test_every_placement_maps_observations_to_q_values(placement):
    net = MoEQNetwork(IN, ACTIONS, conv_config(**placement), GRID)
    x, task = observations(7)
    rec = ForwardRecord()
    q = net(x, task, rec)
    assert q.shape == (7, ACTIONS) and torch.isfinite(q).all()
    convs = {name: p.shape for name, p in net.named_parameters() if name.endswith("conv.weight")}
    if placement["arch"] == "big":  # every expert its own conv
        assert convs == {"layers.0.router.experts.conv.weight": (3, 16, 6, 3, 3)}
        assert rec.hidden["big.hidden0"].values.shape == (3, 7, 16)  # (experts, rows, channels)
    else:  # one torso in front of the layers
        assert convs == {"torso.conv.weight": (16, 6, 3, 3)}
        assert rec.hidden["torso"].values.shape == (7, 16)  # per-channel activity
    metrics = forward_metrics(rec)
    assert any(k.endswith("/torso") or k.endswith("big.hidden0") for k in metrics)
    if placement["arch"] in ("middle", "all"):  # the MoE right after the conv reads its 64 position tokens
        first = net.layers[0]
        assert (first.num_tokens, first.in_features, first.out_features) == (64, 64 * (16 + TASKS), 1024)
        assert first.experts.sizes == (16 + TASKS, 64, 16)  # token -> hidden -> the token's 16 channels
    elif placement["arch"] == "big":
        assert net.layers[0].experts.sizes == (1024 + TASKS, 64, ACTIONS)  # MinAtar's DQN after each conv
    else:
        assert net.layers[0].linear.in_features == 1024 + TASKS
    assert len(net.layers) == (1 if placement["arch"] == "big" else 2)  # conv -> hidden -> actions


def test_the_mlp_torso_and_run_ids_are_unchanged():
    """torso defaults to mlp: the same parameters as before, and a config id that leaves the key out at its default
    (runs named before the key existed keep their names); conv is part of the id."""
    mlp = MoEQNetwork(IN, ACTIONS, QNetworkConfig(hidden=64), GRID)
    assert mlp.torso is None and [n for n, _ in mlp.named_parameters()][0] == "layers.0.linear.weight"
    base = {"env": "minatar-mtrl", "network": {"arch": "dense", "hidden": 128}}
    assert config_id({**base, "network": {**base["network"], "torso": "mlp"}}) == config_id(base)
    assert config_id({**base, "network": {**base["network"], "torso": "conv"}}) != config_id(base)


# ------------------------------------------------------------------------------------ batched = plain
@pytest.mark.parametrize("placement", [PLACEMENTS[4], PLACEMENTS[8]], ids=[ids[4], ids[8]])
def test_seed_stacked_conv_networks_equal_plain_ones_at_minatar_size(placement):
    """S = 3 seeds as one network (one grouped conv over the seeds, and big's experts) = 3 plain networks,
    forward and gradients, at MinAtar's own sizes (64 position tokens for all)."""
    cfg, seeds = conv_config(**placement), [4, 5, 6]
    batched = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, seeds, GRID)
    x, task = observations(16, lead=(3,))
    q, rec = batched.forward_record(x, task)
    (q.square().sum() + rec.aux_loss().sum()).backward()
    stacked = dict(batched.net.named_parameters())
    for i, seed in enumerate(seeds):
        with seeded(seed):
            plain = MoEQNetwork(IN, ACTIONS, cfg, GRID)
        single = ForwardRecord()
        q1 = plain(x[i], task[i], single)
        torch.testing.assert_close(q[i], q1, rtol=1e-5, atol=1e-6)
        aux = single.aux_loss()
        (q1.square().sum() + (aux if aux is not None else 0)).backward()
        for name, p in plain.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(stacked[name].grad[i], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_the_grouped_conv_is_each_groups_own_conv():
    """grid_conv_relu on (S, E) groups = a conv2d per group."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(2, 3, 16, 4, 3, 3, generator=g), torch.randn(2, 3, 16, generator=g)
    grid = torch.randn(2, 3, 5, 6, 7, 4, generator=g)  # (S, E, N, H, W, C)
    out = grid_conv_relu(grid, w, b)
    assert out.shape == (2, 3, 5, 4, 5, 16)
    for s in range(2):
        for e in range(3):
            ref = torch.relu(F.conv2d(grid[s, e].permute(0, 3, 1, 2), w[s, e], b[s, e])).permute(0, 2, 3, 1)
            torch.testing.assert_close(out[s, e], ref)


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("placement", PLACEMENTS, ids=ids)
def test_gradients_reach_the_conv_of_every_seed_and_only_that_seeds(placement):
    """A loss of seed 0's Q-values trains seed 0's conv (every expert's for big but hardcoded's, where only the
    batch's tasks' experts) and leaves every other seed's conv without gradient."""
    cfg = conv_config(**placement)
    batched = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, [0, 1], GRID)
    x, task = observations(32, lead=(2,))
    if cfg.router == "hardcoded":
        task = torch.zeros_like(task)  # only task 0 in the batch: the other tasks' experts see nothing
        x[..., 600:] = F.one_hot(task, TASKS).float()
    batched(x, task)[0].square().mean().backward()
    convs = {n: p for n, p in batched.net.named_parameters() if ".conv." in n}
    assert convs
    for name, p in convs.items():
        assert p.grad is not None and not p.grad[1].any(), name  # seed 1: untouched
        grad = p.grad[0]
        if cfg.arch == "big" and cfg.router == "hardcoded":
            assert grad[0].abs().sum() > 0 and not grad[1:].any(), name  # expert = task: only expert 0 learns
        elif cfg.arch == "big":
            assert all(grad[e].abs().sum() > 0 for e in range(cfg.experts)), name
        else:
            assert grad.abs().sum() > 0, name


# --------------------------------------------------------------------------------------- both engines
@needs_minatar
@pytest.mark.parametrize("placement", [PLACEMENTS[0], PLACEMENTS[5], PLACEMENTS[9]], ids=[ids[0], ids[5], ids[9]])
def test_the_sb3_policy_and_the_batched_engine_build_the_same_network(placement):
    """Seed s's SB3 policy and the batched engine's network (``BatchedDQN`` on the MinAtar suite) hold the same weights and give the same Q-values on the suite's observations, and a
    saved SB3 model reloads to the same network."""
    from moerl.rl.experiment import DQNRunConfig, build_model, validate

    env = gym.make("moerl/MinAtar-MTRL-v0")
    layout = layout_for_env(env)
    assert layout.grid_shape == GRID and ObsLayout.from_dict(layout.to_dict()) == layout
    seeds = [3, 7]
    cfg = DQNRunConfig(env="minatar-mtrl", device="cpu")
    for key, value in {**placement, "hidden": 64, "torso": "conv"}.items():
        setattr(cfg.network, key, value)
    net_cfg = validate(cfg).network
    agent = BatchedDQN(env.unwrapped, seeds, net_cfg)  # the batched engine on the batched MinAtar suite
    encoder, batched = agent.encoder, agent.q_net
    obs = []
    o, _ = env.reset(seed=0)
    for step in range(40):
        obs.append(o)
        o, _, terminated, truncated, _ = env.step(step % 3)  # an action every game has
        if terminated or truncated:
            o, _ = env.reset()
    obs_t = torch.as_tensor(np.stack(obs))
    feats, task = encoder.split(obs_t.expand(2, *obs_t.shape))
    q_batched = batched(feats, task)
    for i, seed in enumerate(seeds):
        cfg.seed = seed
        model = build_model(cfg, env)
        theirs = model.policy.q_net.q_net
        assert theirs.grid_shape == GRID
        for key, value in theirs.state_dict().items():
            assert torch.equal(value, batched.state_dict_of(i)[key]), key
        with torch.no_grad():
            q_sb3 = model.policy.q_net(obs_t)
        torch.testing.assert_close(q_batched[i], q_sb3, rtol=1e-5, atol=1e-6)
    env.close()


@needs_minatar
def test_a_saved_conv_model_reloads_with_its_grid(tmp_path):
    from moerl import MoEDQN

    env = gym.make("moerl/MinAtar-MTRL-v0")
    model = MoEDQN("MoEPolicy", env, seed=0, learning_starts=20, batch_size=8, buffer_size=200,
                   policy_kwargs={"network": {"arch": "all", "router": "topk", "hidden": 64, "torso": "conv"}})
    before = {k: v.clone() for k, v in model.policy.q_net_target.state_dict().items()}
    model.learn(60)  # 40 updates past the warm-up
    online, target = model.policy.q_net.q_net, model.policy.q_net_target.q_net
    assert not torch.equal(online.torso.conv.weight, before["q_net.torso.conv.weight"])  # the conv trains...
    for key, value in model.policy.q_net_target.state_dict().items():  # ...its target copy does not (interval 100)
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad and p.grad is not None for p in target.parameters())
    model.save(tmp_path / "m.zip")
    back = MoEDQN.load(tmp_path / "m.zip")
    assert back.policy.q_net.layout.grid_shape == GRID
    obs = torch.as_tensor(np.stack([env.reset(seed=k)[0] for k in range(4)]))
    with torch.no_grad():
        torch.testing.assert_close(back.policy.q_net(obs), model.policy.q_net(obs))
    env.close()


# -------------------------------------------------------------------------------------------- refusals
def test_a_suite_without_a_grid_is_refused_in_one_line(tmp_path, capsys):
    assert main(["train", "--env", "cartpole-mtrl", "--set", "network.torso=conv", "--timesteps", "100",
                 "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network.torso 'conv' reads a grid" in err and "cartpole-mtrl" in err
    assert not any(tmp_path.iterdir())  # refused before a run directory exists
    flat = ObsLayout(4, 2)
    with pytest.raises(ConfigError, match="reads a grid"):  # both engines' check
        check_layout_fits(MoENetworkConfig(torso="conv"), flat, "cartpole-mtrl")
    with pytest.raises(ConfigError, match="reads a grid"):  # the network itself, for any other caller
        MoEQNetwork(6, 2, QNetworkConfig(torso="conv"))
    check_layout_fits(MoENetworkConfig(torso="conv"), ObsLayout(600, 3, grid_shape=GRID), "minatar-mtrl")


@pytest.mark.parametrize("network,match", [
    ({"torso": "cnn"}, "unknown torso 'cnn'"),
    ({"torso": "conv", "arch": "big", "tokens": 2}, "tokens does not apply to arch 'big' with torso 'conv'"),
    ({"torso": "conv", "arch": "middle", "tokens": 4}, "tokens does not apply to arch 'middle'"),
    ({"torso": "conv", "arch": "big", "router": "topk", "expert_compute": "routed"}, "does not run arch 'big'"),
])
def test_impossible_conv_settings_are_refused(network, match):
    with pytest.raises(ConfigError, match=match):
        QNetworkConfig(**network).validate()


def test_tokens_split_the_output_layer_of_all():
    """arch all: the MoE after the conv reads the 64 positions whatever tokens says; tokens splits the 1024
    features the output MoE reads (as on the MLP path), and must divide them."""
    net = MoEQNetwork(IN, ACTIONS, conv_config(arch="all", router="softmoe", tokens=4), GRID)
    assert (net.layers[0].num_tokens, net.layers[1].num_tokens) == (64, 4)
    with pytest.raises(ConfigError, match="cannot split 1024 input features into 3 equal tokens"):
        MoEQNetwork(IN, ACTIONS, conv_config(arch="all", tokens=3), GRID)


# ---------------------------------------------------------------------------------------------- the CLI
@needs_minatar
def test_a_short_cli_run_trains_the_conv_torso(tmp_path, capsys):
    rc = main(["train", "--env", "minatar-mtrl", "--set", "network.torso=conv", "--timesteps", "500",
               "--logdir", str(tmp_path), "--set", "dqn.learning_starts=100", "--set", "dqn.batch_size=32",
               "--set", "eval.freq=0", "--set", "eval.episodes=1", "--set", "eval.final_episodes=1",
               "--set", "env_kwargs.max_episode_steps=100", "--set", "logging.metrics_interval=200",
               "--no-progress"])
    assert rc == 0
    (run,) = tmp_path.iterdir()
    assert re.fullmatch(r"minatar-mtrl_dense_conv-[0-9a-f]{8}_s0", run.name)
    assert "torso: conv" in (run / "config.yaml").read_text()
    from moerl import MoEDQN

    model = MoEDQN.load(run / "model.zip")
    assert model.policy.q_net.q_net.torso is not None and model.num_timesteps == 500


@pytest.mark.parametrize("placement", [p for p in PLACEMENTS if p.get("router") in ("topk", "hardcoded")],
                         ids=[i for p, i in zip(PLACEMENTS, ids, strict=True) if p.get("router") in ("topk", "hardcoded")])
def test_the_default_expert_compute_routes_only_what_it_can_and_equals_the_dense_compute(placement):
    """``expert_compute: auto`` routes the MLP experts after the conv (position tokens) and keeps big's conv
    experts dense; either way an update pass (>= 32 tokens) equals the dense compute within float32."""
    nets = {c: BatchedQNetwork.from_seeds(IN, ACTIONS, conv_config(**placement, expert_compute=c), [0, 1],
                                          grid_shape=GRID) for c in ("auto", "dense")}
    routed = [m.routed for m in nets["auto"].modules() if hasattr(m, "routed")]
    assert routed and all(r == (placement["arch"] != "big") for r in routed)
    x, task = observations(48, seed=1, lead=(2,))
    outs = {}
    for c, net in nets.items():
        xr = x.clone().requires_grad_(True)
        q = net(xr, task)
        q.sum().backward()
        outs[c] = [q.detach(), xr.grad, *(p.grad for p in net.parameters())]
    for a, b in zip(outs["auto"], outs["dense"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["middle", "all"])
def test_the_memory_estimate_counts_one_token_per_conv_position(arch):
    """``memory_needs`` (the refusal of sizes no machine holds) prices an update's activations per token: with
    the conv torso, ``middle`` and ``all`` route the 64 conv positions of a MinAtar grid, not
    ``network.tokens`` (1), so the estimate grows with them (it once priced one token)."""
    from moerl.rl.config import CONV_POSITIONS, DQNRunConfig, memory_needs

    def update_bytes(torso: str) -> int:
        config = DQNRunConfig(env="minatar-crl")
        config.network.arch, config.network.router, config.network.torso = arch, "softmoe", torso
        return memory_needs(config, obs_dim=1003)["update"][1]

    conv, mlp = update_bytes("conv"), update_bytes("mlp")
    batch, hidden = 128, 128  # the defaults the estimate reads
    # float32, three passes, per sample: the 64 x 64 router weights and the hidden activations of 64 slots and
    # 64 tokens, each a layer's input and output
    assert conv >= 4 * 3 * batch * (CONV_POSITIONS * CONV_POSITIONS + 2 * 2 * CONV_POSITIONS * hidden)
    assert conv > 10 * mlp
