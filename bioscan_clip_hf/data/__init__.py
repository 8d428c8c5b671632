"""BIOSCAN as Hugging Face Datasets: one schema, Parquet builders, loading and the training view.

Example:
    >>> from bioscan_clip_hf.data import load_bioscan, BioscanCollator
    >>> ds = load_bioscan("demo_data", split=["pretrain", "train"], streaming=True)  # doctest: +SKIP
"""

from .collator import BioscanBatch, BioscanCollator, decode_image
from .card import add_push_dataset_parser, push_dataset, write_dataset_card
from .parquet import list_shards, load_bioscan
from .realcoi import build_realcoi_dataset
from .releases import build_bioscan1m_dataset, build_bioscan5m_dataset, read_clibd_partition
from .report import BuildReport
from .schema import FEATURES, RANKS, SCHEMA_COLUMNS, SPLITS, check_splits, record_taxonomy_text
from .splits import assign_paper_splits

__all__ = [
    "FEATURES",
    "RANKS",
    "SCHEMA_COLUMNS",
    "SPLITS",
    "BioscanBatch",
    "BioscanCollator",
    "BuildReport",
    "add_push_dataset_parser",
    "assign_paper_splits",
    "build_bioscan1m_dataset",
    "build_bioscan5m_dataset",
    "build_realcoi_dataset",
    "check_splits",
    "decode_image",
    "list_shards",
    "load_bioscan",
    "push_dataset",
    "read_clibd_partition",
    "record_taxonomy_text",
    "write_dataset_card",
]
