"""BIOSCAN-CLIP (CLIBD) for Hugging Face: insect images, DNA barcodes and taxonomy in one embedding space.

Names load on first use (``import bioscan_clip_hf`` alone imports neither torch nor transformers, so
``bioscan-clip --version`` is instant). The first use of a core class also registers the classes
with the transformers Auto classes, so saved models load with ``AutoModel.from_pretrained(dir)``
without ``trust_remote_code`` while the package is installed; the code files saved next to the
weights make ``trust_remote_code=True`` work without it.

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
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> submodule. The first group is the core API (registered with the Auto classes).
_CORE = {
    "BioscanClipConfig": "configuration_bioscan_clip",
    "BioscanClipModel": "modeling_bioscan_clip",
    "BioscanClipOutput": "modeling_bioscan_clip",
    "bioscan_clip_loss": "modeling_bioscan_clip",
    "BioscanClipProcessor": "processing_bioscan_clip",
    "taxonomy_text": "processing_bioscan_clip",
    "BioscanClipImageProcessor": "image_processing_bioscan_clip",
    "BarcodeKmerTokenizer": "tokenization_barcode",
}
_LAZY = {
    "ZeroShotClassifier": "zero_shot",
    "KeyBank": "zero_shot",
    "evaluate_model": "evaluation",
    "load_bioscan": "data",
    "BioscanCollator": "data",
}
_registered = False

if TYPE_CHECKING:  # static analysers see the real names
    from .configuration_bioscan_clip import BioscanClipConfig
    from .data import BioscanCollator, load_bioscan
    from .evaluation import evaluate_model
    from .image_processing_bioscan_clip import BioscanClipImageProcessor
    from .modeling_bioscan_clip import BioscanClipModel, BioscanClipOutput, bioscan_clip_loss
    from .processing_bioscan_clip import BioscanClipProcessor, taxonomy_text
    from .tokenization_barcode import BarcodeKmerTokenizer
    from .zero_shot import KeyBank, ZeroShotClassifier


def register_auto_classes() -> None:
    """Register the core classes with AutoConfig/AutoModel/AutoModelForZeroShotImageClassification/
    AutoProcessor (idempotent; done automatically on first use of a core name)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor

    from .configuration_bioscan_clip import BioscanClipConfig
    from .modeling_bioscan_clip import BioscanClipModel
    from .processing_bioscan_clip import BioscanClipProcessor

    AutoConfig.register(BioscanClipConfig.model_type, BioscanClipConfig, exist_ok=True)
    AutoModel.register(BioscanClipConfig, BioscanClipModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(BioscanClipConfig, BioscanClipModel, exist_ok=True)
    AutoProcessor.register(BioscanClipConfig, BioscanClipProcessor, exist_ok=True)
    _registered = True


def __getattr__(name: str) -> Any:
    if name in _CORE:
        register_auto_classes()
        module = _CORE[name]
    elif name in _LAZY:
        module = _LAZY[name]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CORE) | set(_LAZY))


__all__ = ["__version__", "register_auto_classes", *_CORE, *_LAZY]
