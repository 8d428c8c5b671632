"""Train BIOSCAN-CLIP (CLIBD) with Accelerate, from one CPU to many GPUs.

    accelerate launch training/train.py --config training/configs/clibd_bioscan5m.yaml \
        --dataset data/bioscan5m --output_dir outputs/clibd5m
    accelerate launch --config_file training/accelerate/multi_gpu.yaml training/train.py --config ...
    python training/train.py --help          # every setting (training/config.py)

The recipe is the original's (reference §2): AdamW (weight decay 0.01), OneCycle with max lr
5e-5 x global batch / 500 stepped per batch, the mean symmetric InfoNCE over the enabled modality
pairs with negatives gathered from every process (``training/loss.py``), model selection by the
mean top-1 accuracy of the paper's protocol on the val splits. Checkpoints (``save_state``) are
written atomically every ``checkpointing_steps`` and at each epoch end; ``--resume_from_checkpoint
latest`` continues exactly, data order included. The best model is saved with ``save_pretrained``
together with its processor, key bank and evaluation JSON in ``output_dir/best_model``.

Example (tests, notebooks):
    >>> from training.train import main
    >>> summary = main(["--config", "training/configs/demo_synthetic.yaml", "--dataset", "outputs/demo/data"])
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`accelerate launch training/train.py`): import `training.*` from the repo
    # root, and take training/ itself off the path so that training/evaluate.py cannot shadow the
    # `evaluate` library.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor
from bioscan_clip_hf.data import load_bioscan
from training.config import TrainConfig, parse_args, save_run_info
from training.loss import gathered_clip_loss

# Collator outputs that are model inputs (the rest, e.g. processid, is bookkeeping).
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids", "dna_input_ids", "dna_attention_mask")
TOWERS = {"image": ("vision_model",), "dna": ("dna_model", "dna_head"), "text": ("text_model",)}
PROJECTIONS = ("image_projection", "dna_projection", "text_projection")
STATE_FILE = "trainer_state.json"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped without applying the step."""


# ----------------------------------------------------------------------------------------------
# model


def build_model(cfg: TrainConfig) -> tuple[BioscanClipModel, BioscanClipProcessor]:
    """The model and processor the run starts from (saved model, pretrained towers or a fresh preset)."""
    overrides = dict(cfg.model_config_overrides)
    if cfg.model_name_or_path:
        model = BioscanClipModel.from_pretrained(cfg.model_name_or_path, **overrides)
        processor = BioscanClipProcessor.from_pretrained(cfg.model_name_or_path)
        missing = [m for m in cfg.modalities if m not in model.config.modalities]
        if missing:
            raise ValueError(f"{cfg.model_name_or_path} has no tower for {missing}; it has {model.config.modalities}")
        return model, processor
    if cfg.image_tower or cfg.dna_tower or cfg.text_tower:
        model = BioscanClipModel.from_towers_pretrained(
            image=cfg.image_tower, dna=cfg.dna_tower, text=cfg.text_tower, modalities=list(cfg.modalities), **overrides
        )
    else:
        config = BioscanClipConfig.from_preset(cfg.model_preset, modalities=list(cfg.modalities), **overrides)
        model = BioscanClipModel(config)
    # From the model's own config, so model_config_overrides of the tokenisation (dna_stride,
    # dna_max_length, text_max_length...) reach the processor too.
    return model, BioscanClipProcessor.from_config(model.config)


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
                    raise ValueError(f"freeze_{modality} is set but the model has no {modality} tower")
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


# ----------------------------------------------------------------------------------------------
# data


def _drop_incomplete(ds, modalities: list[str]):
    """Keep the records that have every trained modality (text always exists: missing ranks
    read ``not_classified``). Records without an image are valid for DNA + text runs."""
    import pyarrow.compute as pc

    if "image" not in modalities and "dna" not in modalities:
        return ds

    def keep(table):
        masks = []
        if "image" in modalities:
            image = table["image"]  # struct {bytes, path}: images are not decoded here
            has = pc.or_(pc.is_valid(pc.struct_field(image, "bytes")), pc.is_valid(pc.struct_field(image, "path")))
            masks.append(pc.and_(pc.is_valid(image), pc.fill_null(has, False)))
        if "dna" in modalities:
            masks.append(pc.greater(pc.utf8_length(pc.fill_null(table["dna_barcode"], "")), 0))
        return masks[0] if len(masks) == 1 else pc.and_(masks[0], masks[1])

    kept = ds.with_format("arrow").filter(keep, batched=True, desc="records with every trained modality")
    return kept.with_format(None)


def count_stream_records(cfg: TrainConfig, ds) -> int | None:
    """Number of records in the streamed training splits, from dataset info or Parquet footers."""
    splits = getattr(getattr(ds, "info", None), "splits", None)
    if splits and all(s in splits for s in cfg.train_splits):
        return sum(splits[s].num_examples for s in cfg.train_splits)
    data_dir = Path(cfg.dataset) / "data"
    if data_dir.is_dir():
        import pyarrow.parquet as pq

        files = [f for s in cfg.train_splits for f in sorted(data_dir.glob(f"{s}-*.parquet"))]
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files) if files else None
    return None


class SeededCollate:
    """Run the collator with the augmentation seeded from (seed, epoch, rank, the batch's records).

    The collator draws its augmentation from the ``random`` module; seeding it per batch makes the
    draws independent of how far the loader has prefetched and of worker processes, so a run
    resumed from any checkpoint augments every batch exactly as the uninterrupted run did.
    """

    def __init__(self, collator: Any, seed: int, rank: int):
        self.collator, self.seed, self.rank, self.epoch = collator, seed, rank, 0

    def __call__(self, records: list[dict[str, Any]]) -> Any:
        ids = ",".join(str(r.get("processid")) for r in records)
        key = f"{self.seed}:{self.epoch}:{self.rank}:{ids}".encode()
        random.seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        return self.collator(records)


@dataclass
class TrainData:
    """The training loader and how many optimiser steps make an epoch."""

    loader: Any
    steps_per_epoch: int
    batches_per_epoch: int
    streaming: bool
    collate: SeededCollate
    generator: torch.Generator | None = None

    def start_epoch(self, epoch: int, seed: int, rank: int) -> None:
        """Make the epoch's data order, augmentation and worker seeds a function of (seed, epoch,
        rank) only, so a resumed run draws exactly what the uninterrupted run drew."""
        self.collate.epoch = epoch
        if self.streaming:
            self.loader.dataset.set_epoch(epoch)
            return
        # The loader draws its workers' base seed from this generator (not the global RNG, which
        # save_state restores for dropout); the sampler then reseeds it with data_seed + epoch.
        self.generator.manual_seed(seed + 7919 * (epoch + 1) + 104729 * rank)
        self.loader.set_epoch(epoch)


def build_train_data(cfg: TrainConfig, processor: BioscanClipProcessor, accelerator: Accelerator) -> TrainData:
    """Training records -> batches. Map-style data go through ``accelerator.prepare`` (seeded
    shuffling per epoch, sharded across processes); streamed data are split by node and shuffled
    with a buffer, and every process stops after the same number of batches."""
    from torch.utils.data import DataLoader

    from bioscan_clip_hf.data import BioscanCollator

    collate = SeededCollate(
        BioscanCollator(processor, modalities=tuple(cfg.modalities), train=cfg.image_augmentation,
                        dna_augmentation=cfg.dna_augmentation()),
        cfg.seed, accelerator.process_index,
    )
    world = accelerator.num_processes
    bs = cfg.per_device_train_batch_size
    if not cfg.streaming:
        ds = load_bioscan(cfg.dataset, split=list(cfg.train_splits), decode_images=False)
        if cfg.max_train_samples:
            ds = ds.select(range(min(cfg.max_train_samples, len(ds))))
        ds = _drop_incomplete(ds, cfg.modalities)
        if len(ds) < bs * world:
            raise ValueError(
                f"{cfg.dataset} splits {cfg.train_splits}: {len(ds)} usable records for {cfg.modalities}, "
                f"fewer than one global batch ({bs} x {world} processes)"
            )
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(
            ds,
            batch_size=bs,
            shuffle=True,
            drop_last=True,
            collate_fn=collate,
            num_workers=cfg.dataloader_num_workers,
            generator=generator,
        )
        loader = accelerator.prepare(loader)
        batches = len(loader)
        return TrainData(loader, math.ceil(batches / cfg.gradient_accumulation_steps), batches, False, collate, generator)

    from datasets.distributed import split_dataset_by_node

    ds = load_bioscan(cfg.dataset, split=list(cfg.train_splits), streaming=True, decode_images=False)
    total = count_stream_records(cfg, ds)
    if cfg.max_train_samples:
        ds = ds.take(cfg.max_train_samples)
        total = min(total, cfg.max_train_samples) if total is not None else cfg.max_train_samples
    if total is None:
        raise ValueError(f"cannot count the streamed records of {cfg.dataset}; pass --max_train_samples")
    ds = _filter_stream(ds, cfg.modalities)
    ds = split_dataset_by_node(ds, rank=accelerator.process_index, world_size=world)
    ds = ds.shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer_size)
    loader = DataLoader(ds, batch_size=bs, drop_last=True, collate_fn=collate, num_workers=cfg.dataloader_num_workers)
    # Records without a trained modality are dropped on the fly, so the count is an upper bound;
    # shards can end early, hence the 0.95 margin that keeps every process's step count equal.
    batches = max(1, int(total * 0.95) // (bs * world))
    return TrainData(loader, math.ceil(batches / cfg.gradient_accumulation_steps), batches, True, collate)


def _filter_stream(ds, modalities: list[str]):
    """Streaming counterpart of ``_drop_incomplete`` (record by record)."""
    need_image, need_dna = "image" in modalities, "dna" in modalities

    def keep(record: dict[str, Any]) -> bool:
        image = record.get("image")
        has_image = isinstance(image, dict) and (image.get("bytes") is not None or image.get("path") is not None)
        return (not need_image or has_image) and (not need_dna or bool(record.get("dna_barcode")))

    return ds.filter(keep)


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS and isinstance(v, torch.Tensor)}


def embed(model: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Forward through the (wrapped) model; the normalised embeddings of every modality present."""
    out = model(**model_inputs(batch, device))
    names = {"image": "image_embeds", "dna": "dna_embeds", "text": "text_embeds"}
    return {m: getattr(out, n) for m, n in names.items() if getattr(out, n, None) is not None}


# ----------------------------------------------------------------------------------------------
# optimisation


def peak_learning_rate(cfg: TrainConfig, num_processes: int) -> float:
    """``learning_rate`` or the original rule 5e-5 x global batch / 500 (global = per device x processes x accumulation)."""
    if cfg.learning_rate is not None:
        return cfg.learning_rate
    global_batch = cfg.per_device_train_batch_size * num_processes * cfg.gradient_accumulation_steps
    return cfg.base_learning_rate * global_batch / cfg.lr_reference_batch


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on all of them as the original."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every tower is frozen")
    return torch.optim.AdamW(
        params, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, max_lr: float, total_steps: int):
    """OneCycle exactly as the original (pct_start 0.3, cosine, no momentum cycling, div 25 / 1e4), stepped per optimiser step."""
    if cfg.lr_scheduler_type == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=cfg.pct_start,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )


# ----------------------------------------------------------------------------------------------
# checkpoints


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` so that ``dst`` is always either the old or the new complete folder."""
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


class CheckpointManager:
    """``output_dir/checkpoints/{step_N,epoch_N}``: written to a hidden temporary folder, then renamed."""

    def __init__(self, output_dir: str | Path, total_limit: int | None):
        self.root = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first (by global step, epoch checkpoints after step ones)."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            state = d / STATE_FILE
            if d.is_dir() and not d.name.startswith(".") and state.is_file():
                s = json.loads(state.read_text())
                found.append(((s["global_step"], s["batches_done_in_epoch"] == 0), d))
        return [d for _, d in sorted(found)]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, accelerator: Accelerator, name: str, state: dict[str, Any]) -> Path:
        """Every process calls this (save_state writes per-process RNG files)."""
        final = self.root / name
        tmp = self.root / f".tmp-{name}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
            _replace_dir(tmp, final)
            if self.total_limit:
                for old in self.complete()[: -self.total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final


# ----------------------------------------------------------------------------------------------
# evaluation and the best model


def evaluate(model: BioscanClipModel, processor: BioscanClipProcessor, cfg: TrainConfig) -> dict[str, Any]:
    """The paper's protocol on the val splits (``bioscan_clip_hf.evaluation.evaluate_model``).

    Its ``selection_score`` (mean of every top-1 micro and macro accuracy, seen and unseen, over
    all query->key pairs and ranks) is the original's model-selection criterion.
    """
    from bioscan_clip_hf.evaluation import evaluate_model

    data: Any = cfg.dataset
    if cfg.max_eval_samples:
        import datasets

        parts = {s: load_bioscan(cfg.dataset, split=s, decode_images=False) for s in cfg.eval_key_splits}
        for s in cfg.eval_query_splits:
            ds = load_bioscan(cfg.dataset, split=s, decode_images=False)
            parts[s] = ds.select(range(min(cfg.max_eval_samples, len(ds))))
        data = datasets.DatasetDict(parts)
    return evaluate_model(
        model,
        processor,
        data,
        query_splits=tuple(cfg.eval_query_splits),
        key_splits=tuple(cfg.eval_key_splits),
        batch_size=cfg.eval_batch_size,
        title=f"{Path(cfg.dataset).name}" + (" (SYNTHETIC data)" if _is_synthetic(cfg) else ""),
        progress=not cfg.disable_tqdm,
    )


def _is_synthetic(cfg: TrainConfig) -> bool:
    """True when the data set's build report says it was generated (the demo set)."""
    report = Path(cfg.dataset) / "build_report.json"
    if not report.is_file():
        return False
    return json.loads(report.read_text()).get("builder") == "synthetic"


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


def save_best_model(
    model: BioscanClipModel,
    processor: BioscanClipProcessor,
    cfg: TrainConfig,
    out_dir: Path,
    eval_result: dict[str, Any] | None,
    info: dict[str, Any],
) -> Path:
    """Write, atomically, ``save_pretrained`` (safetensors + Hub code) + processor + ``key_bank/``
    (the eval key splits embedded by this model, novelty thresholds calibrated on the two
    ``eval_query_splits``, seen then unseen) + ``eval_results.json`` (evaluate_model's JSON,
    read by the model card) + ``training_info.json`` (how this model was selected)."""
    from bioscan_clip_hf.evaluation import results_json
    from bioscan_clip_hf.zero_shot import KeyBank

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    modality = cfg.key_bank_modality or ("dna" if "dna" in cfg.modalities else "image")
    keys = load_bioscan(cfg.dataset, split=list(cfg.eval_key_splits), decode_images=False)
    was_training = model.training
    model.eval()
    bank = KeyBank.build(
        model, processor, keys, modality=modality, batch_size=cfg.eval_batch_size,
        progress=not cfg.disable_tqdm, source=f"{cfg.dataset} {'+'.join(cfg.eval_key_splits)}",
    )
    if len(cfg.eval_query_splits) == 2:  # (seen, unseen): the novelty flag's thresholds
        seen, unseen = (load_bioscan(cfg.dataset, split=s, decode_images=False) for s in cfg.eval_query_splits)
        bank.calibrate(model, processor, seen, unseen, batch_size=cfg.eval_batch_size, progress=not cfg.disable_tqdm)
    bank.save(tmp / "key_bank")
    model.train(was_training)
    if eval_result is not None:
        (tmp / "eval_results.json").write_text(results_json(eval_result), encoding="utf-8")
    (tmp / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    _replace_dir(tmp, out_dir)
    return out_dir


# ----------------------------------------------------------------------------------------------
# the loop


@dataclass
class LoopState:
    """What a checkpoint must remember besides the accelerate state (``trainer_state.json``)."""

    epoch: int = 0  # epoch in progress (0-based)
    batches_done_in_epoch: int = 0  # batches of `epoch` already consumed
    global_step: int = 0  # optimiser steps done
    best_score: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns a summary (also written to ``output_dir/train_summary.json``)."""
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        cpu=cfg.cpu,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    # Seed before building the model so that the seed decides the initial weights on every process.
    set_seed(cfg.seed)
    model, processor = build_model(cfg)
    model = configure_trainable(model, cfg)
    lr = peak_learning_rate(cfg, accelerator.num_processes)
    optimizer = build_optimizer(model, cfg, lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Different dropout / augmentation draws per process (open_clip: seed + rank).
    set_seed(cfg.seed + accelerator.process_index)
    data = build_train_data(cfg, processor, accelerator)
    epochs = cfg.num_train_epochs
    total_steps = data.steps_per_epoch * epochs
    if cfg.max_train_steps:
        total_steps = cfg.max_train_steps
        epochs = math.ceil(total_steps / data.steps_per_epoch)
    # Stepped by hand once per optimiser step: accelerate's prepared scheduler would step it
    # num_processes times per call, which is wrong for a schedule sized in optimiser steps.
    scheduler = build_scheduler(optimizer, cfg, lr, total_steps)
    accelerator.register_for_checkpointing(scheduler)
    ckpt = CheckpointManager(out, cfg.checkpoints_total_limit)
    state = LoopState()

    if cfg.resume_from_checkpoint:
        path = ckpt.latest() if cfg.resume_from_checkpoint == "latest" else Path(cfg.resume_from_checkpoint)
        if path is None:
            accelerator.print(f"--resume_from_checkpoint latest: no checkpoint in {ckpt.root}, starting from scratch")
        else:
            if not (path / STATE_FILE).is_file():
                raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
            accelerator.load_state(str(path))
            state = LoopState(**json.loads((path / STATE_FILE).read_text()))
            accelerator.print(f"resumed from {path}: epoch {state.epoch + 1}, step {state.global_step}")

    if accelerator.is_main_process:
        save_run_info(
            cfg,
            out,
            {
                "num_processes": accelerator.num_processes,
                "distributed_type": str(accelerator.distributed_type),
                "mixed_precision": accelerator.mixed_precision,
                "peak_learning_rate": lr,
                "total_steps": total_steps,
                "steps_per_epoch": data.steps_per_epoch,
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        )
    if cfg.report_to != "none":
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.to_dict().items()}
        accelerator.init_trackers("bioscan_clip", config=flat)

    global_batch = cfg.per_device_train_batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    bar = tqdm(
        total=total_steps,
        initial=state.global_step,
        desc="train",
        disable=cfg.disable_tqdm or not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    best_dir = out / "best_model"
    logit_scale = base_model(accelerator.unwrap_model(model)).logit_scale
    model.train()

    def checkpoint(name: str) -> Path:
        return ckpt.save(accelerator, name, state.__dict__)

    while state.epoch < epochs and state.global_step < total_steps:
        epoch = state.epoch
        data.start_epoch(epoch, cfg.seed, accelerator.process_index)
        if data.streaming:
            batches = iter(data.loader)
            for _ in range(state.batches_done_in_epoch):
                next(batches)
        else:
            batches = iter(
                accelerator.skip_first_batches(data.loader, state.batches_done_in_epoch)
                if state.batches_done_in_epoch
                else data.loader
            )
        tic, running = time.perf_counter(), None
        for batch_index in range(state.batches_done_in_epoch, data.batches_per_epoch):
            batch = next(batches)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    embeddings = embed(model, batch, accelerator.device)
                loss = gathered_clip_loss(embeddings, logit_scale)
                if not torch.isfinite(loss):
                    # Same value on every process (the loss is computed on the gathered batch), so
                    # all stop together. Nothing is written: the checkpoints and best model on disk
                    # stay as they were before this batch.
                    accelerator.end_training()
                    raise NonFiniteLossError(
                        f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, batch {batch_index + 1}, "
                        f"after {state.global_step} optimiser steps; training stopped without applying this step. "
                        f"Saved state is untouched: latest checkpoint {ckpt.latest() or 'none yet'}, best model "
                        f"{best_dir if best_dir.is_dir() else 'none yet'}. Restart (or resume an earlier checkpoint) "
                        f"with a lower learning_rate, --logit_scale_max 4.6052 or --max_grad_norm 1.0."
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            if cfg.logit_scale_max is not None:
                with torch.no_grad():
                    logit_scale.clamp_(0, cfg.logit_scale_max)
            state.global_step += 1
            state.batches_done_in_epoch = batch_index + 1
            toc = time.perf_counter()
            step_loss = loss.item()
            running = step_loss if running is None else 0.9 * running + 0.1 * step_loss
            speed = global_batch / max(toc - tic, 1e-9)
            tic = toc
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}", samples_s=f"{speed:.1f}")
            if state.global_step % max(cfg.logging_steps, 1) == 0 and cfg.report_to != "none":
                accelerator.log(
                    {
                        "train/loss": step_loss,
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/logit_scale": logit_scale.item(),
                        "train/samples_per_second": speed,
                        "train/epoch": epoch + state.batches_done_in_epoch / data.batches_per_epoch,
                    },
                    step=state.global_step,
                )
            if state.global_step >= total_steps:
                break
            if cfg.checkpointing_steps and state.global_step % cfg.checkpointing_steps == 0:
                checkpoint(f"step_{state.global_step}")
        # epoch finished (or the step budget ran out)
        state.epoch, state.batches_done_in_epoch = epoch + 1, 0
        record: dict[str, Any] = {"epoch": epoch + 1, "global_step": state.global_step, "loss": running}
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 > cfg.eval_start_epoch:
            candidate = model_for_export(accelerator, model)
            if accelerator.is_main_process:
                result = evaluate(candidate, processor, cfg)
                score = float(result["selection_score"])
                record["val_selection_score"] = score
                if cfg.report_to != "none":
                    accelerator.log({"val/selection_score": score}, step=state.global_step)
                if state.best_score is None or score > state.best_score:
                    state.best_score, state.best_epoch = score, epoch + 1
                    save_best_model(candidate, processor, cfg, best_dir, result, _best_info(cfg, state))
                accelerator.print(
                    f"epoch {epoch + 1}: val selection score {score:.2f} (best {state.best_score:.2f}, epoch {state.best_epoch})"
                )
            # Every process must hold the same best score before it goes into the checkpoint.
            state.best_score, state.best_epoch = _broadcast_best(accelerator, state)
        state.history.append(record)
        checkpoint(f"epoch_{epoch + 1}")
    bar.close()

    if state.best_epoch is None:
        # No evaluation ran: the last model is the one to keep.
        candidate = model_for_export(accelerator, model)
        if accelerator.is_main_process:
            save_best_model(candidate, processor, cfg, best_dir, None, _best_info(cfg, state))
    accelerator.wait_for_everyone()
    summary = {
        "output_dir": str(out),
        "best_model": str(best_dir),
        "best_epoch": state.best_epoch,
        "best_val_selection_score": state.best_score,
        "global_step": state.global_step,
        "epochs": state.epoch,
        "history": state.history,
    }
    if accelerator.is_main_process:
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if cfg.push_to_hub:
            _push(cfg, best_dir)
    accelerator.end_training()
    return summary


def _best_info(cfg: TrainConfig, state: LoopState) -> dict[str, Any]:
    evaluated = state.best_epoch is not None
    return {
        "selection": (
            "best val selection score (mean of all top-1 micro and macro accuracies, seen and unseen) "
            f"on {' + '.join(cfg.eval_query_splits)} vs keys {' + '.join(cfg.eval_key_splits)}"
            if evaluated else "no evaluation ran: the model after the last epoch"
        ),
        "epoch": state.best_epoch if evaluated else state.epoch,
        "global_step": state.global_step,
        "val_selection_score": state.best_score,
        "dataset": cfg.dataset,
        "synthetic": _is_synthetic(cfg),
        "train_config": cfg.to_dict(),
    }


def _broadcast_best(accelerator: Accelerator, state: LoopState) -> tuple[float | None, int | None]:
    from accelerate.utils import broadcast_object_list

    payload = [state.best_score, state.best_epoch]
    if accelerator.num_processes > 1:
        broadcast_object_list(payload, from_process=0)
    return payload[0], payload[1]


def _push(cfg: TrainConfig, best_dir: Path) -> None:
    """Upload the best model with ``bioscan_clip_hf.hub`` (model card from its eval_results.json)."""
    from bioscan_clip_hf.hub import push_model_folder

    if not cfg.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
    keys = ("modalities", "model_preset", "lora_r", "per_device_train_batch_size", "learning_rate",
            "weight_decay", "lr_scheduler_type", "num_train_epochs", "mixed_precision", "seed")
    push_model_folder(
        best_dir,
        cfg.hub_model_id,
        private=cfg.hub_private,
        card_options={"training": {k: getattr(cfg, k) for k in keys}, "synthetic": _is_synthetic(cfg)},
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``--config`` + overrides and train; returns the run summary."""
    return train(parse_args(argv))


if __name__ == "__main__":
    try:
        main()
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
