"""Writing prediction rows (flat dicts) as CSV, JSON, Parquet or an aligned text table, atomically.

Files are written through :mod:`bioscan_clip_hf.atomic`: a reader never sees half a file and an
interrupted run leaves the previous output in place. With a ``provenance`` record
(:mod:`.provenance`), Parquet files carry it in their schema metadata
(``pd.read_parquet(path).attrs["provenance"]``) and the text table prints it above the rows; CSV
and JSON rows carry the provenance columns themselves.

Example:
    >>> write_rows([{"id": "a", "species": "x", "species_probability": 0.9}], fmt="csv")  # to stdout
    id,species,species_probability
    a,x,0.9
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..atomic import atomic_path, write_text
from .provenance import PROVENANCE_COLUMNS

__all__ = ["FORMATS", "write_frame_parquet", "write_rows"]

FORMATS = ("csv", "json", "parquet", "table")


def write_frame_parquet(frame: pd.DataFrame, output: str | Path, provenance: dict | None = None) -> None:
    """``frame`` as a Parquet file, with ``provenance`` in its schema metadata (``attrs["provenance"]``)."""
    frame = frame.copy(deep=False)
    frame.attrs = {"provenance": provenance} if provenance else {}
    with atomic_path(output) as tmp:
        frame.to_parquet(tmp, index=False)


def _table_text(frame: pd.DataFrame, provenance: dict | None) -> str:
    header = ""
    if provenance:
        model, bank = provenance["model"], provenance.get("bank")
        header = (
            f"# bioscan-clip-hf {provenance['package_version']} · model {model['id']} "
            f"(revision {model['revision'] or '-'}, weights {model['fingerprint']}) · key bank "
            + ("none" if bank is None else f"{bank['fingerprint']} ({bank['modality']}, {bank['n_keys']:,} keys)")
            + "\n# settings: " + ", ".join(f"{k}={v}" for k, v in sorted(provenance["settings"].items())) + "\n"
        )
        frame = frame.drop(columns=[c for c in PROVENANCE_COLUMNS if c in frame.columns])
    return header + (frame.to_string(index=False) if len(frame.columns) else "") + "\n"


def write_rows(
    rows: Sequence[dict[str, Any]], fmt: str = "csv", output: str | Path | None = None, provenance: dict | None = None
) -> None:
    """Write ``rows`` in ``fmt`` to ``output`` (a path; None or ``-`` = stdout).

    Parquet is binary and needs a file path. JSON is a list of objects (NaN and inf written as
    null), so ``pd.read_json`` gives the same table as ``pd.read_csv`` of the CSV.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    to_stdout = output is None or str(output) == "-"
    frame = pd.DataFrame(list(rows))
    if fmt == "parquet":
        if to_stdout:
            raise ValueError("--format parquet needs --output FILE (Parquet is binary)")
        write_frame_parquet(frame, output, provenance)
        return
    if fmt == "csv":
        text = frame.to_csv(index=False, lineterminator="\n")
    elif fmt == "json":
        text = json.dumps([_jsonable(r) for r in rows], indent=2, allow_nan=False) + "\n"
    else:
        text = _table_text(frame, provenance)
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text(output, text)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if hasattr(value, "item") and not isinstance(value, (list, dict, str)):  # numpy scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):  # NaN and inf are not JSON
            value = None
        out[key] = value
    return out
