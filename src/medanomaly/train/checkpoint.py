"""Checkpoints in safetensors: model weights, and resumable training state, never pickle.

* ``save_weights`` / ``load_weights``: a model's ``state_dict`` as one ``.safetensors`` file.
* ``save_training_state`` / ``load_training_state``: everything a run needs to resume exactly:
  model, optimiser and schedule state, epoch, best score, early-stopping counter, history and the
  torch / NumPy random states. Tensors go to ``state.safetensors``; everything else (ints, floats,
  lists, the optimiser's param groups) to ``state.json``.

Example:
    >>> import tempfile, torch
    >>> net = torch.nn.Linear(2, 2)
    >>> path = save_weights(net, tempfile.mkdtemp() + "/w.safetensors")
    >>> net2 = torch.nn.Linear(2, 2)
    >>> _ = load_weights(net2, path)
    >>> bool(torch.equal(net.weight, net2.weight))
    True
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, unfit_file
from medanomaly.io.staged import write_safetensors
from medanomaly.jsonio import read_json, write_text_atomic

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def save_weights(model, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` to a safetensors file (shared tensors are cloned), all-or-nothing."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return write_safetensors(path, lambda staged: save_file(state, staged, metadata=metadata))


def _header_misfit(path: Path, model, strict: bool) -> str:
    """What in the file's header (names and shapes, read without the tensor data) does not fit ``model``, or "".

    A hostile or foreign file can declare tensors of any size: they are compared with the model before a byte of
    them is read, so an extra 40 GB tensor is refused, not loaded."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:  # "pt" would map the whole file through torch
        declared = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    unknown = sorted(set(declared) - set(expected))
    missing = sorted(set(expected) - set(declared)) if strict else []
    wrong = sorted(k for k in set(declared) & set(expected) if declared[k] != expected[k])
    if unknown:
        return f"{len(unknown)} tensor(s) the model does not have, e.g. {unknown[0]!r}"
    if missing:
        return f"{len(missing)} tensor(s) of the model missing, e.g. {missing[0]!r}"
    if wrong:
        return f"{wrong[0]!r} has shape {list(declared[wrong[0]])}, the model's is {list(expected[wrong[0]])}"
    return ""


def non_finite_tensor(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor (torch or NumPy) of ``state`` that holds NaN or infinity, or None:
    no training writes one, and a network run with it answers NaN for every input (which was then reported as a
    fault of the image: "image has 302670 NaN/infinite voxels").

    Example:
        >>> import numpy as np
        >>> non_finite_tensor({"a": np.ones(2), "b": np.array([1.0, np.nan]), "c": np.arange(2)})
        'b'
    """
    for key, value in state.items():
        if hasattr(value, "is_floating_point"):  # a torch tensor
            if value.is_floating_point() and not bool(value.isfinite().all()):
                return key
        elif np.asarray(value).dtype.kind in "fc" and not np.isfinite(value).all():
            return key
    return None


def load_weights(model, path: str | Path, strict: bool = True):
    """Load safetensors weights into ``model`` (in place); returns the model. The header is checked against the
    model first (names and shapes): nothing is read from a file whose tensors do not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    try:
        misfit = _header_misfit(path, model, strict)
        if misfit:
            raise InputError(f"weights do not fit the model ({misfit})", path)
        state = load_file(str(path))
    except (SafetensorError, OSError):
        raise InputError("not a readable safetensors file", path) from None
    bad = non_finite_tensor(state)
    if bad is not None:
        raise InputError(f"weights hold NaN or infinite values (tensor {bad!r})", path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the model ({str(exc).splitlines()[0]})", path) from None
    return model


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimiser state_dict into tensors (by dotted key) and JSON-able rest."""
    import torch

    tensors: dict[str, Any] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        plain["state"][str(pid)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
                plain["state"][str(pid)][key] = "__tensor__"
            else:
                plain["state"][str(pid)][key] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in plain["state"].items():
        state[int(pid)] = {k: tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v for k, v in entry.items()}
    return {"state": state, "param_groups": plain["param_groups"]}


def save_training_state(directory: str | Path, model, optimizer, scheduler, info: dict[str, Any],
                        np_rng: np.random.Generator | None = None, average=None) -> Path:
    """Write a resumable training state into ``directory`` (atomically: temp files, then rename); ``average``:
    the run's :class:`medanomaly.train.averaging.WeightAverage`, if any."""
    import torch
    from safetensors.torch import save_file

    from medanomaly.jsonio import finite_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    opt_tensors, opt_plain = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if average is not None:
        tensors.update({f"average.{k}": v for k, v in average.state_tensors().items()})
    sched = scheduler.state_dict() if scheduler is not None else None
    if sched is not None:
        sched = {k: v for k, v in sched.items() if not callable(v) and k != "lr_lambdas"}
    payload = {"info": info, "optimizer": opt_plain, "scheduler": sched,
               "np_rng": np_rng.bit_generator.state if np_rng is not None else None}
    text = json.dumps(finite_json(payload), default=_json_default)  # NaN -> null: valid JSON
    write_safetensors(directory / STATE_TENSORS, lambda staged: save_file(tensors, staged))
    write_text_atomic(directory / STATE_JSON, text)
    return directory


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def has_training_state(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / STATE_TENSORS).is_file() and (d / STATE_JSON).is_file()


def load_training_state(directory: str | Path, model, optimizer, scheduler,
                        np_rng: np.random.Generator | None = None, average=None) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote (in place); returns the saved ``info``. A state saved
    without a weight average leaves ``average`` as it is (it then starts from the restored weights' next step)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not has_training_state(directory):
        raise InputError("no training state to resume from", directory)
    try:
        tensors = load_file(str(directory / STATE_TENSORS))
        payload = read_json(directory / STATE_JSON)
    except (SafetensorError, OSError, ValueError):
        raise InputError("not a readable checkpoint (state.safetensors + state.json)", directory) from None
    with checkpoint_values(directory):
        return _restore(tensors, payload, model, optimizer, scheduler, np_rng, average)


@contextmanager
def checkpoint_values(directory: str | Path) -> Iterator[None]:
    """Inside the block, a training state's values that do not fit the run (a hand-edited or foreign state: a
    tensor of the wrong shape, a missing key, a wrong type) are one :class:`InputError` naming ``directory``
    (``checkpoint values do not fit (...)``), not a traceback."""
    with unfit_file(directory, "checkpoint values"):
        try:
            yield
        except KeyError as exc:
            raise ValueError(f"missing {exc}") from None
        except (IndexError, ZeroDivisionError) as exc:  # e.g. an empty list of sampler states
            raise ValueError(f"a list too short ({exc})") from None


def _restore(tensors: dict[str, Any], payload: dict[str, Any], model, optimizer, scheduler,
             np_rng: np.random.Generator | None, average) -> dict[str, Any]:
    """Apply a read training state to the run's objects; returns its ``info``."""
    import torch

    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, payload["optimizer"]))
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict({**scheduler.state_dict(), **payload["scheduler"]})
    torch.set_rng_state(tensors["rng.torch"])
    averaged = {k[len("average."):]: v for k, v in tensors.items() if k.startswith("average.")}
    if average is not None and averaged:
        average.load_state_tensors(averaged)
    if np_rng is not None and payload["np_rng"] is not None:
        np_rng.bit_generator.state = payload["np_rng"]
    return payload["info"]
