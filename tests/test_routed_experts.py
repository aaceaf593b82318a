"""``network.expert_compute: routed`` (and ``auto``, the default, for these routers): each expert computed only on the tokens routed to it (grouped_mm) gives the
dense compute's outputs, gradients and records within float32 rounding, for every placement and the
``hardcoded`` and ``topk`` routers, seed-stacked and plain; small passes keep the dense compute; the option
round-trips through the config and is refused where it does not apply; an engine update with it is the dense
update from the same state."""

from __future__ import annotations

import pytest
import torch
import yaml

from moerl.core.config import from_dict, to_dict
from moerl.core.errors import ConfigError
from moerl.nn.experts import ROUTED_MIN_TOKENS, ExpertMLP
from moerl.rl.config import DQNRunConfig, run_label, stored_config, validate
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.nets.batched import BatchedQNetwork
from moerl.rl.nets.encoder import checked_network
from moerl.rl.nets.qnetwork import QNetworkConfig

ROUTERS = [("hardcoded", 1), ("topk", 1), ("topk", 2)]
PLACEMENTS = ["middle", "final", "all", "big"]
TOL = {"rtol": 1e-4, "atol": 1e-5}
IN, ACTIONS, EXPERTS = 8, 2, 4


@pytest.fixture
def routed_calls(monkeypatch):
    """Counts the routed expert passes, so a test knows the routed path really ran."""
    calls = []
    real = ExpertMLP.forward_routed

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ExpertMLP, "forward_routed", counted)
    return calls


def _config(arch: str, router: str, k: int, compute: str, tokens: int = 1) -> QNetworkConfig:
    return QNetworkConfig(arch=arch, router=router, topk=k, experts=EXPERTS, hidden=16, tokens=tokens,
                          expert_compute=compute)


def _outputs_and_grads(net: torch.nn.Module, x: torch.Tensor, task: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    xr = x.clone().requires_grad_(True)
    q = net(xr, task)
    (q * torch.linspace(-1, 1, q.numel()).view_as(q)).sum().backward()
    return [q.detach(), xr.grad, *(p.grad for p in net.parameters())]


def _assert_all_close(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g is not None and r is not None
        torch.testing.assert_close(g, r, **TOL)


@pytest.mark.parametrize("arch", PLACEMENTS)
@pytest.mark.parametrize(("router", "k"), ROUTERS, ids=["hardcoded", "topk1", "topk2"])
def test_routed_equals_dense_batched_and_plain(arch, router, k, routed_calls):
    members, batch = 3, ROUTED_MIN_TOKENS + 8
    g = torch.Generator().manual_seed(7)
    x, task = torch.randn(members, batch, IN, generator=g), torch.randint(0, EXPERTS, (members, batch), generator=g)
    nets = {c: BatchedQNetwork.from_seeds(IN, ACTIONS, _config(arch, router, k, c), [0, 1, 2]).train(True)
            for c in ("dense", "routed")}
    ref = _outputs_and_grads(nets["dense"], x, task)
    assert not routed_calls
    _assert_all_close(_outputs_and_grads(nets["routed"], x, task), ref)
    assert routed_calls  # the routed path ran
    # the plain network (the SB3 path's) runs the same layer code
    plain = {c: nets[c].network(1) for c in nets}
    ref = _outputs_and_grads(plain["dense"], x[1], task[1])
    _assert_all_close(_outputs_and_grads(plain["routed"], x[1], task[1]), ref)


def test_routed_with_several_tokens_and_noise_and_records_equals_dense(routed_calls):
    cfg = {"arch": "all", "router": "topk", "topk": 2, "experts": EXPERTS, "hidden": 16, "tokens": 2,
           "noise_std": 0.3, "balance_loss": "load"}
    nets = {c: BatchedQNetwork.from_seeds(IN, ACTIONS, QNetworkConfig(**cfg, expert_compute=c), [3, 4]).train(True)
            for c in ("dense", "routed")}
    x = torch.randn(2, ROUTED_MIN_TOKENS, IN)
    out = {}
    for c, net in nets.items():
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same router noise
            q, rec = net.forward_record(x)
            (q.sum() + rec.aux_loss().sum()).backward()
        out[c] = (q, rec.metrics(), [p.grad for p in net.parameters()])
    assert routed_calls
    torch.testing.assert_close(out["routed"][0], out["dense"][0], **TOL)
    assert out["routed"][1].keys() == out["dense"][1].keys()
    for key, value in out["dense"][1].items():
        torch.testing.assert_close(out["routed"][1][key].double(), value.double(), **TOL, msg=key)
    _assert_all_close(out["routed"][2], out["dense"][2])


def test_small_passes_keep_the_dense_compute(routed_calls):
    nets = {c: BatchedQNetwork.from_seeds(IN, ACTIONS, _config("big", "hardcoded", 1, c), [0, 1]).train(False)
            for c in ("dense", "routed")}
    x, task = torch.randn(2, ROUTED_MIN_TOKENS - 1, IN), torch.randint(0, EXPERTS, (2, ROUTED_MIN_TOKENS - 1))
    with torch.no_grad():
        assert torch.equal(nets["routed"](x, task), nets["dense"](x, task))
        assert torch.equal(nets["routed"](x[:, :1], task[:, :1]), nets["dense"](x[:, :1], task[:, :1]))
    assert not routed_calls


def test_option_round_trips_and_never_changes_a_run_id():
    config = DQNRunConfig(env="cartpole-crl")
    config.network.arch, config.network.router, config.network.expert_compute = "middle", "hardcoded", "routed"
    text = yaml.safe_dump(to_dict(config))
    back = from_dict(DQNRunConfig, yaml.safe_load(text))
    assert back.network.expert_compute == "routed" and back == config
    # how experts are computed changes float rounding only: one id for every value, and for configs written
    # before the key existed
    auto = to_dict(DQNRunConfig(env="cartpole-crl"))
    assert auto["network"]["expert_compute"] == "auto"
    old = {**auto, "network": {k: v for k, v in auto["network"].items() if k != "expert_compute"}}
    labels = {run_label({**auto, "network": {**auto["network"], "expert_compute": c}}) for c in ("dense", "routed")}
    assert labels == {run_label(auto)} == {run_label(old)}


@pytest.mark.parametrize(("arch", "router", "routed"), [
    ("big", "hardcoded", True), ("middle", "topk", True), ("all", "topk", True), ("big", "softmoe", False),
    ("middle", "softmoe", False), ("dense", "softmoe", False),
])
def test_the_default_routes_exactly_the_topk_and_hardcoded_layers(arch, router, routed):
    net = BatchedQNetwork.from_seeds(IN, ACTIONS, QNetworkConfig(arch=arch, router=router, hidden=16), [0, 1])
    flags = [m.routed for m in net.modules() if hasattr(m, "routed")]
    assert flags == ([True] * len(flags) if routed else [False] * len(flags))
    assert (len(flags) > 0) == (arch != "dense" and router != "softmoe")


def test_compiled_updates_take_the_dense_compute_by_default():
    config = DQNRunConfig(env="cartpole-crl", compile="on", engine="batched")
    config.network.arch, config.network.router = "big", "hardcoded"
    assert validate(config).network.expert_compute == "dense"
    agent = BatchedDQN(TaskSuiteEnv("cartpole", "crl", block_steps=300), [0, 1],
                       {"arch": "big", "router": "hardcoded", "hidden": 16}, compile=True)
    assert agent.network_config.expert_compute == "dense"
    assert not any(getattr(m, "routed", False) for m in agent.q_net.modules())


def test_runs_written_before_the_key_existed_go_on_with_the_dense_compute():
    written = to_dict(DQNRunConfig(env="cartpole-crl"))
    written["network"].pop("expert_compute")
    assert stored_config(written)["network"]["expert_compute"] == "dense"
    assert "expert_compute" not in written["network"]  # the file's dict is not changed
    given = {**written, "network": {**written["network"], "expert_compute": "routed"}}
    assert stored_config(given)["network"]["expert_compute"] == "routed"
    # runs written while dense was the default hold it for every network: still accepted everywhere
    for net in ({"arch": "dense"}, {"arch": "wide"}, {"arch": "big", "router": "softmoe"}, {"arch": "middle"}):
        assert checked_network({**net, "expert_compute": "dense"}).expert_compute == "dense"


@pytest.mark.parametrize(("network", "words"), [
    ({"expert_compute": "sparse"}, "auto, dense, routed"),
    ({"arch": "big", "router": "softmoe", "expert_compute": "routed"}, "router 'softmoe'"),
    ({"arch": "dense", "expert_compute": "routed"}, "arch 'dense'"),
    ({"arch": "wide", "expert_compute": "routed"}, "arch 'wide'"),
])
def test_refused_where_it_does_not_apply(network, words):
    with pytest.raises(ConfigError) as err:
        checked_network(network)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_refused_with_compile():
    net = {"arch": "middle", "router": "hardcoded", "expert_compute": "routed", "hidden": 16}
    with pytest.raises(ConfigError, match="compile"):
        BatchedDQN(TaskSuiteEnv("cartpole", "crl", block_steps=300), [0, 1], net, compile=True)
    config = DQNRunConfig(env="cartpole-crl", compile="on", engine="batched")
    config.network.arch, config.network.router, config.network.expert_compute = "middle", "hardcoded", "routed"
    with pytest.raises(ConfigError, match="compile"):
        validate(config)


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def test_one_routed_engine_update_is_the_dense_update(routed_calls):
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=300)
    hp = {"learning_starts": 100}
    base = {"arch": "middle", "router": "hardcoded", "hidden": 16}
    dense = BatchedDQN(suite, [0, 1, 2], {**base, "expert_compute": "dense"}, hp)
    routed = BatchedDQN(suite, [0, 1, 2], {**base, "expert_compute": "routed"}, hp)
    routed.learn(200)  # learns and steps with it
    assert routed_calls
    dense.load_state_dict(routed.state_dict())
    before = [p.detach().clone() for p in dense.q_net.parameters()]
    dense.metrics_interval = routed.metrics_interval = 10**9
    dense.train(1)
    routed.train(1)
    moved = _max_diff(dense.q_net.parameters(), before)
    assert moved > 1e-4
    assert _max_diff(dense.q_net.parameters(), routed.q_net.parameters()) < 1e-5 * max(moved, 1.0)
    for d, r in zip(dense.q_net.parameters(), routed.q_net.parameters(), strict=True):
        assert r.grad is not None and torch.allclose(d.grad, r.grad, rtol=1e-4, atol=1e-6)
