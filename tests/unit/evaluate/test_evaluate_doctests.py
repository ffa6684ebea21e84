"""The examples in the docstrings of the classification-evaluation modules run and are right."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "medanomaly.evaluate.metrics",
    "medanomaly.evaluate.auroc",
    "medanomaly.evaluate.calibration",
    "medanomaly.evaluate.plots",
    "medanomaly.evaluate.report",
    "medanomaly.evaluate.recurrence",
    "medanomaly.evaluate.froc",
    "medanomaly.evaluate.lung_report",
    "medanomaly.synth.mammo",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
