"""The one reader of release metadata tables (CSV / TSV): every cell a string, every row checked.

A row with more or fewer fields than the header is an error naming the file and the row, never a
record filled with empty cells: a file cut mid-line (an interrupted download or copy) would
otherwise keep its broken last record as an unlabelled ``pretrain`` record. pyarrow's reader
reports such rows (pandas silently pads them) and is multi-threaded, which matters for the 5M rows
of BIOSCAN-5M.

Example:
    >>> table = read_table("coi_insecta.tsv", required=["processid", "dna_barcode"])  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from .schema import require_columns

logger = logging.getLogger(__name__)

__all__ = ["read_table"]


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".txt") else ","


def _tail(path: Path, size: int = 1 << 16) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read()


def _header(path: Path, sep: str) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline()
    try:
        return pd.read_csv(io.BytesIO(first), sep=sep, nrows=0).columns.tolist()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the header line ({exc})") from None


def read_table(path: str | Path, required: Iterable[str], optional: Iterable[str] = ()) -> pd.DataFrame:
    """The ``required`` and present ``optional`` columns of a CSV (``,``) or TSV (``.tsv``/``.txt``).

    Cells are strings (empty cells ``""``), in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a folder, empty, has no records, lacks required columns, or has rows
            whose field count differs from the header (a cut last line is called truncated); the
            message names the file and the row.

    Example:
        >>> read_table("metadata.csv", ["processid"], optional=["dna_bin"])  # doctest: +SKIP
    """
    path = Path(path)
    required = list(required)
    if not path.exists():
        raise FileNotFoundError(f"metadata table not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a CSV/TSV file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    sep = _separator(path)
    header = _header(path, sep)
    require_columns(header, required, str(path))
    wanted = [c for c in dict.fromkeys((*required, *optional)) if c in header]
    bad: list[pacsv.InvalidRow] = []

    def keep_bad_row(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True, invalid_row_handler=keep_bad_row),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types={c: pa.string() for c in wanted},
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path}: cannot read the table ({str(exc).splitlines()[0]})") from None
    tail = _tail(path)
    ends_cleanly = tail.endswith((b"\n", b"\r"))
    last_line = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].rstrip(b"\r").decode("utf-8", "replace")
    if bad:
        cut = next((row for row in bad if not ends_cleanly and row.text == last_line), None)
        if cut is not None:
            raise ValueError(
                f"{path} ends mid-line: its last record has {cut.actual_columns} of {cut.expected_columns} "
                f"fields ({cut.text[:60]!r}); the file looks truncated, copy or download it again")
        row = bad[0]
        raise ValueError(
            f"{path}: {len(bad)} row(s) do not have the header's {row.expected_columns} fields, e.g. one with "
            f"{row.actual_columns}: {row.text[:80]!r}")
    if table.num_rows == 0:
        raise ValueError(f"{path} has a header but no records")
    if not ends_cleanly:
        logger.warning("%s does not end with a newline; if it was cut, its last record %r may be incomplete",
                       path, last_line[:60])
    return table.to_pandas()
