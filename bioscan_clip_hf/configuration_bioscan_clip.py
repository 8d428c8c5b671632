"""Configuration of the BIOSCAN-CLIP (CLIBD) three-tower model.

Hub file: imports only the standard library, numpy/torch and public ``transformers`` names, so
``save_pretrained`` can copy it next to the weights and ``trust_remote_code=True`` can load it
with transformers 4.57.x and 5.x alike.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from transformers import AutoConfig

try:  # transformers >= 5 renamed the base class; 4.57 only has the old name.
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - exercised only under transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig

MODALITIES = ("image", "dna", "text")
IMAGE_POOLINGS = ("cls",)
# "softmax_mean" is the original CLIBD pooling (softmax over features, mean over every position,
# padding included); the masked variants ignore positions whose attention mask is 0.
DNA_POOLINGS = ("softmax_mean", "masked_softmax_mean", "masked_mean")
# "mean" is the original (mean over all 20 positions, [PAD] included); "masked_mean" excludes padding.
TEXT_POOLINGS = ("mean", "masked_mean")

_SUB_CONFIG_DEFAULT_TYPES = {"vision_config": "vit", "dna_config": "bert", "text_config": "bert"}


def _vit(hidden: int, layers: int, heads: int, intermediate: int, patch: int) -> dict[str, Any]:
    """A ViT tower at the real model's 224 px input (one image processor serves every preset)."""
    return {
        "model_type": "vit",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "hidden_act": "gelu",
        "image_size": 224,
        "patch_size": patch,
        "num_channels": 3,
        "qkv_bias": True,
        "layer_norm_eps": 1e-6,
    }


def _bert(vocab: int, hidden: int, layers: int, heads: int, intermediate: int, positions: int) -> dict[str, Any]:
    """A BERT tower (the DNA and the text towers)."""
    return {
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "hidden_act": "gelu",
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
    }


# Architectures of the towers. ``clibd-base`` is the released CLIBD model: timm ViT-B/16
# (LayerNorm eps 1e-6), BarcodeBERT 5-mer (BERT-base, vocabulary 1027) and prajjwal1/bert-small.
_PRESETS: dict[str, dict[str, Any]] = {
    "clibd-base": {
        "vision_config": _vit(768, 12, 12, 3072, patch=16),
        "dna_config": _bert(1027, 768, 12, 12, 3072, positions=512),
        "text_config": _bert(30522, 512, 4, 8, 2048, positions=512),
        "projection_dim": 768,
    },
    # Tiny towers for tests and the CPU demo: 32 px patches (49 patches + CLS); the text side keeps
    # the standard uncased BERT vocabulary (30522 x 32 embedding).
    "tiny": {
        "vision_config": _vit(32, 2, 2, 64, patch=32),
        "dna_config": _bert(1027, 32, 2, 2, 64, positions=160),
        "text_config": _bert(30522, 32, 2, 2, 64, positions=32),
        "projection_dim": 32,
        # Pixels scaled to [-1, 1]: with [0, 1] inputs the tiny ViT's CLS embedding starts almost
        # identical for every image and the image tower does not learn in a CPU-sized run.
        "image_normalize": True,
    },
    # Real-size towers that train on a CPU: the DNA tower is 4 x 256 BERT (the shape of
    # prajjwal1/bert-mini; 3.6 M parameters with its MLM head), the text tower has the same shape,
    # and the image tower is a ViT of that width with the real model's 16 px patches.
    "small": {
        "vision_config": _vit(256, 4, 4, 1024, patch=16),
        "dna_config": _bert(1027, 256, 4, 4, 1024, positions=512),
        "text_config": _bert(30522, 256, 4, 4, 1024, positions=512),
        "projection_dim": 256,
        # Pixels scaled to [-1, 1], as for `tiny`: a ViT trained from scratch needs centred inputs.
        "image_normalize": True,
    },
}
PRESET_NAMES = tuple(_PRESETS)


def _build_sub_config(name: str, value: Any) -> Any:
    """Turn ``None``, a dict (with ``model_type``) or a config object into a transformers config."""
    if value is None:
        value = copy.deepcopy(_PRESETS["clibd-base"][name])
    if isinstance(value, _BaseConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict or a transformers config, got {type(value).__name__}")
    value = dict(value)
    model_type = value.pop("model_type", _SUB_CONFIG_DEFAULT_TYPES[name])
    value.pop("transformers_version", None)
    return AutoConfig.for_model(model_type, **value)


def dna_num_tokens(max_length: int, kmer_size: int, stride: int, leading_id: int | None) -> int:
    """Number of DNA token ids per barcode: k-mers of the padded sequence plus the leading id."""
    return (max_length - kmer_size) // stride + 1 + (0 if leading_id is None else 1)


class BioscanClipConfig(_BaseConfig):
    r"""Configuration of [`BioscanClipModel`]: three towers (image ViT, DNA BERT, text BERT) and the
    shared embedding space.

    Args:
        vision_config (`dict` or config, *optional*): image tower (a `ViTConfig` or any vision config
            whose model returns a CLS token first). Defaults to the `clibd-base` ViT-B/16.
        dna_config (`dict` or config, *optional*): DNA tower (`BertConfig`, BarcodeBERT 5-mer by default).
        text_config (`dict` or config, *optional*): taxonomy-text tower (`BertConfig`, bert-small by default).
        projection_dim (`int`, *optional*, defaults to 768): size of the shared embedding space.
        logit_scale_init_value (`float`, *optional*, defaults to ln(1/0.07)): initial learnable log temperature.
        modalities (`list[str]`, *optional*): towers to build, a subset of `["image", "dna", "text"]`.
        image_pooling (`str`, *optional*, defaults to `"cls"`): CLS token after the final LayerNorm.
        dna_pooling (`str`, *optional*, defaults to `"softmax_mean"`): the original pooling
            (MLM transform -> Linear -> softmax over features -> mean over all tokens, padding included);
            `"masked_softmax_mean"` and `"masked_mean"` (mean of the projected tokens) skip padding.
        text_pooling (`str`, *optional*, defaults to `"mean"`): the original mean over all positions
            ([PAD] included) or `"masked_mean"`.
        dna_kmer_size, dna_stride, dna_max_length, dna_leading_id: DNA tokenisation (5, 5, 660, 0 = the
            original: 132 non-overlapping 5-mers after padding/truncating to 660 with `N`, plus id 0 first).
            `dna_leading_id=None` drops the leading id.
        text_max_length (`int`, *optional*, defaults to 20): taxonomy-text length in tokens.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the new projection weights.
        image_normalize (`bool`, *optional*, defaults to `False`): the processor scales pixels to [-1, 1]
            (mean/std 0.5). Off for `clibd-base` (the original feeds [0, 1] pixels), on for `tiny`.

    Example:

    ```python
    >>> from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel
    >>> config = BioscanClipConfig.from_preset("tiny")
    >>> model = BioscanClipModel(config)
    >>> model.config.projection_dim
    32

    ```
    """

    model_type = "bioscan_clip"
    sub_configs = {"vision_config": AutoConfig, "dna_config": AutoConfig, "text_config": AutoConfig}
    # save_pretrained copies this file and writes auto_map however the class was imported
    _auto_class = "AutoConfig"

    def __init__(
        self,
        vision_config: dict | Any | None = None,
        dna_config: dict | Any | None = None,
        text_config: dict | Any | None = None,
        projection_dim: int = 768,
        logit_scale_init_value: float = math.log(1 / 0.07),
        modalities: list[str] | tuple[str, ...] | None = None,
        image_pooling: str = "cls",
        dna_pooling: str = "softmax_mean",
        text_pooling: str = "mean",
        dna_kmer_size: int = 5,
        dna_stride: int = 5,
        dna_max_length: int = 660,
        dna_leading_id: int | None = 0,
        text_max_length: int = 20,
        initializer_range: float = 0.02,
        image_normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        # Sub-configs are built before ``super().__init__`` so they never travel through kwargs.
        self.vision_config = _build_sub_config("vision_config", vision_config)
        self.dna_config = _build_sub_config("dna_config", dna_config)
        self.text_config = _build_sub_config("text_config", text_config)
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.modalities = list(MODALITIES if modalities is None else modalities)
        self.image_pooling = image_pooling
        self.dna_pooling = dna_pooling
        self.text_pooling = text_pooling
        self.dna_kmer_size = dna_kmer_size
        self.dna_stride = dna_stride
        self.dna_max_length = dna_max_length
        self.dna_leading_id = dna_leading_id
        self.text_max_length = text_max_length
        self.initializer_range = initializer_range
        self.image_normalize = image_normalize
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct values from {list(MODALITIES)}, got {self.modalities}")
        for name, value, allowed in (
            ("image_pooling", self.image_pooling, IMAGE_POOLINGS),
            ("dna_pooling", self.dna_pooling, DNA_POOLINGS),
            ("text_pooling", self.text_pooling, TEXT_POOLINGS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        if self.dna_kmer_size < 1 or self.dna_stride < 1 or self.dna_max_length < self.dna_kmer_size:
            raise ValueError(
                "DNA tokenisation needs dna_kmer_size >= 1, dna_stride >= 1 and dna_max_length >= dna_kmer_size; got "
                f"k={self.dna_kmer_size}, stride={self.dna_stride}, max_length={self.dna_max_length}"
            )
        n_tokens = dna_num_tokens(self.dna_max_length, self.dna_kmer_size, self.dna_stride, self.dna_leading_id)
        max_positions = getattr(self.dna_config, "max_position_embeddings", n_tokens)
        if n_tokens > max_positions:
            raise ValueError(
                f"DNA tokenisation gives {n_tokens} tokens but dna_config.max_position_embeddings is {max_positions}"
            )
        expected_vocab = 3 + 4**self.dna_kmer_size
        if getattr(self.dna_config, "vocab_size", expected_vocab) < expected_vocab:
            raise ValueError(
                f"dna_config.vocab_size is {self.dna_config.vocab_size} but {self.dna_kmer_size}-mers need "
                f"{expected_vocab} ids (3 specials + 4**k)"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """Load a saved configuration; a folder holding another ``model_type`` is an error, not a warning."""
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **dict(kwargs))
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {model_type!r} configuration, not a {cls.model_type!r} "
                "one; build a BIOSCAN-CLIP model from tower checkpoints with BioscanClipModel.from_towers_pretrained"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def image_size(self) -> int:
        """Input image side in pixels, read from the vision tower."""
        return self.vision_config.image_size

    @property
    def dna_num_tokens(self) -> int:
        """Length of the DNA id sequence (133 for the original settings)."""
        return dna_num_tokens(self.dna_max_length, self.dna_kmer_size, self.dna_stride, self.dna_leading_id)

    @classmethod
    def from_preset(cls, name: str = "clibd-base", **overrides: Any) -> "BioscanClipConfig":
        """Build a named configuration, optionally overriding top-level fields.

        Presets:
            * ``"clibd-base"``: the released CLIBD architecture (ViT-B/16, BarcodeBERT-base 5-mer,
              bert-small; projection 768).
            * ``"tiny"``: hidden size 32 and two layers per tower, projection 32; 224 px images with
              32 px patches, standard uncased BERT vocabulary. One forward+backward of a batch of 32
              with all three modalities takes well under 0.5 s on a laptop CPU, so the demo trains
              in minutes.
            * ``"small"``: 4 layers of width 256 per tower (DNA and text: the bert-mini shape; image:
              ViT with 16 px patches), projection 256: real-size towers for CPU work (BENCHMARKS.md).

        Example:

        ```python
        >>> BioscanClipConfig.from_preset("tiny", modalities=["image", "dna"]).modalities
        ['image', 'dna']

        ```
        """
        if name not in _PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available: {list(PRESET_NAMES)}")
        values = copy.deepcopy(_PRESETS[name])
        for key in ("vision_config", "dna_config", "text_config"):
            if isinstance(overrides.get(key), dict):
                values[key].update(overrides.pop(key))
        values.update(overrides)
        return cls(**values)


__all__ = ["BioscanClipConfig", "PRESET_NAMES", "MODALITIES", "DNA_POOLINGS", "TEXT_POOLINGS"]
