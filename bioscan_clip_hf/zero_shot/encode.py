"""Batched feature extraction (image, DNA, text) with per-item errors instead of crashes.

Every function returns ``(features, errors)``: a float32 CPU tensor ``[n, projection_dim]``
(L2-normalised; a zero row where the item failed) and a list with ``None`` or an error message per
item, so one unreadable image or invalid barcode never stops a batch.

Example:
    >>> feats, errors = encode_dna(model, processor, ["ACGT" * 100, "not dna!"])  # doctest: +SKIP
    >>> errors[1]
    "invalid characters ' !DIOT' (expected IUPAC DNA codes)"
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..taxonomy import RANKS
from .sequences import clean_sequence

__all__ = ["MODALITIES", "combine_features", "encode_dna", "encode_images", "encode_texts", "load_image", "resolve_device"]

# Key/query feature types of the original evaluation: single towers, the mean of the image and
# DNA vectors, and their concatenation (2 x projection_dim).
MODALITIES = ("image", "dna", "text", "averaged", "concatenated")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def load_image(item: Any):
    """An RGB PIL image from a path, PIL image, numpy array, bytes, or a datasets ``{"bytes", "path"}`` dict."""
    from PIL import Image

    if item is None:
        raise ValueError("no image")
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, (str, Path)):
        img = Image.open(item)
        img.load()
    elif isinstance(item, (bytes, bytearray)):
        img = Image.open(io.BytesIO(item))
    elif isinstance(item, dict) and (item.get("bytes") or item.get("path")):
        img = Image.open(io.BytesIO(item["bytes"])) if item.get("bytes") else Image.open(item["path"])
    elif isinstance(item, np.ndarray):
        img = Image.fromarray(item)
    else:
        raise TypeError(f"cannot read an image from {type(item).__name__}")
    return img.convert("RGB")


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _run_batches(
    items: Sequence[Any],
    prepare: Callable[[Any], Any],
    forward: Callable[[list[Any]], torch.Tensor],
    batch_size: int,
    progress: bool,
    desc: str,
    callback: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, list[str | None]]:
    """Prepare items one by one (recording errors), run the good ones through ``forward`` in batches.

    If a whole batch fails in ``forward``, its items are retried one at a time so only the bad
    ones get an error. ``callback(done, total)`` is called after every batch (for GUIs).
    """
    n = len(items)
    errors: list[str | None] = [None] * n
    feats: torch.Tensor | None = None
    bar = tqdm(total=n, desc=desc, unit="item", disable=not progress or n == 0, leave=False)
    for start in range(0, n, batch_size):
        ready, idx = [], []
        for i in range(start, min(n, start + batch_size)):
            try:
                ready.append(prepare(items[i]))
                idx.append(i)
            except Exception as exc:  # one bad item must not stop the run
                errors[i] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        if ready:
            try:
                out, ok_idx = forward(ready), idx
            except Exception:
                rows, ok_idx = [], []
                for item, i in zip(ready, idx):
                    try:
                        rows.append(forward([item]))
                        ok_idx.append(i)
                    except Exception as exc:
                        errors[i] = f"{type(exc).__name__}: {exc}"
                out = torch.cat(rows) if rows else None
            if out is not None:
                if feats is None:
                    feats = torch.zeros(n, out.shape[1], dtype=torch.float32)
                feats[ok_idx] = out.float().cpu()
        bar.update(min(n, start + batch_size) - start)
        if callback is not None:
            callback(min(n, start + batch_size), n)
    bar.close()
    if feats is None:
        feats = torch.zeros(n, 0, dtype=torch.float32)
    return feats, errors


@torch.no_grad()
def encode_images(model, processor, images: Sequence[Any], batch_size: int = 32, progress: bool = True, callback=None):
    """Image features for paths / PIL images / arrays / bytes (see :func:`load_image`)."""
    device = _model_device(model)

    def forward(batch):
        pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
        return model.get_image_features(pixel_values=pixels)

    return _run_batches(images, load_image, forward, batch_size, progress, "image features", callback)


@torch.no_grad()
def encode_dna(
    model, processor, sequences: Sequence[str], batch_size: int = 64, progress: bool = True, clean: bool = True, callback=None
):
    """DNA features. ``clean=True`` upper-cases and removes gaps/whitespace first (user input);
    ``clean=False`` passes the strings unchanged, as the original evaluation does."""
    device = _model_device(model)

    def prepare(seq):
        if not isinstance(seq, str):
            raise ValueError(f"barcode is {type(seq).__name__}, not a string")
        if not clean:
            if not seq:
                raise ValueError("empty sequence")
            return seq
        seq, err = clean_sequence(seq)
        if err:
            raise ValueError(err)
        return seq

    def forward(batch):
        enc = processor(dna=batch, return_tensors="pt")
        return model.get_dna_features(
            dna_input_ids=enc["dna_input_ids"].to(device),
            dna_attention_mask=enc["dna_attention_mask"].to(device) if "dna_attention_mask" in enc else None,
        )

    return _run_batches(sequences, prepare, forward, batch_size, progress, "DNA features", callback)


@torch.no_grad()
def encode_texts(model, processor, texts: Sequence[str], batch_size: int = 256, progress: bool = True):
    """Text features (taxonomy strings or prompts)."""
    device = _model_device(model)

    def prepare(text):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty text")
        return text

    def forward(batch):
        enc = processor(text=batch, return_tensors="pt")
        return model.get_text_features(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device) if "attention_mask" in enc else None,
            token_type_ids=enc["token_type_ids"].to(device) if "token_type_ids" in enc else None,
        )

    return _run_batches(texts, prepare, forward, batch_size, progress, "text features")


def combine_features(image: torch.Tensor, dna: torch.Tensor, how: str) -> torch.Tensor:
    """Image+DNA features as the original evaluates them, L2-normalised for cosine search.

    ``averaged``: mean of the (normalised) image and DNA vectors; ``concatenated``: image || DNA.
    """
    if how == "averaged":
        combined = (image + dna) / 2.0
    elif how == "concatenated":
        combined = torch.cat([image, dna], dim=1)
    else:
        raise ValueError(f"how must be 'averaged' or 'concatenated', got {how!r}")
    return torch.nn.functional.normalize(combined, dim=1)


class _LazyColumn:
    """Index a datasets column one row at a time, so images are decoded per batch, not all at once."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[int(i)][self.column]


def record_texts(dataset) -> list[str]:
    """The taxonomy string of every record ("Order Family Genus Species", ``not_classified`` gaps)."""
    from ..processing_bioscan_clip import taxonomy_text

    cols = {rank: dataset[rank] for rank in RANKS}
    return [taxonomy_text(*(cols[r][i] for r in RANKS)) for i in range(len(dataset))]


def encode_dataset(model, processor, dataset, modality: str, batch_size: int = 64, progress: bool = True):
    """Features of every record of a ``datasets.Dataset`` for one modality of :data:`MODALITIES`.

    Images come from the ``image`` column, barcodes from ``dna_barcode`` (unchanged, as the
    original), text from the taxonomy columns. Returns ``(features, errors)``.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "image":
        return encode_images(model, processor, _LazyColumn(dataset, "image"), batch_size, progress)
    if modality == "dna":
        return encode_dna(model, processor, dataset["dna_barcode"], batch_size, progress, clean=False)
    if modality == "text":
        return encode_texts(model, processor, record_texts(dataset), max(batch_size, 64), progress)
    image, err_i = encode_dataset(model, processor, dataset, "image", batch_size, progress)
    dna, err_d = encode_dataset(model, processor, dataset, "dna", batch_size, progress)
    errors = [a or b for a, b in zip(err_i, err_d)]
    return combine_features(image, dna, modality), errors
