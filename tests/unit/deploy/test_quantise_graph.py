"""The int8 graph runs as integer kernels: after ONNX Runtime's graph optimisation every
convolution of a quantised residual conv net is a ``QLinearConv`` (none left as dequantise + float
``Conv``) and the residual add is a ``QLinearAdd``. With int8 (S8S8) activations ORT on an x86 CPU
without VNNI left convolutions in float, which is why int8 was only 1.6x eager torch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def _optimised_ops(path: Path, tmp: Path) -> Counter[str]:
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp / "optimised.onnx")
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp / "optimised.onnx")).graph.node)


def test_quantised_convolutions_all_run_as_qlinearconv(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from medanomaly.deploy.export import GraphSpec, export_graph
    from medanomaly.deploy.quantise import quantise_graph

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))  # fmt: skip
            self.head = nn.Conv2d(16, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            return self.head(torch.relu(h + self.body(h))).mean((2, 3))

    torch.manual_seed(0)
    net = Block().eval()
    spec = GraphSpec(net, (torch.zeros(1, 1, 32, 32),), ["input"], ["logits"], {"input": {0: "b"}, "logits": {0: "b"}})
    fp32 = export_graph(spec, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    int8 = quantise_graph(fp32, tmp_path / "m.int8.onnx",
                          [{"input": rng.random((1, 1, 32, 32)).astype(np.float32)} for _ in range(4)])  # fmt: skip
    ops = _optimised_ops(int8, tmp_path)
    assert ops["QLinearConv"] == 4 and ops["Conv"] == 0 and ops["FusedConv"] == 0, ops
    assert ops["QLinearAdd"] == 1, ops
