"""Reading and checking a user's specimens: photos and DNA barcodes in, :class:`Query` objects out.

The one place where user input becomes something to classify: the CLI, the Python API
(:meth:`ZeroShotClassifier.predict` / ``embed``) and the Space all read and check their inputs here,
so a specimen gets the same answer and the same message whichever way it comes in.

Reading (no model needed):

* :func:`gather_queries`: files and folders (``-`` = FASTA or one barcode per line on stdin);
  an image is paired with the FASTA record whose id is the image's file stem;
* :func:`queries_from_python`: paths, folders, bytes, PIL images, arrays, barcode strings, FASTA
  text or files, :class:`SequenceRecord` items; images and barcodes paired by position;
* :func:`queries_from_text`: a pasted barcode (line breaks and gaps removed) or FASTA text;
* :func:`load_image`: any of those photo forms as an RGB PIL image (a plain, picklable function, so
  DataLoader workers call it too).

Checking (:func:`check_queries`, with the model's DNA tokenizer; ``predict`` and ``embed`` call it):

* a barcode is cleaned (upper case; whitespace and ``-``/``.`` gaps removed; any letter outside the
  IUPAC DNA codes is an error);
* a barcode longer than the model reads (``max_length``, 660 nt for CLIBD) is classified on its
  first ``max_length`` nt, and ``notes`` says so;
* a barcode whose tokenised ``k``-mers are mostly unreadable (a ``k``-mer with ``N`` or another
  ambiguity code is ``<UNK>`` to the model) is an error row: fewer than ``min_valid_kmers``
  (default :data:`MIN_VALID_KMERS` = one half) of the ``k``-mers that overlap the barcode made of
  A, C, G, T only (and always when none is). An all-``N`` record, a protein written in IUPAC letters and a short mostly-``N``
  fragment all fail here instead of being "classified";
* a barcode shorter than :data:`SHORT_BARCODE` nt is classified with a note (COI barcodes are
  about 658 nt);
* duplicate ids are renamed ``ID#2``, ``ID#3``, ... with a note on every specimen involved. Renaming
  keeps every specimen (a labelling slip loses no answer) and keeps the output joinable by id;
  the notes name the original id so the user can fix the input.

Photos (:func:`load_image`): EXIF orientation is applied. 8-bit images are used as they are.
16-bit images are scaled by their full range (value / 257), so nothing is whitened by clipping.
Images stored in wider integer types (PIL mode ``I``, int32/int64 arrays) carry no bit depth of
their own: values up to 255 are read as 8-bit, up to 65535 as 16-bit, and anything larger or
negative is refused. Floating-point images (mode ``F``, float arrays) are read as 0-1 when their
values lie in [0, 1], as 0-255 when they lie in [0, 255], and refused otherwise (or with NaN).
A refusal is an :class:`ImageError` (a ``ValueError``) that names the image and the problem.

Example:
    >>> qs = queries_from_python(dna=["ACGTACGTAC" * 20, "N" * 200], ids=["a", "a"])
    >>> qs = check_queries(qs, BarcodeKmerTokenizer())  # doctest: +SKIP
    >>> [(q.id, q.error is None) for q in qs]  # doctest: +SKIP
    [('a', True), ('a#2', False)]
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .sequences import FASTA_SUFFIXES, SequenceRecord, clean_sequence, parse_fasta, parse_sequences, read_sequences

__all__ = [
    "IMAGE_SUFFIXES", "ImageError", "MIN_VALID_KMERS", "SEQUENCE_SUFFIXES", "SHORT_BARCODE", "Query", "check_queries",
    "expand_paths", "gather_queries", "load_image", "queries_from_python", "queries_from_text",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
SEQUENCE_SUFFIXES = FASTA_SUFFIXES + (".txt", ".seq", ".tsv")
MIN_VALID_KMERS = 0.5
SHORT_BARCODE = 200
STDIN = "-"
_IMAGE_HELP = "expected a JPEG, PNG, TIFF, WebP, BMP or GIF image"


class ImageError(ValueError):
    """A photo that cannot be used; the message names it and says why."""


@dataclass
class Query:
    """One specimen: ``image`` (path / bytes / PIL / array) and/or ``dna`` (a cleaned barcode).

    ``error`` set means the specimen cannot be classified (its row carries the message);
    ``notes`` are what the user should know about an answer (truncation, renaming, ...).
    """

    id: str
    image: Any = None
    dna: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """The inputs given: ``image+dna``, ``image`` or ``dna``."""
        if self.image is not None and self.dna is not None:
            return "image+dna"
        return "image" if self.image is not None else "dna"


# -- photos ---------------------------------------------------------------------------------------
def _image_label(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, dict):
        return str(item.get("path") or "image bytes")
    return {bytes: "image bytes", bytearray: "image bytes", np.ndarray: "image array"}.get(type(item), "image")


def _scale_to_uint8(pixels: np.ndarray, label: str) -> np.ndarray:
    """Pixel values of any depth as uint8 (see the module docstring for the rules); ImageError if unclear."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if pixels.size == 0:
        raise ImageError(f"'{label}' is an empty image")
    if pixels.dtype.kind not in "uif":
        raise ImageError(f"'{label}' has pixels of type {pixels.dtype}, which is not an image type")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ImageError(f"'{label}' has NaN or infinite pixel values")
    low, high = float(pixels.min()), float(pixels.max())
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:  # 16-bit, either byte order
        scale = 65535.0
    elif pixels.dtype.kind == "f" and low >= 0 and high <= 1:
        scale = 1.0
    elif low >= 0 and high <= 255:
        scale = 255.0
    elif pixels.dtype.kind != "f" and low >= 0 and high <= 65535:
        scale = 65535.0
    else:
        kind = "floating-point" if pixels.dtype.kind == "f" else f"{pixels.dtype.itemsize * 8}-bit integer"
        raise ImageError(
            f"'{label}' is a {kind} image with values from {low:g} to {high:g}, so its brightness scale is "
            "unknown (expected 0-1 or 0-255 for floating point, 0-65535 for integers); save it as an 8- or 16-bit image"
        )
    return np.rint(pixels.astype(np.float64) * (255.0 / scale)).astype(np.uint8)


def _array_image(pixels: np.ndarray, label: str):
    from PIL import Image

    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ImageError(f"'{label}' has shape {pixels.shape}; an image array is HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA)")
    return Image.fromarray(np.ascontiguousarray(_scale_to_uint8(pixels, label)))


def _to_rgb(img, label: str):
    """RGB for every PIL mode; high-bit-depth single-channel modes are rescaled, never clipped to white."""
    if img.mode.startswith("I") or img.mode == "F":  # I, I;16, I;16B, I;16L, I;16N, F
        return _array_image(np.asarray(img), label).convert("RGB")
    return img.convert("RGB")


def _check_pixels(width: int, height: int, label: str, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"'{label}' is {width}x{height} pixels; images up to {max_pixels / 1e6:g} megapixels are accepted")


def load_image(item: Any, name: str | None = None, max_pixels: int | None = None):
    """An RGB PIL image from a path, bytes, a PIL image, a numpy array or a datasets ``{"bytes", "path"}`` dict.

    EXIF orientation is applied and high-bit-depth or floating-point pixels are rescaled (module
    docstring). ``name`` replaces the path or "image bytes" in messages (the Space shows no server
    paths); ``max_pixels`` refuses larger images before decoding them.

    Raises:
        ImageError: (a ``ValueError``) the item is not a readable image, or its pixel scale cannot be
            known; the message names the image and the problem.

    Example:
        >>> import numpy as np
        >>> load_image(np.full((4, 4), 65535, dtype=np.uint16)).getpixel((0, 0))
        (255, 255, 255)
        >>> load_image(np.full((4, 4), 0.5, dtype=np.float32)).getpixel((0, 0))
        (128, 128, 128)
    """
    from PIL import Image, ImageOps

    label = name or _image_label(item)
    if item is None:
        raise ImageError("no image")
    if isinstance(item, np.ndarray):
        if item.ndim >= 2:
            _check_pixels(item.shape[1], item.shape[0], label, max_pixels)
        return _array_image(item, label).convert("RGB")
    if isinstance(item, Image.Image):
        _check_pixels(item.width, item.height, label, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(item), label)
    if isinstance(item, (str, Path)):
        source: Any = item
    elif isinstance(item, (bytes, bytearray)):
        source = io.BytesIO(item)
    elif isinstance(item, dict) and (item.get("bytes") or item.get("path")):
        source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
    else:
        raise ImageError(f"cannot read an image from a {type(item).__name__}; give a path, bytes, a PIL image or an array")
    try:
        with Image.open(source) as img:
            _check_pixels(img.width, img.height, label, max_pixels)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy: the common JPEG path stays one decode
            return _to_rgb(img, label)
    except ImageError:
        raise
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        reason = str(err).replace(str(source), label)
        raise ImageError(f"'{label}' could not be read as an image ({type(err).__name__}: {reason}); {_IMAGE_HELP}") from None


# -- reading --------------------------------------------------------------------------------------
def expand_paths(paths: Iterable[str | Path], recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Split inputs into image files and sequence files; folders are listed (sorted, ``recursive``).

    A file named explicitly with another suffix counts as an image (its reader then says what is
    wrong). Raises FileNotFoundError naming the first path that does not exist.
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
            elif path.is_file():
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
    """Queries from files and folders (``-`` reads FASTA or one barcode per line from stdin).

    Images get their file stem as id and are paired with the FASTA record of the same id.
    """
    paths = list(paths)
    images, seq_files = expand_paths([p for p in paths if str(p) != STDIN], recursive)
    records = [rec for f in seq_files for rec in read_sequences(f)]
    if any(str(p) == STDIN for p in paths):
        records += parse_sequences(sys.stdin.read(), source="stdin")
    return _pair([(p.stem, p) for p in images], records)


def queries_from_text(text: str, name: str = "pasted barcode") -> list[Query]:
    """Queries from pasted text: FASTA (one per record) or one bare barcode (line breaks removed).

    Example:
        >>> [(q.id, q.dna) for q in queries_from_text("acgt-\\nACGT")]
        [('pasted barcode', 'ACGTACGT')]
    """
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(">"):
        return [_record_query(rec.id, None, rec) for rec in parse_fasta(stripped, source=name)]
    seq, error = clean_sequence(stripped)
    return [Query(name, dna=None if error else seq, error=error)]


def _barcode_records(dna: Any) -> list[SequenceRecord]:
    if isinstance(dna, Path) or (isinstance(dna, str) and Path(dna).suffix.lower() in SEQUENCE_SUFFIXES):
        if not Path(dna).is_file():
            raise FileNotFoundError(f"barcode file does not exist: {dna}")
        return read_sequences(dna)
    if isinstance(dna, str) and dna.lstrip("\ufeff \t\r\n").startswith(">"):
        return parse_fasta(dna.lstrip("\ufeff \t\r\n"))
    records = []
    for item in [dna] if isinstance(dna, str) else list(dna):
        if isinstance(item, SequenceRecord):
            records.append(item)
        else:
            seq, err = clean_sequence(item) if isinstance(item, str) else ("", f"barcode is {type(item).__name__}, not a string")
            records.append(SequenceRecord("", seq, "", err))
    return records


def queries_from_python(images: Any = None, dna: Any = None, ids: Sequence[str] | None = None) -> list[Query]:
    """Queries from Python objects.

    ``images``: a path, a folder, bytes, a PIL image, an array, or a list of these.
    ``dna``: a barcode string, FASTA text, a FASTA / sequence file path, or a list of strings or
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
    records = _barcode_records(dna) if dna is not None else []
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


# -- checking -------------------------------------------------------------------------------------
def _note(query: Query, text: str) -> None:
    if text not in query.notes:  # checking twice adds nothing
        query.notes.append(text)


def _unique_ids(queries: list[Query]) -> None:
    """Rename repeated ids ``ID#2``, ``ID#3``, ... in place, with a note on each specimen involved."""
    taken = {q.id for q in queries}
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q.id, []).append(i)
    for original, members in groups.items():
        if len(members) < 2:
            continue
        renamed, suffix = [], 2
        for i in members[1:]:
            while f"{original}#{suffix}" in taken:
                suffix += 1
            new = f"{original}#{suffix}"
            taken.add(new)
            renamed.append(new)
            queries[i].id = new
            _note(queries[i], f"duplicate id: {len(members)} specimens are called '{original}', this one was renamed '{new}'")
        _note(
            queries[members[0]],
            f"duplicate id: {len(members)} specimens are called '{original}', the others were renamed {', '.join(repr(r) for r in renamed)}"
        )


def _check_barcodes(queries: list[Query], dna_tokenizer, min_valid_kmers: float) -> None:
    """Clean, truncate and test the k-mers of every barcode in place (module docstring)."""
    rows = []
    for i, q in enumerate(queries):
        if q.dna is None or q.error is not None:
            continue
        seq, err = clean_sequence(q.dna) if isinstance(q.dna, str) else ("", f"barcode is {type(q.dna).__name__}, not a string")
        if err:
            q.error = err
            continue
        if dna_tokenizer is not None and len(seq) > dna_tokenizer.max_length:
            _note(q, f"barcode has {len(seq):,} nt, classified on its first {dna_tokenizer.max_length} nt (the model's maximum)")
            seq = seq[: dna_tokenizer.max_length]
        q.dna = seq
        rows.append(i)
    if dna_tokenizer is None or not rows:
        return
    enc = dna_tokenizer([queries[i].dna for i in rows], return_tensors="np")
    first = 0 if dna_tokenizer.leading_id is None else 1
    ids, mask = enc["input_ids"][:, first:], enc["attention_mask"][:, first:].astype(bool)
    valid = ((ids != dna_tokenizer.unk_token_id) & mask).sum(axis=1)
    total = mask.sum(axis=1)
    k = dna_tokenizer.k
    for i, v, t in zip(rows, valid.tolist(), total.tolist()):
        q = queries[i]
        if v < min_valid_kmers * t or v == 0:
            q.error = (
                f"too few valid {k}-mers: {v} of {t} contain only A, C, G, T (at least {min_valid_kmers:.0%} needed, "
                f"min_valid_kmers); a {k}-mer with N or another ambiguity code is unreadable to the model. Is this a DNA barcode?"
            )
            q.dna = None
        elif len(q.dna) < SHORT_BARCODE:
            _note(q, f"short barcode: {len(q.dna)} nt (COI barcodes are about 658), so the answer is less reliable")


def check_queries(queries: Sequence[Query], dna_tokenizer=None, min_valid_kmers: float = MIN_VALID_KMERS) -> list[Query]:
    """Checked copies of ``queries``: unique ids, cleaned / truncated / k-mer-tested barcodes (module docstring).

    ``dna_tokenizer`` is the model's :class:`~bioscan_clip_hf.tokenization_barcode.BarcodeKmerTokenizer`
    (its ``k``, ``stride``, ``max_length`` and ``<UNK>`` rule decide what a readable k-mer is);
    without one, barcodes are only cleaned. Checking twice changes nothing more.
    """
    if not 0.0 <= float(min_valid_kmers) <= 1.0:
        raise ValueError(f"min_valid_kmers must be a fraction between 0 and 1, got {min_valid_kmers!r}")
    checked = [replace(q, notes=list(q.notes)) for q in queries]
    _unique_ids(checked)
    _check_barcodes(checked, dna_tokenizer, float(min_valid_kmers))
    return checked
