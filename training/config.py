"""Training configuration: every setting of ``training/train.py`` is a field of :class:`TrainConfig`.

Parsing is ``training.arguments.parse_config`` (the one parser of the training scripts, also used by
``training/pretrain_dna.py``): ``transformers.HfArgumentParser`` over this dataclass, ``--config
FILE.yaml|json`` read with ``parse_yaml_file`` / ``parse_json_file``, command-line flags overriding
the file, every mistake one line and exit code 2. Argument names follow
``transformers/examples/pytorch/contrastive-image-text/run_clip_no_trainer.py`` where one exists.
Lists are space-separated (``--modalities dna text``), mappings take YAML, ``none`` unsets an
optional setting.

Example:
    >>> cfg = parse_args(["--config", "training/configs/demo_synthetic.yaml", "--num_train_epochs", "3"])
    >>> cfg.num_train_epochs
    3
"""

from __future__ import annotations

import dataclasses
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers.hf_argparser import HfArg

from bioscan_clip_hf.atomic import write_json, write_text
from bioscan_clip_hf.data.dna_augment import BarcodeAugmentation
from training.arguments import parse_config

MODALITIES = ("image", "dna", "text")
# Splits a recipe may list that a real table can lack: `pretrain` holds the records without a
# species label, and a table where every record is identified to species has none.
OPTIONAL_TRAIN_SPLITS = ("pretrain",)

@dataclass
class TrainConfig:
    """All settings of a training run (defaults = the CLIBD BIOSCAN-5M recipe, reference §2)."""

    # --- data ---
    dataset: str = HfArg(default="", help=(
        "Parquet folder written by a bioscan_clip_hf builder, or a Hub dataset id (required)."))
    train_splits: list[str] = HfArg(default_factory=lambda: ["pretrain", "train"], help=(
        "Training splits; the original trains on pretrain + train (no_split_and_seen_train). A listed "
        "`pretrain` split the data set lacks (no unlabelled records) is skipped with a note."))
    streaming: bool = HfArg(default=False, help=(
        "Stream the training splits (BIOSCAN-5M's 4.7 M pretrain records) instead of loading them."))
    shuffle_buffer_size: int = HfArg(default=10_000, help="Shuffle buffer of the streaming reader (ignored when not streaming).")
    max_train_samples: int | None = HfArg(default=None, help="Use only the first N training records (quick experiments).")
    modalities: list[str] = HfArg(default_factory=lambda: list(MODALITIES), help=(
        "Two or three of image, dna, text; towers not listed are not built."))
    dataloader_num_workers: int = HfArg(default=0, help="DataLoader worker processes (images are decoded and augmented in them).")
    image_augmentation: bool = HfArg(default=True, help=(
        "The original training augmentation of images (random resized crop, flips, rotation); "
        "--no_image_augmentation = eval resize + crop."))
    dna_substitution_rate: float = HfArg(default=0.0, help=(
        "Training barcodes: chance that a base becomes another one (our addition; 0 = as read, the original)."))
    dna_max_trim_start: int = HfArg(default=0, help=(
        "Training barcodes: drop 0..N bases from the start, shifting the 5-mer frame (0 = off, the original)."))
    dna_max_trim_end: int = HfArg(default=0, help="Training barcodes: drop 0..N bases from the end (0 = off, the original).")

    # --- model ---
    model_preset: str = HfArg(default="clibd-base", help=(
        "BioscanClipConfig.from_preset name: the shape of every tower not loaded from a checkpoint."))
    model_name_or_path: str | None = HfArg(default=None, help=(
        "Start from a saved BioscanClipModel (folder or Hub id) instead of a preset or tower checkpoints."))
    image_tower: str | None = HfArg(default=None, help="Pretrained image tower (folder or Hub id, e.g. a ViT).")
    dna_tower: str | None = HfArg(default=None, help=(
        "Pretrained DNA tower (folder or Hub id, a BERT or BertForMaskedLM); the DNA tokenisation stays "
        "the preset's. See dna_init for a folder that brings its own tokenizer."))
    text_tower: str | None = HfArg(default=None, help="Pretrained taxonomy-text tower (folder or Hub id, a BERT).")
    dna_init: str | None = HfArg(default=None, help=(
        "Folder written by training/pretrain_dna.py (a BertForMaskedLM and its DNA tokenizer): it becomes the "
        "DNA tower, and the processor tokenises barcodes with its tokenizer."))
    model_config_overrides: dict[str, Any] = HfArg(default_factory=dict, help=(
        "Extra BioscanClipConfig fields as YAML, e.g. '{dna_pooling: masked_mean}'."))
    freeze_image: bool = HfArg(default=False, help="Lock the image backbone (LiT style); its projection stays trainable.")
    freeze_dna: bool = HfArg(default=False, help="Lock the DNA backbone and its MLM head; the DNA projection stays trainable.")
    freeze_text: bool = HfArg(default=False, help="Lock the text backbone; its projection stays trainable.")
    lora_r: int = HfArg(default=0, help=(
        "0 = full fine-tuning (final CLIBD); > 0 = peft LoRA of this rank on query and value of every tower."))
    lora_alpha: float | None = HfArg(default=None, help="LoRA alpha; none = lora_r, so that the scale alpha/r is 1 as in the original.")
    lora_dropout: float = HfArg(default=0.0, help="Dropout on the LoRA path (the original has none).")
    gradient_checkpointing: bool = HfArg(default=False, help="Recompute tower activations in the backward pass (less memory, ~30 % slower).")
    logit_scale_max: float | None = HfArg(default=None, help=(
        "Clamp logit_scale to [0, this] after every step (open_clip uses ln 100 = 4.6052); none = no clamp (original)."))

    # --- optimisation ---
    per_device_train_batch_size: int = HfArg(default=500, help=(
        "Records per process and micro-batch; the negatives of the contrastive loss are the global batch "
        "(this x processes)."))
    gradient_accumulation_steps: int = HfArg(default=1, help=(
        "Micro-batches averaged per optimiser step; accumulation does NOT add negatives (each micro-batch's "
        "InfoNCE sees only its own global micro-batch)."))
    learning_rate: float | None = HfArg(default=None, help=(
        "Peak learning rate; none = base_learning_rate x global batch / lr_reference_batch (the original rule)."))
    base_learning_rate: float = HfArg(default=5e-5, help="The learning-rate rule's rate at lr_reference_batch records (original: 5e-5).")
    lr_reference_batch: int = HfArg(default=500, help="The learning-rate rule's reference global batch (original: 500).")
    weight_decay: float = HfArg(default=0.01, help="AdamW weight decay, on every trainable parameter as the original (0.01).")
    adam_beta1: float = HfArg(default=0.9, help="AdamW beta1 (torch default, as the original).")
    adam_beta2: float = HfArg(default=0.999, help="AdamW beta2 (torch default, as the original).")
    adam_epsilon: float = HfArg(default=1e-8, help="AdamW epsilon (torch default, as the original).")
    lr_scheduler_type: Literal["onecycle", "constant"] = HfArg(default="onecycle", help=(
        "onecycle (original: cosine, no momentum cycling, stepped per optimiser step) or constant."))
    pct_start: float = HfArg(default=0.3, help="OneCycle: fraction of the steps spent warming up (original 0.3).")
    div_factor: float = HfArg(default=25.0, help="OneCycle: the starting learning rate is the peak / this (original 25).")
    final_div_factor: float = HfArg(default=1e4, help="OneCycle: the final learning rate is the starting one / this (original 1e4).")
    max_grad_norm: float | None = HfArg(default=None, help="Clip gradients to this norm; none = no clipping, as the original.")
    num_train_epochs: int = HfArg(default=20, help="Passes over the training records.")
    max_train_steps: int | None = HfArg(default=None, help=(
        "Stop after this many optimiser steps (the schedule is sized for them); a run stopped mid-epoch "
        "saves step_N, and resuming it with a larger budget continues."))
    mixed_precision: Literal["no", "bf16", "fp16"] | None = HfArg(default=None, help=(
        "no, bf16 or fp16; unset = what accelerate launch / accelerate config says. A value here wins over the launcher."))
    cpu: bool = HfArg(default=False, help="Force the CPU even when an accelerator is visible.")
    seed: int = HfArg(default=42, help="Seeds the initial weights, data order and augmentation (dropout per process: seed + rank).")

    # --- checkpoints and outputs ---
    output_dir: str = HfArg(default="outputs/run", help=(
        "Run folder: checkpoints/, best_model/, logs/, train_config.yaml, versions.json, train_summary.json."))
    checkpointing_steps: int | None = HfArg(default=None, help=(
        "Also save the full training state every N optimiser steps (it is always saved at each epoch end)."))
    checkpoints_total_limit: int | None = HfArg(default=2, help="Keep only the newest N checkpoints; none = keep all.")
    resume_from_checkpoint: str | None = HfArg(default=None, help=(
        "latest (newest complete checkpoint in output_dir/checkpoints) or a checkpoint folder. Checkpoints hold "
        "tensors and JSON only; one holding a pickle with code is refused."))

    # --- evaluation and model selection ---
    eval_every: int = HfArg(default=1, help=(
        "Run the paper's protocol on the val splits every N epochs and at the end of training (0 = never)."))
    eval_start_epoch: int = HfArg(default=0, help="Skip evaluation for epochs <= this (original: 23 on BIOSCAN-1M, 10 on BIOSCAN-5M).")
    eval_query_splits: list[str] = HfArg(default_factory=lambda: ["val", "val_unseen"], help=(
        "Query splits of the evaluation: seen, then unseen (two splits also calibrate the saved bank's novelty flag)."))
    eval_key_splits: list[str] | None = HfArg(default=None, help=(
        "Key splits of the evaluation and of the key bank saved with the best model; unset = the data set's "
        "evaluation keys, the original's all_keys (key_seen + key_unseen for a BIOSCAN-1M build, else train + "
        "key_unseen: bioscan_clip_hf.data.dataset_key_splits)."))
    eval_batch_size: int = HfArg(default=64, help="Batch size of the evaluation and of the key bank's embedding.")
    max_eval_samples: int | None = HfArg(default=None, help="Use at most N records of each evaluation query split.")
    key_bank_modality: Literal["image", "dna", "text"] | None = HfArg(default=None, help=(
        "Modality of the key bank saved with the best model; unset = dna if trained, else image."))

    # --- observability ---
    report_to: Literal["none", "tensorboard", "wandb"] = HfArg(default="none", help=(
        "Experiment tracker: none, tensorboard or wandb (optional, never required)."))
    logging_steps: int = HfArg(default=10, help="Log loss, lr, logit_scale and samples/s to the tracker every N optimiser steps.")
    disable_tqdm: bool = HfArg(default=False, help=(
        "No progress bars: neither the training bar (loss, samples/s) nor those of datasets, evaluation and the key bank."))

    # --- hub ---
    push_to_hub: bool = HfArg(default=False, help="Upload the best model at the end with bioscan_clip_hf.hub (card from its evaluation).")
    hub_model_id: str | None = HfArg(default=None, help="Hub repository of push_to_hub, ORG/NAME.")
    hub_private: bool = HfArg(default=False, help="Create the push_to_hub repository as private.")

    @property
    def lora_scale(self) -> float:
        """alpha / r as applied by peft (1.0 by default, the original's unscaled B·A)."""
        return (self.lora_alpha if self.lora_alpha is not None else self.lora_r) / max(self.lora_r, 1)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"`{f.name}` must be a finite number, got {value}")
        if not self.dataset:
            raise ValueError("`dataset` is required: a Parquet folder from a bioscan_clip_hf builder or a Hub id")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or len(set(self.modalities)) != len(self.modalities) or len(self.modalities) < 2:
            raise ValueError(f"`modalities` must be two or three distinct of {', '.join(MODALITIES)}, got {self.modalities}")
        minimum = {
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "num_train_epochs": 1,
            "max_train_steps": 1, "checkpointing_steps": 1, "checkpoints_total_limit": 1, "eval_every": 0,
            "eval_start_epoch": 0, "eval_batch_size": 1, "max_train_samples": 1, "max_eval_samples": 1,
            "dataloader_num_workers": 0, "shuffle_buffer_size": 1, "logging_steps": 1, "lr_reference_batch": 1,
            "lora_r": 0, "weight_decay": 0.0, "lora_dropout": 0.0,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and value < low:
                why = " (InfoNCE needs negatives)" if name == "per_device_train_batch_size" else ""
                raise ValueError(f"`{name}` must be >= {low}{why}, got {value}")
        for name in ("learning_rate", "base_learning_rate", "adam_epsilon", "div_factor", "final_div_factor",
                     "max_grad_norm", "logit_scale_max", "lora_alpha"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}")
        for name in ("adam_beta1", "adam_beta2", "pct_start", "lora_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}")
        if self.key_bank_modality is not None and self.key_bank_modality not in self.modalities:
            raise ValueError(f"`key_bank_modality` {self.key_bank_modality!r} is not among the trained {self.modalities}")
        if self.model_name_or_path and (self.image_tower or self.dna_tower or self.text_tower or self.dna_init):
            raise ValueError("`model_name_or_path` starts from a whole saved model: leave image_tower, dna_tower, "
                             "text_tower and dna_init unset")
        if self.dna_init and self.dna_tower:
            raise ValueError("set one of `dna_init` (a pretrain_dna.py folder, tokenizer included) and `dna_tower`, not both")
        if self.dna_init and "dna" not in self.modalities:
            raise ValueError(f"`dna_init` gives a DNA tower but `modalities` {self.modalities} has no dna")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("`push_to_hub` needs `hub_model_id` ORG/NAME")
        self.dna_augmentation()  # raises on an out-of-range rate or trim, naming it
        from bioscan_clip_hf.configuration_bioscan_clip import PRESET_NAMES  # last: it imports torch

        if self.model_preset not in PRESET_NAMES:
            raise ValueError(f"`model_preset` must be one of {', '.join(PRESET_NAMES)}, got {self.model_preset!r}")

    def dna_augmentation(self) -> BarcodeAugmentation | None:
        """The training barcodes' augmentation, or ``None`` when every ``dna_*`` setting is off."""
        try:
            augmentation = BarcodeAugmentation(self.dna_substitution_rate, self.dna_max_trim_start, self.dna_max_trim_end)
        except ValueError as err:
            raise ValueError(f"`dna_substitution_rate` / `dna_max_trim_*`: {err}") from None
        return augmentation if augmentation.enabled and "dna" in self.modalities else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The settings of ``training/train.py`` from ``[--config FILE] [--SETTING VALUE ...]`` (``sys.argv`` if None).

    Raises:
        training.arguments.ConfigError: one line naming the wrong flag, file key or value.
    """
    return parse_config(TrainConfig, argv, prog="train.py",
                        description="Train BIOSCAN-CLIP (CLIBD) with Accelerate: accelerate launch training/train.py ...")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers, saved with every run."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("bioscan-clip-hf", "torch", "transformers", "accelerate", "datasets", "peft", "safetensors", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def save_run_info(cfg: TrainConfig, out_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config (``train_config.yaml``) and package versions (``versions.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "train_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json(out_dir / "versions.json", {"packages": package_versions(), **(extra or {})})
