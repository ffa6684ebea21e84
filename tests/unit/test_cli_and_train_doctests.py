"""The examples in the docstrings of the CLI's metric summary and the thread probe run and are right: the console
summary of `medanomaly evaluate` lists a case's rows as a count, not as a raw Python list of dicts; a grid
mismatch is said in words (`Volume.grid_mismatch`)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("medanomaly.cli.runs", "medanomaly.train.thread_probe", "medanomaly.types", "medanomaly.processes",
           "medanomaly.io.frames", "medanomaly.io.memory", "medanomaly.errors",
           "medanomaly.config", "medanomaly.deploy.dicom_rtstruct", "medanomaly.deploy.service.ingest",
           "medanomaly.engine.outputs", "medanomaly.jsonio", "medanomaly.deploy.pacs_auth", "medanomaly.deploy.dimse", "medanomaly.deploy.listener", "medanomaly.deploy.dicom_tls", "medanomaly.deploy.dicom_call_sr",
           "medanomaly.deploy.fusion_sets", "medanomaly.deploy.dicom_sr", "medanomaly.engine.alignment",
           "medanomaly.deploy.archive", "medanomaly.io.neuro", "medanomaly.deploy.batch_context", "medanomaly.deploy.pacs_state", "medanomaly.deploy.results",
           "medanomaly.deploy.service.headers", "medanomaly.geometry", "medanomaly.deploy.service.audit",
           "medanomaly.deploy.service.app", "medanomaly.cli.serve", "medanomaly.models.anomaly_autoencoder",
           "medanomaly.models.anomaly_draem", "medanomaly.anomaly.pipeline")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
