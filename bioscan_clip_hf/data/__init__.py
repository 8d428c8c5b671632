"""BIOSCAN as Hugging Face Datasets: one schema, Parquet builders, loading and the training view.

Names load on first use, so light users (the CLI parser) don't import ``datasets`` or transformers.

Example:
    >>> from bioscan_clip_hf.data import load_bioscan, BioscanCollator
    >>> ds = load_bioscan("demo_data", split=["pretrain", "train"], streaming=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BioscanBatch": "collator",
    "BioscanCollator": "collator",
    "decode_image": "collator",
    "BarcodeAugmentation": "dna_augment",
    "push_dataset": "card",
    "write_dataset_card": "card",
    "add_push_dataset_parser": "push_command",
    "dataset_key_splits": "parquet",
    "list_shards": "parquet",
    "load_bioscan": "parquet",
    "split_names": "parquet",
    "build_realcoi_dataset": "realcoi",
    "build_bioscan1m_dataset": "releases",
    "build_bioscan5m_dataset": "releases",
    "read_clibd_partition": "releases",
    "BuildReport": "report",
    "FEATURES": "schema",
    "RANKS": "schema",
    "SCHEMA_COLUMNS": "schema",
    "SPLITS": "schema",
    "check_splits": "schema",
    "key_splits": "schema",
    "record_taxonomy_text": "schema",
    "assign_paper_splits": "splits",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .card import push_dataset, write_dataset_card
    from .collator import BioscanBatch, BioscanCollator, decode_image
    from .dna_augment import BarcodeAugmentation
    from .parquet import dataset_key_splits, list_shards, load_bioscan, split_names
    from .push_command import add_push_dataset_parser
    from .realcoi import build_realcoi_dataset
    from .releases import build_bioscan1m_dataset, build_bioscan5m_dataset, read_clibd_partition
    from .report import BuildReport
    from .schema import FEATURES, RANKS, SCHEMA_COLUMNS, SPLITS, check_splits, key_splits, record_taxonomy_text
    from .splits import assign_paper_splits


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
