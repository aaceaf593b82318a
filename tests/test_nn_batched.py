"""S seeds at once (moerl.rl.nets.batched): seed i of the batch is seed i's plain MoEQNetwork, exactly or to the
last bits of float32, for the forward, the record (balancing loss, metrics), gradients, Adam and clipping; with
the MLP torso and the conv torso (``conv-*`` cases: a small grid, every placement)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from moerl.core.seeding import seeded
from moerl.nn import ROUTED_ARCHS, ROUTERS, ForwardRecord, forward_metrics
from moerl.rl.nets.batched import BatchedQNetwork, clip_grad_norm_per_seed
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig

torch.set_num_threads(1)

IN, ACTIONS, BATCH, SEEDS = 6, 3, 16, (11, 12, 13)
S = len(SEEDS)
#: Tolerance for "the same up to float32 rounding": a batched matmul (baddbmm over seeds) and the plain network's
#: addmm may round differently in the last bit (max abs differences seen: ~1e-7).
TIGHT = {"rtol": 1e-6, "atol": 1e-6}

BASE = {"hidden": 8, "experts": 3}
CASES = {
    "dense": {"arch": "dense"},
    "wide": {"arch": "wide"},
    **{f"{arch}-{router}": {"arch": arch, "router": router}
       for arch, router in itertools.product(ROUTED_ARCHS, ROUTERS)},
    "all-softmoe-tokens2-normalize": {"arch": "all", "router": "softmoe", "tokens": 2, "normalize": True},
    "middle-topk2-load": {"arch": "middle", "router": "topk", "topk": 2, "balance_loss": "load"},
    "big-topk-importance": {"arch": "big", "router": "topk", "balance_loss": "importance"},
    "all-topk-entropy-tokens2": {"arch": "all", "router": "topk", "balance_loss": "entropy", "tokens": 2},
}
#: The conv torso (network.torso: conv) on features [GRID flattened | GRID_EXTRA]: a 4x4 grid of 3 channels gives
#: 2x2 positions (so arch all's first MoE layer has 4 position tokens, hidden 8 = 4 x 2 units), every placement.
GRID, GRID_EXTRA = (4, 4, 3), 2
CONV_CASES = {
    "conv-dense": {"arch": "dense", "torso": "conv"},
    "conv-wide": {"arch": "wide", "torso": "conv"},
    "conv-middle-topk": {"arch": "middle", "router": "topk", "torso": "conv"},
    "conv-final-softmoe": {"arch": "final", "router": "softmoe", "torso": "conv"},
    **{f"conv-{arch}-{router}": {"arch": arch, "router": router, "torso": "conv"}
       for arch, router in itertools.product(("all", "big"), ROUTERS)},
    "conv-all-topk-load-tokens2": {"arch": "all", "router": "topk", "balance_loss": "load", "tokens": 2,
                                   "torso": "conv"},
}
CASES.update(CONV_CASES)
#: With noise, the training-mode forward is random: tested on its own below (eval mode here).
NOISY = {"arch": "all", "router": "topk", "noise_std": 0.5, "balance_loss": "load", "tokens": 2}


def config(**kw) -> QNetworkConfig:
    return QNetworkConfig(**{**BASE, **kw})


def in_features(cfg: QNetworkConfig | None) -> int:
    return math.prod(GRID) + GRID_EXTRA if cfg is not None and cfg.torso == "conv" else IN


def grid_of(cfg: QNetworkConfig) -> tuple[int, int, int] | None:
    return GRID if cfg.torso == "conv" else None


def inputs(seed: int = 0, cfg: QNetworkConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(S, BATCH, in_features(cfg), generator=g)
    return x, torch.randint(0, BASE["experts"], (S, BATCH), generator=g)


def stacked_of(cfg: QNetworkConfig, seeds=SEEDS) -> BatchedQNetwork:
    return BatchedQNetwork.from_seeds(in_features(cfg), ACTIONS, cfg, seeds, grid_of(cfg))


def plain_networks(cfg: QNetworkConfig) -> list[MoEQNetwork]:
    nets = []
    for seed in SEEDS:
        with seeded(seed):
            nets.append(MoEQNetwork(in_features(cfg), ACTIONS, cfg, grid_of(cfg)))
    return nets


def loss_of(q: torch.Tensor, target: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
    loss = torch.nn.functional.smooth_l1_loss(q, target)
    return loss if aux is None else loss + 0.1 * aux


case_ids = pytest.mark.parametrize("case", list(CASES), ids=list(CASES))


@case_ids
def test_forward_record_and_metrics_equal_the_plain_network(case):
    cfg = config(**CASES[case])
    batched = stacked_of(cfg)
    x, t = inputs(0, cfg)
    q, rec = batched.forward_record(x, t)
    assert q.shape == (S, BATCH, ACTIONS)
    assert torch.equal(batched(x, t), q)  # without the record: the same pass
    aux = rec.aux_loss()
    assert aux.shape == (S,)
    batched_metrics = rec.metrics()
    for i, net in enumerate(plain_networks(cfg)):
        single = ForwardRecord()
        torch.testing.assert_close(q[i], net(x[i], t[i], single), **TIGHT)
        expected_aux = single.aux_loss()
        torch.testing.assert_close(aux[i], expected_aux if expected_aux is not None else torch.tensor(0.0), **TIGHT)
        expected = forward_metrics(single)
        from_slice = forward_metrics(rec.record(i))
        assert from_slice.keys() == expected.keys() == batched_metrics.keys()
        for key, value in expected.items():
            # the vectorised metrics are the single-network ones on the same record, exactly
            assert batched_metrics[key][i].item() == from_slice[key], key
            if key.startswith("dormant/"):  # counts of neurons: the same flags on activations ~1e-7 apart
                assert from_slice[key] == value, key
            else:
                assert from_slice[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


@case_ids
def test_gradients_equal_the_plain_networks(case):
    cfg = config(**CASES[case])
    batched = stacked_of(cfg)
    x, t = inputs(1, cfg)
    target = torch.randn(S, BATCH, ACTIONS, generator=torch.Generator().manual_seed(2))
    q, rec = batched.forward_record(x, t)
    aux = rec.aux_loss()
    sum(loss_of(q[i], target[i], aux[i]) for i in range(S)).backward()
    stacked = dict(batched.net.named_parameters())
    for i, net in enumerate(plain_networks(cfg)):
        single = ForwardRecord()
        loss_of(net(x[i], t[i], single), target[i], single.aux_loss()).backward()
        for name, p in net.named_parameters():
            assert stacked[name].grad is not None, name
            if p.grad is None:  # e.g. the topk router of a layer without a balancing loss never gets one
                assert not stacked[name].grad[i].any(), name
            else:
                torch.testing.assert_close(stacked[name].grad[i], p.grad, **TIGHT, msg=name)


def _train_plain(nets, x, t, target, steps, max_norm, lr):
    optims = [torch.optim.Adam(n.parameters(), lr=lr) for n in nets]
    for _ in range(steps):
        for i, (net, opt) in enumerate(zip(nets, optims, strict=True)):
            opt.zero_grad()
            single = ForwardRecord()
            loss_of(net(x[i], t[i], single), target[i], single.aux_loss()).backward()
            if max_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
            opt.step()


@pytest.mark.parametrize("max_norm", [None, 0.05], ids=["no-clip", "clip"])
@pytest.mark.parametrize("case", ["dense", "all-softmoe-tokens2-normalize", "middle-topk2-load", "big-hardcoded",
                                  "conv-all-softmoe", "conv-big-hardcoded"])
def test_adam_on_stacked_parameters_is_adam_per_seed(case, max_norm):
    """Two Adam steps (the second uses Adam's state) on the stacked parameters = S separate Adams."""
    cfg, lr, steps = config(**CASES[case]), 1e-3, 2
    batched = stacked_of(cfg)
    x, t = inputs(3, cfg)
    target = torch.randn(S, BATCH, ACTIONS, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(batched.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        q, rec = batched.forward_record(x, t)
        aux = rec.aux_loss()
        sum(loss_of(q[i], target[i], aux[i]) for i in range(S)).backward()
        if max_norm is not None:
            norms = clip_grad_norm_per_seed(batched.parameters(), max_norm)
            assert (norms > max_norm).any()  # the clipping really acts
        opt.step()
    nets = plain_networks(cfg)
    _train_plain(nets, x, t, target, steps, max_norm, lr)
    for i, net in enumerate(nets):
        for name, value in net.state_dict().items():
            torch.testing.assert_close(batched.state_dict_of(i)[name], value, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("max_norm", [None, "median"])
def test_adam_and_clipping_are_exact_given_the_same_gradients(max_norm):
    """Given identical gradients, per-seed clipping and Adam on stacked tensors are bit-for-bit the plain ones."""
    cfg = config(arch="big", router="topk", balance_loss="load")
    nets = plain_networks(cfg)
    batched = BatchedQNetwork(nets)
    x, t = inputs(5)
    target = torch.randn(S, BATCH, ACTIONS, generator=torch.Generator().manual_seed(6))
    plain_opts = [torch.optim.Adam(n.parameters(), lr=1e-2) for n in nets]
    opt = torch.optim.Adam(batched.parameters(), lr=1e-2)
    stacked = dict(batched.net.named_parameters())
    for _ in range(3):
        for i, net in enumerate(nets):
            net.zero_grad()
            single = ForwardRecord()
            loss_of(net(x[i], t[i], single), target[i], single.aux_loss()).backward()
        for name, p in stacked.items():
            p.grad = torch.stack([dict(n.named_parameters())[name].grad for n in nets])
        if max_norm is not None:
            norms = torch.stack([torch.nn.utils.get_total_norm(p.grad for p in n.parameters()) for n in nets])
            bound = float(norms.median())
            plain_norms = torch.stack([torch.nn.utils.clip_grad_norm_(n.parameters(), bound) for n in nets])
            assert torch.equal(clip_grad_norm_per_seed(batched.parameters(), bound), plain_norms)
        for name, p in stacked.items():
            assert torch.equal(p.grad, torch.stack([dict(n.named_parameters())[name].grad for n in nets])), name
        opt.step()
        for o in plain_opts:
            o.step()
        for name, p in stacked.items():
            assert torch.equal(p.detach(), torch.stack([dict(n.named_parameters())[name] for n in nets])), name


def test_clip_grad_norm_per_seed_matches_clip_grad_norm_exactly():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(S, *shape)) for shape in [(7, 5), (5,), (1,), (2, 3, 4)]]
    for k, p in enumerate(params):
        p.grad = torch.randn_like(p) * (1 + k)
    params[-1].grad[1] *= 100  # seed 1 far above the bound, seed 0 and 2 near or below it
    expected = [[p.grad[i].clone() for p in params] for i in range(S)]
    plain = [[torch.nn.Parameter(torch.zeros(g.shape)) for g in grads] for grads in expected]
    for ps, grads in zip(plain, expected, strict=True):
        for p, g in zip(ps, grads, strict=True):
            p.grad = g
    for norm_type in (2.0, 1.0, float("inf")):
        bound = 10.0
        norms = clip_grad_norm_per_seed(params, bound, norm_type)
        plain_norms = torch.stack([torch.nn.utils.clip_grad_norm_(ps, bound, norm_type) for ps in plain])
        assert torch.equal(norms, plain_norms)
        for i in range(S):
            for p, q in zip(params, plain[i], strict=True):
                assert torch.equal(p.grad[i], q.grad)
    no_grads = [torch.nn.Parameter(torch.zeros(S, 2))]
    assert torch.equal(clip_grad_norm_per_seed(no_grads, 1.0), torch.zeros(S))


@case_ids
def test_seeds_round_trip_exactly(case):
    cfg = config(**CASES[case])
    nets = plain_networks(cfg)
    rng_before = torch.get_rng_state()
    batched = stacked_of(cfg)
    assert torch.equal(torch.get_rng_state(), rng_before)  # building S networks leaves the caller's stream alone
    from_nets = BatchedQNetwork(nets)
    for (k, a), (k2, b) in zip(batched.state_dict().items(), from_nets.state_dict().items(), strict=True):
        assert k == k2 and k.startswith("net.") and torch.equal(a, b), k
    for i, net in enumerate(nets):
        back = batched.network(i)
        assert isinstance(back, MoEQNetwork) and back.config == cfg and back.grid_shape == grid_of(cfg)
        assert back.state_dict().keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():
            assert torch.equal(back.state_dict()[key], value), key
        first_key = next(iter(net.state_dict()))
        with torch.no_grad():  # a copy: changing it leaves the batch alone
            back.state_dict()[first_key].add_(1.0)
        assert torch.equal(batched.state_dict_of(i)[first_key], net.state_dict()[first_key])
        assert not torch.equal(back.state_dict()[first_key], net.state_dict()[first_key])
    again = BatchedQNetwork([batched.network(i) for i in range(S)])
    for a, b in zip(again.state_dict().values(), batched.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@case_ids
def test_a_seed_alone_computes_what_it_computes_in_a_batch(case):
    cfg = config(**CASES[case])
    batch = stacked_of(cfg)
    x, t = inputs(7, cfg)
    q, rec = batch.forward_record(x, t)
    for i, seed in enumerate(SEEDS):
        alone = stacked_of(cfg, [seed])
        q1, rec1 = alone.forward_record(x[i:i + 1], t[i:i + 1])
        # A batch of one runs other kernel shapes than a batch of S (elementwise tails, BLAS blocking on
        # AVX-512/AMX CPUs): float32 tolerance, not bit-equality.
        torch.testing.assert_close(q1[0], q[i])
        torch.testing.assert_close(rec1.aux_loss()[0], rec.aux_loss()[i])
        m, m1 = rec.metrics(), rec1.metrics()
        for k in m:
            torch.testing.assert_close(m1[k][0], m[k][i], msg=k)


def test_noise_is_per_seed_and_deterministic(monkeypatch):
    """topk noise in a seed-stacked forward: seed i gets slice i of one (S, tokens, experts) draw
    per MoE layer from the global generator, so a fixed torch seed fixes the outputs."""
    cfg = config(**NOISY)
    batched = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, SEEDS)
    x, t = inputs(8)
    torch.manual_seed(123)
    q, rec = batched.forward_record(x, t)
    torch.manual_seed(123)
    q_again, rec_again = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, SEEDS).forward_record(x, t)
    assert torch.equal(q, q_again) and torch.equal(rec.aux_loss(), rec_again.aux_loss())
    assert not torch.equal(batched(x, t), q)  # the generator moved on: new noise

    # The same draws, made by hand, fed to the plain networks give their outputs.
    torch.manual_seed(123)
    tokens = BATCH * cfg.tokens
    draws = [torch.randn(S, tokens, cfg.experts) for _ in range(3)]  # arch "all": three topk layers in order
    for i, net in enumerate(plain_networks(cfg)):
        queue = [d[i] for d in draws]
        monkeypatch.setattr(torch, "randn_like", lambda like, queue=queue: queue.pop(0).to(like))
        single = ForwardRecord()
        torch.testing.assert_close(q[i], net(x[i], t[i], single), **TIGHT)
        torch.testing.assert_close(rec.aux_loss()[i], single.aux_loss(), **TIGHT)
        assert not queue
        monkeypatch.undo()

    # In evaluation mode there is no noise: deterministic without any torch seed, equal to the plain networks.
    batched.eval()
    assert torch.equal(batched(x, t), batched(x, t))
    for i, net in enumerate(plain_networks(cfg)):
        assert batched.network(i).training is False
        torch.testing.assert_close(batched(x, t)[i], net.eval()(x[i], t[i]), **TIGHT)


def test_target_network_copy():
    cfg = config(arch="all", router="softmoe", normalize=True)
    online = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, SEEDS)
    other = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, [1, 2, 3])
    other.copy_from_(online)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), online.state_dict().values(),
                                                 strict=True))
    third = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, [4, 5, 6])
    third.load_state_dict(online.state_dict())
    x, t = inputs(9)
    assert torch.equal(third(x, t), online(x, t))
    with pytest.raises(ValueError, match="same architecture"):
        other.copy_from_(BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, [1, 2]))


def test_bad_inputs_and_mixed_networks_are_refused():
    cfg = config(arch="big", router="hardcoded")
    batched = BatchedQNetwork.from_seeds(IN, ACTIONS, cfg, SEEDS)
    x, t = inputs()
    with pytest.raises(ValueError, match="task id"):
        batched(x)
    with pytest.raises(ValueError, match="expected features"):
        batched(x[:2], t[:2])
    with pytest.raises(ValueError, match="expected task ids"):
        batched(x, t[:, :3])
    with seeded(0):
        nets = [MoEQNetwork(IN, ACTIONS, cfg), MoEQNetwork(IN, ACTIONS, config(arch="big", router="softmoe"))]
    with pytest.raises(ValueError, match="differs from network 0"):
        BatchedQNetwork(nets)
    with pytest.raises(ValueError, match="at least one"):
        BatchedQNetwork([])
    dense = BatchedQNetwork.from_seeds(IN, ACTIONS, config(arch="dense"), SEEDS)
    _, rec = dense.forward_record(x)
    assert torch.equal(rec.aux_loss(), torch.zeros(S))
