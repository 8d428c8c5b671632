"""Model selection and the model a run leaves behind: the paper's validation protocol, the
``best_model/`` folder (weights, processor, key bank, evaluation) written atomically, and the
optional upload to the Hub.

Example:
    >>> result = evaluate(model, processor, cfg)                 # result["selection_score"]
    >>> save_best_model(model, processor, cfg, out / "best_model", result, best_info(cfg, state))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
from bioscan_clip_hf.atomic import atomic_dir, write_json, write_text
from bioscan_clip_hf.data import load_bioscan
from training.checkpointing import LoopState
from training.config import TrainConfig


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
        # Calibration and novelty are scored against the keys of the bank the model ships with
        # (each key modality costs two calibration fits per validation).
        identification_keys=(bank_modality(cfg),),
        batch_size=cfg.eval_batch_size,
        title=f"{Path(cfg.dataset).name}" + (" (SYNTHETIC data)" if is_synthetic(cfg) else ""),
        progress=not cfg.disable_tqdm,
    )


def bank_modality(cfg: TrainConfig) -> str:
    """The modality of the key bank saved with the best model (``key_bank_modality``, else DNA when trained)."""
    return cfg.key_bank_modality or ("dna" if "dna" in cfg.modalities else "image")


def is_synthetic(cfg: TrainConfig) -> bool:
    """True when the data set's build report says it was generated (the demo set)."""
    report = Path(cfg.dataset) / "build_report.json"
    if not report.is_file():
        return False
    return json.loads(report.read_text()).get("builder") == "synthetic"


def save_best_model(
    model: BioscanClipModel,
    processor: BioscanClipProcessor,
    cfg: TrainConfig,
    out_dir: Path,
    eval_result: dict[str, Any] | None,
    info: dict[str, Any],
) -> Path:
    """Write, atomically, ``save_pretrained`` (safetensors + Hub code) + processor + ``key_bank/``
    (the eval key splits embedded by this model, its probabilities and novelty model calibrated
    on the ``eval_query_splits``: ``KeyBank.calibrate``) + ``eval_results.json`` (evaluate_model's JSON,
    read by the model card) + ``training_info.json`` (how this model was selected)."""
    from bioscan_clip_hf.evaluation import results_json
    from bioscan_clip_hf.zero_shot import KeyBank

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        modality = bank_modality(cfg)
        keys = load_bioscan(cfg.dataset, split=list(cfg.eval_key_splits), decode_images=False)
        was_training = model.training
        model.eval()
        bank = KeyBank.build(
            model, processor, keys, modality=modality, batch_size=cfg.eval_batch_size,
            progress=not cfg.disable_tqdm, source=f"{cfg.dataset} {'+'.join(cfg.eval_key_splits)}",
        )
        if len(cfg.eval_query_splits) == 2:  # (seen, unseen) val queries, all of species among the keys
            seen, unseen = (load_bioscan(cfg.dataset, split=s, decode_images=False) for s in cfg.eval_query_splits)
            bank.calibrate(model, processor, seen, unseen, batch_size=cfg.eval_batch_size, progress=not cfg.disable_tqdm)
        bank.save(tmp / "key_bank")
        model.train(was_training)
        if eval_result is not None:
            write_text(tmp / "eval_results.json", results_json(eval_result))
        write_json(tmp / "training_info.json", info)
    return out_dir


def best_info(cfg: TrainConfig, state: LoopState) -> dict[str, Any]:
    """``training_info.json``: how the saved model was selected, on what data, with which settings."""
    evaluated = state.best_epoch is not None
    return {
        "selection": (
            "best val selection score (mean of all top-1 micro and macro accuracies, seen and unseen) "
            f"on {' + '.join(cfg.eval_query_splits)} vs keys {' + '.join(cfg.eval_key_splits)}"
            if evaluated else "no evaluation ran: the model at the end of training"
        ),
        "epoch": state.best_epoch if evaluated else state.epoch + (1 if state.mid_epoch else 0),
        "global_step": state.global_step,
        "val_selection_score": state.best_score,
        "dataset": cfg.dataset,
        "synthetic": is_synthetic(cfg),
        "train_config": cfg.to_dict(),
    }


def broadcast_best(accelerator: Accelerator, state: LoopState) -> tuple[float | None, int | None]:
    """The main process's best score and epoch, on every process (they go into every checkpoint)."""
    from accelerate.utils import broadcast_object_list

    payload = [state.best_score, state.best_epoch]
    if accelerator.num_processes > 1:
        broadcast_object_list(payload, from_process=0)
    return payload[0], payload[1]


def push_best_model(cfg: TrainConfig, best_dir: Path) -> None:
    """Upload the best model with ``bioscan_clip_hf.hub`` (model card from its eval_results.json)."""
    from bioscan_clip_hf.hub import push_model_folder

    keys = ("modalities", "model_preset", "lora_r", "per_device_train_batch_size", "learning_rate",
            "weight_decay", "lr_scheduler_type", "num_train_epochs", "mixed_precision", "seed")
    push_model_folder(
        best_dir,
        cfg.hub_model_id,
        private=cfg.hub_private,
        card_options={"training": {k: getattr(cfg, k) for k in keys}, "synthetic": is_synthetic(cfg)},
    )
