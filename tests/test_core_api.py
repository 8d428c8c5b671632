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


@pytest.mark.parametrize(
    "statement",
    ["import bioscan_clip_hf", "import bioscan_clip_hf.cli; bioscan_clip_hf.cli.build_parser()"],
    ids=["package", "cli-parser"],
)
def test_light_imports_load_neither_torch_transformers_nor_datasets(statement):
    """`bioscan-clip --help/--version` must answer at once (pybioclip's lazy import surface)."""
    heavy = ("torch", "transformers", "datasets")
    code = f"import sys; {statement}; print(*[name in sys.modules for name in {heavy!r}])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        bioscan_clip_hf.NoSuchThing  # noqa: B018
