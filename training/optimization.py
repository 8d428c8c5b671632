"""Optimiser and learning-rate schedule of the training loop (the original's, reference §2).

AdamW with weight decay on every trainable parameter, and OneCycle (cosine, no momentum cycling,
warm-up 30 %, div 25 / 1e4) stepped once per optimiser step; the peak rate follows the original
rule 5e-5 x global batch / 500 unless ``learning_rate`` is set.

Example:
    >>> lr = peak_learning_rate(cfg, num_processes=4)          # 2e-4 for 500 per GPU on 4 GPUs
    >>> scheduler = build_scheduler(optimizer, cfg, lr, total_steps=1000, start_step=250)
"""

from __future__ import annotations

import warnings

import torch

from training.arguments import ConfigError
from training.config import TrainConfig


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
        raise ConfigError("no trainable parameters: every tower is frozen")
    return torch.optim.AdamW(
        params, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, max_lr: float, total_steps: int, start_step: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle exactly as the original (or a constant rate), sized for ``total_steps`` optimiser
    steps and set to step ``start_step`` (a resumed run).

    The schedule is a pure function of the step count, so a checkpoint stores only that count
    (JSON), never the scheduler object, and a resumed run with a larger step budget gets the
    schedule of its new budget from where it stopped.
    """
    for group in optimizer.param_groups:
        # A restored optimizer state carries the rates of the run that saved it; this run's settings decide.
        group["lr"] = max_lr
        group.pop("initial_lr", None)
    if cfg.lr_scheduler_type == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    else:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=total_steps,
            pct_start=cfg.pct_start,
            anneal_strategy="cos",
            cycle_momentum=False,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
        )
    if start_step:
        # Both schedules compute the rate in closed form from last_epoch, so one step lands on
        # exactly the rate the uninterrupted run had (torch warns about the order of this first step).
        scheduler.last_epoch = min(start_step, total_steps) - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
    return scheduler
