"""Batched feature extraction (image, DNA, text) with per-item errors instead of crashes.

Every function returns ``(features, errors)``: a float32 CPU tensor ``[n, projection_dim]``
(L2-normalised; a zero row where the item failed) and a list with ``None`` or an error message per
item, so one unreadable image or invalid barcode never stops a batch.

Photos are decoded (:func:`~.specimens.load_image`, the one specimen reader) and preprocessed by the
model's image processor in ``torch.utils.data.DataLoader`` workers (``num_workers``), so decoding the
next batch overlaps with the forward pass of this one; ``num_workers=0`` does the same in-process.
Features are computed under ``torch.inference_mode`` in whatever dtype the model's weights have
(see :mod:`~.runtime`) and L2-normalised in float32.

Example:
    >>> feats, errors = encode_dna(model, processor, ["ACGT" * 100, "not dna!"])  # doctest: +SKIP
    >>> errors[1]
    "invalid characters ' !DIOT' (expected IUPAC DNA codes)"
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..taxonomy import RANKS
from .sequences import clean_sequence
from .specimens import load_image

__all__ = [
    "MODALITIES", "combine_features", "default_num_workers", "encode_dataset", "encode_dna", "encode_images", "encode_texts",
    "resolve_device",
]

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


def default_num_workers() -> int:
    """Photo-decoding workers when none are asked for: one per spare core, at most 2.

    One worker keeps a forward pass of ``clibd-base`` fed on a CPU (decoding and preprocessing a
    BIOSCAN photo costs a few ms, the forward tens to hundreds); see BENCHMARKS.md "Inference".
    """
    return min(2, max(0, (os.cpu_count() or 1) - 1))


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


class _Prepared(Dataset):
    """``(index, prepared item, None)`` or ``(index, None, error message)`` for each item."""

    def __init__(self, items: Sequence[Any], prepare: Callable[[Any], Any]) -> None:
        self.items, self.prepare = items, prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            return i, self.prepare(self.items[i]), None
        except Exception as exc:  # one bad item must not stop the run
            return i, None, _message(exc)


def _as_list(batch: list) -> list:
    return batch


def _run_batches(
    items: Sequence[Any],
    prepare: Callable[[Any], Any],
    forward: Callable[[list[Any]], torch.Tensor],
    batch_size: int,
    progress: bool,
    desc: str,
    callback: Callable[[int, int], None] | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, list[str | None]]:
    """Prepare items (recording errors; in ``num_workers`` worker processes), run the good ones
    through ``forward`` (unnormalised features) in batches, in order, and L2-normalise them in float32.

    If a whole batch fails in ``forward``, its items are retried one at a time so only the bad
    ones get an error. ``callback(done, total)`` is called after every batch (for GUIs). A single
    batch is prepared in-process: starting workers would cost more than they save.
    """
    n = len(items)
    errors: list[str | None] = [None] * n
    feats: torch.Tensor | None = None
    workers = num_workers if n > batch_size else 0
    loader = DataLoader(_Prepared(items, prepare), batch_size=batch_size, num_workers=workers, collate_fn=_as_list)
    bar = tqdm(total=n, desc=desc, unit="item", disable=not progress or n == 0, leave=False)
    done = 0
    for batch in loader:
        ready, idx = [], []
        for i, value, error in batch:
            if error is None:
                ready.append(value)
                idx.append(i)
            else:
                errors[i] = error
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
                # Normalised in float32: a bf16 / fp16 unit vector is off unit length by up to ~1e-3,
                # enough to shift the scores that novelty thresholds compare.
                feats[ok_idx] = torch.nn.functional.normalize(out.float(), dim=-1).cpu()
        done += len(batch)
        bar.update(len(batch))
        if callback is not None:
            callback(done, n)
    bar.close()
    if feats is None:
        feats = torch.zeros(n, 0, dtype=torch.float32)
    return feats, errors


class _ImagePixels:
    """Photo -> ``[3, H, W]`` model input: the specimen reader, then the model's image processor.
    A class rather than a closure so workers started by ``spawn`` (macOS, Windows) can receive it."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, item: Any) -> torch.Tensor:
        return self.processor(images=[load_image(item)], return_tensors="pt")["pixel_values"][0]


@torch.inference_mode()
def encode_images(
    model, processor, images: Sequence[Any], batch_size: int = 32, progress: bool = True, callback=None,
    num_workers: int | None = None,
):
    """Image features for paths / PIL images / arrays / bytes (read by :func:`~.specimens.load_image`).

    ``num_workers``: decoding worker processes (default :func:`default_num_workers`; 0 = in-process).
    """
    device = _model_device(model)

    def forward(batch):
        return model.get_image_features(pixel_values=torch.stack(batch).to(device), normalize=False)

    workers = default_num_workers() if num_workers is None else num_workers
    return _run_batches(images, _ImagePixels(processor), forward, batch_size, progress, "image features", callback, workers)


@torch.inference_mode()
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
            normalize=False,
        )

    return _run_batches(sequences, prepare, forward, batch_size, progress, "DNA features", callback)


@torch.inference_mode()
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
            normalize=False,
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


def _undecoded_images(dataset):
    """The data set with its ``image`` column as stored bytes (``{"bytes", "path"}``), so that the
    specimen reader, not the datasets library, decodes every photo (in the workers)."""
    import datasets

    feature = dataset.features.get("image")
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def record_texts(dataset) -> list[str]:
    """The taxonomy string of every record ("Order Family Genus Species", ``not_classified`` gaps)."""
    from ..processing_bioscan_clip import taxonomy_text

    cols = {rank: list(dataset[rank]) for rank in RANKS}  # a datasets Column costs ~2 ms per indexed row
    return [taxonomy_text(*(cols[r][i] for r in RANKS)) for i in range(len(dataset))]


def encode_dataset(
    model, processor, dataset, modality: str, batch_size: int = 64, progress: bool = True, num_workers: int | None = None
):
    """Features of every record of a ``datasets.Dataset`` for one modality of :data:`MODALITIES`.

    Images come from the ``image`` column, barcodes from ``dna_barcode`` (unchanged, as the
    original), text from the taxonomy columns. ``num_workers``: photo-decoding workers (default
    :func:`default_num_workers`). Returns ``(features, errors)``.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "image":
        column = _LazyColumn(_undecoded_images(dataset), "image")
        return encode_images(model, processor, column, batch_size, progress, num_workers=num_workers)
    if modality == "dna":
        return encode_dna(model, processor, list(dataset["dna_barcode"]), batch_size, progress, clean=False)
    if modality == "text":
        return encode_texts(model, processor, record_texts(dataset), max(batch_size, 64), progress)
    image, err_i = encode_dataset(model, processor, dataset, "image", batch_size, progress, num_workers)
    dna, err_d = encode_dataset(model, processor, dataset, "dna", batch_size, progress)
    errors = [a or b for a, b in zip(err_i, err_d)]
    return combine_features(image, dna, modality), errors
