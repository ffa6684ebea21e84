"""The runnable examples in the privacy modules' docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "allowlist", "audit", "batch", "burned_in", "dates", "deid", "freetext", "one_file", "profile", "pseudonym", "table",
    "uids", "walker",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"medanomaly.privacy.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
