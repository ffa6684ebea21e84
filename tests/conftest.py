"""Shared test set-up. Real data is found through medanomaly.data.sources.real_data (no skips)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two xdist workers on two cores: one BLAS/torch thread each, or they fight over the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests (hypothesis) draw the same cases on every run by default, so `make test` cannot turn
# red on a case nobody changed code for; HYPOTHESIS_PROFILE=explore draws new random cases (run it
# to hunt for bugs: a failure there is a bug report, with the failing example printed).
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


def pytest_configure(config):  # noqa: D103
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def predict_without_torch():
    """A function ``(package, image) -> {"label", "scores", "findings"}`` that runs
    ``load_package(package).predict(read(image))`` in a fresh interpreter where ``torch`` and
    ``monai`` cannot be imported (an exported package must not need them)."""

    def run(package: Path, image: Path, timeout: float = 300) -> dict:
        code = (
            "import json, sys; sys.modules['torch'] = None; sys.modules['monai'] = None\n"
            "from medanomaly.deploy.package import load_package\nfrom medanomaly.io import read\n"
            f"p = load_package({str(package)!r}).predict(read({str(image)!r}))\n"
            "assert sys.modules.get('torch') is None\n"
            "print(json.dumps({'label': p.label, 'scores': [float(s) for s in p.scores], 'findings': len(p.findings)}))\n"
        )  # fmt: skip
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, res.stderr[-2000:]
        return json.loads(res.stdout.strip().splitlines()[-1])

    return run
