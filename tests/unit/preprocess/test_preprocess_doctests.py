"""The runnable examples in the preprocess docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["checks", "denoise", "enhance", "intensity", "normalise", "resample", "resize", "recipes", "segment", "pipeline",
           "steps", "overlay"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"medanomaly.preprocess.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
