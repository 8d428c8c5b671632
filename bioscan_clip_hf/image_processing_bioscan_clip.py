"""Image processor of BIOSCAN-CLIP: the original CLIBD evaluation transform, exactly, without torchvision.

The original (``bioscanclip/util/dataset.py``) feeds ``ToTensor()`` -> ``Resize(256, antialias=True)``
-> ``CenterCrop(224)``: the resize runs on the *float* [0, 1] tensor. torchvision's tensor resize is
``torch.nn.functional.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False)``
with the output size ``[256, int(256 * long / short)]`` (shorter side first, the longer one
truncated) and no resampling at all when the image already has that size; ``CenterCrop`` takes the
offsets ``int(round((H - 224) / 2))`` (Python's round-half-to-even) and zero-pads an image smaller
than the crop. Resizing the uint8 PIL image instead, as stock image processors do, differs by up to
0.8/255 on full-size photos.

The three steps are plain functions over ``[..., C, H, W]`` tensors (:func:`to_float_tensor`,
:func:`resize_shortest_edge`, :func:`center_crop`) so batched or GPU pipelines reuse them unchanged.
Hub file: imports only the standard library, numpy, torch, public ``transformers`` names and (lazily) PIL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from transformers import BaseImageProcessor, BatchFeature

BILINEAR = 2  # PIL.Image.BILINEAR, the value stock processors save as `resample`

TO_8_BIT = ("convert it to 8-bit first, e.g. with bioscan_clip_hf.zero_shot.specimens.load_image (which rescales "
            "16-bit, 32-bit and float pixels by their range and refuses what it cannot scale)")


def _wide_integer_type(pixels: Any) -> str | None:
    """The name of an integer pixel type other than uint8 (numpy or torch), else None."""
    dtype = getattr(pixels, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return None if dtype in (torch.uint8, torch.bool) or dtype.is_floating_point else str(dtype).removeprefix("torch.")
    if isinstance(dtype, np.dtype) and dtype.kind in "iu" and dtype != np.uint8:
        return dtype.name
    return None


def check_8_bit(image: Any, rescale: bool = True, name: str = "the image") -> None:
    """Refuse pixels this processor would misread: a PIL image of mode ``I;16*``, ``I`` or ``F`` (PIL's
    ``convert("RGB")`` clips them to 0-255, which turns a 16-bit photo white) and, when ``rescale``, an
    integer array or tensor wider than 8 bits (``x / 255`` would exceed 1). Float arrays are read as
    0-255, like ``ToTensor``.

    Raises:
        ValueError: naming the mode or type and how to convert the image.

    Example:
        >>> from PIL import Image
        >>> check_8_bit(Image.new("I;16", (2, 2)))
        Traceback (most recent call last):
        ...
        ValueError: the image has PIL mode 'I;16' (16-bit, 32-bit or float pixels), which this processor cannot scale; convert it to 8-bit first, e.g. with bioscan_clip_hf.zero_shot.specimens.load_image (which rescales 16-bit, 32-bit and float pixels by their range and refuses what it cannot scale)
    """
    if hasattr(image, "getbands"):
        if image.mode.startswith("I") or image.mode == "F":  # I, I;16, I;16B, I;16L, I;16N, F
            raise ValueError(f"{name} has PIL mode {image.mode!r} (16-bit, 32-bit or float pixels), which this "
                             f"processor cannot scale; {TO_8_BIT}")
    elif rescale and (wide := _wide_integer_type(image)) is not None:
        raise ValueError(f"{name} has pixels of type {wide}, which this processor cannot scale (it divides by "
                         f"255); {TO_8_BIT}")


def to_float_tensor(image: Any, rescale_factor: float | None = 1 / 255) -> torch.Tensor:
    """``ToTensor()``: an 8-bit PIL image (converted to RGB) or an HWC/CHW array -> ``[3, H, W]`` float32
    times ``rescale_factor`` (``None``: values kept).

    The scaling divides by ``1 / rescale_factor``, so the default is ``ToTensor``'s ``x / 255`` to the bit.
    Images of more than 8 bits are refused (:func:`check_8_bit`) when rescaling, never whitened.
    """
    check_8_bit(image, rescale=rescale_factor is not None)
    if hasattr(image, "getbands"):  # PIL; np.array copies, so the tensor owns writable memory
        image = np.array(image.convert("RGB") if image.mode != "RGB" else image)
    tensor = torch.as_tensor(image)
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3 and tensor.shape[-1] in (1, 3) and tensor.shape[0] not in (1, 3):
        tensor = tensor.permute(2, 0, 1)  # a view: the float conversion below writes CHW order once
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"Expected an image of shape [H, W, 3] or [3, H, W], got {tuple(tensor.shape)}")
    owned = tensor.dtype != torch.float32  # .to() copies: scale that copy in place (one pass less over a big photo)
    tensor = tensor.expand(3, -1, -1).to(torch.float32)
    if rescale_factor is None:
        return tensor
    return tensor.div_(1 / rescale_factor) if owned else tensor.div(1 / rescale_factor)


def shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output ``(height, width)``: shorter side ``size``, longer side truncated.

    Example:
        >>> shortest_edge_size(2160, 2880, 256)
        (256, 341)
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize_shortest_edge(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision ``Resize(size, antialias=True)`` (bilinear) on a float ``[..., C, H, W]`` tensor."""
    height, width = pixels.shape[-2:]
    out = shortest_edge_size(height, width, size)
    if out == (height, width):  # torchvision returns the image untouched
        return pixels
    flat = pixels.reshape(-1, *pixels.shape[-3:])
    resized = F.interpolate(flat, size=out, mode="bilinear", antialias=True, align_corners=False)
    return resized.reshape(*pixels.shape[:-2], *out)


def center_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision ``CenterCrop((height, width))`` on a ``[..., H, W]`` tensor (zero padding when smaller)."""
    image_height, image_width = pixels.shape[-2:]
    if height > image_height or width > image_width:
        pad_w, pad_h = max(width - image_width, 0), max(height - image_height, 0)
        pixels = F.pad(pixels, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=0.0)
        image_height, image_width = pixels.shape[-2:]
    top = int(round((image_height - height) / 2.0))
    left = int(round((image_width - width) / 2.0))
    return pixels[..., top : top + height, left : left + width]


class BioscanClipImageProcessor(BaseImageProcessor):
    """Resize the shorter side, centre-crop, rescale and (optionally) normalise, as the original's
    evaluation transform does (see the module docstring).

    Args:
        do_resize: resize the shorter side to ``size["shortest_edge"]`` (256), bilinear with antialiasing,
            on the float image.
        size: ``{"shortest_edge": int}``.
        resample: kept for configs of stock processors; only bilinear (2) is the original.
        do_center_crop: crop ``crop_size`` (``{"height", "width"}``, 224) at the centre.
        do_rescale: multiply by ``rescale_factor`` (1/255: ``ToTensor``).
        do_normalize: ``(x - image_mean) / image_std`` per channel; off for the original weights.
        image_mean, image_std: per-channel statistics (defaults 0.5).

    PIL images are converted to RGB first.

    Example:

    ```python
    >>> from PIL import Image
    >>> processor = BioscanClipImageProcessor()
    >>> processor(Image.new("RGB", (341, 256)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])

    ```
    """

    model_input_names = ["pixel_values"]
    _settings = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                 "do_normalize", "image_mean", "image_std")

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | None = None,
        resample: int = BILINEAR,
        do_center_crop: bool = True,
        crop_size: dict[str, int] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = False,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        # Written by saves of this class or of stock processors (old folders); images are always made RGB.
        for key in ("image_processor_type", "do_convert_rgb"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        self.do_resize = bool(do_resize)
        self.size = dict(size or {"shortest_edge": 256})
        self.resample = int(resample)
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = dict(crop_size or {"height": 224, "width": 224})
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = list(image_mean if image_mean is not None else [0.5, 0.5, 0.5])
        self.image_std = list(image_std if image_std is not None else [0.5, 0.5, 0.5])
        self._check(**{name: getattr(self, name) for name in self._settings})

    @staticmethod
    def _check(size: dict[str, int], resample: int, crop_size: dict[str, int], image_std: list[float],
               image_mean: list[float], **_: Any) -> None:
        if set(size) != {"shortest_edge"}:
            raise ValueError(f"size must be {{'shortest_edge': int}} (the original resizes the shorter side), got {size}")
        if set(crop_size) != {"height", "width"}:
            raise ValueError(f"crop_size must be {{'height': int, 'width': int}}, got {crop_size}")
        if resample != BILINEAR:
            raise ValueError(f"Only bilinear resampling (resample=2) is implemented, got resample={resample}")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean and image_std need 3 values, std > 0; got {image_mean}, {image_std}")

    def preprocess(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        """Turn one image or a list (PIL images, HWC or CHW arrays/tensors) into ``pixel_values``.

        Args:
            images: the image(s).
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (a list of ``[3, H, W]`` arrays).
            **overrides: any constructor setting for this call (``do_resize=False``...).

        Returns:
            ``BatchFeature`` with ``pixel_values`` ``[batch, 3, crop height, crop width]``.
        """
        unknown = sorted(set(overrides) - set(self._settings))
        if unknown:
            raise TypeError(f"Unexpected arguments {unknown}; settings are {list(self._settings)}")
        settings = {name: overrides.get(name, getattr(self, name)) for name in self._settings}
        self._check(**settings)
        items = images if isinstance(images, (list, tuple)) else [images]
        pixels = [self.transform(item, settings) for item in items]
        if return_tensors is None:
            return BatchFeature({"pixel_values": [p.numpy() for p in pixels]})
        shapes = {tuple(p.shape) for p in pixels}
        if len(shapes) > 1:
            raise ValueError(f"Images of different sizes {sorted(shapes)} cannot be stacked; resize or crop them")
        return BatchFeature({"pixel_values": torch.stack(pixels) if pixels else torch.empty(0, 3, 0, 0)},
                            tensor_type=return_tensors)

    def transform(self, image: Any, settings: dict[str, Any] | None = None) -> torch.Tensor:
        """One image -> ``[3, H, W]`` float32 pixels with this processor's settings (or ``settings``)."""
        s = settings or {name: getattr(self, name) for name in self._settings}
        pixels = to_float_tensor(image, s["rescale_factor"] if s["do_rescale"] else None)
        if s["do_resize"]:
            pixels = resize_shortest_edge(pixels, s["size"]["shortest_edge"])
        if s["do_center_crop"]:
            pixels = center_crop(pixels, s["crop_size"]["height"], s["crop_size"]["width"])
        if s["do_normalize"]:
            mean = torch.tensor(s["image_mean"], dtype=pixels.dtype).view(-1, 1, 1)
            std = torch.tensor(s["image_std"], dtype=pixels.dtype).view(-1, 1, 1)
            pixels = (pixels - mean) / std
        return pixels.contiguous()

    def to_dict(self) -> dict[str, Any]:
        """The settings and the class name (what ``preprocessor_config.json`` holds)."""
        out = {name: getattr(self, name) for name in self._settings}
        out["image_processor_type"] = type(self).__name__
        if getattr(self, "auto_map", None):
            out["auto_map"] = self.auto_map
        return out


BioscanClipImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["BioscanClipImageProcessor", "center_crop", "resize_shortest_edge", "shortest_edge_size", "to_float_tensor"]
