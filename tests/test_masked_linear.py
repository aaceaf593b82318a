"""MaskedLinear: exact density, gradients through masks, threshold start, freezing."""

import pytest
import torch

from moerl.masked.nn.linear import MaskedLinear

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["fixed", "lu", "lowrank"])
@pytest.mark.parametrize("density", [0.5, 0.25, 0.9])
def test_exact_density(kind, density):
    layer = MaskedLinear(37, 23, mask=kind, density=density, rank=8, generator=torch.Generator().manual_seed(1))
    assert int(layer.binary_mask().sum()) == round(density * 37 * 23)


@pytest.mark.parametrize("kind", ["fixed", "lu", "lowrank"])
def test_masked_out_weights_get_zero_gradient(kind):
    layer = MaskedLinear(16, 12, mask=kind, rank=4)
    x = torch.randn(8, 16)
    layer(x).pow(2).sum().backward()
    mask = layer.binary_mask().bool()
    assert (layer.weight.grad[~mask] == 0).all()
    assert (layer.weight.grad[mask] != 0).any()


@pytest.mark.parametrize("kind,mode", [("lu", "topk"), ("lu", "threshold"), ("lowrank", "topk")])
def test_mask_factors_get_gradient_through_ste(kind, mode):
    layer = MaskedLinear(16, 12, mask=kind, rank=4, mode=mode)
    layer(torch.randn(8, 16)).pow(2).sum().backward()
    for p in layer.mask_factors():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_lu_factors_are_triangular():
    layer = MaskedLinear(10, 6, mask="lu", rank=4)
    layer(torch.randn(3, 10)).sum().backward()
    # strictly-upper part of L and strictly-lower part of U do not influence S: zero gradient
    assert (torch.triu(layer.mask_l.grad) == 0).all()
    assert (torch.tril(layer.mask_u.grad, diagonal=-1) == 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_threshold_mode_never_starts_all_off(seed):
    layer = MaskedLinear(64, 32, mask="lu", mode="threshold", generator=torch.Generator().manual_seed(seed))
    assert 0.2 < layer.density() < 0.8
    assert layer.density_penalty() > 0 or layer.density() == 0.5


def test_fixed_mask_is_stable_under_training():
    layer = MaskedLinear(16, 8, mask="fixed")
    before = layer.binary_mask().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(4, 16)).sum().backward()
        opt.step()
    assert torch.equal(before, layer.binary_mask())


def test_lu_mask_moves_with_training():
    layer = MaskedLinear(16, 8, mask="lu", rank=4)
    before = layer.binary_mask().clone()
    opt = torch.optim.SGD(layer.mask_factors(), lr=5.0)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(4, 16)).sum().backward()
        opt.step()
    after = layer.binary_mask()
    assert not torch.equal(before, after)
    assert int(after.sum()) == int(before.sum())  # still exact density


@pytest.mark.parametrize("kind", ["none", "fixed", "lu", "lowrank"])
def test_freeze_gives_bitwise_identical_outputs_while_others_train(kind):
    torch.manual_seed(0)
    frozen = MaskedLinear(12, 10, mask=kind, rank=4)
    other = MaskedLinear(10, 3, mask=kind, rank=4)
    frozen.freeze()
    assert frozen.frozen_mask.dtype == torch.uint8
    assert not any(p.requires_grad for p in frozen.parameters())
    x = torch.randn(6, 12)
    ref = frozen(x).clone()
    # an optimiser that (wrongly) still holds the frozen parameters cannot move them: no gradient
    opt = torch.optim.AdamW([*frozen.parameters(), *other.parameters()], lr=0.1, weight_decay=0.0)
    for _ in range(5):
        opt.zero_grad()
        other(torch.relu(frozen(torch.randn(6, 12)))).pow(2).sum().backward()
        opt.step()
    assert torch.equal(frozen(x), ref)


def test_freeze_survives_state_dict_round_trip():
    a = MaskedLinear(8, 4, mask="lu", rank=2)
    a.freeze()
    b = MaskedLinear(8, 4, mask="lu", rank=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 8)
    assert b.frozen and torch.equal(a(x), b(x))


def test_bad_arguments_raise_config_errors():
    from moerl.core.errors import ConfigError

    with pytest.raises(ConfigError, match="valid choices"):
        MaskedLinear(4, 4, mask="lux")
    with pytest.raises(ConfigError, match="density"):
        MaskedLinear(4, 4, mask="fixed", density=0.0)
