"""Parquet folder layout, atomic shard writing and ``load_bioscan``.

Layout written by every builder::

    DIR/data/{split}-{i:05d}-of-{n:05d}.parquet   # the records, image bytes embedded
    DIR/build_report.json                         # counts per split, dropped records and why
    DIR/README.md                                 # dataset card (configs/data_files per split)

Example:
    >>> ds = load_bioscan("path/to/folder", split="train")            # doctest: +SKIP
    >>> keys = load_bioscan("path/to/folder", split=dataset_key_splits("path/to/folder"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_path
from .schema import FEATURES, KEY_SEEN, SCHEMA_COLUMNS, SPLITS, check_splits, key_splits

DATA_DIR = "data"
SHARD_PATTERN = re.compile(r"^(?P<split>\w+?)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
IMAGE_ROW_GROUP_SIZE = 100
"""Rows per Parquet row group when images are embedded (what ``datasets`` uses for image data)."""


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` for ``split``.

    Example:
        >>> shard_name("train", 0, 3)
        'train-00000-of-00003.parquet'
    """
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def records_to_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Arrow table of schema records (``image`` = ``{"bytes", "path"}`` or ``None``) with HF metadata."""
    schema = FEATURES.arrow_schema
    columns = {column: [record.get(column) for record in records] for column in SCHEMA_COLUMNS}
    return pa.Table.from_pydict(columns, schema=schema)


def write_shard(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write one shard atomically (:mod:`~bioscan_clip_hf.atomic`), so an interrupted build never
    leaves a truncated file that a resumed build would mistake for a finished shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = records_to_table(records)
    has_images = any(record.get("image") is not None for record in records)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=IMAGE_ROW_GROUP_SIZE if has_images else 10_000)
    return path


def list_shards(folder: str | Path) -> dict[str, list[Path]]:
    """Shard files per split (in ``SPLITS`` order) found under ``folder/data``."""
    data_dir = Path(folder) / DATA_DIR
    found: dict[str, list[Path]] = {}
    for path in sorted(data_dir.glob("*.parquet")):
        match = SHARD_PATTERN.match(path.name)
        if match and match["split"] in SPLITS:
            found.setdefault(match["split"], []).append(path)
    return {split: found[split] for split in SPLITS if split in found}


def split_names(source: Any) -> list[str]:
    """The splits a data set has: a local folder (its shards), a Hub dataset id (its card), a
    ``DatasetDict`` or a ``Dataset`` with a ``split`` column.

    Raises:
        FileNotFoundError: a folder without shards.
    """
    import datasets as hf_datasets

    if isinstance(source, hf_datasets.DatasetDict):
        return list(source)
    if isinstance(source, hf_datasets.Dataset):
        return sorted(source.unique("split")) if "split" in source.column_names else []
    local = Path(source)
    if local.is_dir():
        shards = list_shards(local)
        if not shards:
            raise FileNotFoundError(f"{local}: no shards named {DATA_DIR}/<split>-XXXXX-of-YYYYY.parquet")
        return list(shards)
    return list(hf_datasets.get_dataset_split_names(str(source)))


def dataset_key_splits(source: Any) -> list[str]:
    """The evaluation key splits of a data set (``schema.key_splits`` over its :func:`split_names`):
    ``key_seen`` + ``key_unseen`` for a BIOSCAN-1M build, ``train`` + ``key_unseen`` otherwise.

    Raises:
        ValueError: a local BIOSCAN-1M build without ``key_seen`` (written before CLIBD's
            ``seen_keys`` were kept apart: its ``train`` mixes them with ``train_seen``).

    Example:
        >>> dataset_key_splits("outputs/demo/data")  # doctest: +SKIP
        ['train', 'key_unseen']
    """
    names = split_names(source)
    report = Path(source) / "build_report.json" if isinstance(source, (str, Path)) else None
    if KEY_SEEN not in names and report is not None and report.is_file():
        if json.loads(report.read_text(encoding="utf-8")).get("builder") == "bioscan1m":
            raise ValueError(
                f"{source} is a BIOSCAN-1M build without a {KEY_SEEN} split: it was built before CLIBD's seen_keys were "
                "kept apart from train_seen; rebuild it (training/build_dataset.py bioscan1m) into a new folder")
    return key_splits(names)


def load_bioscan(
    source: str | Path,
    split: str | Iterable[str] | None = None,
    streaming: bool = False,
    cache_dir: str | Path | None = None,
    decode_images: bool = True,
) -> datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset | datasets.IterableDatasetDict:
    """Load a BIOSCAN Parquet data set from a local folder (layout above) or a Hub dataset id.

    Args:
        source: local folder written by a builder, or a Hub id (``"user/bioscan-5m"``).
        split: ``None`` (every split, a ``DatasetDict``), one split name, or a list of split names
            (concatenated in that order into one data set; the ``split`` column tells them apart).
        streaming: return an ``IterableDataset`` that reads the Parquet files lazily.
        cache_dir: ``datasets`` cache directory.
        decode_images: ``False`` keeps images as ``{"bytes", "path"}`` so they are decoded lazily,
            e.g. by ``BioscanCollator`` inside DataLoader workers.

    Raises:
        ValueError: an unknown split name (the message lists the valid ones), or a split the
            folder does not have (the message lists the ones it has).

    Example:
        >>> ds = load_bioscan("demo_data", split=["val", "val_unseen"])  # doctest: +SKIP
    """
    names = None if split is None else check_splits(split)
    local = Path(source)
    kwargs: dict[str, Any] = {"streaming": streaming, "cache_dir": str(cache_dir) if cache_dir else None}
    if local.is_dir():
        shards = list_shards(local)
        if not shards:
            raise FileNotFoundError(f"{local}: no shards named {DATA_DIR}/<split>-XXXXX-of-YYYYY.parquet")
        missing = [name for name in names or [] if name not in shards]
        if missing:
            raise ValueError(f"{local} has no split(s) {missing}; it has: {', '.join(shards)}")
        path = "parquet"

        def files(name: str) -> list[str]:
            return [str(p) for p in shards[name]]

        available = list(shards)
    else:
        path = str(source)

        def files(name: str) -> list[str]:
            return [f"{DATA_DIR}/{name}-*.parquet"]

        available = None
    if names is None:
        if available is None:
            # A Hub repo: its card declares the splits (configs/data_files).
            dataset = datasets.load_dataset(path, **kwargs)
        else:
            dataset = datasets.load_dataset(path, data_files={n: files(n) for n in available}, **kwargs)
    else:
        key = "__".join(names)
        data_files = {key: [f for name in names for f in files(name)]}
        dataset = datasets.load_dataset(path, data_files=data_files, split=key, **kwargs)
    if not decode_images:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset
