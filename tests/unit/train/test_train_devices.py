"""Inputs go to the device the network lives on: a network trained on a GPU (``train.device`` auto picks one when
present) is validated and mines its hard negatives with the sliding window while it is still there. Without this,
MONAI's windows stayed on the CPU and the first validation of a GPU run failed on mixed devices."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_module_device_is_where_the_first_parameter_lives() -> None:
    from medanomaly.train.distributed import module_device

    assert module_device(torch.nn.Linear(2, 1)) == torch.device("cpu")
    assert module_device(torch.nn.Linear(2, 1, device="meta")) == torch.device("meta")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters
    assert module_device(lambda x: x) == torch.device("cpu")  # a plain callable (an exported runner)


def test_sliding_windows_run_on_the_networks_device_and_come_back_to_the_cpu(monkeypatch) -> None:
    import monai.inferers

    from medanomaly.detect.infer import run_network

    seen = {}

    def spy(inputs, roi_size, sw_batch_size, predictor, **kwargs):
        seen.update(kwargs, input_device=inputs.device)
        return torch.zeros_like(inputs)

    monkeypatch.setattr(monai.inferers, "sliding_window_inference", spy)
    network = torch.nn.Conv3d(1, 1, 1, device="meta")  # a stand-in for a GPU: not the CPU
    prob = run_network(network, np.zeros((4, 8, 8), np.float32), (2, 4, 4), 0.25)
    assert seen["sw_device"] == torch.device("meta") and seen["device"] == "cpu"
    assert seen["input_device"] == torch.device("cpu")  # the whole image stays on the CPU
    assert prob.shape == (4, 8, 8) and float(prob.max()) == 0.5


def test_a_cpu_network_gives_the_same_heatmap_as_before() -> None:
    """The plain CPU path (every test and CI machine) is the same sliding window: values against a direct call."""
    from monai.inferers import sliding_window_inference

    from medanomaly.detect.infer import run_network

    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    image = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    with torch.no_grad():
        direct = torch.sigmoid(sliding_window_inference(torch.from_numpy(image)[None, None], (2, 8, 8), 1, network,
                                                        overlap=0.25, mode="gaussian"))[0, 0].numpy()
    np.testing.assert_allclose(run_network(network, image, (2, 8, 8), 0.25), direct, atol=1e-6)
