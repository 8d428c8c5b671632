"""Builders for the BIOSCAN-5M and BIOSCAN-1M releases (metadata + image package -> Parquet).

BIOSCAN-5M: ``BIOSCAN_5M_Insect_Dataset_metadata.csv`` and an image package (folder or the
release zip(s)) laid out as ``{imgtype}/{split}/{chunk}/{processid}.jpg`` (no chunk for the eval
splits). The release's official ``split`` column is kept.

BIOSCAN-1M: ``BIOSCAN_Insect_Dataset_metadata.tsv`` (``not_classified`` for missing ranks), images
under ``part{chunk_number}/{image_file}``, and the CLIBD partition lists (``CLIBD_partitioning.zip``
or its folder: one ``<name>.txt`` of sampleids per split) mapped onto BIOSCAN-5M split names, with
CLIBD's ``seen_keys`` kept apart as ``key_seen`` (see :data:`CLIBD_PARTITION_TO_SPLIT`).

Example:
    >>> build_bioscan5m_dataset("metadata.csv", ["BIOSCAN_5M_cropped_256.zip"], "bioscan5m",
    ...                         num_proc=8)  # doctest: +SKIP
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from .build import run_build
from .images import ImageStore
from .report import BuildReport
from .schema import BIOSCAN5M_SPLITS, KEY_SEEN, LINEAGE_COLUMNS, check_splits, empty_record, normalise_value
from .screen import screen_records
from .tables import read_table

REQUIRED_5M = ("processid", "sampleid", "dna_barcode", "split", "chunk", *LINEAGE_COLUMNS)
OPTIONAL_5M = ("dna_bin",)
REQUIRED_1M = ("sampleid", "processid", "nucraw", "image_file", "chunk_number", *LINEAGE_COLUMNS)
OPTIONAL_1M = ("uri",)

CLIBD_PARTITION_TO_SPLIT = {
    "no_split": "pretrain",
    "single_species": "pretrain",
    "train_seen": "train",
    "seen_keys": KEY_SEEN,
    "val_seen": "val",
    "test_seen": "test",
    "val_unseen": "val_unseen",
    "test_unseen": "test_unseen",
    "val_unseen_keys": "key_unseen",
    "test_unseen_keys": "key_unseen",
}
"""CLIBD BIOSCAN-1M partition lists -> our splits. The original trains on ``no_split`` + ``train_seen`` and
evaluates against ``all_keys`` = ``seen_keys`` + ``val_unseen_keys`` + ``test_unseen_keys``; so ``train``
here is ``train_seen`` alone (training data, never keys) and ``seen_keys`` stays a split of its own,
``key_seen`` (keys, never training data): the recipe trains on ``pretrain`` + ``train`` and evaluates
against ``key_seen`` + ``key_unseen``, exactly as the original. ``single_species`` (singleton species)
joins ``pretrain``."""
CLIBD_METASPLITS = ("all_keys", "no_split_and_seen_train")
"""Unions of the lists above; ignored."""


def _lineage(row: dict[str, Any], record: dict[str, Any]) -> None:
    for column in LINEAGE_COLUMNS:
        record[column] = normalise_value(row.get(column))


def _group(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_split: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_split.setdefault(record["split"], []).append(record)
    return by_split


def build_bioscan5m_dataset(
    metadata: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    image_package: str = "cropped_256",
    splits: Sequence[str] | None = None,
    shard_size: int = 5000,
    num_proc: int = 1,
    keep_missing_images: bool = False,
) -> Path:
    """Build the BIOSCAN-5M Parquet data set; return ``out_dir``.

    Args:
        metadata: the release's metadata CSV (or a TSV with the same columns).
        images: image package folders and/or zip files.
        out_dir: output folder (re-running resumes: finished shards are kept).
        image_package: ``cropped_256`` (CLIBD's choice), ``original_256``, ``cropped``, ``original_full``.
        splits: build only these splits (default: all).
        shard_size: records per Parquet shard.
        num_proc: worker processes.
        keep_missing_images: keep records whose image file is absent (``image`` null) instead of
            dropping them (CLIBD drops them).

    Raises:
        ValueError: missing columns, or an unknown value in the ``split`` column (the message
            gives the line and the valid names).
    """
    metadata = Path(metadata)
    wanted = check_splits(splits) if splits is not None else list(BIOSCAN5M_SPLITS)
    table = read_table(metadata, REQUIRED_5M, OPTIONAL_5M)
    report = BuildReport("bioscan5m", parameters={
        "metadata": metadata.name, "image_package": image_package, "splits": wanted,
        "keep_missing_images": keep_missing_images})
    records = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        split = row["split"].strip()
        if split not in BIOSCAN5M_SPLITS:
            raise ValueError(f"{metadata.name} line {line}: unknown split {split!r}; valid splits are: "
                             f"{', '.join(BIOSCAN5M_SPLITS)}")
        record = empty_record()
        record.update(processid=normalise_value(row["processid"]), sampleid=normalise_value(row["sampleid"]),
                      dna_barcode=row["dna_barcode"], dna_bin=normalise_value(row.get("dna_bin")), split=split,
                      _line=line)
        _lineage(row, record)
        chunk = row["chunk"].strip()
        record["_image_key"] = f"{split}/{chunk}/{record['processid']}.jpg" if chunk else f"{split}/{record['processid']}.jpg"
        records.append(record)
    records = [r for r in screen_records(records, report, row_label=f"{metadata.name} line") if r["split"] in wanted]
    return run_build(
        _group(records), out_dir, report, store=ImageStore(list(images), anchor=image_package),
        require_images=not keep_missing_images, shard_size=shard_size, num_proc=num_proc,
        card={"source": "bioscan5m", "provenance": (
            f"`training/build_dataset.py bioscan5m` from `{metadata.name}` and the `{image_package}` "
            "image package; images are the release's JPEG bytes, unchanged.")},
    )


def read_clibd_partition(source: str | Path) -> dict[str, str]:
    """sampleid -> our split name, from the CLIBD partition folder or ``CLIBD_partitioning.zip``.

    Raises:
        ValueError: a list is missing, a file name is not a CLIBD list, or a sampleid is in two lists.
    """
    source = Path(source)
    texts: dict[str, str] = {}
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if member.endswith(".txt") and not Path(member).name.startswith("."):
                    texts[Path(member).stem] = archive.read(member).decode()
    elif source.is_dir():
        texts = {path.stem: path.read_text() for path in source.rglob("*.txt")}
    else:
        raise FileNotFoundError(f"CLIBD partition not found (a folder or zip of .txt lists): {source}")
    unknown = sorted(set(texts) - set(CLIBD_PARTITION_TO_SPLIT) - set(CLIBD_METASPLITS))
    if unknown:
        raise ValueError(f"{source}: unknown partition list(s) {unknown}; expected {sorted(CLIBD_PARTITION_TO_SPLIT)}")
    missing = sorted(set(CLIBD_PARTITION_TO_SPLIT) - set(texts))
    if missing:
        raise ValueError(f"{source}: missing partition list(s): {', '.join(missing)}")
    assignment: dict[str, str] = {}
    origin: dict[str, str] = {}
    for name, split in CLIBD_PARTITION_TO_SPLIT.items():
        for sampleid in texts[name].split():
            if sampleid in origin:
                raise ValueError(f"{source}: sampleid {sampleid!r} is in both {origin[sampleid]}.txt and {name}.txt")
            origin[sampleid] = name
            assignment[sampleid] = split
    return assignment


def build_bioscan1m_dataset(
    metadata: str | Path,
    images: Sequence[str | Path],
    partition: str | Path,
    out_dir: str | Path,
    shard_size: int = 5000,
    num_proc: int = 1,
    keep_missing_images: bool = False,
) -> Path:
    """Build BIOSCAN-1M with the CLIBD partitioning as a Parquet data set; return ``out_dir``.

    Splits: ``pretrain``, ``train``, ``key_seen``, ``val``, ``test``, ``key_unseen``, ``val_unseen``,
    ``test_unseen`` (:data:`CLIBD_PARTITION_TO_SPLIT`); the evaluation keys are ``key_seen`` +
    ``key_unseen`` (``parquet.dataset_key_splits`` gives them to every tool). Records in no partition
    list are left out and reported (``not_in_partition``).

    Raises:
        ValueError: missing columns or an inconsistent partition (see ``read_clibd_partition``).
    """
    metadata = Path(metadata)
    table = read_table(metadata, REQUIRED_1M, OPTIONAL_1M)
    assignment = read_clibd_partition(partition)
    report = BuildReport("bioscan1m", parameters={
        "metadata": metadata.name, "partition": Path(partition).name, "keep_missing_images": keep_missing_images})
    records = []
    listed = set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        sampleid = normalise_value(row["sampleid"])
        processid = normalise_value(row["processid"]) or sampleid
        split = assignment.get(sampleid)
        if split is None:
            report.drop("not_in_partition", processid, f"{metadata.name} line {line}: sampleid {sampleid!r}")
            continue
        listed.add(sampleid)
        record = empty_record()
        record.update(processid=processid, sampleid=sampleid, dna_barcode=row["nucraw"],
                      dna_bin=normalise_value(row.get("uri")), split=split, _line=line)
        _lineage(row, record)
        record["_image_key"] = f"part{row['chunk_number'].strip()}/{row['image_file'].strip()}"
        records.append(record)
    absent = len(set(assignment) - listed)
    if absent:
        report.notes["partition_sampleids_not_in_metadata"] += absent
    records = screen_records(records, report, row_label=f"{metadata.name} line")
    return run_build(
        _group(records), out_dir, report, store=ImageStore(list(images), anchor=None),
        require_images=not keep_missing_images, shard_size=shard_size, num_proc=num_proc,
        card={"source": "bioscan1m", "provenance": (
            f"`training/build_dataset.py bioscan1m` from `{metadata.name}`, the CLIBD partition lists "
            f"(`{Path(partition).name}`) and the image package; images are the release's JPEG bytes.")},
    )
