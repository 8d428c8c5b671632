"""Reading DNA barcodes from FASTA / multi-FASTA and plain sequence files.

Handles wrapped sequence lines, lower case, alignment gaps (``-`` and ``.``, removed), ``N`` and
other IUPAC ambiguity codes (kept: the tokenizer maps any k-mer containing them to ``<UNK>``, as the
original does; :func:`~bioscan_clip_hf.zero_shot.specimens.check_queries` refuses a barcode that is
mostly unreadable), empty records and Windows (CRLF) or old Mac (CR) line ends. A record that cannot be
used keeps its place and carries an ``error`` message, so one bad sequence never stops a run.

Plain sequence files (any other extension) hold one barcode per line, optionally preceded by an id
and whitespace (``id<TAB>ACGT...``); blank lines and ``#`` comments are skipped.

Example:
    >>> recs = parse_fasta(">a desc\\nacg-t\\nNNA\\r\\n>b\\n")
    >>> [(r.id, r.sequence, r.error) for r in recs]
    [('a', 'ACGTNNA', None), ('b', '', 'empty sequence')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..tokenization_barcode import IUPAC_NUCLEOTIDES

__all__ = [
    "FASTA_SUFFIXES", "IUPAC_DNA", "SequenceRecord", "clean_sequence", "parse_fasta", "parse_sequences", "read_sequences",
]

FASTA_SUFFIXES = (".fasta", ".fa", ".fas", ".fna", ".ffn", ".fsa")
IUPAC_DNA = frozenset(IUPAC_NUCLEOTIDES)
_GAPS = re.compile(r"[\s\-.]+")


@dataclass
class SequenceRecord:
    """One barcode: ``id``, cleaned upper-case ``sequence``, where it came from, and an error or None."""

    id: str
    sequence: str
    source: str = ""
    error: str | None = None


def clean_sequence(raw: str) -> tuple[str, str | None]:
    """Upper-case, drop whitespace and gaps; return ``(sequence, error)`` (error None when valid)."""
    seq = _GAPS.sub("", raw).upper()
    if not seq:
        return seq, "empty sequence"
    bad = sorted(set(seq) - IUPAC_DNA)
    if bad:
        return seq, f"invalid characters {''.join(bad)!r} (expected IUPAC DNA codes)"
    return seq, None


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_fasta(text: str, source: str = "") -> list[SequenceRecord]:
    """Parse FASTA text into records (id = first word of the header; unnamed headers get ``source:n``)."""
    records: list[SequenceRecord] = []
    header: str | None = None
    chunks: list[str] = []

    def flush() -> None:
        if header is None:
            return
        name = header.split()[0] if header.split() else f"{source or 'record'}:{len(records) + 1}"
        seq, err = clean_sequence("".join(chunks))
        records.append(SequenceRecord(name, seq, source, err))

    for line in _lines(text.lstrip("\ufeff")):
        if line.startswith(">"):
            flush()
            header, chunks = line[1:].strip(), []
        elif line.startswith(";"):
            continue  # old-style FASTA comment line
        elif header is None:
            if line.strip():
                raise ValueError(f"{source or 'FASTA text'}: sequence data before the first '>' header: {line[:40]!r}")
        else:
            chunks.append(line)
    flush()
    return records


def _parse_plain(text: str, source: str) -> list[SequenceRecord]:
    records = []
    stem = Path(source).stem if source else "seq"
    for lineno, line in enumerate(_lines(text.lstrip("\ufeff")), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        name, raw = (parts[0], parts[1]) if len(parts) == 2 else (f"{stem}:{lineno}", parts[0])
        seq, err = clean_sequence(raw)
        records.append(SequenceRecord(name, seq, source, err))
    return records


def parse_sequences(text: str, source: str = "") -> list[SequenceRecord]:
    """FASTA text (it starts with ``>``) or plain one-barcode-per-line text into records."""
    if text.lstrip("\ufeff \t\r\n").startswith(">"):
        return parse_fasta(text, source=source)
    return _parse_plain(text, source=source)


def read_sequences(path: str | Path) -> list[SequenceRecord]:
    """Read a FASTA / multi-FASTA file (by suffix or a leading ``>``) or a plain one-per-line file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in FASTA_SUFFIXES:
        return parse_fasta(text, source=str(path))
    return parse_sequences(text, source=str(path))
