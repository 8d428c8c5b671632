"""The examples in the core modules' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "bioscan_clip_hf",
    "bioscan_clip_hf.configuration_bioscan_clip",
    "bioscan_clip_hf.modeling_bioscan_clip",
    "bioscan_clip_hf.processing_bioscan_clip",
    "bioscan_clip_hf.image_processing_bioscan_clip",
    "bioscan_clip_hf.tokenization_barcode",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
