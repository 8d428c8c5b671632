"""CLIBD's training augmentation with PIL and the standard library (no torchvision).

The original (``bioscanclip/util/dataset.py::Dataset_for_CL``, torchvision 0.15 with torch 2.0.1) applies
``ToTensor`` -> ``Resize(256, antialias=True)`` -> ``RandomResizedCrop(224, scale=(0.08, 1),
ratio=(3/4, 4/3))`` -> ``RandomHorizontalFlip`` -> ``RandomVerticalFlip`` -> ``RandomRotation(45)``
(nearest, fill 0), no normalisation. :class:`TrainImageTransform` applies the same operations in the same
order with the same parameter distributions (:func:`random_resized_crop_box` is torchvision's
``get_params``, ten tries then the centre-crop fallback), on the PIL image:

- ``Resize(256)``: identity on the ``cropped_256`` photos the original trains on, as here; larger photos
  are resized as uint8 (within 1/255 of the float resize; the evaluation transform of
  :mod:`bioscan_clip_hf.image_processing_bioscan_clip` is the exact one);
- the crop's resize to 224 is PIL bilinear, which antialiases when the crop is larger than 224 px, where
  torchvision 0.15 resized tensors without antialiasing (its ``"warn"`` default); upscaled crops agree;
- the rotation samples the nearest pixel about the image centre with PIL rather than ``grid_sample``;
- the draws come from Python's ``random`` (per DataLoader worker) rather than torch's generator.

So each augmented image is a sample from the original's distribution up to interpolation details,
not the same image for the same seed, which a random augmentation does not need. Eval is the image
processor's transform. The sizes come from the processor (``size["shortest_edge"]``, ``crop_size``),
so a preset with smaller images works unchanged.

Example:
    >>> from PIL import Image
    >>> transform = TrainImageTransform(resize=256, crop=224, rng=random.Random(0))
    >>> transform(Image.new("RGB", (341, 256))).size
    (224, 224)
"""

from __future__ import annotations

import math
import random
from typing import Any

from PIL import Image


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear; torchvision's ``Resize(int)`` rounding).

    Example:
        >>> resize_shorter_side(Image.new("RGB", (682, 512)), 256).size
        (341, 256)
    """
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return image.resize(new, Image.BILINEAR)


def random_resized_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: (left, top, crop width, crop height).

    Ten tries at a random area and log-uniform aspect ratio, then a centre crop fallback.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class TrainImageTransform:
    """The original training augmentation on PIL images (see the module docstring).

    Args:
        resize: shorter side before cropping (256 for the base model).
        crop: output side (224 for the base model).
        rotation: maximum rotation in degrees (45).
        rng: source of randomness; ``None`` uses the ``random`` module, which PyTorch's
            DataLoader and ``accelerate.utils.set_seed`` seed separately in every worker.
    """

    def __init__(self, resize: int = 256, crop: int = 224, rotation: float = 45.0,
                 rng: random.Random | None = None) -> None:
        self.resize = int(resize)
        self.crop = int(crop)
        self.rotation = float(rotation)
        self.rng = rng

    @classmethod
    def from_image_processor(cls, image_processor: Any, rng: random.Random | None = None) -> TrainImageTransform:
        """Read ``size["shortest_edge"]`` and ``crop_size`` from a transformers image processor."""
        size = image_processor.size
        crop = image_processor.crop_size
        resize = size["shortest_edge"] if "shortest_edge" in size else min(size["height"], size["width"])
        return cls(resize=resize, crop=min(crop["height"], crop["width"]), rng=rng)

    def __call__(self, image: Image.Image) -> Image.Image:
        rng = self.rng if self.rng is not None else random  # the module offers the same methods
        image = resize_shorter_side(image.convert("RGB") if image.mode != "RGB" else image, self.resize)
        left, top, w, h = random_resized_crop_box(image.width, image.height, rng)
        image = image.resize((self.crop, self.crop), Image.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_TOP_BOTTOM)
        angle = rng.uniform(-self.rotation, self.rotation)
        return image.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=(0, 0, 0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resize={self.resize}, crop={self.crop}, rotation={self.rotation})"
