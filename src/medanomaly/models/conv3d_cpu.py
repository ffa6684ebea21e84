"""3D convolutions of one image on the CPU run through oneDNN, as they do for a batch of two or more.

PyTorch picks a float32 CPU convolution's kernel by a rule written for 2D images: an input of batch size 1 goes
to oneDNN (mkldnn) only when N x C x D x H exceeds 20,480 (for a 2D input N x C x H x W), otherwise to the
native ``slow_conv3d`` (an unfold and one matrix product). A 3D network's window is small in that count: the
lung detector's 16 x 128 x 128 window has 1 x 1 x 16 x 128 = 2,048 at its first layer and 16,384 at its
8-channel level, so 9 of its 11 convolutions ran native whenever one image was in the batch, which is every
sliding window of ``detect``, every ``predict`` / ``explain`` of one 3D image and the training's validation
scans. Measured on a 2-core AMD EPYC (torch 2.13, 2 threads, ``bench/bench_conv3d_cpu.py``): that window took
0.88 s alone and 0.15 s per window in a batch of two; one 8-channel 3 x 3 x 3 layer on it 0.31 s native and
0.034 s with oneDNN.

:func:`onednn_conv3d` makes each ``torch.nn.Conv3d`` of a network call ``torch.mkldnn_convolution`` (the
kernel PyTorch itself calls for larger inputs; forward and backward) at batch size 1 on the CPU in float32.
Anything else goes through ``Conv3d.forward`` unchanged: other batch sizes, devices and dtypes, autocast
(bfloat16 already goes to oneDNN), a ``padding`` given as a word or a ``padding_mode`` other than zeros, oneDNN
switched off (``torch.backends.mkldnn.flags(enabled=False)``), and tracing or compiling (ONNX export records
the standard convolution). Subclasses with their own forward (quantisation-aware ``Conv3d``) are left alone.
The parameters and ``state_dict`` are the same; the results differ from the native kernel's by float rounding
(about 1e-6 relative).

Example:
    >>> import torch
    >>> conv = onednn_conv3d(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1)))[0]
    >>> x = torch.randn(1, 1, 4, 8, 8)
    >>> bool(torch.allclose(conv(x), torch.nn.Conv3d.forward(conv, x), atol=1e-5))
    True
"""

from __future__ import annotations

import types
from typing import Any


def onednn_conv3d(net: Any) -> Any:
    """``net`` with each plain ``torch.nn.Conv3d`` calling oneDNN at batch size 1 on the CPU (in place;
    returned for chaining). Anything that is not a torch module is returned as it is."""
    import torch

    if not isinstance(net, torch.nn.Module):
        return net
    for module in net.modules():
        if type(module) is torch.nn.Conv3d and not isinstance(module.padding, str) and module.padding_mode == "zeros":
            module.forward = types.MethodType(_forward, module)
    return net


def _forward(conv: Any, x: Any) -> Any:
    import torch

    if _one_image_on_cpu(conv, x):
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                        conv.groups)  # fmt: skip
    return torch.nn.Conv3d.forward(conv, x)


def _one_image_on_cpu(conv: Any, x: Any) -> bool:
    """Whether ``x`` is one float32 image on the CPU that oneDNN can take (PyTorch's rule sends such an image to its
    native kernel unless N x C x D x H > 20,480; above it oneDNN is the kernel PyTorch would have called anyway)."""
    import torch

    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False  # an export records the standard convolution (its shapes are not to be read here)
    return (
        x.dim() == 5 and x.shape[0] == 1 and x.layout == torch.strided and x.device.type == "cpu"
        and x.dtype == torch.float32 and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)
        and not torch.is_autocast_enabled("cpu")
    )  # fmt: skip
