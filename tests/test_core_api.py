"""Public import surface: every public name resolves, and importing the package alone is cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bioscan_clip_hf


def test_every_public_name_resolves():
    for name in bioscan_clip_hf.__all__:
        assert getattr(bioscan_clip_hf, name) is not None, name
    assert set(bioscan_clip_hf.__all__) <= set(dir(bioscan_clip_hf))
    assert bioscan_clip_hf.__version__ == "0.1.0"


def test_first_use_registers_the_auto_classes():
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor

    config = AutoConfig.for_model("bioscan_clip")
    assert type(config) is BioscanClipConfig
    assert type(AutoModel.from_config(BioscanClipConfig.from_preset("tiny"))) is BioscanClipModel
    assert BioscanClipProcessor._auto_class == "AutoProcessor" and AutoProcessor is not None


def test_importing_the_package_imports_neither_torch_nor_transformers():
    code = (
        "import sys, bioscan_clip_hf as b; "
        "print(b.__version__, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.1.0", "False", "False"]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        bioscan_clip_hf.NoSuchThing  # noqa: B018
