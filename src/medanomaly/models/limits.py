"""Networks are counted before they are allocated, and a network its parameters cannot build is one line.

A config, or a hand-edited run's ``model.json``, may ask for any width: ``filters: [4000, 8000, 16000]``
made a 20.7-billion-parameter U-Net whose allocation the kernel's out-of-memory killer ended 24 GiB in,
with no message at all. So every network (the registered ones through ``MODELS``, and the detectors'
own through :meth:`~medanomaly.registry.Registry.build`) is first made on PyTorch's ``meta`` device,
where tensors have shapes and no storage (no memory, milliseconds), and its parameters are counted
against :func:`max_parameters`. Only then is it made for real.

A factory that cannot build from its parameters (``nodule_unet needs 3 filter sizes``, a negative
width, an unknown variant: TypeError, ValueError, IndexError, KeyError, AssertionError, RuntimeError)
raises :class:`~medanomaly.errors.ConfigError` naming the model and the reason, instead of a traceback. So does a
network with a layer of no weights (a width or filter size of 0): PyTorch builds it, and it failed at its first
forward pass, after the data work, with a convolution's traceback.

Example:
    >>> from medanomaly.registry import MODELS
    >>> MODELS.create("nodule_unet", filters=(4000, 8000, 16000))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medanomaly.errors.ConfigError: model 'nodule_unet': 20,736,200,001 parameters (77.2 GiB of float32 weights) exceed...
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from medanomaly.config import env_whole_number
from medanomaly.errors import ConfigError, MedanomalyError, first_reason

__all__ = ["DEFAULT_MAX_PARAMETERS", "MAX_PARAMETERS_ENV", "build_within_limits", "check_input_shape", "max_parameters",
           "meta_output_shape", "parameter_count", "shape_text"]

#: 2^28 = 268 million parameters: 1 GiB of float32 weights (training with Adam holds about four times
#: that). The largest network in the registry's defaults (ResNet-18 3D) has 33 million.
DEFAULT_MAX_PARAMETERS = 2**28
#: Environment variable that overrides :data:`DEFAULT_MAX_PARAMETERS` (a whole number).
MAX_PARAMETERS_ENV = "MEDANOMALY_MAX_MODEL_PARAMETERS"

_CANNOT_BUILD = (TypeError, ValueError, IndexError, KeyError, AssertionError, RuntimeError)


def max_parameters() -> int:
    """The largest parameter count a network may have: ``MEDANOMALY_MAX_MODEL_PARAMETERS`` or 2^28."""
    return env_whole_number(MAX_PARAMETERS_ENV, DEFAULT_MAX_PARAMETERS, low=1, high=10**12)


def parameter_count(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> int | None:
    """Parameters of ``factory(**kwargs)``, made on the ``meta`` device (no memory); None when the factory
    does not build there (an operation meta tensors do not implement) or makes no torch module."""
    import torch

    try:
        with torch.device("meta"):
            net = _made(name, factory, kwargs)
    except NotImplementedError:
        return None
    if not isinstance(net, torch.nn.Module):
        return None
    empty = next((key for key, p in net.named_parameters() if p.numel() == 0), None)
    if empty is not None:
        raise ConfigError(f"model {name!r} cannot be built from its parameters (layer {empty!r} has no weights: a "
                          "width or filter size of 0?)")  # fmt: skip
    return sum(p.numel() for p in net.parameters())


def build_within_limits(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)`` once its parameter count (on the meta device) is within :func:`max_parameters`;
    a larger network, or parameters it cannot be built from, raise :class:`ConfigError` naming ``name``."""
    limit = max_parameters()
    count = parameter_count(name, factory, kwargs)
    if count is not None and count > limit:
        raise ConfigError(f"model {name!r}: {count:,} parameters ({count * 4 / 2**30:.1f} GiB of float32 "
                          f"weights) exceed the limit of {limit:,}; set {MAX_PARAMETERS_ENV} to allow more")  # fmt: skip
    from medanomaly.models.conv3d_cpu import onednn_conv3d

    return onednn_conv3d(_made(name, factory, kwargs))  # one 3D image on the CPU at oneDNN's speed


def check_input_shape(name: str, factory: Callable[..., Any], kwargs: dict[str, Any], shape: tuple[int, ...],
                      source: str) -> tuple[int, ...] | None:
    """The output shape of ``factory(**kwargs)`` on an input of ``shape`` (batch first), made and run on the
    ``meta`` device (shapes only: no memory, milliseconds), for a task to call before its data work; see
    :func:`meta_output_shape`."""
    import torch

    try:
        with torch.device("meta"):
            net = _made(name, factory, kwargs)
    except NotImplementedError:
        return None
    return meta_output_shape(net, name, shape, source)


def meta_output_shape(net: Any, name: str, shape: tuple[int, ...], source: str) -> tuple[int, ...] | None:
    """The output shape of ``net`` (made on the ``meta`` device) on an input of ``shape``, run once in training
    mode (stricter than eval: an instance norm refuses a single value per channel only while training).

    A network deeper than its input (a pooling or a kernel larger than what is left of the image: PyTorch's
    ``Output size is too small``, which came at the first batch, after the data work) raises
    :class:`ConfigError` naming the model, the input size and ``source`` (the config key that sets it). None
    when it cannot be judged here: not a torch module, or an operation the meta device cannot run.
    """
    import torch

    if not isinstance(net, torch.nn.Module):
        return None
    try:
        with torch.device("meta"), torch.no_grad():
            out = net.train()(torch.empty(shape))
    except NotImplementedError:
        return None
    except (*_CANNOT_BUILD, ArithmeticError) as exc:
        if "meta" in str(exc).lower():  # an operation that needs values (.item(), data-dependent shapes)
            return None
        reason = f"{type(exc).__name__}: a stride or size of 0?" if isinstance(exc, ArithmeticError) else first_reason(exc)
        raise ConfigError(f"model {name!r} cannot take inputs of {shape_text(shape)} ({source}; channels "
                          f"first): {reason}") from None  # fmt: skip
    return tuple(out.shape) if isinstance(out, torch.Tensor) else None


def shape_text(shape: tuple[int, ...]) -> str:
    """``1 x 8 x 8``: a batch-first shape without its batch."""
    return " x ".join(str(s) for s in shape[1:])


def _made(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``; what it raises over its parameters becomes one :class:`ConfigError` line."""
    try:
        with warnings.catch_warnings():  # a width of 0: torch warns, on two lines, before the check below refuses it
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            return factory(**kwargs)
    except (MedanomalyError, NotImplementedError):
        raise  # ours already say what is wrong; NotImplementedError: the meta device, handled above
    except _CANNOT_BUILD as exc:
        raise ConfigError(f"model {name!r} cannot be built from its parameters "
                          f"({type(exc).__name__}: {first_reason(exc)})") from None  # fmt: skip
