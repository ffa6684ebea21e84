"""One 3D image on the CPU runs its convolutions through oneDNN (medanomaly.models.conv3d_cpu)."""

from __future__ import annotations

import copy

import pytest
import torch

from medanomaly.models.conv3d_cpu import onednn_conv3d
from medanomaly.registry import MODELS


def _kernels(net: torch.nn.Module, x: torch.Tensor) -> set[str]:
    """The convolution kernels ``net(x)`` calls (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x).sum().backward()
    return {e.key for e in prof.key_averages() if "conv" in e.key and "transpose" not in e.key}


def _native(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose convolutions run PyTorch's own ``Conv3d.forward``."""
    plain = copy.deepcopy(net)
    for m in plain.modules():
        m.__dict__.pop("forward", None)
    return plain


def test_a_built_network_runs_one_window_through_onednn_with_the_same_outputs_and_gradients() -> None:
    """The lung detector's window at batch size 1 ran 9 of its 11 convolutions in PyTorch's native
    ``slow_conv3d`` (PyTorch's kernel rule is written for 2D inputs), six times slower than oneDNN."""
    torch.manual_seed(0)
    net = MODELS.create("nodule_unet", filters=(8, 16, 32)).eval()
    plain = _native(net)
    x = torch.randn(1, 1, 16, 64, 64, requires_grad=True)
    assert "aten::slow_conv3d_forward" in _kernels(plain, x)
    used = _kernels(net, x)
    assert "aten::mkldnn_convolution" in used and "aten::slow_conv3d_forward" not in used

    xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    out, ref = net(xa), plain(xb)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(torch.cat([xa, xa]))[:1], out, rtol=1e-4, atol=1e-5)  # as a batch of two
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-3, atol=1e-5)
    for p, q in zip(net.parameters(), plain.parameters(), strict=True):  # sums over every voxel: float rounding
        assert float((p.grad - q.grad).abs().max()) <= 1e-3 * float(q.grad.abs().max())
    assert net.state_dict().keys() == plain.state_dict().keys()


def test_what_onednn_does_not_take_goes_through_conv3d_forward_unchanged() -> None:
    conv = onednn_conv3d(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1)))[0]
    x = torch.randn(1, 1, 4, 8, 8)
    assert "aten::mkldnn_convolution" in _kernels(conv, x.clone().requires_grad_())
    with torch.backends.mkldnn.flags(enabled=False):  # the user switched oneDNN off
        assert "aten::mkldnn_convolution" not in _kernels(conv, x.clone().requires_grad_())
    double = onednn_conv3d(torch.nn.Conv3d(1, 2, 3, padding=1).double())
    assert double(x.double()).dtype == torch.float64
    traced = torch.jit.trace(conv, x)  # what ONNX export records: the standard convolution
    assert "mkldnn_convolution" not in str(traced.graph) and "_convolution" in str(traced.graph)
    same = onednn_conv3d(torch.nn.Conv3d(1, 2, 3, padding="same"))  # a word for padding: left as it is
    assert "forward" not in same.__dict__
    assert onednn_conv3d("not a module") == "not a module"


def test_a_deep_copy_runs_its_own_weights() -> None:
    """An averaged copy of the weights (EMA) and a copied network call their own convolution, not the original's."""
    net = onednn_conv3d(torch.nn.Conv3d(1, 1, 3, padding=1, bias=False))
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.weight.zero_()
    x = torch.randn(1, 1, 4, 8, 8)
    with torch.no_grad():
        assert float(twin(x).abs().max()) == 0.0 and float(net(x).abs().max()) > 0.0


@pytest.mark.parametrize("shape", [(2, 1, 4, 8, 8), (1, 1, 4, 8, 8)])
def test_outputs_match_the_native_kernel(shape: tuple[int, ...]) -> None:
    conv = torch.nn.Conv3d(1, 3, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), dilation=1)
    x = torch.randn(*shape)
    ref = conv(x)
    torch.testing.assert_close(onednn_conv3d(conv)(x), ref, rtol=1e-4, atol=1e-5)
