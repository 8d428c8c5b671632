"""Turning user inputs (files, folders, FASTA, PIL images, strings) into queries.

A :class:`Query` holds an id and an image and/or a barcode. Images and barcodes given together are
paired by position (Python API) or by id (CLI: an image file's stem equals a FASTA record id);
anything unpaired becomes a single-modality query.

Example:
    >>> qs = gather_queries(["photos/", "seqs.fasta"], recursive=True)  # doctest: +SKIP
    >>> [(q.id, q.modality) for q in qs]  # doctest: +SKIP
    [('BIOUG123-A01', 'image+dna'), ('BIOUG124-B02', 'dna')]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .sequences import FASTA_SUFFIXES, SequenceRecord, clean_sequence, read_sequences

__all__ = ["IMAGE_SUFFIXES", "Query", "expand_paths", "gather_queries", "queries_from_python"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
SEQUENCE_SUFFIXES = FASTA_SUFFIXES + (".txt", ".seq", ".tsv")


@dataclass
class Query:
    """One specimen to classify: ``image`` (path / PIL / array) and/or ``dna`` (cleaned string)."""

    id: str
    image: Any = None
    dna: str | None = None
    error: str | None = None

    @property
    def modality(self) -> str:
        if self.image is not None and self.dna is not None:
            return "image+dna"
        return "image" if self.image is not None else "dna"


def expand_paths(paths: Iterable[str | Path], recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Split inputs into image files and sequence files; folders are listed (sorted, ``recursive``).

    Raises FileNotFoundError naming the first path that does not exist.
    """
    images: list[Path] = []
    sequences: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"input path does not exist: {path}")
        files = [path] if path.is_file() else sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())
        for f in files:
            suffix = f.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                images.append(f)
            elif suffix in SEQUENCE_SUFFIXES:
                sequences.append(f)
            elif path.is_file():  # named explicitly: let the image reader report what is wrong
                images.append(f)
    return images, sequences


def _record_query(name: str, image: Any, rec: SequenceRecord) -> Query:
    return Query(name, image, rec.sequence if rec.error is None else None, rec.error)


def _pair(image_items: Sequence[tuple[str, Any]], records: Sequence[SequenceRecord]) -> list[Query]:
    """Pair each image with the first unused record of the same id; the rest stay single."""
    unused: dict[str, list[int]] = {}
    for pos, rec in enumerate(records):
        unused.setdefault(rec.id, []).append(pos)
    taken: set[int] = set()
    queries = []
    for name, image in image_items:
        positions = unused.get(name)
        if positions:
            pos = positions.pop(0)
            taken.add(pos)
            queries.append(_record_query(name, image, records[pos]))
        else:
            queries.append(Query(name, image))
    queries += [_record_query(rec.id, None, rec) for pos, rec in enumerate(records) if pos not in taken]
    return queries


def gather_queries(paths: Iterable[str | Path], recursive: bool = False) -> list[Query]:
    """Queries from files and folders: images (id = file stem) paired by id with FASTA records."""
    images, seq_files = expand_paths(paths, recursive)
    records = [rec for f in seq_files for rec in read_sequences(f)]
    return _pair([(p.stem, p) for p in images], records)


def queries_from_python(images: Any = None, dna: Any = None, ids: Sequence[str] | None = None) -> list[Query]:
    """Queries from Python objects.

    ``images``: a path, a folder, a PIL image or a list of paths / PIL images / arrays.
    ``dna``: a barcode string, a FASTA / sequence file path, or a list of strings or
    :class:`SequenceRecord`. Given both, they are paired by position (same length required).
    ``ids`` name the queries (default: file stems, FASTA ids, else ``0, 1, ...``).
    """
    image_items: list[tuple[str | None, Any]] = []
    if images is not None:
        if isinstance(images, (str, Path)) and Path(images).is_dir():
            found, _ = expand_paths([images])
            image_items = [(p.stem, p) for p in found]
        else:
            items = images if isinstance(images, (list, tuple)) else [images]
            image_items = [(Path(x).stem if isinstance(x, (str, Path)) else None, x) for x in items]
    records: list[SequenceRecord] = []
    if dna is not None:
        if isinstance(dna, Path) or (isinstance(dna, str) and Path(dna).suffix.lower() in SEQUENCE_SUFFIXES and Path(dna).is_file()):
            records = read_sequences(dna)
        else:
            items = [dna] if isinstance(dna, str) else list(dna)
            for item in items:
                if isinstance(item, SequenceRecord):
                    records.append(item)
                else:
                    seq, err = clean_sequence(item) if isinstance(item, str) else ("", f"barcode is {type(item).__name__}, not a string")
                    records.append(SequenceRecord("", seq, "", err))
    if image_items and records and len(image_items) != len(records):
        raise ValueError(f"{len(image_items)} images and {len(records)} barcodes: pass equal numbers to pair them by position")
    n = max(len(image_items), len(records))
    if ids is not None and len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} queries")
    queries = []
    for i in range(n):
        name_img, image = image_items[i] if image_items else (None, None)
        rec = records[i] if records else None
        name = ids[i] if ids is not None else (name_img or (rec.id if rec and rec.id else None) or str(i))
        queries.append(_record_query(str(name), image, rec) if rec is not None else Query(str(name), image))
    return queries
