"""Checkpoints of a training run: ``output_dir/checkpoints/{step_N,epoch_N}``, written atomically,
holding tensors and JSON only, and checked before anything in them is loaded.

A checkpoint is accelerate's ``save_state`` (model as safetensors, optimizer and AMP scaler as
tensor-only ``torch.save`` files) plus JSON: ``trainer_state.json`` (where the loop stands; the
learning-rate schedule is a pure function of its step count, so no scheduler object is saved) and
``rng_state_<rank>.json`` (Python, NumPy and torch generators, replacing accelerate's pickled
``random_states_<rank>.pkl``). Resuming first refuses any file this module does not write and any
pickle that ``torch.load(weights_only=True)`` rejects, so a checkpoint from someone else cannot run
code; FSDP and DeepSpeed checkpoints, which are pickles by design, are refused for that reason.

Example:
    >>> ckpt = CheckpointManager("outputs/run", total_limit=2)
    >>> ckpt.save(accelerator, "step_100", state)                     # every process calls it
    >>> state = check_checkpoint(ckpt.latest(), accelerator.process_index)   # refuses code, names the file
    >>> ckpt.restore(accelerator, ckpt.latest())
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import zipfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from bioscan_clip_hf.atomic import atomic_dir, write_json
from training.arguments import ConfigError, one_line

STATE_FILE = "trainer_state.json"
FORMAT = 2
"""Checkpoint layout version (1: scheduler and RNG states pickled by accelerate; 2: JSON)."""
_FILES = re.compile(r"^(model(_\d+)?\.safetensors|optimizer(_\d+)?\.bin|scaler\.pt|rng_state_\d+\.json|trainer_state\.json)$")
_TENSOR_PICKLES = re.compile(r"^(optimizer(_\d+)?\.bin|scaler\.pt)$")


@dataclass
class LoopState:
    """Where the training loop stands (``trainer_state.json``)."""

    epoch: int = 0  # epoch in progress (0-based)
    batches_done_in_epoch: int = 0  # batches of `epoch` already consumed
    global_step: int = 0  # optimiser steps done
    scheduler_steps: int = 0  # learning-rate schedule steps done (fp16 skips some optimiser steps)
    total_steps: int = 0  # the step budget the schedule was sized for
    best_score: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mid_epoch(self) -> bool:
        return self.batches_done_in_epoch > 0


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU, CUDA) generator states as JSON-able lists."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _read_state(path: Path) -> LoopState | None:
    """The checkpoint's loop state, or None when ``path`` is not a complete checkpoint of this format."""
    try:
        data = json.loads((path / STATE_FILE).read_text())
        names = {f.name for f in fields(LoopState)}
        if data.pop("format", None) != FORMAT or set(data) != names:
            return None
        return LoopState(**data)
    except (OSError, ValueError, TypeError):
        return None


def check_checkpoint(path: Path, rank: int) -> LoopState:
    """Refuse a checkpoint that could run code or that this trainer did not write; return its state.

    Raises:
        ConfigError: naming the folder and the offending file.
    """
    if not path.is_dir():
        raise ConfigError(f"resume_from_checkpoint {path}: no such folder")
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume_from_checkpoint {path}: not a checkpoint of training/train.py (no {STATE_FILE})")
    for entry in sorted(path.iterdir()):
        if not _FILES.match(entry.name) or not entry.is_file():
            raise ConfigError(f"refusing to resume from {path}: it holds {entry.name}, which train.py never writes "
                              "(a pickle in a checkpoint could run code)")
        if _TENSOR_PICKLES.match(entry.name):
            try:
                torch.load(entry, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(entry))
            except pickle.UnpicklingError as err:
                found = re.search(r"GLOBAL [\w.]+", str(err))
                raise ConfigError(f"refusing to resume from {path}: {entry.name} holds pickled objects other than "
                                  f"tensors ({found.group(0) if found else 'not a tensor file'}); loading it could "
                                  "run code") from None
            except (RuntimeError, EOFError, OSError, ValueError) as err:
                raise ConfigError(f"resume_from_checkpoint {path}: {entry.name} is damaged ({one_line(err)[:200]})") from None
    state = _read_state(path)
    if state is None:
        raise ConfigError(f"resume_from_checkpoint {path}: {STATE_FILE} is not of checkpoint format {FORMAT} (an older "
                          "train.py pickled its scheduler and RNG states; such checkpoints are not resumed)")
    for needed in ("model.safetensors", "optimizer.bin", f"rng_state_{rank}.json"):
        if not (path / needed).is_file():
            raise ConfigError(f"resume_from_checkpoint {path}: incomplete checkpoint (no {needed})")
    return state


class CheckpointManager:
    """``output_dir/checkpoints/{step_N,epoch_N}``, each written into a fresh folder that replaces
    the old one only when complete (``bioscan_clip_hf.atomic.atomic_dir``)."""

    def __init__(self, output_dir: str | Path, total_limit: int | None):
        self.root = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first (by global step, epoch checkpoints after step ones)."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            state = _read_state(d) if d.is_dir() and not d.name.startswith(".") else None
            if state is not None:
                found.append(((state.global_step, not state.mid_epoch), d))
        return [d for _, d in sorted(found)]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, accelerator: Accelerator, name: str, state: LoopState) -> Path:
        """Write checkpoint ``name``; every process calls this (each saves its own RNG state)."""
        from accelerate.utils import broadcast_object_list

        final = self.root / name
        with ExitStack() as stack:
            folder = [None]
            if accelerator.is_main_process:
                self.root.mkdir(parents=True, exist_ok=True)
                folder = [str(stack.enter_context(atomic_dir(final)))]
            if accelerator.num_processes > 1:
                broadcast_object_list(folder, from_process=0)
            tmp = Path(folder[0])
            accelerator.save_state(str(tmp))
            # accelerate pickles the RNG states; this checkpoint keeps them as JSON instead.
            (tmp / f"random_states_{accelerator.process_index}.pkl").unlink(missing_ok=True)
            write_json(tmp / f"rng_state_{accelerator.process_index}.json", rng_state())
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                write_json(tmp / STATE_FILE, {"format": FORMAT, **asdict(state)})
        if accelerator.is_main_process and self.total_limit:
            for old in self.complete()[: -self.total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def resume_path(self, setting: str) -> Path | None:
        """The checkpoint ``resume_from_checkpoint`` names: ``latest`` (None when there is none yet) or a folder."""
        return self.latest() if setting == "latest" else Path(setting)

    @staticmethod
    def restore(accelerator: Accelerator, path: Path) -> None:
        """Restore model, optimizer, scaler and RNG states from a checkpoint that passed
        :func:`check_checkpoint`. accelerate's own ``step`` counter is not restored: at every
        checkpoint it is 0 modulo the accumulation steps, which is all it is used for."""
        accelerator.load_state(str(path))
        try:
            set_rng_state(json.loads((path / f"rng_state_{accelerator.process_index}.json").read_text()))
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ConfigError(f"resume_from_checkpoint {path}: rng_state_{accelerator.process_index}.json is damaged "
                              f"({one_line(err)[:200]})") from None
