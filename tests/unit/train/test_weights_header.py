"""Weights files are checked before their tensors are read: a safetensors header may declare tensors of any size
(a sparse 40 GB file costs a few bytes of disk), so names and shapes are compared with the model first, and an
anomaly method's state larger than the memory available is refused before it is read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from medanomaly.errors import InputError
from medanomaly.train.checkpoint import load_weights, save_weights


def _sparse_safetensors(path: Path, tensors: dict[str, list[int]]) -> Path:
    """A safetensors file whose float32 tensors of these shapes are holes: its length is right, its disk use nil."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * int(torch.tensor(shape).prod())
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        fh.truncate(8 + len(text) + offset)
    return path


def _never_loaded(monkeypatch) -> None:
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("the tensors were read")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)


def test_a_declared_tensor_the_model_lacks_is_refused_before_reading(tmp_path, monkeypatch):
    net = torch.nn.Linear(3, 2)
    state = {k: list(v.shape) for k, v in net.state_dict().items()}
    path = _sparse_safetensors(tmp_path / "w.safetensors", {**state, "huge": [10_000_000_000]})
    _never_loaded(monkeypatch)
    with pytest.raises(InputError, match=r"weights do not fit the model \(1 tensor\(s\) the model does not have, "
                                         r"e\.g\. 'huge'\)"):  # fmt: skip
        load_weights(net, path)


def test_a_wrong_shape_or_a_missing_tensor_is_named(tmp_path, monkeypatch):
    net = torch.nn.Linear(3, 2)
    wrong = _sparse_safetensors(tmp_path / "wrong.safetensors", {"weight": [2, 300_000_000], "bias": [2]})
    missing = _sparse_safetensors(tmp_path / "missing.safetensors", {"weight": [2, 3]})
    _never_loaded(monkeypatch)
    with pytest.raises(InputError, match=r"'weight' has shape \[2, 300000000\], the model's is \[2, 3\]"):
        load_weights(net, wrong)
    with pytest.raises(InputError, match=r"1 tensor\(s\) of the model missing, e\.g\. 'bias'"):
        load_weights(net, missing)


def test_fitting_weights_still_load(tmp_path):
    net, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    load_weights(other, save_weights(net, tmp_path / "w.safetensors"))
    assert torch.equal(other.weight, net.weight)


def test_an_anomaly_state_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    from medanomaly.anomaly.task import load_state
    from medanomaly.io import limits

    path = _sparse_safetensors(tmp_path / "weights.safetensors", {"mean": [600_000_000]})  # 2.2 GiB of holes
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(InputError, match=r"weights of 2\.235 GiB do not fit in the 1 GiB of memory available"):
        load_state(path)
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_state(tmp_path / "garbage.safetensors")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_holding_nan_or_infinity_are_refused_naming_the_tensor(tmp_path, value):
    """No training writes a NaN or infinite weight; a network loaded with one answers NaN for every input, which was
    then reported against the image (a NaN map, NaN probabilities). Refused at load, naming the tensor; the model keeps
    its own weights."""
    from safetensors.torch import save_file

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["0.bias"][1] = value
    save_file(state, str(tmp_path / "w.safetensors"))
    before = net[0].bias.detach().clone()
    with pytest.raises(InputError, match=r"weights hold NaN or infinite values \(tensor '0\.bias'\)"):
        load_weights(net, tmp_path / "w.safetensors")
    assert torch.equal(net[0].bias, before)
