"""Metadata-level checks every builder runs before writing: barcodes and duplicate ids.

A record is left out, and logged in the build report with its id and the reason, when its
barcode is missing or has non-IUPAC characters, when it repeats an earlier record exactly, or
when its ``processid`` was already used by a different record (the first one is kept).

Example:
    >>> report = BuildReport("demo")
    >>> kept = screen_records([{"processid": "a", "dna_barcode": "ACGT"},
    ...                        {"processid": "a", "dna_barcode": "ACGT"}], report)
    >>> len(kept), report.to_dict()["dropped"]["duplicate_record"]["count"]
    (1, 1)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .report import BuildReport
from .schema import clean_barcode, invalid_barcode_characters


def screen_records(
    records: Iterable[dict[str, Any]],
    report: BuildReport,
    require_barcode: bool = True,
    row_label: str = "row",
) -> list[dict[str, Any]]:
    """Return the records that pass; log every other one in ``report``.

    Barcodes are cleaned in place (whitespace removed, upper-cased). ``row_label`` names the
    position in the source used in messages (e.g. ``"metadata.csv line"``): a record's ``_line``
    if it has one, else its position + 2 (the header is line 1).

    Raises:
        ValueError: a record has no ``processid`` (the message gives its line).
    """
    kept: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    seen_rows: set[tuple] = set()
    for position, record in enumerate(records):
        line = record.get("_line", position + 2)
        processid = record.get("processid")
        if not processid:
            raise ValueError(f"{row_label} {line} has no processid")
        barcode = clean_barcode(record.get("dna_barcode"))
        record["dna_barcode"] = barcode
        if barcode is None:
            if require_barcode:
                report.drop("missing_barcode", processid, f"{row_label} {line}")
                continue
        else:
            bad = invalid_barcode_characters(barcode)
            if bad:
                report.drop("invalid_barcode", processid, f"{row_label} {line}: invalid characters {bad!r}")
                continue
        signature = tuple(sorted((k, v) for k, v in record.items() if k != "image" and not k.startswith("_")))
        if signature in seen_rows:
            report.drop("duplicate_record", processid, f"{row_label} {line} repeats {row_label} {first_line[processid]}")
            continue
        if processid in first_line:
            report.drop("duplicate_processid", processid,
                        f"{row_label} {line} differs from {row_label} {first_line[processid]} (first kept)")
            continue
        seen_rows.add(signature)
        first_line[processid] = line
        kept.append(record)
    return kept
