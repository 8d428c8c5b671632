"""BIOSCAN-CLIP (CLIBD) for Hugging Face: insect images, DNA barcodes and taxonomy in one embedding space.

Importing the package registers the classes with the transformers Auto classes, so saved models
load with ``AutoModel.from_pretrained(dir)`` even without ``trust_remote_code`` while the package is
installed; the files saved next to the weights make ``trust_remote_code=True`` work without it.

Example:

```python
>>> from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor
>>> model = BioscanClipModel(BioscanClipConfig.from_preset("tiny")).eval()
>>> processor = BioscanClipProcessor.from_preset("tiny")
>>> embeds = model.get_dna_features(**processor(dna=["ACGT" * 165]))
>>> embeds.shape
torch.Size([1, 32])

```
"""

from __future__ import annotations

import importlib
from typing import Any

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_bioscan_clip import BioscanClipConfig
from .modeling_bioscan_clip import BioscanClipModel, BioscanClipOutput, bioscan_clip_loss
from .processing_bioscan_clip import BioscanClipProcessor, taxonomy_text
from .tokenization_barcode import BarcodeKmerTokenizer

__version__ = "0.1.0"

# Hub code: save_pretrained copies the .py files and writes auto_map (the model adds both of its
# Auto classes itself, see BioscanClipModel.save_pretrained).
BioscanClipConfig.register_for_auto_class()
BioscanClipModel.register_for_auto_class("AutoModel")
BioscanClipProcessor.register_for_auto_class("AutoProcessor")

# Installed-package path: the Auto classes resolve "bioscan_clip" without remote code.
AutoConfig.register(BioscanClipConfig.model_type, BioscanClipConfig, exist_ok=True)
AutoModel.register(BioscanClipConfig, BioscanClipModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(BioscanClipConfig, BioscanClipModel, exist_ok=True)
AutoProcessor.register(BioscanClipConfig, BioscanClipProcessor, exist_ok=True)

# Heavier parts of the package load on first use.
_LAZY = {
    "ZeroShotClassifier": "zero_shot",
    "KeyBank": "zero_shot",
    "evaluate_model": "evaluation",
    "load_bioscan": "data",
    "BioscanCollator": "data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BarcodeKmerTokenizer",
    "BioscanClipConfig",
    "BioscanClipModel",
    "BioscanClipOutput",
    "BioscanClipProcessor",
    "__version__",
    "bioscan_clip_loss",
    "taxonomy_text",
    *_LAZY,
]
