"""The model a run trains: built from a saved model, tower checkpoints, a pre-trained DNA folder
(``dna_init``) or a preset; LoRA or per-tower freezing; and the plain model to save.

Example:
    >>> model, processor = build_model(cfg)             # cfg: training.config.TrainConfig
    >>> model = configure_trainable(model, cfg)         # peft LoRA / frozen towers
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor
from bioscan_clip_hf.configuration_bioscan_clip import dna_num_tokens
from bioscan_clip_hf.sources import SourceError, is_hub_id, resolve_source
from bioscan_clip_hf.tokenization_barcode import BarcodeKmerTokenizer
from training.arguments import ConfigError, one_line
from training.config import TrainConfig

TOWERS = {"image": ("vision_model",), "dna": ("dna_model", "dna_head"), "text": ("text_model",)}
PROJECTIONS = ("image_projection", "dna_projection", "text_projection")
_SUB_CONFIGS = {"image": "vision_config", "dna": "dna_config", "text": "text_config"}


def _preset_fields(cfg: TrainConfig, loaded: set[str]) -> dict[str, Any]:
    """The preset's BioscanClipConfig fields, minus the sub-configs of towers loaded from checkpoints
    (those come from the checkpoints), so every tower not loaded has the preset's shape."""
    preset = BioscanClipConfig.from_preset(cfg.model_preset, modalities=list(cfg.modalities)).to_dict()
    own = set(inspect.signature(BioscanClipConfig.__init__).parameters) - {"self", "kwargs"}
    return {k: v for k, v in preset.items() if k in own and k not in {_SUB_CONFIGS[m] for m in loaded}}


def dna_init_tokenizer(folder: str | Path) -> tuple[BarcodeKmerTokenizer, dict[str, Any]]:
    """The DNA tokenizer of a ``training/pretrain_dna.py`` folder and the BioscanClipConfig fields
    that make the model tokenise barcodes the same way.

    Raises:
        ConfigError: the folder is missing, is not a masked-LM checkpoint, or its tokenizer does not
            fit its model (vocabulary size, position embeddings).
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"dna_init {folder}: not a model folder (no config.json); give a folder written by "
                          "training/pretrain_dna.py")
    try:
        mlm = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"dna_init {config_file}: not JSON ({one_line(err)})") from None
    if not any(str(a).endswith("ForMaskedLM") for a in mlm.get("architectures") or []):
        raise ConfigError(f"dna_init {folder}: holds a {mlm.get('architectures')} model, not a BertForMaskedLM")
    try:
        tokenizer = BarcodeKmerTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"dna_init {folder}: no usable DNA tokenizer ({one_line(err)})") from None
    if tokenizer.pad_char != "N":
        raise ConfigError(f"dna_init {folder}: its tokenizer pads with {tokenizer.pad_char!r}; BioscanClipModel's "
                          "processor pads barcodes with 'N'")
    if tokenizer.vocab_size != mlm.get("vocab_size"):
        raise ConfigError(f"dna_init {folder}: its tokenizer has {tokenizer.vocab_size} ids but its model "
                          f"{mlm.get('vocab_size')} embeddings")
    fields = {"dna_kmer_size": tokenizer.k, "dna_stride": tokenizer.stride, "dna_max_length": tokenizer.max_length,
              "dna_leading_id": tokenizer.leading_id}
    tokens = dna_num_tokens(tokenizer.max_length, tokenizer.k, tokenizer.stride, tokenizer.leading_id)
    if tokens > mlm.get("max_position_embeddings", tokens):
        raise ConfigError(f"dna_init {folder}: its tokenizer makes {tokens} tokens but its model has "
                          f"{mlm['max_position_embeddings']} positions")
    return tokenizer, fields


def build_model(cfg: TrainConfig) -> tuple[BioscanClipModel, BioscanClipProcessor]:
    """The model and processor the run starts from: a saved model, pretrained towers (``dna_init``
    included) with the preset's shape for the others, or a fresh preset."""
    try:
        return _build_model(cfg)
    except OSError as err:  # a tower or model that transformers cannot find or read
        raise ConfigError(f"cannot load the starting model: {one_line(err)}") from None


def _check_sources(cfg: TrainConfig) -> None:
    """Every model or tower path is a local folder or a known Hub id (``resolve_source``'s one rule)."""
    for setting in ("model_name_or_path", "image_tower", "dna_tower", "text_tower", "dna_init"):
        spec = getattr(cfg, setting)
        if spec:
            try:
                source = resolve_source(spec, what=setting)
            except SourceError as err:
                raise ConfigError(str(err)) from None
            if setting == "dna_init" and is_hub_id(source):
                raise ConfigError(f"dna_init {spec}: no such folder (a folder written by training/pretrain_dna.py)")


def _build_model(cfg: TrainConfig) -> tuple[BioscanClipModel, BioscanClipProcessor]:
    _check_sources(cfg)
    overrides = dict(cfg.model_config_overrides)
    if cfg.model_name_or_path:
        model = BioscanClipModel.from_pretrained(cfg.model_name_or_path, **overrides)
        processor = BioscanClipProcessor.from_pretrained(cfg.model_name_or_path)
        missing = [m for m in cfg.modalities if m not in model.config.modalities]
        if missing:
            raise ConfigError(f"{cfg.model_name_or_path} has no tower for {missing}; it has {model.config.modalities}")
        return model, processor
    towers = {"image": cfg.image_tower, "dna": cfg.dna_init or cfg.dna_tower, "text": cfg.text_tower}
    towers = {m: path for m, path in towers.items() if path and m in cfg.modalities}
    clean_dna = False
    if cfg.dna_init:
        tokenizer, dna_fields = dna_init_tokenizer(cfg.dna_init)
        clean_dna = tokenizer.clean
        overrides = {**dna_fields, **overrides}
    if towers:
        fields = {**_preset_fields(cfg, set(towers)), "modalities": list(cfg.modalities), **overrides}
        model = BioscanClipModel.from_towers_pretrained(**towers, **fields)
    else:
        model = BioscanClipModel(BioscanClipConfig.from_preset(cfg.model_preset, modalities=list(cfg.modalities), **overrides))
    # From the model's own config, so model_config_overrides of the tokenisation (dna_stride,
    # dna_max_length, text_max_length...) and dna_init's tokenizer reach the processor too.
    return model, BioscanClipProcessor.from_config(model.config, clean_dna=clean_dna)


def configure_trainable(model: BioscanClipModel, cfg: TrainConfig) -> torch.nn.Module:
    """Apply LoRA or per-tower freezing and gradient checkpointing; return the module to train.

    LoRA (``lora_r > 0``, reference §1.5): peft adapters of rank r on ``query`` and ``value`` of
    every attention layer of every tower, scale alpha/r (1 by default = the original's B·A);
    every other weight frozen except the projections and ``logit_scale``.
    """
    if cfg.gradient_checkpointing:
        for names in TOWERS.values():
            tower = getattr(model, names[0], None)
            if tower is not None:
                tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        # transformers 5 names ViT's projections q_proj / v_proj; BERT keeps query / value.
        towers = "|".join(names[0] for m, names in TOWERS.items() if m in model.config.modalities)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_r,
            lora_dropout=cfg.lora_dropout,
            target_modules=rf"^({towers})\..*\.(query|value|q_proj|v_proj)$",
            bias="none",
        )
        model = get_peft_model(model, lora)
        base = model.get_base_model()
        # peft's modules_to_save cannot hold a bare Parameter (logit_scale), so unfreeze explicitly.
        for name in PROJECTIONS:
            head = getattr(base, name, None)
            if head is not None:
                head.requires_grad_(True)
        base.logit_scale.requires_grad_(True)
        return model
    frozen = {"image": cfg.freeze_image, "dna": cfg.freeze_dna, "text": cfg.freeze_text}
    for modality, names in TOWERS.items():
        if frozen[modality]:
            for name in names:
                module = getattr(model, name, None)
                if module is None:
                    raise ConfigError(f"freeze_{modality} is set but the model has no {modality} tower")
                module.requires_grad_(False)
    return model


def base_model(model: torch.nn.Module) -> BioscanClipModel:
    """The BioscanClipModel inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def export_model(model: torch.nn.Module) -> BioscanClipModel:
    """A plain BioscanClipModel to save: LoRA adapters merged into a copy, so users need no peft."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def model_for_export(accelerator: Accelerator, model: torch.nn.Module) -> BioscanClipModel | None:
    """A plain, unsharded BioscanClipModel on the main process (None elsewhere); call on every process.

    FSDP: the full state dict is gathered (a collective) into a fresh model. DDP / DeepSpeed
    ZeRO-2 / one process: the unwrapped model itself, LoRA adapters merged into a copy.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        state = accelerator.get_state_dict(model)
        if not accelerator.is_main_process:
            return None
        fresh = BioscanClipModel(base_model(accelerator.unwrap_model(model)).config)
        fresh.load_state_dict(state)
        return fresh.to(accelerator.device)
    return export_model(accelerator.unwrap_model(model)) if accelerator.is_main_process else None
