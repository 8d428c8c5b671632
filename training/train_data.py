"""Training records -> batches: which splits train, records that lack a trained modality, seeded
order and augmentation, map-style or streamed loading.

Example:
    >>> splits, notes = resolve_splits(cfg)            # the optional `pretrain` split may be absent
    >>> data = build_train_data(cfg, splits, processor, accelerator)
    >>> data.start_epoch(0, cfg.seed, accelerator.process_index)
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from bioscan_clip_hf import BioscanClipProcessor
from bioscan_clip_hf.data import dataset_key_splits, load_bioscan
from bioscan_clip_hf.data.parquet import list_shards
from bioscan_clip_hf.sources import SourceError, is_hub_id, resolve_source
from training.arguments import ConfigError, one_line
from training.config import OPTIONAL_TRAIN_SPLITS, TrainConfig


def resolve_splits(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """The training splits to read and notes for the user, checked before any work.

    An unset ``eval_key_splits`` is filled in here with the data set's evaluation keys
    (:func:`~bioscan_clip_hf.data.dataset_key_splits`: ``key_seen`` + ``key_unseen`` for a BIOSCAN-1M
    build, else ``train`` + ``key_unseen``), so every later step and ``train_config.yaml`` see them.
    A listed split in ``OPTIONAL_TRAIN_SPLITS`` (``pretrain``: records without a species label)
    that a local data set lacks is skipped with a note; any other missing split (training,
    evaluation query or key split) is an error naming it and the splits the data set has. A Hub
    data set is checked when it is loaded.

    Raises:
        ConfigError: the folder is missing (``bioscan_clip_hf.sources.resolve_source``'s rule) or holds no
            shards, or a required split is missing.
    """
    try:
        folder = resolve_source(cfg.dataset, what="dataset", repo_type="dataset")
    except SourceError as err:
        raise ConfigError(str(err)) from None
    if is_hub_id(folder):
        _fill_key_splits(cfg, folder)
        return list(cfg.train_splits), []
    if not folder.is_dir():
        raise ConfigError(f"dataset {folder}: a file, not a folder written by a bioscan_clip_hf builder")
    have = list_shards(folder)
    if not have:
        raise ConfigError(f"dataset {folder}: no Parquet shards named data/<split>-XXXXX-of-YYYYY.parquet")
    _fill_key_splits(cfg, folder)
    notes, train_splits = [], []
    for split in cfg.train_splits:
        if split in have:
            train_splits.append(split)
        elif split in OPTIONAL_TRAIN_SPLITS:
            notes.append(f"note: {folder} has no `{split}` split (no unlabelled records); training on "
                         f"{', '.join(s for s in cfg.train_splits if s in have) or 'nothing'} only")
    optional = {"train_splits": OPTIONAL_TRAIN_SPLITS}
    for setting in ("train_splits", "eval_query_splits", "eval_key_splits"):
        missing = [s for s in getattr(cfg, setting) if s not in have and s not in optional.get(setting, ())]
        if missing:
            raise ConfigError(f"dataset {folder} has no split(s) {missing} listed in {setting}; it has: {', '.join(have)}")
    if not train_splits:
        raise ConfigError(f"dataset {folder}: none of train_splits {cfg.train_splits} is there; it has: {', '.join(have)}")
    return train_splits, notes


def _fill_key_splits(cfg: TrainConfig, source: str | Path) -> None:
    if cfg.eval_key_splits is None:
        try:
            cfg.eval_key_splits = dataset_key_splits(source)
        except (OSError, ValueError) as err:  # e.g. a BIOSCAN-1M build from before key_seen: rebuild it
            raise ConfigError(f"dataset {cfg.dataset}: {one_line(str(err))}") from None


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


def _filter_stream(ds, modalities: list[str]):
    """Streaming counterpart of ``_drop_incomplete`` (record by record)."""
    need_image, need_dna = "image" in modalities, "dna" in modalities

    def keep(record: dict[str, Any]) -> bool:
        image = record.get("image")
        has_image = isinstance(image, dict) and (image.get("bytes") is not None or image.get("path") is not None)
        return (not need_image or has_image) and (not need_dna or bool(record.get("dna_barcode")))

    return ds.filter(keep)


def count_stream_records(cfg: TrainConfig, splits: list[str], ds) -> int | None:
    """Number of records in the streamed training splits, from dataset info or Parquet footers."""
    info = getattr(getattr(ds, "info", None), "splits", None)
    if info and all(s in info for s in splits):
        return sum(info[s].num_examples for s in splits)
    shards = list_shards(cfg.dataset)
    files = [f for s in splits for f in shards.get(s, [])]
    if not files:
        return None
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


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
    """The training loader, how many batches and optimiser steps make an epoch, and notes for the user."""

    loader: Any
    steps_per_epoch: int
    batches_per_epoch: int
    streaming: bool
    collate: SeededCollate
    generator: torch.Generator | None = None
    notes: list[str] = field(default_factory=list)

    def start_epoch(self, epoch: int, seed: int, rank: int) -> None:
        """Make the epoch's data order, augmentation and worker seeds a function of (seed, epoch,
        rank) only, so a resumed run draws exactly what the uninterrupted run drew."""
        self.collate.epoch = epoch
        if self.streaming:
            self.loader.dataset.set_epoch(epoch)
            return
        # The loader draws its workers' base seed from this generator (not the global RNG, which
        # the checkpoint restores for dropout); the sampler then reseeds it with data_seed + epoch.
        self.generator.manual_seed(seed + 7919 * (epoch + 1) + 104729 * rank)
        self.loader.set_epoch(epoch)


def build_train_data(
    cfg: TrainConfig, splits: list[str], processor: BioscanClipProcessor, accelerator: Accelerator
) -> TrainData:
    """Training records of ``splits`` -> batches. Map-style data go through ``accelerator.prepare``
    (seeded shuffling per epoch, sharded across processes); streamed data are split by node and
    shuffled with a buffer, and every process stops after the same number of batches.

    Every batch is full (``drop_last``): the contrastive loss never sees a global batch smaller
    than ``per_device_train_batch_size`` x processes (one record alone has no negatives). The
    records that do not fill the last global batch are left out of that epoch, with a note.
    """
    from torch.utils.data import DataLoader

    from bioscan_clip_hf.data import BioscanCollator

    collate = SeededCollate(
        BioscanCollator(processor, modalities=tuple(cfg.modalities), train=cfg.image_augmentation,
                        dna_augmentation=cfg.dna_augmentation()),
        cfg.seed, accelerator.process_index,
    )
    world = accelerator.num_processes
    bs = cfg.per_device_train_batch_size
    notes = []
    if not cfg.streaming:
        ds = load_bioscan(cfg.dataset, split=splits, decode_images=False)
        if cfg.max_train_samples:
            ds = ds.select(range(min(cfg.max_train_samples, len(ds))))
        listed = len(ds)
        ds = _drop_incomplete(ds, cfg.modalities)
        if len(ds) < listed:
            notes.append(f"note: {listed - len(ds)} of {listed} training records lack an image or a barcode that "
                         f"{'+'.join(cfg.modalities)} needs; they are not trained on")
        if len(ds) < bs * world:
            raise ConfigError(
                f"{cfg.dataset} splits {splits}: {len(ds)} usable records for {cfg.modalities}, "
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
        left_out = len(ds) - batches * bs * world
        if left_out:
            notes.append(f"note: {left_out} of {len(ds)} training records do not fill a last global batch of "
                         f"{bs * world} and are left out of each epoch (different ones each epoch, the order is "
                         "reshuffled)")
        return TrainData(loader, math.ceil(batches / cfg.gradient_accumulation_steps), batches, False, collate,
                         generator, notes)

    from datasets.distributed import split_dataset_by_node

    ds = load_bioscan(cfg.dataset, split=splits, streaming=True, decode_images=False)
    total = count_stream_records(cfg, splits, ds)
    if cfg.max_train_samples:
        ds = ds.take(cfg.max_train_samples)
        total = min(total, cfg.max_train_samples) if total is not None else cfg.max_train_samples
    if total is None:
        raise ConfigError(f"cannot count the streamed records of {cfg.dataset}; pass --max_train_samples")
    ds = _filter_stream(ds, cfg.modalities)
    ds = split_dataset_by_node(ds, rank=accelerator.process_index, world_size=world)
    ds = ds.shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer_size)
    loader = DataLoader(ds, batch_size=bs, drop_last=True, collate_fn=collate, num_workers=cfg.dataloader_num_workers)
    # Records without a trained modality are dropped on the fly, so the count is an upper bound;
    # shards can end early, hence the 0.95 margin that keeps every process's step count equal.
    batches = max(1, int(total * 0.95) // (bs * world))
    return TrainData(loader, math.ceil(batches / cfg.gradient_accumulation_steps), batches, True, collate, notes=notes)
