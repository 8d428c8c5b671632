"""BIOSCAN-CLIP (CLIBD): image, DNA-barcode and taxonomy-text towers in one contrastive embedding space.

Faithful to the original by default (``bioscan-ml/clibd``), so released checkpoints convert exactly:

* image: ViT, CLS token after the final LayerNorm -> ``image_projection`` (timm ``head``);
* DNA: BERT -> ``dna_head`` (the BarcodeBERT MLM ``cls.predictions.transform``: dense, GELU,
  LayerNorm) -> ``dna_projection`` (the replaced MLM decoder) -> softmax over features -> mean over
  all tokens, padding included;
* text: BERT -> mean over all positions ([PAD] included) -> ``text_projection``.

Every embedding is L2-normalised; logits are ``logit_scale.exp() * a @ b.T`` with a learnable
``logit_scale`` initialised to ln(1/0.07). Hub file: imports only the standard library, torch,
its sibling modules and public ``transformers`` names.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_bioscan_clip import BioscanClipConfig
from .tokenization_barcode import PAD_ID as DNA_PAD_ID

logger = logging.getLogger(__name__)

_TOWER_ATTRIBUTES = {"image": "vision_model", "dna": "dna_model", "text": "text_model"}


@dataclass
class BioscanClipOutput(ModelOutput):
    """Output of [`BioscanClipModel.forward`]; fields of modalities that were not given are ``None``.

    Args:
        loss: mean of the symmetric InfoNCE losses over every pair of given modalities (``return_loss=True``).
        logits_per_image: ``[n_image, n_text]`` image x text scaled cosine similarities (the CLIP names,
            so transformers' zero-shot-image-classification pipeline works unchanged).
        logits_per_text: ``[n_text, n_image]``, the transpose.
        logits_per_image_dna / logits_per_dna_image: image x DNA and its transpose.
        logits_per_dna_text / logits_per_text_dna: DNA x text and its transpose.
        image_embeds / dna_embeds / text_embeds: L2-normalised embeddings ``[batch, projection_dim]``.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_image_dna: torch.FloatTensor | None = None
    logits_per_dna_image: torch.FloatTensor | None = None
    logits_per_dna_text: torch.FloatTensor | None = None
    logits_per_text_dna: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    dna_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row against its diagonal (instance positives, as in CLIBD training)."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def bioscan_clip_loss(embeddings: dict[str, torch.Tensor], logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of the symmetric InfoNCE losses over all pairs of the given (L2-normalised) embeddings.

    For modalities ``a, b``: ``logits = logit_scale.exp() * a @ b.T`` and the pair loss is
    ``(CE(logits, arange) + CE(logits.T, arange)) / 2``. With three modalities this equals the
    original ``ClipLoss`` (12 directed terms averaged). Distributed training gathers the features
    (with gradient) and calls this same function.

    Example:

    ```python
    >>> e = {"image": F.normalize(torch.randn(4, 8), dim=-1), "dna": F.normalize(torch.randn(4, 8), dim=-1)}
    >>> bioscan_clip_loss(e, torch.tensor(2.6593)).shape
    torch.Size([])

    ```
    """
    present = {name: value for name, value in embeddings.items() if value is not None}
    if len(present) < 2:
        raise ValueError(f"The contrastive loss needs at least two modalities, got {sorted(present)}")
    sizes = {name: value.shape[0] for name, value in present.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"The contrastive loss needs one row per specimen in every modality; batch sizes differ: {sizes}")
    if next(iter(sizes.values())) < 2:
        # One pair has no negatives: the loss is exactly 0 and trains nothing.
        raise ValueError(
            f"The contrastive loss needs at least 2 specimens per batch (each one's negatives are the others); "
            f"got a batch of {next(iter(sizes.values()))}"
        )
    scale = logit_scale.exp()
    losses = []
    for (_, a), (_, b) in itertools.combinations(present.items(), 2):
        logits = scale * a @ b.t()
        losses.append((contrastive_loss(logits) + contrastive_loss(logits.t())) / 2)
    return torch.stack(losses).mean()


class BioscanClipDnaHead(nn.Module):
    """BarcodeBERT's MLM ``cls.predictions.transform``: dense -> exact (erf) GELU -> LayerNorm (hidden -> hidden)."""

    def __init__(self, hidden_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(F.gelu(self.dense(hidden_states)))


def _build_tower(config: Any) -> PreTrainedModel:
    """The bare transformers model for a sub-config, without the (unused) pooler when it has one."""
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # towers such as Dinov2Model have no pooler argument
        return AutoModel.from_config(config)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean(dim=1)
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class BioscanClipPreTrainedModel(PreTrainedModel):
    """Weight initialisation and capability flags shared by the BIOSCAN-CLIP models."""

    config_class = BioscanClipConfig
    base_model_prefix = "bioscan_clip"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "BertEmbeddings", "BertLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the modules this class owns; the towers initialise themselves.

        Uses ``torch.nn.init`` in place (no tensor maths on possibly-meta tensors), which
        transformers 5 guards so weights loaded from a checkpoint are never overwritten.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, BioscanClipModel):
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init_value)


class BioscanClipModel(BioscanClipPreTrainedModel):
    """Three-tower BIOSCAN-CLIP model; towers not listed in ``config.modalities`` are not built.

    Example:

    ```python
    >>> import torch
    >>> from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor
    >>> model = BioscanClipModel(BioscanClipConfig.from_preset("tiny")).eval()
    >>> processor = BioscanClipProcessor.from_preset("tiny")
    >>> inputs = processor(dna=["ACGT" * 165, "TTGAC" * 130],
    ...                    text=["Diptera Culicidae Aedes Aedes aegypti", "Diptera Culicidae Culex Culex pipiens"])
    >>> out = model(**inputs, return_loss=True)
    >>> out.logits_per_dna_text.shape, out.loss.shape
    (torch.Size([2, 2]), torch.Size([]))

    ```
    """

    # save_pretrained copies the code files and writes auto_map however the class was imported
    _auto_class = "AutoModel"

    def __init__(self, config: BioscanClipConfig) -> None:
        super().__init__(config)
        projection_dim = config.projection_dim
        if "image" in config.modalities:
            self.vision_model = _build_tower(config.vision_config)
            self.image_projection = nn.Linear(config.vision_config.hidden_size, projection_dim)
        if "dna" in config.modalities:
            dna_hidden = config.dna_config.hidden_size
            self.dna_model = _build_tower(config.dna_config)
            self.dna_head = BioscanClipDnaHead(dna_hidden, config.dna_config.layer_norm_eps)
            self.dna_projection = nn.Linear(dna_hidden, projection_dim)
        if "text" in config.modalities:
            self.text_model = _build_tower(config.text_config)
            self.text_projection = nn.Linear(config.text_config.hidden_size, projection_dim)
        # value set in _init_weights, so meta-device construction and from_pretrained both work
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.post_init()

    # ------------------------------------------------------------------ helpers
    def _require(self, modality: str) -> None:
        if modality not in self.config.modalities:
            raise ValueError(
                f"This model has no {modality} tower (config.modalities = {self.config.modalities}); "
                f"remove the {modality} inputs or use a model trained with {modality}"
            )

    @staticmethod
    def _finish(features: torch.Tensor, normalize: bool) -> torch.Tensor:
        return F.normalize(features, p=2, dim=-1) if normalize else features

    # ------------------------------------------------------------------ towers
    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings ``[batch, projection_dim]`` from ``pixel_values`` ``[batch, 3, H, W]``."""
        self._require("image")
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must have shape [batch, channels, height, width], got {tuple(pixel_values.shape)}")
        pixel_values = pixel_values.to(dtype=self.image_projection.weight.dtype)
        hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state
        return self._finish(self.image_projection(hidden[:, 0]), normalize)

    def get_dna_features(
        self, dna_input_ids: torch.Tensor, dna_attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """DNA embeddings ``[batch, projection_dim]`` from k-mer ids ``[batch, tokens]``.

        With the original ``dna_pooling="softmax_mean"`` the mask is ignored, as in CLIBD, which
        attends to and averages over every position (the ``N`` padding included); shorter inputs
        (a tokenizer called with ``padding=True``) are first right-padded with ``<UNK>``, the id of
        ``N`` padding, to ``config.dna_num_tokens``, so the embedding never depends on how the
        caller padded.
        """
        self._require("dna")
        if dna_input_ids.ndim != 2:
            raise ValueError(f"dna_input_ids must have shape [batch, tokens], got {tuple(dna_input_ids.shape)}")
        pooling = self.config.dna_pooling
        missing = self.config.dna_num_tokens - dna_input_ids.shape[1]
        if pooling == "softmax_mean" and missing > 0:
            dna_input_ids = F.pad(dna_input_ids, (0, missing), value=DNA_PAD_ID)
        mask = None if pooling == "softmax_mean" else dna_attention_mask
        # An explicit all-ones mask equals passing none (what CLIBD does) and keeps transformers 4.x
        # from warning that id 0, BERT's pad id and the leading id here, appears without a mask.
        bert_mask = torch.ones_like(dna_input_ids) if mask is None else mask
        hidden = self.dna_model(input_ids=dna_input_ids, attention_mask=bert_mask).last_hidden_state
        tokens = self.dna_projection(self.dna_head(hidden))
        if pooling != "masked_mean":
            tokens = tokens.softmax(dim=-1)
        return self._finish(_masked_mean(tokens, mask), normalize)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Taxonomy-text embeddings ``[batch, projection_dim]``.

        The attention mask always reaches BERT; the original ``text_pooling="mean"`` then averages
        over every position, [PAD] included, ``"masked_mean"`` does not. Because CLIBD always pads to
        ``config.text_max_length`` (20) tokens, shorter inputs (e.g. the zero-shot pipeline's
        ``padding=True``) are right-padded to that length first under ``"mean"``, so the embedding
        never depends on how the caller padded. Longer inputs are used as given.
        """
        self._require("text")
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape [batch, tokens], got {tuple(input_ids.shape)}")
        missing = self.config.text_max_length - input_ids.shape[1]
        if self.config.text_pooling == "mean" and missing > 0:
            pad_id = getattr(self.config.text_config, "pad_token_id", None) or 0
            attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            input_ids = F.pad(input_ids, (0, missing), value=pad_id)
            attention_mask = F.pad(attention_mask, (0, missing), value=0)
            if token_type_ids is not None:
                token_type_ids = F.pad(token_type_ids, (0, missing), value=0)
        hidden = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask if self.config.text_pooling == "masked_mean" else None
        return self._finish(self.text_projection(_masked_mean(hidden, mask)), normalize)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        dna_input_ids: torch.Tensor | None = None,
        dna_attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        return_dict: bool | None = None,
    ) -> BioscanClipOutput | tuple:
        """Embed any subset of modalities; pairwise logits for every pair given; loss on request.

        Args:
            input_ids, attention_mask, token_type_ids: taxonomy text (the processor's text outputs).
            pixel_values: images ``[batch, 3, H, W]``.
            dna_input_ids, dna_attention_mask: DNA k-mer ids (the processor's DNA outputs).
            return_loss: also compute [`bioscan_clip_loss`] over the given modalities (needs two or
                more, with equal batch sizes of at least 2: one pair has no negatives).
            return_dict: return a tuple instead of [`BioscanClipOutput`] when False.
        """
        embeds: dict[str, torch.Tensor | None] = {"image": None, "dna": None, "text": None}
        if pixel_values is not None:
            embeds["image"] = self.get_image_features(pixel_values)
        if dna_input_ids is not None:
            embeds["dna"] = self.get_dna_features(dna_input_ids, dna_attention_mask)
        if input_ids is not None:
            embeds["text"] = self.get_text_features(input_ids, attention_mask, token_type_ids)
        if all(value is None for value in embeds.values()):
            raise ValueError("Give at least one of pixel_values, dna_input_ids or input_ids")

        scale = self.logit_scale.exp()

        def logits(a: str, b: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if embeds[a] is None or embeds[b] is None:
                return None, None
            ab = scale * embeds[a] @ embeds[b].t()
            return ab, ab.t()

        logits_per_image, logits_per_text = logits("image", "text")
        logits_per_image_dna, logits_per_dna_image = logits("image", "dna")
        logits_per_dna_text, logits_per_text_dna = logits("dna", "text")
        loss = bioscan_clip_loss(embeds, self.logit_scale) if return_loss else None

        output = BioscanClipOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            logits_per_image_dna=logits_per_image_dna,
            logits_per_dna_image=logits_per_dna_image,
            logits_per_dna_text=logits_per_dna_text,
            logits_per_text_dna=logits_per_text_dna,
            image_embeds=embeds["image"],
            dna_embeds=embeds["dna"],
            text_embeds=embeds["text"],
        )
        use_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if use_dict else output.to_tuple()

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.save_pretrained`` plus an ``auto_map`` naming this class for ``AutoModel``
        and ``AutoModelForZeroShotImageClassification`` (one ``_auto_class`` can only name one), and
        ``custom_pipelines`` naming the zero-shot pipeline that feeds labels in the model's text format
        (its file is copied as a sibling import)."""
        from .pipeline_bioscan_clip import custom_pipelines_entry

        self.config.custom_pipelines = custom_pipelines_entry()
        module = type(self).__module__.rsplit(".", 1)[-1]
        config_module = type(self.config).__module__.rsplit(".", 1)[-1]
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoConfig", f"{config_module}.{type(self.config).__name__}")
        for auto_class in ("AutoModel", "AutoModelForZeroShotImageClassification"):
            auto_map.setdefault(auto_class, f"{module}.{type(self).__name__}")
        self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self._weights_follow_umask(save_directory)
        return result

    @staticmethod
    def _weights_follow_umask(save_directory: str | os.PathLike) -> None:
        """Give the weight files the mode ``config.json`` got (the user's umask, 0644 by default).

        safetensors writes through a private 0600 temp file and renames it, so without this the
        weights alone would be unreadable by other users (who then see "No such file or directory").
        """
        config = os.path.join(save_directory, "config.json")
        if not os.path.isfile(config):  # not the main process: nothing was written
            return
        mode = os.stat(config).st_mode & 0o777
        for name in os.listdir(save_directory):
            if name.endswith(".safetensors"):
                os.chmod(os.path.join(save_directory, name), mode)

    # ------------------------------------------------------------------ building from towers
    @classmethod
    def from_towers_pretrained(
        cls,
        image: str | os.PathLike | None = None,
        dna: str | os.PathLike | None = None,
        text: str | os.PathLike | None = None,
        tower_kwargs: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> "BioscanClipModel":
        """Build a model from pretrained tower checkpoints (local folders or Hub ids).

        Each tower is read with ``AutoModel``; a DNA checkpoint saved as a masked language model
        (``BertForMaskedLM``, as BarcodeBERT is) also gives its ``cls.predictions.transform`` to
        ``dna_head``. Towers not given are omitted from ``modalities`` unless ``config_overrides``
        says otherwise (then they start from random weights of the ``clibd-base`` shape or of the
        given ``*_config``). The projections and ``logit_scale`` are always new.

        Args:
            image, dna, text: tower checkpoints.
            tower_kwargs: extra ``from_pretrained`` arguments for every tower (``revision``, ``dtype``...).
            **config_overrides: [`BioscanClipConfig`] fields (``projection_dim``, ``dna_pooling``...).

        Example:

        ```python
        >>> model = BioscanClipModel.from_towers_pretrained(  # doctest: +SKIP
        ...     image="google/vit-base-patch16-224-in21k", dna="my-barcodebert-folder", text="prajjwal1/bert-small"
        ... )

        ```
        """
        tower_kwargs = dict(tower_kwargs or {})
        paths = {"image": image, "dna": dna, "text": text}
        if all(path is None for path in paths.values()):
            raise ValueError("Give at least one tower checkpoint: image=..., dna=... or text=...")
        config_keys = {"image": "vision_config", "dna": "dna_config", "text": "text_config"}
        towers: dict[str, PreTrainedModel] = {}
        dna_transform = None
        for modality, path in paths.items():
            if path is None:
                continue
            tower_config = AutoConfig.from_pretrained(path, **tower_kwargs)
            architectures = getattr(tower_config, "architectures", None) or []
            if modality == "dna" and any(name.endswith("ForMaskedLM") for name in architectures):
                from transformers import AutoModelForMaskedLM

                mlm = AutoModelForMaskedLM.from_pretrained(path, **tower_kwargs)
                dna_transform = getattr(getattr(getattr(mlm, "cls", None), "predictions", None), "transform", None)
                if dna_transform is None:
                    raise ValueError(f"{path}: masked-LM checkpoint without a BERT-style cls.predictions.transform")
                if getattr(tower_config, "hidden_act", "gelu") != "gelu":
                    raise ValueError(
                        f"{path}: its MLM transform uses {tower_config.hidden_act!r}; dna_head implements the exact "
                        "GELU of BarcodeBERT only"
                    )
                towers[modality] = mlm.base_model
            else:
                towers[modality] = AutoModel.from_pretrained(path, **tower_kwargs)
            config_overrides.setdefault(config_keys[modality], towers[modality].config.to_dict())
        config_overrides.setdefault("modalities", [m for m in ("image", "dna", "text") if paths[m] is not None])
        config = BioscanClipConfig(**config_overrides)
        model = cls(config)
        for modality, tower in towers.items():
            target = getattr(model, _TOWER_ATTRIBUTES[modality])
            state = {k: v for k, v in tower.state_dict().items() if not k.startswith("pooler.")}
            result = target.load_state_dict(state, strict=False)
            if result.missing_keys:
                raise ValueError(f"{paths[modality]}: the {modality} checkpoint lacks weights {result.missing_keys[:5]}")
        if dna_transform is not None:
            model.dna_head.dense.load_state_dict(dna_transform.dense.state_dict())
            model.dna_head.layer_norm.load_state_dict(dna_transform.LayerNorm.state_dict())
        logger.warning(
            "BioscanClipModel built from tower checkpoints: the projections%s and logit_scale are newly initialised; "
            "train the model before using it.",
            "" if dna_transform is not None or "dna" not in config.modalities else ", dna_head",
        )
        return model


__all__ = ["BioscanClipModel", "BioscanClipPreTrainedModel", "BioscanClipOutput", "BioscanClipDnaHead", "bioscan_clip_loss", "contrastive_loss"]
