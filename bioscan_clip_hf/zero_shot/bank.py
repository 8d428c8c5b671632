"""Key bank: embeddings of labelled records plus their taxonomy, tied to the model that made them.

On disk a bank is a folder with

* ``embeddings.safetensors``: tensor ``embeddings`` [n, d], float32, L2-normalised;
* ``keys.parquet``: one row per key: ``processid`` and the ranks ``order, family, genus, species``
  (plus ``split`` when known);
* ``bank.json``: modality, dimension, count, ``model_fingerprint`` (sha256 of the model weights),
  package version, creation time, source, and novelty calibrations per query modality.

:meth:`KeyBank.load` with a model refuses a bank whose fingerprint differs from the model's
(:class:`StaleBankError` names both hashes): embeddings from other weights would give silently
wrong answers.

Example:
    >>> bank = KeyBank.build(model, processor, dataset, modality="dna")  # doctest: +SKIP
    >>> bank.save("bank/"); bank = KeyBank.load("bank/", model=model)  # doctest: +SKIP
    >>> scores, idx = bank.search(query_features, k=5)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..taxonomy import RANKS
from .encode import MODALITIES, encode_dataset
from .novelty import NoveltyCalibration, calibrate_novelty
from .search import search

__all__ = ["KeyBank", "StaleBankError", "model_fingerprint", "BANK_FILES"]

BANK_FILES = ("embeddings.safetensors", "keys.parquet", "bank.json")


class StaleBankError(ValueError):
    """The bank was built with other model weights than the model it is used with."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) over the names, shapes, dtypes and bytes of the model weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


@dataclass
class KeyBank:
    """Labelled key embeddings for nearest-neighbour classification (see module docstring)."""

    embeddings: torch.Tensor
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.table):
            raise ValueError(f"embeddings {tuple(self.embeddings.shape)} do not match the {len(self.table)}-row key table")
        missing = [c for c in ("processid", *RANKS) if c not in self.table.columns]
        if missing:
            raise ValueError(f"key table lacks columns {missing}")

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def modality(self) -> str:
        return self.meta.get("modality", "dna")

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("model_fingerprint")

    def labels(self, rank: str) -> list[str | None]:
        """Label of every key at ``rank``."""
        return [None if pd.isna(v) or v == "" else v for v in self.table[rank].tolist()]

    def search(self, queries: torch.Tensor, k: int = 5, backend: str = "auto", dtype=torch.float32):
        """Exact cosine top-k of (normalised) ``queries`` among the keys -> ``(scores, indices)``."""
        return search(queries.to(self.embeddings.device), self.embeddings, k, backend=backend, dtype=dtype)

    def calibration(self, query_modality: str) -> NoveltyCalibration | None:
        data = self.meta.get("calibration", {}).get(query_modality)
        return NoveltyCalibration.from_dict(data) if data else None

    def set_calibration(self, query_modality: str, calibration: NoveltyCalibration) -> None:
        self.meta.setdefault("calibration", {})[query_modality] = calibration.to_dict()

    def calibrate(
        self,
        model,
        processor,
        seen,
        unseen,
        query_modalities: tuple[str, ...] | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ) -> dict[str, NoveltyCalibration]:
        """Calibrate novelty thresholds on seen (``val``) and unseen (``val_unseen``) data sets.

        For each query modality (default: the bank's own, plus ``image``/``dna`` for single-tower
        banks), queries are searched against the bank and the nearest distances of seen vs unseen
        queries set the threshold; whether the nearest key's label is right sets the per-rank
        thresholds. Stored in ``meta["calibration"]`` (saved with the bank) and returned.
        """
        if query_modalities is None:
            query_modalities = (self.modality,) if self.modality in ("averaged", "concatenated") else ("image", "dna")
        labels = {r: self.labels(r) for r in RANKS}
        out = {}
        for qmod in query_modalities:
            dists, correct = [], {r: [] for r in RANKS}
            usable = True
            for data in (seen, unseen):
                feats, errors = encode_dataset(model, processor, data, qmod, batch_size, progress)
                rows = [i for i, e in enumerate(errors) if e is None]
                if not rows:
                    usable = False
                    break
                scores, idx = self.search(feats[rows], k=1)
                dists.append((1.0 - scores[:, 0]).tolist())
                for r in RANKS:
                    column = data[r]
                    correct[r] += [labels[r][int(j)] == column[i] for j, i in zip(idx[:, 0].tolist(), rows)]
            if not usable:
                continue
            cal = calibrate_novelty(dists[0], dists[1], correct)
            self.set_calibration(qmod, cal)
            out[qmod] = cal
        return out

    def taxa(self) -> pd.DataFrame:
        """Distinct lineages (order, family, genus, species) with their key counts."""
        ranks = list(RANKS)
        return self.table.fillna({r: "" for r in ranks}).groupby(ranks, dropna=False).size().reset_index(name="n_keys")

    @classmethod
    def build(
        cls,
        model,
        processor,
        dataset,
        modality: str = "dna",
        batch_size: int = 64,
        progress: bool = True,
        source: str | None = None,
    ) -> "KeyBank":
        """Embed every record of ``dataset`` (a ``datasets.Dataset``) for ``modality``.

        Records whose input is missing or unreadable are left out (their count is in
        ``meta["skipped"]``).
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        feats, errors = encode_dataset(model, processor, dataset, modality, batch_size, progress)
        keep = [i for i, e in enumerate(errors) if e is None]
        columns = [c for c in ("processid", *RANKS, "split") if c in dataset.column_names]
        table = dataset.select_columns(columns).to_pandas().iloc[keep].reset_index(drop=True)
        if "processid" not in table.columns:
            table.insert(0, "processid", [str(i) for i in keep])
        from .. import __version__

        meta = {
            "modality": modality,
            "dim": int(feats.shape[1]),
            "n_keys": len(keep),
            "skipped": len(errors) - len(keep),
            "model_fingerprint": model_fingerprint(model),
            "bioscan_clip_hf_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "calibration": {},
        }
        return cls(feats[keep].contiguous(), table, meta)

    def save(self, directory: str | Path) -> Path:
        """Write the three bank files into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.float().contiguous().cpu()}, str(directory / "embeddings.safetensors"))
        self.table.to_parquet(directory / "keys.parquet", index=False)
        (directory / "bank.json").write_text(json.dumps(self.meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, model: torch.nn.Module | None = None, fingerprint: str | None = None) -> "KeyBank":
        """Read a bank; with ``model`` (or ``fingerprint``) refuse one built from other weights."""
        directory = Path(directory)
        missing = [name for name in BANK_FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a key bank (missing {', '.join(missing)})")
        meta = json.loads((directory / "bank.json").read_text(encoding="utf-8"))
        expected = fingerprint or (model_fingerprint(model) if model is not None else None)
        if expected is not None and meta.get("model_fingerprint") != expected:
            raise StaleBankError(
                f"key bank {directory} was built with model weights {meta.get('model_fingerprint')}, "
                f"but the model in use has weights {expected}; rebuild it with `bioscan-clip build-bank`"
            )
        embeddings = load_file(str(directory / "embeddings.safetensors"))["embeddings"]
        table = pd.read_parquet(directory / "keys.parquet")
        return cls(embeddings, table, meta)
