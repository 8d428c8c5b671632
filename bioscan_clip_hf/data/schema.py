"""The one schema shared by every BIOSCAN source: column names, split names, value rules.

Column names follow the BIOSCAN-5M metadata release; a missing taxonomic rank is ``None`` (the
taxonomy text renders it as ``not_classified``, as the original CLIBD code does).

Split names are BIOSCAN-5M's, plus ``key_seen`` for BIOSCAN-1M. The evaluation keys (CLIBD's
``all_keys``) are the seen-species keys + ``key_unseen``; where the seen-species keys live depends
on the release, and :func:`key_splits` is the one rule:

* BIOSCAN-5M (and the synthetic and real-COI sets, built the same way): ``train`` is both the
  seen-species training data and the seen keys, so the keys are ``train`` + ``key_unseen``.
* BIOSCAN-1M (CLIBD partitioning): ``seen_keys`` is a list of its own that the original never trains
  on, kept here as ``key_seen``; the keys are ``key_seen`` + ``key_unseen`` and ``train`` (CLIBD's
  ``train_seen``) is training data only.

Example:
    >>> from bioscan_clip_hf.data.schema import SPLITS, check_splits
    >>> check_splits(["train", "key_unseen"])
    ['train', 'key_unseen']
    >>> key_splits(["pretrain", "train", "key_seen", "key_unseen", "test"])
    ['key_seen', 'key_unseen']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import datasets

from ..processing_bioscan_clip import taxonomy_text
from ..taxonomy import RANKS
from ..tokenization_barcode import IUPAC_NUCLEOTIDES

LINEAGE_COLUMNS: tuple[str, ...] = ("phylum", "class", "order", "family", "subfamily", "genus", "species")

SPLITS: tuple[str, ...] = (
    "pretrain",
    "train",
    "val",
    "test",
    "key_seen",
    "key_unseen",
    "val_unseen",
    "test_unseen",
    "other_heldout",
)
"""Every split name: BIOSCAN-5M's and ``key_seen`` (BIOSCAN-1M's seen-species keys, CLIBD's ``seen_keys``)."""

KEY_SEEN = "key_seen"

BIOSCAN5M_SPLITS: tuple[str, ...] = tuple(split for split in SPLITS if split != KEY_SEEN)
"""The splits of BIOSCAN-5M's ``split`` column (and of the synthetic and real-COI sets)."""

SCHEMA_COLUMNS: tuple[str, ...] = (
    "processid",
    "sampleid",
    "image",
    "dna_barcode",
    "dna_bin",
    *LINEAGE_COLUMNS,
    "split",
)

FEATURES = datasets.Features(
    {
        column: (datasets.Image() if column == "image" else datasets.Value("string"))
        for column in SCHEMA_COLUMNS
    }
)
"""``datasets.Features`` of every Parquet file written by this package (image may be null)."""

MAX_BARCODE_LENGTH = 660
"""The original tokenizer pads/truncates barcodes to 660 nt; longer barcodes are kept whole in the data."""

BARCODE_CHARACTERS = frozenset(IUPAC_NUCLEOTIDES + "-")
"""Characters accepted in a stored barcode (upper-case IUPAC codes and the alignment gap)."""

_MISSING_RANK_STRINGS = frozenset({"", "not_classified", "nan", "none", "null", "na"})


def normalise_value(value: Any) -> str | None:
    """Map a metadata cell to a stripped string or ``None`` for every spelling of "missing".

    Handles ``None``, float NaN (pandas), empty strings and BIOSCAN-1M's ``not_classified``.

    Example:
        >>> normalise_value(float("nan")) is None, normalise_value(" Diptera ")
        (True, 'Diptera')
    """
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    if text.lower() in _MISSING_RANK_STRINGS:
        return None
    return text


def clean_barcode(value: Any) -> str | None:
    """Strip whitespace and upper-case a barcode; ``None`` when it is missing.

    Example:
        >>> clean_barcode(" acgtn\\n")
        'ACGTN'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = "".join(str(value).split()).upper()
    return text or None


def invalid_barcode_characters(barcode: str) -> str:
    """Return the sorted characters of ``barcode`` that are not IUPAC nucleotide codes ('' if valid).

    Example:
        >>> invalid_barcode_characters("ACGTX*")
        '*X'
    """
    return "".join(sorted(set(barcode) - BARCODE_CHARACTERS))


def check_splits(splits: str | Iterable[str]) -> list[str]:
    """Validate split names; raise ``ValueError`` listing the valid ones on an unknown name.

    Example:
        >>> check_splits("val")
        ['val']
    """
    names = [splits] if isinstance(splits, str) else list(splits)
    unknown = [name for name in names if name not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; valid splits are: {', '.join(SPLITS)}")
    if not names:
        raise ValueError(f"no split given; valid splits are: {', '.join(SPLITS)}")
    return names


def key_splits(splits: Iterable[str]) -> list[str]:
    """The evaluation key splits (CLIBD's ``all_keys``) of a data set that has ``splits``.

    ``key_seen`` + ``key_unseen`` when the data set keeps its seen-species keys apart (a BIOSCAN-1M
    build), else ``train`` + ``key_unseen`` (BIOSCAN-5M, where ``train`` is also the seen keys).

    Example:
        >>> key_splits(["pretrain", "train", "val", "key_unseen"])
        ['train', 'key_unseen']
    """
    return [KEY_SEEN if KEY_SEEN in set(splits) else "train", "key_unseen"]


def require_columns(columns: Iterable[str], required: Iterable[str], source: str) -> None:
    """Raise ``ValueError`` naming every required column missing from ``source``.

    Example:
        >>> require_columns(["a", "b"], ["a"], "metadata.csv")
    """
    present = set(columns)
    missing = [column for column in required if column not in present]
    if missing:
        raise ValueError(f"{source} is missing required column(s): {', '.join(missing)}")


def record_taxonomy_text(record: Mapping[str, Any]) -> str:
    """The CLIBD taxonomy string of one record: ``"Order Family Genus Species"``.

    Missing ranks render as ``not_classified`` (delegates to the processor's ``taxonomy_text``).

    Example:
        >>> record_taxonomy_text({"order": "Diptera", "family": "Sciaridae", "genus": None, "species": None})
        'Diptera Sciaridae not_classified not_classified'
    """
    return taxonomy_text(*(record.get(rank) for rank in RANKS))


def empty_record() -> dict[str, Any]:
    """A record with every schema column set to ``None`` (builders fill in what they know)."""
    return dict.fromkeys(SCHEMA_COLUMNS)
