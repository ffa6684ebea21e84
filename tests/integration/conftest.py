"""Integration-test helpers: the committed lung detector fixture as a finished run folder.

``tests/fixtures/lung_detector/`` holds the demo lung_nodule detector (``LungNoduleConfig()``
defaults) trained once on simulated nodules inserted into lung1 / lung2 (synthetic training data):
its weights (``model.safetensors``, < 2 MB), ``detector.json``, ``model.json``, ``config.yaml`` and
``status.json`` (complete): a finished run folder as it is.
Its top finding on lung1 and on lung2 is the real lesion, which is all the viewer and service
tests need; it is not a validated detector.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "lung_detector"


def lung_detector_run(dest: Path) -> Path:
    """Copy the fixture detector (a finished run folder, ``status.json`` included) into ``dest``.

    Args:
        dest: the run folder to create; its name is the model's name in ``medanomaly serve``.

    Returns:
        ``dest``, loadable by ``medanomaly.engine.load_model``.
    """
    return Path(shutil.copytree(FIXTURE_DIR, dest))


@pytest.fixture(scope="session")
def fixture_lung_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder called ``lung`` holding the fixture detector."""
    return lung_detector_run(tmp_path_factory.mktemp("fixture-run") / "lung")
