"""Training configuration: one YAML experiment file plus ``--key value`` overrides.

Every setting of ``training/train.py`` is a field of :class:`TrainConfig`; a YAML file sets any of
them and command-line flags override the file, so ``--config`` is optional. Argument names follow
``transformers/examples/pytorch/contrastive-image-text/run_clip_no_trainer.py`` where one exists.

Example:
    >>> cfg = parse_args(["--config", "training/configs/demo_synthetic.yaml", "--num_train_epochs", "3"])
    >>> cfg.num_train_epochs
    3
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bioscan_clip_hf.data.dna_augment import BarcodeAugmentation

MODALITIES = ("image", "dna", "text")


@dataclass
class TrainConfig:
    """All settings of a training run (defaults = the CLIBD BIOSCAN-5M recipe, reference §2)."""

    # --- data ---
    dataset: str = ""
    """Parquet folder written by a bioscan_clip_hf builder, or a Hub dataset id (``load_bioscan``)."""
    train_splits: list[str] = field(default_factory=lambda: ["pretrain", "train"])
    """Training records: the original trains on ``pretrain`` + ``train`` (``no_split_and_seen_train``)."""
    streaming: bool = False
    """Stream the training splits (BIOSCAN-5M's 4.7 M ``pretrain`` records) instead of loading them."""
    shuffle_buffer_size: int = 10_000
    """Shuffle buffer of the streaming reader (ignored when not streaming)."""
    max_train_samples: int | None = None
    """Use only the first N training records (quick experiments)."""
    modalities: list[str] = field(default_factory=lambda: ["image", "dna", "text"])
    """Two or three of image, dna, text; towers not listed are not built."""
    dataloader_num_workers: int = 0
    """DataLoader worker processes (images are decoded and augmented in them)."""
    image_augmentation: bool = True
    """The original training augmentation of images (random resized crop, flips, rotation); false = eval resize + crop."""
    dna_substitution_rate: float = 0.0
    """Training barcodes: chance that a base becomes another one (our addition; 0 = as read, the original)."""
    dna_max_trim_start: int = 0
    """Training barcodes: drop 0..N bases from the start, shifting the 5-mer frame (0 = off, the original)."""
    dna_max_trim_end: int = 0
    """Training barcodes: drop 0..N bases from the end (0 = off, the original)."""

    # --- model ---
    model_preset: str = "clibd-base"
    """``BioscanClipConfig.from_preset`` name used when no ``model_name_or_path`` is given."""
    model_name_or_path: str | None = None
    """Start from a saved BioscanClipModel (folder or Hub id) instead of a fresh preset."""
    image_tower: str | None = None
    dna_tower: str | None = None
    text_tower: str | None = None
    """Pretrained towers (folders or Hub ids) for ``BioscanClipModel.from_towers_pretrained``."""
    model_config_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra ``BioscanClipConfig`` fields, e.g. ``{"dna_pooling": "masked_mean"}``."""
    freeze_image: bool = False
    freeze_dna: bool = False
    freeze_text: bool = False
    """Lock a tower's backbone (LiT style); its projection stays trainable."""
    lora_r: int = 0
    """0 = full fine-tuning (final CLIBD). >0 = peft LoRA of this rank on query and value of every tower."""
    lora_alpha: float | None = None
    """LoRA alpha; None = ``lora_r`` so that the scale alpha/r is 1 as in the original."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path (the original has none)."""
    gradient_checkpointing: bool = False
    """Recompute tower activations in the backward pass (less memory, ~30 % slower)."""
    logit_scale_max: float | None = None
    """Clamp ``logit_scale`` to [0, this] after every step (open_clip uses ln 100 = 4.6052). None = no clamp (original)."""

    # --- optimisation ---
    per_device_train_batch_size: int = 500
    gradient_accumulation_steps: int = 1
    """Accumulation averages gradients of micro-batches; it does NOT add negatives (each micro-batch's
    InfoNCE sees only its own global micro-batch)."""
    learning_rate: float | None = None
    """Peak learning rate. None = ``base_learning_rate`` x global batch / ``lr_reference_batch`` (original rule)."""
    base_learning_rate: float = 5e-5
    lr_reference_batch: int = 500
    """The learning-rate rule: base_learning_rate x global batch / lr_reference_batch."""
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    """AdamW (the original: torch defaults with weight decay 0.01, on every parameter)."""
    lr_scheduler_type: str = "onecycle"
    """``onecycle`` (original: cosine, no momentum cycling) or ``constant``."""
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    """OneCycle: warm-up fraction, start lr = max / div_factor, final lr = start / final_div_factor."""
    max_grad_norm: float | None = None
    """Clip gradients by norm (None = no clipping, as the original)."""
    num_train_epochs: int = 20
    """Passes over the training records."""
    max_train_steps: int | None = None
    """Stop after this many optimiser steps (and size the schedule for them)."""
    mixed_precision: str | None = None
    """``no``, ``bf16`` or ``fp16``; None = what ``accelerate launch`` / ``accelerate config`` says. A value here wins over the launcher."""
    cpu: bool = False
    """Force CPU even when an accelerator is visible."""
    seed: int = 42
    """Seeds the initial weights, data order and augmentation (dropout per process: seed + rank)."""

    # --- checkpoints and outputs ---
    output_dir: str = "outputs/run"
    """Run folder: checkpoints/, best_model/, logs/, train_config.yaml, versions.json, train_summary.json."""
    checkpointing_steps: int | None = None
    """Also save the full training state every N optimiser steps (it is always saved at epoch end)."""
    checkpoints_total_limit: int | None = 2
    """Keep only the newest N checkpoints (None = keep all)."""
    resume_from_checkpoint: str | None = None
    """``latest`` (newest complete checkpoint in ``output_dir/checkpoints``) or a checkpoint folder."""

    # --- evaluation and model selection ---
    eval_every: int = 1
    """Run the paper's protocol on the val splits every N epochs (0 = never)."""
    eval_start_epoch: int = 0
    """Skip evaluation for epochs <= this (original: 23 on BIOSCAN-1M, 10 on BIOSCAN-5M)."""
    eval_query_splits: list[str] = field(default_factory=lambda: ["val", "val_unseen"])
    eval_key_splits: list[str] = field(default_factory=lambda: ["train", "key_unseen"])
    eval_batch_size: int = 64
    """(seen, unseen) query splits, key splits and batch size of the evaluation (and of the saved key bank)."""
    max_eval_samples: int | None = None
    """Use at most N records of each evaluation split."""
    key_bank_modality: str | None = None
    """Modality of the key bank saved with the best model; None = dna if trained, else image."""

    # --- observability ---
    report_to: str = "none"
    """``none``, ``tensorboard`` or ``wandb`` (optional, never required)."""
    logging_steps: int = 10
    """Log loss, lr, logit_scale and samples/s to the tracker every N optimiser steps."""
    disable_tqdm: bool = False
    """No progress bars (the training bar shows loss and samples/s)."""

    # --- hub ---
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False
    """Upload the best model at the end with bioscan_clip_hf.hub (model card from its evaluation)."""

    @property
    def lora_scale(self) -> float:
        """alpha / r as applied by peft (1.0 by default, the original's unscaled B·A)."""
        return (self.lora_alpha if self.lora_alpha is not None else self.lora_r) / max(self.lora_r, 1)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        if not self.dataset:
            raise ValueError("`dataset` is required: a Parquet folder from a bioscan_clip_hf builder or a Hub id")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or len(set(self.modalities)) != len(self.modalities) or len(self.modalities) < 2:
            raise ValueError(f"`modalities` must be two or three distinct of {MODALITIES}, got {self.modalities}")
        if self.per_device_train_batch_size < 2:
            raise ValueError("`per_device_train_batch_size` must be >= 2 (InfoNCE needs negatives)")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("`gradient_accumulation_steps` must be >= 1")
        if self.lr_scheduler_type not in ("onecycle", "constant"):
            raise ValueError(f"`lr_scheduler_type` must be onecycle or constant, got {self.lr_scheduler_type!r}")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ValueError(f"`mixed_precision` must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.report_to not in ("none", "tensorboard", "wandb"):
            raise ValueError(f"`report_to` must be none, tensorboard or wandb, got {self.report_to!r}")
        if self.lora_r < 0:
            raise ValueError("`lora_r` must be >= 0")
        if self.key_bank_modality is not None and self.key_bank_modality not in self.modalities:
            raise ValueError(f"`key_bank_modality` {self.key_bank_modality!r} is not among {self.modalities}")
        if self.num_train_epochs < 1 and not self.max_train_steps:
            raise ValueError("`num_train_epochs` must be >= 1 (or set `max_train_steps`)")
        self.dna_augmentation()  # raises on an out-of-range rate or trim, naming it

    def dna_augmentation(self) -> BarcodeAugmentation | None:
        """The training barcodes' augmentation, or ``None`` when every ``dna_*`` setting is off."""
        try:
            augmentation = BarcodeAugmentation(self.dna_substitution_rate, self.dna_max_trim_start, self.dna_max_trim_end)
        except ValueError as err:
            raise ValueError(f"`dna_substitution_rate` / `dna_max_trim_*`: {err}") from None
        return augmentation if augmentation.enabled and "dna" in self.modalities else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Convert a YAML/command-line value to the type annotated on TrainConfig.<name>."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if not optional:
            raise ValueError(f"setting `{name}` cannot be null")
        return None
    base = next((a for a in args if a is not type(None)), hint) if isinstance(hint, types.UnionType) else hint
    origin = typing.get_origin(base)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"setting `{name}` expects a list, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ValueError(f"setting `{name}` expects a mapping, got {value!r}")
        return dict(value)
    if base is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"setting `{name}` expects true/false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if base is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"setting `{name}` expects an integer, got {value!r}")
        try:
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        except ValueError as err:
            raise ValueError(f"setting `{name}` expects an integer, got {value!r}") from err
    if base is float:
        try:
            return float(value)
        except ValueError as err:
            raise ValueError(f"setting `{name}` expects a number, got {value!r}") from err
    return str(value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file; unknown keys are an error naming the file and key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {unknown}; see training/config.py TrainConfig")
    return data


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """``--config FILE`` (optional) then ``--key value`` / ``--key=value`` overrides, in order.

    A bare boolean flag (``--push_to_hub``) means true. Lists take comma-separated values
    (``--modalities dna,text``), mappings take YAML (``--model_config_overrides '{a: 1}'``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(help_text())
        raise SystemExit(0)
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ValueError(f"unexpected argument {tok!r}: settings are given as --key value")
        key, eq, val = tok[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or nxt.startswith("--"):
                val = None  # bare flag
            else:
                val = nxt
                i += 1
        pairs.append((key, val))
        i += 1
    values: dict[str, Any] = {}
    for key, val in pairs:
        if key == "config":
            if val is None:
                raise ValueError("--config needs a YAML file")
            values.update(load_yaml(val))
    for key, val in pairs:
        if key == "config":
            continue
        if key not in _FIELDS:
            raise ValueError(f"unknown setting --{key}; see `python training/train.py --help`")
        if val is None:
            hint = typing.get_type_hints(TrainConfig)[key]
            if hint is not bool:
                raise ValueError(f"--{key} needs a value")
            val = "true"
        values[key] = val
    cfg = TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    cfg.validate()
    return cfg


def _field_docs() -> dict[str, str]:
    """The string literal under each TrainConfig field (its documentation), read from this file."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    docs: dict[str, str] = {}
    pending: list[str] = []  # fields sharing the next docstring (e.g. the three tower paths)
    for node in tree.body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            pending.append(node.target.id)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for name in pending:
                docs[name] = " ".join(node.value.value.split())
            pending = []
    return docs


def help_text() -> str:
    """Every setting with its type, default and meaning (``train.py --help``)."""
    lines = ["usage: accelerate launch training/train.py [--config FILE.yaml] [--key value ...]", "",
             "Settings (YAML keys or --flags; flags override the file):"]
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    docs = _field_docs()
    for name in _FIELDS:
        hint = getattr(hints[name], "__name__", None) if not typing.get_args(hints[name]) else None
        hint = hint or str(hints[name]).replace("typing.", "")
        lines.append(f"  --{name} ({hint}, default {getattr(defaults, name)!r})")
        if name in docs:
            lines.append(f"      {docs[name]}")
    return "\n".join(lines)


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
    (out_dir / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    info = {"packages": package_versions(), **(extra or {})}
    (out_dir / "versions.json").write_text(json.dumps(info, indent=2) + "\n")
