"""Key bank: embeddings of labelled records plus their taxonomy, tied to the model that made them.

On disk a bank is a folder with

* ``embeddings.safetensors``: tensor ``embeddings`` [n, d], float32 (or float16 / bfloat16 for large
  banks: ``build-bank --key-dtype``), L2-normalised; memory-mapped on load, not copied into RAM;
* ``keys.parquet``: one row per key: ``processid`` and the ranks ``order, family, genus, species``
  (plus ``split`` and ``dna_barcode`` when known: the barcodes are the keys of ``--method kmer``);
* ``bank.json``: modality, dimension, count, ``model_fingerprint`` (sha256 of the model weights),
  package version, creation time, source, and the ``calibration`` fitted on validation queries
  (:class:`~bioscan_clip_hf.zero_shot.calibration.LibraryCalibration`: temperatures per query
  modality x method, novelty models per query modality);
* optionally ``index.faiss`` + ``index.json`` (``build-bank --index ivf|hnsw``, default from 1 M
  keys): an approximate index of this very build of the bank (:mod:`~.index`).

:meth:`KeyBank.load` with a model refuses a bank whose fingerprint differs from the model's
(:class:`StaleBankError` names both hashes): embeddings from other weights would give silently
wrong answers. An index of another build of the bank is refused the same way.

Example:
    >>> bank = KeyBank.build(model, processor, dataset, modality="dna")  # doctest: +SKIP
    >>> bank.save("bank/"); bank = KeyBank.load("bank/", model=model)  # doctest: +SKIP
    >>> scores, idx = bank.search(query_features, k=5)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import WriteTargetError, atomic_dir, check_writable, write_json
from ..taxonomy import RANKS
from .calibration import METHODS, LibraryCalibration, calibrate_library, stored_sources, unusable_reason
from .encode import MODALITIES, combine_features, encode_dataset, encode_texts
from .evidence import KeySource
from .kmer import kmer_profiles
from .lineages import TaxonIndex
from .index import IndexMismatchError, KeyIndex
from .provenance import CONTENT_FINGERPRINT_KEY, bank_content_fingerprint
from .search import search

__all__ = ["KeyBank", "StaleBankError", "DamagedBankError", "check_bank_target", "model_fingerprint", "BANK_FILES"]

BANK_FILES = ("embeddings.safetensors", "keys.parquet", "bank.json")


class StaleBankError(ValueError):
    """The bank was built with other model weights than the model it is used with."""


class DamagedBankError(ValueError):
    """A key bank whose files are truncated, unreadable or from different builds."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) over the names, shapes, dtypes and bytes of the model weights.

    A model cast to another dtype for inference (:func:`~bioscan_clip_hf.zero_shot.runtime.prepare_model`)
    keeps the fingerprint of the weights it was loaded with, so its banks stay valid in any precision.
    """
    loaded = getattr(model, "_loaded_weights_fingerprint", None)
    if loaded is not None:
        return loaded
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
    # Approximate index (build-bank --index ivf|hnsw), saved and loaded with the bank; None: exact search.
    index: KeyIndex | None = field(default=None, repr=False, compare=False)
    # Derived from the table / barcodes on first use (taxon index, 5-mer profiles), never saved.
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.table):
            raise ValueError(f"embeddings {tuple(self.embeddings.shape)} do not match the {len(self.table)}-row key table")
        missing = [c for c in ("processid", *RANKS) if c not in self.table.columns]
        if missing:
            raise ValueError(f"key table lacks columns {missing}")

    def __setattr__(self, name: str, value: Any) -> None:
        derived = self.__dict__.get("_derived")
        if derived and name == "table":
            derived.clear()  # taxon index, 5-mer profiles and content fingerprint all follow the table
        elif derived and name == "embeddings":
            derived.pop("content", None)
        object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def to(self, device: str | torch.device) -> "KeyBank":
        """Move the key vectors to ``device`` (in place; returns the bank), keeping the content fingerprint."""
        content = self._derived.get("content")
        self.embeddings = self.embeddings.to(device)
        if content is not None:
            self._derived["content"] = content
        return self

    @property
    def content_fingerprint(self) -> str:
        """sha256 of the key vectors and key table (:func:`~.provenance.bank_content_fingerprint`):
        computed when the bank is saved and stored in ``bank.json``, so a loaded bank does not
        re-read millions of keys to name itself; recomputed once if the keys are replaced."""
        if "content" not in self._derived:
            self._derived["content"] = bank_content_fingerprint(self.embeddings, self.table)
        return self._derived["content"]

    @property
    def modality(self) -> str:
        return self.meta.get("modality", "dna")

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("model_fingerprint")

    def labels(self, rank: str) -> list[str | None]:
        """Label of every key at ``rank``."""
        return [None if pd.isna(v) or v == "" else v for v in self.table[rank].tolist()]

    def search(self, queries: torch.Tensor, k: int = 5, backend: str = "auto", dtype=torch.float32, exact: bool = False):
        """Cosine top-k of (normalised) ``queries`` among the keys -> ``(scores, indices)``.

        Through the bank's approximate :attr:`index` when it has one (candidates from the index, exact
        scores from the keys; see :mod:`~.index`), otherwise, or with ``exact=True``, exact search.
        """
        if self.index is not None and not exact and backend == "auto":
            return self.index.search(queries, self.embeddings, k)
        return search(queries.to(self.embeddings.device), self.embeddings, k, backend=backend, dtype=dtype)

    @property
    def calibration(self) -> LibraryCalibration | None:
        """The calibration fitted when the bank was built (None: uncalibrated, or one this code cannot
        apply: :attr:`calibration_problem` says why)."""
        if self.calibration_problem is not None:
            return None
        return LibraryCalibration.from_dict(self.meta.get("calibration"))

    @property
    def calibration_problem(self) -> str | None:
        """Why the stored calibration cannot be used (None: there is none, or it can): written by
        another version of the code, or fitted on evidence this bank does not have (e.g. copied
        from a bank that stores barcodes)."""
        stored = self.meta.get("calibration")
        if not stored:
            return None
        reason = unusable_reason(stored)
        if reason is None:
            missing = sorted(stored_sources(stored) - set(self._source_names()))
            if missing:
                reason = f"it was fitted on evidence this key bank does not have ({', '.join(missing)})"
        return reason

    @property
    def taxon_index(self) -> TaxonIndex:
        """The keys' lineages as taxon ids (see :mod:`~bioscan_clip_hf.zero_shot.lineages`)."""
        if "index" not in self._derived:
            self._derived["index"] = TaxonIndex.from_table(self.table)
        return self._derived["index"]

    @property
    def has_barcodes(self) -> bool:
        return "dna_barcode" in self.table.columns and bool(self.table["dna_barcode"].notna().any())

    def kmer_source(self) -> KeySource:
        """5-mer profiles of the keys' barcodes (computed from ``keys.parquet`` on first use, so they
        always match this bank's records); keys without a barcode are left out."""
        if "kmer" not in self._derived:
            if not self.has_barcodes:
                raise ValueError("this key bank stores no barcodes, so it cannot answer --method kmer; "
                                 "rebuild it with `bioscan-clip build-bank` from records with dna_barcode")
            barcodes = self.table["dna_barcode"]
            rows = np.flatnonzero(barcodes.notna().to_numpy() & (barcodes.fillna("").str.len() > 0).to_numpy())
            profiles = kmer_profiles(barcodes.iloc[rows].tolist())
            leaf = torch.from_numpy(self.taxon_index.leaf_of_record[rows])
            self._derived["kmer"] = KeySource("kmer", profiles.to(self.embeddings.device), leaf, torch.from_numpy(rows))
        return self._derived["kmer"]

    def _learned_names(self) -> list[str]:
        """The query features the key embeddings answer (see :meth:`sources`)."""
        return [self.modality] if self.modality in ("averaged", "concatenated") else ["dna", "image"]

    def _source_names(self) -> list[str]:
        """The names of the evidence sources :meth:`sources` can give (text ones given prompts)."""
        return self._learned_names() + (["kmer"] if self.has_barcodes else []) + ["text:dna", "text:image"]

    def sources(self, prompts: torch.Tensor | None = None) -> dict[str, KeySource]:
        """Evidence sources by query feature (see :mod:`~bioscan_clip_hf.zero_shot.calibration`).

        A single-tower bank answers DNA and image queries with the same keys (the towers are
        aligned: image -> DNA keys is a cross-modal query); an averaged / concatenated bank only
        its own combined feature. ``prompts``: text features of the index's leaves, one per leaf.
        """
        index = self.taxon_index
        learned = KeySource(self.modality, self.embeddings, torch.from_numpy(index.leaf_of_record),
                            search=lambda queries, k: self.search(queries, k))
        out = {name: learned for name in self._learned_names()}
        if self.has_barcodes:
            out["kmer"] = self.kmer_source()
        if prompts is not None:
            text = KeySource("text", prompts.to(self.embeddings.device), torch.arange(len(index.leaves)))
            out.update({"text:dna": text, "text:image": text})
        return out

    def calibrate(
        self,
        model,
        processor,
        *query_sets,
        methods: tuple[str, ...] = METHODS,
        max_queries: int = 2000,
        batch_size: int = 64,
        progress: bool = True,
    ) -> LibraryCalibration:
        """Fit the bank's calibration on validation data sets (e.g. ``val`` and ``val_unseen``).

        Every record of ``query_sets`` (at most ``max_queries``, a seeded sample) is a query whose
        species is in the bank (CLIBD's unseen species have ``key_unseen`` keys); records that are
        keys themselves are left out. For every query modality the records support (barcode,
        photo, both) and every method, a temperature per evidence source is fitted by NLL, and the
        novelty model by leaving the queries' own taxa out of the keys
        (:func:`~bioscan_clip_hf.zero_shot.calibration.calibrate_library`). Stored in
        ``meta["calibration"]`` (saved with the bank) and returned.
        """
        import datasets

        data = datasets.concatenate_datasets(list(query_sets)) if len(query_sets) > 1 else query_sets[0]
        keys = set(self.table["processid"].astype(str))
        ids = [str(x) for x in data["processid"]] if "processid" in data.column_names else [""] * len(data)
        rows = [i for i, pid in enumerate(ids) if pid not in keys]
        excluded = len(ids) - len(rows)
        if len(rows) > max_queries:
            rows = sorted(np.random.default_rng(0).choice(rows, max_queries, replace=False).tolist())
        data = data.select(rows)
        towers = set(getattr(model.config, "modalities", ("image", "dna", "text")))
        vectors: dict[str, torch.Tensor] = {}
        available: dict[str, np.ndarray] = {}
        for tower in ("dna", "image"):
            column = "dna_barcode" if tower == "dna" else "image"
            if tower in towers and column in data.column_names:
                feats, errors = encode_dataset(model, processor, data, tower, batch_size, progress)
                vectors[tower], available[tower] = feats, np.array([e is None for e in errors])
        if "dna_barcode" in data.column_names:
            barcodes = [b or "" for b in data["dna_barcode"]]
            vectors["kmer"] = kmer_profiles(barcodes)
            available["kmer"] = vectors["kmer"].abs().sum(dim=1).numpy() > 0
        if self.modality in ("averaged", "concatenated") and {"dna", "image"} <= set(vectors):
            vectors[self.modality] = combine_features(vectors["image"], vectors["dna"], self.modality)
            available[self.modality] = available["image"] & available["dna"]
        prompts = None
        if "text" in towers and "text" in methods:
            prompts = self.prompt_features(model, processor, batch_size, progress)
            for tower in ("dna", "image"):
                if tower in vectors:
                    vectors[f"text:{tower}"], available[f"text:{tower}"] = vectors[tower], available[tower]
        sources = {name: src for name, src in self.sources(prompts).items() if name in vectors}
        lineages = list(zip(*(data[r] for r in RANKS)))
        cal = calibrate_library(self.taxon_index, sources, vectors, available, lineages, methods, progress)
        cal.info["excluded_key_records"] = excluded
        self.meta["calibration"] = cal.to_dict()
        return cal

    def prompt_features(self, model, processor, batch_size: int = 256, progress: bool = True) -> torch.Tensor:
        """Text features of the taxonomy prompt of every leaf of :attr:`taxon_index` (cached)."""
        if "prompts" not in self._derived:
            from ..processing_bioscan_clip import taxonomy_text

            texts = [taxonomy_text(*leaf) for leaf in self.taxon_index.leaves]
            feats, errors = encode_texts(model, processor, texts, batch_size=max(batch_size, 64), progress=progress)
            bad = [t for t, e in zip(texts, errors) if e]
            if bad:
                raise ValueError(f"could not encode taxon prompts {bad[:3]}")
            self._derived["prompts"] = feats
        return self._derived["prompts"]

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
        num_workers: int | None = None,
        features: tuple[torch.Tensor, list] | None = None,
    ) -> "KeyBank":
        """Embed every record of ``dataset`` (a ``datasets.Dataset``) for ``modality``.

        Records whose input is missing or unreadable are left out (their count is in
        ``meta["skipped"]``). ``num_workers``: photo-decoding workers. ``features``: the
        ``(features, errors)`` of every record when already computed (sharded over processes by
        :func:`~bioscan_clip_hf.zero_shot.distributed.embed_records`); their dtype is kept.
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        feats, errors = features or encode_dataset(model, processor, dataset, modality, batch_size, progress, num_workers)
        keep = [i for i, e in enumerate(errors) if e is None]
        columns = [c for c in ("processid", *RANKS, "split", "dna_barcode") if c in dataset.column_names]
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
        return cls(feats if len(keep) == len(errors) else feats[keep].contiguous(), table, meta)

    def save(self, directory: str | Path) -> Path:
        """Write the three bank files into ``directory`` as one unit (see :func:`check_bank_target`).

        The folder is filled under a temporary name and then swapped in, so a killed rebuild leaves the
        old bank or the new one, never new embeddings beside an old ``bank.json``; a ``build_id`` shared
        by the three files lets :meth:`load` refuse files of different builds copied together.
        """
        directory = check_bank_target(directory)
        build_id = secrets.token_hex(8)
        stored = _stored(self.embeddings)
        # The content fingerprint of exactly what is written, tied to the files by the build id.
        content = bank_content_fingerprint(stored, self.table)
        with atomic_dir(directory) as tmp:
            save_file({"embeddings": stored}, str(tmp / "embeddings.safetensors"), metadata={"build_id": build_id})
            table = pa.Table.from_pandas(self.table, preserve_index=False)
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), _BUILD_KEY: build_id}),
                           tmp / "keys.parquet")
            write_json(tmp / "bank.json", {**self.meta, "build_id": build_id, CONTENT_FINGERPRINT_KEY: content})
            if self.index is not None:
                self.index.save(tmp, build_id)
        self.meta.update({"build_id": build_id, CONTENT_FINGERPRINT_KEY: content})
        self._derived["content"] = content
        return directory

    @classmethod
    def load(cls, directory: str | Path, model: torch.nn.Module | None = None, fingerprint: str | None = None,
             verify: bool = False) -> "KeyBank":
        """Read a bank; with ``model`` (or ``fingerprint``) refuse one built from other weights.

        The content fingerprint stored in ``bank.json`` is trusted when the three files share one
        build id (they were written together by :meth:`save`, which computed it from what it wrote);
        ``verify=True`` recomputes it from the files and refuses a bank whose keys were changed since.

        Raises:
            FileNotFoundError: a bank file is missing.
            DamagedBankError: a file is truncated or not what it should be, or the files come from
                different builds (one line naming the bank and the file).
            StaleBankError: the bank was built with other model weights.
        """
        directory = Path(directory)
        missing = [name for name in BANK_FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a key bank (missing {', '.join(missing)})")
        meta = _read_bank_part(directory, "bank.json", lambda p: json.loads(p.read_text(encoding="utf-8")))
        if not isinstance(meta, dict):
            raise DamagedBankError(f"key bank {directory}: bank.json holds no JSON object; rebuild the bank")
        expected = fingerprint or (model_fingerprint(model) if model is not None else None)
        if expected is not None and meta.get("model_fingerprint") != expected:
            raise StaleBankError(
                f"key bank {directory} was built with model weights {meta.get('model_fingerprint')}, "
                f"but the model in use has weights {expected}; rebuild it with `bioscan-clip build-bank`"
            )
        embeddings, tensor_build = _read_bank_part(directory, "embeddings.safetensors", _read_embeddings)
        keys = _read_bank_part(directory, "keys.parquet", pq.read_table)
        builds = {"bank.json": meta.get("build_id"), "embeddings.safetensors": tensor_build,
                  "keys.parquet": (keys.schema.metadata or {}).get(_BUILD_KEY, b"").decode() or None}
        if any(builds.values()) and len(set(builds.values())) > 1:
            raise DamagedBankError(f"key bank {directory}: its files come from different builds ({builds}); "
                                   "rebuild it with `bioscan-clip build-bank`")
        try:
            index = KeyIndex.load(directory, meta.get("build_id"), keys.num_rows)
        except IndexMismatchError as exc:
            raise StaleBankError(f"key bank {directory}: {exc}; rebuild it with `bioscan-clip build-bank --index`") from exc
        except (OSError, RuntimeError, ValueError) as exc:  # faiss reports a damaged file as RuntimeError
            raise DamagedBankError(f"key bank {directory}: its index is damaged ({str(exc).strip().splitlines()[0]}); "
                                   "rebuild it with `bioscan-clip build-bank --index`") from exc
        try:
            bank = cls(embeddings, keys.to_pandas(), meta, index)
        except ValueError as exc:
            raise DamagedBankError(f"key bank {directory}: {exc}; rebuild it with `bioscan-clip build-bank`") from exc
        stored = meta.get(CONTENT_FINGERPRINT_KEY)
        if stored is not None and builds["bank.json"] is not None and not verify:
            bank._derived["content"] = stored
        elif stored is not None and stored != bank.content_fingerprint:
            raise DamagedBankError(f"key bank {directory}: its keys do not match the fingerprint stored in bank.json "
                                   f"({stored[:16]}); they were changed after it was built: rebuild it with "
                                   "`bioscan-clip build-bank`")
        return bank


_BUILD_KEY = b"bioscan_clip_build_id"


def _stored(embeddings: torch.Tensor) -> torch.Tensor:
    """The key matrix as written: float32, or float16 / bfloat16 as built (half the disk and memory
    for banks of millions; the file is memory-mapped on load, see :meth:`KeyBank.load`)."""
    if embeddings.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        embeddings = embeddings.float()
    return embeddings.contiguous().cpu()


def _read_embeddings(path: Path) -> tuple[torch.Tensor, str | None]:
    with safe_open(str(path), "pt") as f:
        if "embeddings" not in f.keys():
            raise ValueError("no tensor named 'embeddings'")
        return f.get_tensor("embeddings"), (f.metadata() or {}).get("build_id")


def _read_bank_part(directory: Path, name: str, read):
    """``read(directory / name)``, with any failure as one :class:`DamagedBankError` naming the file."""
    try:
        return read(directory / name)
    except (OSError, ValueError, SafetensorError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedBankError(f"key bank {directory}: {name} is damaged ({detail}); "
                               "rebuild it with `bioscan-clip build-bank`") from exc


def check_bank_target(directory: str | Path) -> Path:
    """Check, before any work, that a bank can be written to ``directory``; return it as a Path.

    An existing bank is replaced; an existing folder that holds something else is refused (writing
    there would delete it), as are a missing parent folder and a file of that name.

    Example::

        check_bank_target("banks/dna")   # WriteTargetError: ... folder banks does not exist
    """
    directory = check_writable(directory, folder=True)
    if directory.is_dir() and any(directory.iterdir()) and not (directory / "bank.json").is_file():
        raise WriteTargetError(f"cannot write key bank {directory}: the folder holds other files and no bank.json; "
                               "choose a new folder")
    return directory
