"""Arithmetic precision of a network's forward pass: float32, or bfloat16 autocast where the hardware has it.

``bf16`` runs the forward pass under :func:`torch.autocast` with bfloat16 (convolutions and matrix products in
bfloat16, reductions and losses kept in float32 by torch's autocast lists) and hands float32 outputs on, so losses,
sigmoids and everything after see float32. The weights and the optimiser stay float32 (mixed precision, not a
bfloat16 model), and what is saved is float32. On a 2-core AVX512-BF16 CPU (the previous pass's machine, ``bench/bench_precision.py``,
2 threads) a training step of the full lung detector (16-32-64 filters, batch 8, 8 x 48 x 48 patches) took 360 ms in
float32 and 196 ms in bfloat16, the demo's 8-16-32 network 186 and 116 ms; one 16 x 128 x 128 inference window
267 / 102 ms and 457 / 49 ms. Without native support bfloat16 is emulated and slow: ``auto`` takes it only where
the device has it (:func:`native_bf16`), else float32.

Example:
    >>> resolve_precision("fp32", "cpu"), resolve_precision("bf16", "cpu")
    ('fp32', 'bf16')
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = ["PRECISIONS", "Precision", "checked_precision", "in_precision", "native_bf16", "network_in_precision",
           "resolve_precision"]

#: What a config may ask (the ``train.precision`` field's type): ``fp32``, ``bf16`` (always), ``auto`` (bf16 where
#: the device computes it natively).
Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def native_bf16(device_type: str) -> bool:
    """True when ``device_type`` (``cpu`` or ``cuda``) computes bfloat16 natively: a CUDA GPU that supports it, a CPU
    with AVX512-BF16 or AMX tiles (torch's own CPU feature checks; False where this torch has none)."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def checked_precision(precision: Any) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: another value (a hand-edited saved detector; configs refuse it first).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(precision)


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for what a config asks (:data:`PRECISIONS`) on ``device``: a device setting (``auto``,
    ``cpu``, ``cuda``) or a torch device's name (``cuda:0``).

    Raises:
        ValueError: not one of :data:`PRECISIONS`.
    """
    if checked_precision(precision) != "auto":
        return precision
    if device == "auto":
        from medanomaly.train.distributed import resolve_device

        device = resolve_device(device)
    return "bf16" if native_bf16(str(device).split(":")[0]) else "fp32"


def _as_float32(out: Any) -> Any:
    """Tensors (also in tuples, lists and dicts) of a floating type as float32; anything else as it is."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_as_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _as_float32(v) for k, v in out.items()}
    return out


def in_precision(module: Any, precision: str) -> Any:
    """``module`` itself for ``fp32``; for ``bf16`` a module whose forward runs ``module`` under bfloat16 autocast
    on its own device type and returns float32 outputs. Its only submodule is ``module`` (as ``.net``), so its
    ``train()`` / ``eval()`` reach it; unwrapping a DDP wrapper (``.module``) finds this one, still in bfloat16."""
    if precision == "fp32":
        return module
    if precision != "bf16":
        raise ValueError(f"precision must be fp32 or bf16 here, got {precision!r}")
    import torch

    from medanomaly.train.distributed import module_device

    class _BFloat16(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            with torch.autocast(module_device(self.net).type, dtype=torch.bfloat16):
                out = self.net(*args, **kwargs)
            return _as_float32(out)

    return _BFloat16()


def network_in_precision(network: Any, precision: str) -> Any:
    """``network`` run in ``precision`` (:data:`PRECISIONS`, ``auto`` resolved on the device its weights are on)."""
    from medanomaly.train.distributed import module_device

    return in_precision(network, resolve_precision(precision, module_device(network).type))
