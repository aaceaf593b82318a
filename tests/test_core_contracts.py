"""The shared contract pieces: registries, the device resolver, seeding without hidden global state."""

import numpy as np
import pytest
import torch

from moerl.core.devices import check_device, resolve_device
from moerl.core.errors import ConfigError
from moerl.core.registry import Registry
from moerl.core.seeding import TorchStream, check_seed, seeded


def test_registry_checks_and_suggests():
    reg = Registry("colour", {"red": "warm", "blue": "cold"})
    assert reg.check("red") == "red"
    assert reg.names == ("red", "blue")
    with pytest.raises(ConfigError, match=r"unknown colour 'rde' \(did you mean 'red'\?\); valid choices: blue, red"):
        reg.check("rde")
    assert "| `blue` | cold |" in reg.markdown()


def test_auto_device_agrees_with_sb3():
    from stable_baselines3.common.utils import get_device

    assert resolve_device("auto") == get_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_is_refused_without_a_gpu():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_seeded_leaves_the_global_stream_untouched():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(1):
        inner = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with seeded(1):
        assert torch.equal(torch.rand(3), inner)


def test_torch_stream_is_one_stream_across_calls_and_independent_of_others():
    s = TorchStream(3)
    with s:
        first = torch.rand(4)
    torch.rand(100)  # someone else draws in between
    with s:
        second = torch.rand(4)
    with seeded(3):
        assert torch.equal(torch.rand(8), torch.cat([first, second]))


def test_torch_stream_state_taken_inside_the_stream_continues_it_exactly():
    """A checkpoint taken mid-training (inside ``with stream:``) holds the live position."""
    s = TorchStream(9)
    with s:
        torch.rand(5)
        saved = s.state_dict()
        expected = torch.rand(6)
    copy = TorchStream(0)
    copy.load_state_dict(saved)
    with copy:
        assert torch.equal(torch.rand(6), expected)
    live = TorchStream(1)
    with live:  # loading inside the stream moves the live generator at once
        live.load_state_dict(saved)
        assert torch.equal(torch.rand(6), expected)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True, "3"])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ConfigError, match="seed must be an integer"):
        check_seed(bad)
    assert check_seed(np.int64(7)) == 7
