"""The training loop of ``training/train.py``: epochs of accumulated, gathered-loss optimiser steps,
checkpoints, evaluation and model selection, the best model at the end.

It drives ``train_data`` (splits and batches), ``model_setup`` (the model, LoRA, freezing),
``optimization`` (AdamW, OneCycle), ``checkpointing`` (``step_N`` / ``epoch_N``, tensors and JSON
only, atomic; resuming continues exactly, data order included) and ``best_model`` (evaluation,
``output_dir/best_model``). A step budget (``max_train_steps``) that ends mid-epoch leaves a
``step_N`` checkpoint inside the epoch, so resuming it with a larger budget continues from there.

Example:
    >>> summary = train(parse_args(["--config", "training/configs/demo_synthetic.yaml"]))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from bioscan_clip_hf.atomic import write_json
from bioscan_clip_hf.evaluation import identification_summary
from training.best_model import best_info, broadcast_best, evaluate, push_best_model, save_best_model
from training.checkpointing import CheckpointManager, LoopState, check_checkpoint
from training.config import TrainConfig, save_run_info
from training.loss import gathered_clip_loss
from training.model_setup import base_model, build_model, configure_trainable, model_for_export
from training.optimization import build_optimizer, build_scheduler, peak_learning_rate
from training.train_data import build_train_data, resolve_splits

# Collator outputs that are model inputs (the rest, e.g. processid, is bookkeeping).
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids", "dna_input_ids", "dna_attention_mask")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped without applying the step."""


@contextmanager
def quiet_progress(quiet: bool) -> Iterator[None]:
    """With ``quiet``, silence the progress bars of ``datasets`` ("Generating split", filters) and
    ``transformers`` (weight loading) for the run, then restore the user's setting."""
    import datasets.utils
    from transformers.utils import logging as hf_logging

    was = (datasets.utils.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled())
    if quiet:
        datasets.utils.disable_progress_bars()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and not was[0]:
            datasets.utils.enable_progress_bars()
        if quiet and was[1]:
            hf_logging.enable_progress_bar()


def embed(model: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Forward through the (wrapped) model; the normalised embeddings of every modality present."""
    out = model(**{k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS and isinstance(v, torch.Tensor)})
    names = {"image": "image_embeds", "dna": "dna_embeds", "text": "text_embeds"}
    return {m: getattr(out, n) for m, n in names.items() if getattr(out, n, None) is not None}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns a summary (also written to ``output_dir/train_summary.json``).

    Raises:
        training.arguments.ConfigError: an input problem found before training (missing data set or
            split, a checkpoint that is refused, a tower that cannot be loaded...).
        NonFiniteLossError: the loss became NaN or infinite (nothing is written for that step).
    """
    with quiet_progress(cfg.disable_tqdm):
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        cpu=cfg.cpu,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    # Inputs are checked before any work: a wrong split or checkpoint fails in seconds, not after a build.
    train_splits, notes = resolve_splits(cfg)
    ckpt = CheckpointManager(out, cfg.checkpoints_total_limit)
    resume = ckpt.resume_path(cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    state = check_checkpoint(resume, accelerator.process_index) if resume else LoopState()
    if cfg.resume_from_checkpoint == "latest" and resume is None:
        notes.append(f"note: --resume_from_checkpoint latest: no checkpoint in {ckpt.root} yet, starting from scratch")

    # Seed before building the model so that the seed decides the initial weights on every process.
    set_seed(cfg.seed)
    model, processor = build_model(cfg)
    model = configure_trainable(model, cfg)
    lr = peak_learning_rate(cfg, accelerator.num_processes)
    optimizer = build_optimizer(model, cfg, lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Different dropout / augmentation draws per process (open_clip: seed + rank).
    set_seed(cfg.seed + accelerator.process_index)
    data = build_train_data(cfg, train_splits, processor, accelerator)
    epochs = cfg.num_train_epochs
    total_steps = data.steps_per_epoch * epochs
    if cfg.max_train_steps:
        total_steps = cfg.max_train_steps
        epochs = math.ceil(total_steps / data.steps_per_epoch)
    if resume:
        ckpt.restore(accelerator, resume)
        notes.append(f"resumed from {resume}: epoch {state.epoch + 1}, step {state.global_step}")
        if cfg.lr_scheduler_type == "onecycle" and state.total_steps != total_steps and state.global_step < total_steps:
            notes.append(f"note: the learning-rate schedule was sized for {state.total_steps} steps, now {total_steps}; "
                         f"it continues at step {state.scheduler_steps} of the new schedule")
        if state.global_step >= total_steps:
            notes.append(f"note: {resume} is at step {state.global_step}, the budget is {total_steps} steps: nothing to train "
                         "(raise num_train_epochs or max_train_steps to continue)")
    state.total_steps = total_steps
    # Built after the restore and stepped by hand once per optimiser step: accelerate's prepared
    # scheduler would step num_processes times per call, wrong for a schedule sized in optimiser steps.
    scheduler = build_scheduler(optimizer, cfg, lr, total_steps, start_step=state.scheduler_steps)
    for note in data.notes + notes:
        accelerator.print(note)

    if accelerator.is_main_process:
        save_run_info(
            cfg,
            out,
            {
                "num_processes": accelerator.num_processes,
                "distributed_type": str(accelerator.distributed_type),
                "mixed_precision": accelerator.mixed_precision,
                "train_splits": train_splits,
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
        initial=min(state.global_step, total_steps),
        desc="train",
        disable=cfg.disable_tqdm or not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    best_dir = out / "best_model"
    logit_scale = base_model(accelerator.unwrap_model(model)).logit_scale
    model.train()

    def evaluate_and_select(epoch: int, record: dict[str, Any]) -> None:
        """Evaluate the current model (every process takes part in the export); keep it if best."""
        candidate = model_for_export(accelerator, model)
        if accelerator.is_main_process:
            result = evaluate(candidate, processor, cfg)
            score = float(result["selection_score"])
            record["val_selection_score"] = score
            if cfg.report_to != "none":
                accelerator.log({"val/selection_score": score}, step=state.global_step)
            if state.best_score is None or score > state.best_score:
                state.best_score, state.best_epoch = score, epoch + 1
                save_best_model(candidate, processor, cfg, best_dir, result, best_info(cfg, state))
            accelerator.print(
                f"epoch {epoch + 1}{'' if record['complete'] else ' (stopped mid-epoch)'}: val selection score "
                f"{score:.2f} (best {state.best_score:.2f}, epoch {state.best_epoch}); {identification_summary(result)}"
            )
        # Every process must hold the same best score before it goes into the checkpoint.
        state.best_score, state.best_epoch = broadcast_best(accelerator, state)

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
                state.scheduler_steps += 1
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
            if state.global_step % cfg.logging_steps == 0 and cfg.report_to != "none":
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
                ckpt.save(accelerator, f"step_{state.global_step}", state)
        complete = state.batches_done_in_epoch >= data.batches_per_epoch
        if complete:
            state.epoch, state.batches_done_in_epoch = epoch + 1, 0
        # else the step budget ran out mid-epoch: the state stays inside the epoch, so a resumed
        # run with a larger budget continues from this batch.
        record: dict[str, Any] = {"epoch": epoch + 1, "complete": complete, "global_step": state.global_step, "loss": running}
        last = state.global_step >= total_steps or state.epoch >= epochs
        if cfg.eval_every and epoch + 1 > cfg.eval_start_epoch and ((epoch + 1) % cfg.eval_every == 0 or last):
            evaluate_and_select(epoch, record)
        state.history.append(record)
        ckpt.save(accelerator, f"epoch_{epoch + 1}" if complete else f"step_{state.global_step}", state)
    bar.close()

    if state.best_epoch is None:
        # No evaluation ran: the last model is the one to keep.
        candidate = model_for_export(accelerator, model)
        if accelerator.is_main_process:
            save_best_model(candidate, processor, cfg, best_dir, None, best_info(cfg, state))
    accelerator.wait_for_everyone()
    summary = {
        "output_dir": str(out),
        "best_model": str(best_dir),
        "best_epoch": state.best_epoch,
        "best_val_selection_score": state.best_score,
        "global_step": state.global_step,
        "epochs": state.epoch,
        "stopped_mid_epoch": state.mid_epoch,
        "train_splits": train_splits,
        "history": state.history,
    }
    if accelerator.is_main_process:
        write_json(out / "train_summary.json", summary)
        if cfg.push_to_hub:
            push_best_model(cfg, best_dir)
    accelerator.end_training()
    return summary
