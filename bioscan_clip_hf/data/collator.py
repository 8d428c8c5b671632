"""The training view: records -> model inputs, one batched processor call per batch.

Images are decoded here (lazily: pass records whose ``image`` is still ``{"bytes", "path"}``,
e.g. ``load_bioscan(..., decode_images=False)``), so decoding and augmentation run in the
DataLoader workers. DNA and text of the whole batch are tokenised in one call. Works the same on
map-style and streaming (``IterableDataset``) data sets.

Example:
    >>> from torch.utils.data import DataLoader
    >>> collator = BioscanCollator(processor, train=True)                         # doctest: +SKIP
    >>> loader = DataLoader(load_bioscan(src, split="train", decode_images=False),
    ...                     batch_size=32, collate_fn=collator, num_workers=2)       # doctest: +SKIP
    >>> batch = next(iter(loader)); model(**batch.model_inputs(), return_loss=True)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from .dna_augment import BarcodeAugmentation
from .schema import record_taxonomy_text
from .transforms import TrainImageTransform

MODALITIES = ("image", "dna", "text")


def decode_image(value: Any, min_side: int | None = None) -> Image.Image | None:
    """Decode an ``image`` cell: a PIL image, ``{"bytes", "path"}``, bytes or a path, to RGB; ``None`` stays.

    JPEGs (every image of the BIOSCAN releases and of our builds) hold 8-bit samples and are decoded
    here directly; with ``min_side``, JPEGs much larger than needed are decoded at a reduced scale
    (libjpeg DCT scaling, never below ``min_side`` on the shorter side), which is several times
    faster. Any other image goes through the one converter of user photos,
    :func:`bioscan_clip_hf.zero_shot.specimens.load_image`, so a 16-bit PNG or TIFF in a data set is
    rescaled, never clipped white.

    Example:
        >>> decode_image(None) is None
        True
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        value = data if data is not None else path
        if value is None:
            return None
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else _convert(value)
    image = Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else os.fspath(value))
    if image.format != "JPEG":
        return _convert(image)
    if min_side is not None and min(image.size) >= 2 * min_side:
        image.draft("RGB", (min_side, min_side))
    image.load()
    return image.convert("RGB") if image.mode != "RGB" else image


def _convert(image: Image.Image) -> Image.Image:
    from ..zero_shot.specimens import load_image  # imported on first use: JPEG-only data sets never need it

    return load_image(image)


def pixel_values(images: Sequence[Image.Image], image_processor: Any) -> torch.Tensor:
    """Stack same-size RGB images into ``[B, 3, H, W]`` float32, rescaled and normalised exactly as
    ``image_processor(images, do_resize=False, do_center_crop=False)`` would.

    Done in NumPy, image by image into one channels-first buffer: several times faster than the
    image processor, and free of torch's intra-op threads, which stall on a busy machine.

    Example:
        >>> pixel_values([Image.new("RGB", (4, 4), (255, 0, 0))], processor.image_processor)[0, :, 0, 0]  # doctest: +SKIP
        tensor([1., 0., 0.])
    """
    width, height = images[0].size
    values = np.empty((len(images), 3, height, width), dtype=np.float32)
    for index, image in enumerate(images):
        values[index] = np.asarray(image.convert("RGB") if image.mode != "RGB" else image).transpose(2, 0, 1)
    if getattr(image_processor, "do_rescale", True):
        values *= np.float32(image_processor.rescale_factor)
    if getattr(image_processor, "do_normalize", False):
        mean = np.asarray(image_processor.image_mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(image_processor.image_std, dtype=np.float32).reshape(1, -1, 1, 1)
        values = (values - mean) / std
    return torch.from_numpy(values)


class BioscanBatch(BatchFeature):
    """``BatchFeature`` of tensors plus ``processid`` (a list of ids, not a tensor).

    ``model_inputs()`` drops ``processid``, for ``model(**batch.model_inputs())``.
    """

    def model_inputs(self) -> dict[str, Any]:
        """The tensors only (every key except ``processid``)."""
        return {key: value for key, value in self.items() if key != "processid"}


class BioscanCollator:
    """Turn a list of BIOSCAN records into the processor's tensors (+ ``processid``).

    Args:
        processor: a ``BioscanClipProcessor``.
        modalities: which inputs to build: any of ``"image"``, ``"dna"``, ``"text"``.
        train: apply the original training augmentation to images (else the processor's eval
            resize + centre crop).
        seed: seed a private generator for the image augmentation (reproducible in one process);
            ``None`` uses the ``random`` module, seeded per DataLoader worker by PyTorch.
        dna_augmentation: a :class:`~bioscan_clip_hf.data.dna_augment.BarcodeAugmentation`
            applied to every barcode (training only; ``None`` = barcodes as read, the original);
            it draws from its own ``rng``, or from the ``random`` module when that is ``None``.

    Raises (when called):
        ValueError: a record lacks an image or barcode needed for ``modalities`` (the message
            lists the processids), or an image cannot be decoded (names the processid).

    Example:
        >>> collator = BioscanCollator(processor, modalities=("dna", "text"))   # doctest: +SKIP
        >>> batch = collator([{"processid": "A", "dna_barcode": "ACGT", "order": "Diptera"}])  # doctest: +SKIP
    """

    def __init__(
        self,
        processor: Any,
        modalities: Sequence[str] = MODALITIES,
        train: bool = False,
        seed: int | None = None,
        dna_augmentation: BarcodeAugmentation | None = None,
    ) -> None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
        self.processor = processor
        self.modalities = tuple(modalities)
        self.train = train
        self.dna_augmentation = dna_augmentation
        self.transform = None
        self._min_side = None
        if "image" in self.modalities:
            image_processor = processor.image_processor
            self.transform = TrainImageTransform.from_image_processor(
                image_processor, rng=random.Random(seed) if seed is not None else None
            ) if train else None
            if train:  # eval decodes at full size, so it matches the processor on the same file
                self._min_side = self.transform.resize

    def _images(self, records: Sequence[Mapping[str, Any]], ids: list[Any]) -> list[Image.Image]:
        images, missing = [], []
        for record, processid in zip(records, ids):
            try:
                image = decode_image(record.get("image"), self._min_side)
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError...
                raise ValueError(f"record {processid!r}: image cannot be decoded ({error})") from error
            if image is None:
                missing.append(processid)
            images.append(image)
        if missing:
            raise ValueError(f"{len(missing)} record(s) have no image but modalities include 'image': {missing[:10]}")
        if self.transform is not None:
            images = [self.transform(image) for image in images]
        return images

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> BioscanBatch:
        records = list(records)
        ids = [record.get("processid") for record in records]
        data: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        if "dna" in self.modalities:
            barcodes = [record.get("dna_barcode") for record in records]
            missing = [pid for pid, barcode in zip(ids, barcodes) if not barcode]
            if missing:
                raise ValueError(f"{len(missing)} record(s) have no barcode but modalities include 'dna': {missing[:10]}")
            if self.dna_augmentation is not None:
                barcodes = [self.dna_augmentation(barcode) for barcode in barcodes]
            kwargs["dna"] = barcodes
        if "text" in self.modalities:
            kwargs["text"] = [record_taxonomy_text(record) for record in records]
        if "image" in self.modalities:
            images = self._images(records, ids)
            if self.train:
                data["pixel_values"] = pixel_values(images, self.processor.image_processor)
            else:
                kwargs["images"] = images
        if kwargs:
            data.update(self.processor(**kwargs, return_tensors="pt"))
        batch = BioscanBatch(data=data, tensor_type="pt")
        batch["processid"] = ids
        return batch
