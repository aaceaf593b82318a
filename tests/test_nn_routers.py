"""Router maths: conservation of routing weights, equivalences, gradients."""

import pytest
import torch
from torch import nn

from moerl.nn import ExpertMLP, ForwardRecord, MoEBlock, RouterConfig, build_router
from moerl.nn.gating import SoftMoERouter, TopKRouter

torch.set_num_threads(1)


def _experts(n, sizes=(6, 5), act=False, seed=0):
    torch.manual_seed(seed)
    return ExpertMLP(n, sizes, activate_output=act)


def test_softmoe_dispatch_and_combine_weights_are_distributions():
    router = SoftMoERouter(_experts(3), token_dim=6, num_tokens=5, config=RouterConfig(experts=3))
    x = torch.randn(4, 5, 6)
    logits = torch.einsum("bmd,ds->bms", x, router.phi)
    dispatch, combine = torch.softmax(logits, 1), torch.softmax(logits, 2)
    assert router.slots == 2  # ceil(5 tokens / 3 experts)
    torch.testing.assert_close(dispatch.sum(1), torch.ones(4, 6))  # each slot: convex mix of tokens
    torch.testing.assert_close(combine.sum(2), torch.ones(4, 5))  # each token: convex mix of slots
    rec = ForwardRecord()
    y = router(x, None, rec, "m")
    assert y.shape == (4, 5, 5)
    torch.testing.assert_close(rec.routing["m"].usage.sum(1), torch.ones(4))


@pytest.mark.parametrize("normalize", [False, True])
def test_softmoe_one_token_is_softmax_gated_mixture(normalize):
    cfg = RouterConfig(experts=4, slots_per_expert=1, normalize=normalize)
    router = SoftMoERouter(_experts(4), token_dim=6, num_tokens=1, config=cfg)
    x = torch.randn(7, 1, 6)
    y = router(x, None, None, "m")[:, 0]
    xs = nn.functional.normalize(x[:, 0], dim=-1) if normalize else x[:, 0]
    phi = router.scale * nn.functional.normalize(router.phi, dim=0) if normalize else router.phi
    gate = torch.softmax(xs @ phi, dim=-1)  # (B, E)
    outs = router.experts(x[:, 0].unsqueeze(0).expand(4, -1, -1))  # (E, B, o)
    expected = torch.einsum("be,ebo->bo", gate, outs)
    torch.testing.assert_close(y, expected)


def test_topk_output_depends_only_on_chosen_experts():
    cfg = RouterConfig(router="topk", experts=4, topk=2)
    router = TopKRouter(_experts(4), token_dim=6, config=cfg)
    x = torch.randn(10, 1, 6)
    probs, gates, selected = router.gates(x[:, 0])
    assert torch.all(selected.sum(1) == 2)
    # no renormalisation: kept gates are the raw softmax probabilities
    torch.testing.assert_close(gates[selected.bool()], probs[selected.bool()])
    y = router(x, None, None, "m")
    # scramble the weights of every expert a sample did not choose: its output must not move
    for b in range(10):
        chosen = selected[b].bool()
        scrambled = TopKRouter(_experts(4), token_dim=6, config=cfg)
        scrambled.load_state_dict(router.state_dict())
        with torch.no_grad():
            for layer in scrambled.experts.layers:
                layer.weight[~chosen] = torch.randn_like(layer.weight[~chosen]) * 10
                layer.bias[~chosen] = 5.0
        torch.testing.assert_close(scrambled(x[b : b + 1], None, None, "m"), y[b : b + 1])


def test_topk_routes_every_sample_without_capacity_drop():
    router = TopKRouter(_experts(2), token_dim=6, config=RouterConfig(router="topk", experts=2))
    with torch.no_grad():  # force every sample onto expert 0
        router.weight.zero_()
        router.weight[0, 0] = 10.0
    x = torch.randn(64, 1, 6)
    x[:, 0, 0] = x[:, 0, 0].abs() + 1
    rec = ForwardRecord()
    y = router(x, None, rec, "m")
    assert torch.all(rec.routing["m"].usage[:, 0] == 1)
    assert torch.all(y.abs().sum(-1) > 0)  # nobody dropped to a zero output


def test_hardcoded_equals_per_task_networks():
    block = MoEBlock(6, 3, RouterConfig(router="hardcoded", experts=3), expert_hidden=(8, 8))
    per_task = []
    for t in range(3):
        layers = block.experts.layers
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        with torch.no_grad():
            for lin, bl in zip([net[0], net[2], net[4]], layers, strict=True):
                lin.weight.copy_(bl.weight[t].t())
                lin.bias.copy_(bl.bias[t, 0])
        per_task.append(net)
    x = torch.randn(12, 6)
    tasks = torch.arange(12) % 3
    y = block(x, tasks)
    expected = torch.stack([per_task[int(t)](x[i]) for i, t in enumerate(tasks)])
    torch.testing.assert_close(y, expected)


def test_hardcoded_without_task_id_is_a_clear_error():
    block = MoEBlock(6, 3, RouterConfig(router="hardcoded", experts=2))
    with pytest.raises(ValueError, match="task id"):
        block(torch.randn(2, 6))


@pytest.mark.parametrize("kind", ["softmoe", "topk", "hardcoded"])
@pytest.mark.parametrize("activate", [False, True])
def test_one_expert_equals_the_dense_layer(kind, activate):
    torch.manual_seed(1)
    dense = nn.Linear(6, 4)
    block = MoEBlock(6, 4, RouterConfig(router=kind, experts=1), activate_output=activate)
    block.experts.layers[0].load_from_linear(0, dense)
    x = torch.randn(9, 6)
    expected = torch.relu(dense(x)) if activate else dense(x)
    torch.testing.assert_close(block(x, torch.zeros(9, dtype=torch.long)), expected)


@pytest.mark.parametrize("kind,param", [("softmoe", "phi"), ("topk", "weight")])
def test_gradients_reach_router_parameters(kind, param):
    router = build_router(RouterConfig(router=kind, experts=3), _experts(3), token_dim=6, num_tokens=2)
    y = router(torch.randn(5, 2, 6), None, None, "m")
    y.pow(2).sum().backward()
    grad = getattr(router, param).grad
    assert grad is not None and grad.abs().sum() > 0


def test_topk_balance_losses_are_differentiable_and_prefer_balance():
    for loss in ("importance", "load", "entropy"):
        cfg = RouterConfig(router="topk", experts=4, balance_loss=loss)
        router = TopKRouter(_experts(4), token_dim=6, config=cfg)
        x = torch.randn(256, 1, 6)
        rec = ForwardRecord()
        router(x, None, rec, "m")
        balanced = rec.routing["m"].aux_loss
        balanced.backward()
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0
        with torch.no_grad():  # collapse routing on expert 0
            router.weight.zero_()
            router.weight[:, 0] = 0.0
            router.weight[0, 0] = 50.0
        x_pos = x.clone()
        x_pos[:, 0, 0] = 1.0
        rec2 = ForwardRecord()
        router(x_pos, None, rec2, "m")
        assert rec2.routing["m"].aux_loss > balanced, loss


def test_tokenised_block_concatenates_hidden_tokens():
    block = MoEBlock(8, 6, RouterConfig(experts=2), activate_output=True, num_tokens=2)
    assert block.experts.sizes == (4, 3)
    assert block(torch.randn(3, 8)).shape == (3, 6)


def test_bad_token_split_is_a_config_error():
    from moerl.core.errors import ConfigError

    with pytest.raises(ConfigError, match="3 equal tokens"):
        MoEBlock(8, 6, RouterConfig(experts=2), num_tokens=3)


def test_router_config_validation_names_bad_values():
    from moerl.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown router 'softmo'.*did you mean 'softmoe'"):
        RouterConfig(router="softmo").validate()
    with pytest.raises(ConfigError, match="topk must be between 1 and the number of experts"):
        RouterConfig(router="topk", experts=2, topk=3).validate()
