"""Backbones: channels-last for convolutional models (a measured CPU speed-up, same outputs)."""

import pytest
import torch

from continual.errors import ConfigError
from continual.models import build_model


def _is_nhwc(model):
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


def _twins(name):
    """The same backbone (same initial weights) stored NHWC and NCHW."""
    torch.manual_seed(0)
    nhwc = build_model(name, (3, 16, 16), 5)
    torch.manual_seed(0)
    nchw = build_model(name, (3, 16, 16), 5, channels_last=False)
    return nhwc, nchw


@pytest.mark.parametrize("name", ["cnn", "resnet18_reduced"])
def test_conv_backbones_are_channels_last_by_default_and_compute_the_same(name):
    nhwc, nchw = _twins(name)
    assert _is_nhwc(nhwc) and not _is_nhwc(nchw)
    nhwc.eval(), nchw.eval()
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(nhwc(x), nchw(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "resnet18_reduced"])
def test_gradients_through_the_nhwc_layout_reach_every_parameter_as_through_nchw(name):
    nhwc, nchw = _twins(name)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for model in (nhwc, nchw):
        model.train()
        torch.nn.functional.cross_entropy(model(x), y).backward()
    reference = dict(nchw.named_parameters())
    for pname, p in nhwc.named_parameters():
        assert p.requires_grad, f"{pname} is frozen"
        assert p.grad is not None, f"no gradient reached {pname}"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname}'s gradient is all zeros"
        torch.testing.assert_close(p.grad, reference[pname].grad, rtol=1e-3, atol=1e-5, msg=pname)


def test_mlp_stays_contiguous_and_rejects_channels_last_on_flat_inputs():
    assert not any(p.dim() == 4 for p in build_model("mlp", (1, 28, 28), 10).parameters())
    with pytest.raises(ConfigError, match="channels_last needs image inputs"):
        build_model("mlp", (40,), 10, channels_last=True)
