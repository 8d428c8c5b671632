"""Writing prediction rows (flat dicts) as CSV, JSON, Parquet or an aligned text table.

Example:
    >>> write_rows([{"id": "a", "species": "x", "score": 0.9}], fmt="csv")  # to stdout
    id,species,score
    a,x,0.9
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

__all__ = ["FORMATS", "write_rows"]

FORMATS = ("csv", "json", "parquet", "table")


def _frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def write_rows(rows: Sequence[dict[str, Any]], fmt: str = "csv", output: str | Path | None = None) -> None:
    """Write ``rows`` in ``fmt`` to ``output`` (a path; None or ``-`` = stdout).

    Parquet is binary and needs a file path. JSON is a list of objects (NaN and inf written as null).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    to_stdout = output is None or str(output) == "-"
    if fmt == "parquet":
        if to_stdout:
            raise ValueError("--format parquet needs --output FILE (Parquet is binary)")
        _frame(rows).to_parquet(output, index=False)
        return
    if fmt == "csv":
        text = _frame(rows).to_csv(index=False, lineterminator="\n")
    elif fmt == "json":
        text = json.dumps([_jsonable(r) for r in rows], indent=2, allow_nan=False) + "\n"
    else:
        frame = _frame(rows)
        text = (frame.to_string(index=False) if len(frame.columns) else "") + "\n"
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(output).write_text(text, encoding="utf-8")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):  # NaN and inf are not JSON
            value = None
        elif hasattr(value, "item") and not isinstance(value, (list, dict, str)):
            value = value.item()
        out[key] = value
    return out
