"""Approximate nearest-key search for banks of millions of keys (faiss), tied to the bank it indexes.

Kinds (``bioscan-clip build-bank --index``):

* ``flat``: no index; every query is searched exactly (:func:`~.search.exact_topk`). The default
  (``auto``) below :data:`EXACT_MAX_KEYS` keys, where exact search answers in well under a second
  per batch and an index would only add build time.
* ``ivf``: faiss inverted lists with 4-bit fast-scan product-quantised codes
  (``IVF{nlist},PQ{d/8}x4fs``, ``d / 16`` bytes per key, 48 for 768 dimensions): a query scans the ``nprobe`` lists nearest to
  it, and the :data:`RERANK` best candidates are rescored exactly (float32) from the bank's own
  memory-mapped keys, so the scores are exact and the index holds no copy of the keys. The default
  (``auto``) from :data:`EXACT_MAX_KEYS` keys on.
* ``hnsw``: a faiss HNSW graph over 8-bit scalar-quantised keys (``HNSW32,SQ8``), rescored the same
  way. Fast queries, but its build is slow on few cores and it holds a quarter-size copy of the keys.

Why IVF-PQ fast-scan with exact rescoring (measured on synthetic unit vectors, BENCHMARKS.md
"Approximate search"): recall@1 is set by how many lists are probed, not by the code size, once the
candidates are rescored exactly; so the smallest codes that rank the true neighbour among the
candidates win (8x less memory than IVF-SQ8 at the same recall and speed), and HNSW's build time
rules it out at millions of keys on a laptop-sized CPU.

On disk, next to the bank files: ``index.faiss`` (``faiss.write_index``) and ``index.json``
(kind, faiss factory string, search settings, the bank's ``build_id``, key count and dimension). An
index whose ``build_id`` is not the bank's (copied from another build) is refused by
:meth:`~.bank.KeyBank.load` like a stale bank.

Example:
    >>> index = KeyIndex.build(bank.embeddings, "ivf")  # doctest: +SKIP
    >>> scores, idx = index.search(queries, bank.embeddings, k=5)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import write_json
from .search import exact_topk

__all__ = [
    "EXACT_MAX_KEYS", "INDEX_FILES", "INDEX_KINDS", "IndexMismatchError", "KeyIndex", "RERANK", "choose_kind", "ivf_lists",
]

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
INDEX_FILES = ("index.faiss", "index.json")
# Below this many keys exact search is the default (1 M x 768 fp32: ~30 exact queries/s on 2 cores).
EXACT_MAX_KEYS = 1_000_000
# Candidates per query rescored exactly from the stored keys (at least 4 k).
RERANK = 64
# Fraction of the inverted lists a query scans: 1/16 gave recall@1 >= 0.99 on random unit vectors at
# 1 M keys (1/32: 0.97), the hardest case (real embeddings cluster by taxon, which makes the nearest
# lists more telling); BENCHMARKS.md "Approximate search".
PROBE_FRACTION = 1 / 16
_ADD_CHUNK = 65536


class IndexMismatchError(ValueError):
    """The index on disk was built for another build of the bank (or another number of keys)."""


def choose_kind(kind: str, n_keys: int) -> str:
    """``auto`` -> ``flat`` below :data:`EXACT_MAX_KEYS` keys, else ``ivf``; other kinds unchanged."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "flat" if n_keys < EXACT_MAX_KEYS else "ivf"
    return kind


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # an optional dependency
        raise ImportError("an approximate index needs faiss: pip install 'bioscan-clip-hf[faiss]'") from exc
    return faiss


def ivf_lists(n_keys: int) -> int:
    """Inverted lists: the power of two nearest 2 sqrt(n) (2048 at 1 M keys, 4096 at 5 M), with at least
    39 keys per list to train on. More lists scan fewer codes per query but cost build time: assigning
    the keys to lists is an n x nlist x d product."""
    target = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n_keys))))
    return int(max(1, min(target, n_keys // 39, 65536)))


def _pq_size(dim: int) -> int:
    """Sub-quantisers of the fast-scan codes: one per 8 dimensions (an even divisor of ``dim``); coarser
    codes ranked true neighbours of clustered keys below the rescored candidates (tests)."""
    m = max(2, dim // 8)
    while dim % m or m % 2:
        m -= 1
    return max(m, 1)


def _as_float32(block: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(block.float().cpu().numpy())


@dataclass
class KeyIndex:
    """A faiss index over a bank's keys plus the settings it is searched with (see module docstring)."""

    kind: str
    index: Any = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        keys: torch.Tensor,
        kind: str,
        progress: bool = True,
        seed: int = 0,
        factory: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> "KeyIndex":
        """Train and fill an ``ivf`` or ``hnsw`` index over ``keys`` [n, d] (any float dtype).

        The keys are read chunk by chunk (converted to float32 per chunk), so a memory-mapped
        half-precision bank is never copied whole; training uses a seeded sample. ``factory`` /
        ``params``: another faiss factory string and its search parameters (``{"nprobe": 64}``) than
        the defaults of the module docstring (benchmarks compare them).
        """
        faiss = _faiss()
        if kind not in ("ivf", "hnsw"):
            raise ValueError(f"KeyIndex.build makes an 'ivf' or 'hnsw' index, got {kind!r}")
        n, dim = keys.shape
        if n == 0:
            raise ValueError("cannot index an empty key matrix")
        if kind == "ivf":
            nlist = ivf_lists(n)
            default_factory = f"IVF{nlist},PQ{_pq_size(dim)}x4fs"
            default_params = {"nprobe": max(1, round(nlist * PROBE_FRACTION))}
        else:
            default_factory, default_params = "HNSW32,SQ8", {"efSearch": 64}
        factory, params = factory or default_factory, params or default_params
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        n_train = min(n, 40 * index.nlist) if hasattr(index, "nlist") else min(n, 65536)
        if hasattr(index, "cp"):
            index.cp.niter = 10  # k-means iterations of the coarse quantiser (faiss default 25; recall unchanged)
        sample = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
        index.train(_as_float32(keys[torch.from_numpy(sample)]))
        bar = tqdm(total=n, desc=f"{kind} index", unit="key", disable=not progress, leave=False)
        for start in range(0, n, _ADD_CHUNK):
            block = keys[start : start + _ADD_CHUNK]
            index.add(_as_float32(block))
            bar.update(block.shape[0])
        bar.close()
        meta = {"kind": kind, "factory": factory, "params": params, "rerank": RERANK, "n_keys": int(n), "dim": int(dim),
                "faiss_version": faiss.__version__}
        return cls(kind, index, meta)

    def _apply_params(self) -> None:
        faiss = _faiss()
        for name, value in self.meta["params"].items():
            faiss.ParameterSpace().set_index_parameter(self.index, name, value)

    @torch.inference_mode()
    def search(self, queries: torch.Tensor, keys: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k of (normalised) ``queries`` [nq, d]: candidates from the index, exact float32 scores
        from ``keys`` (the bank's stored matrix). Returns ``(scores, indices)`` like
        :func:`~.search.exact_topk`, on the keys' device. A query whose probed lists hold fewer than
        ``k`` keys (small banks) is searched exactly instead."""
        if queries.ndim != 2 or queries.shape[1] != self.meta["dim"]:
            raise ValueError(f"queries {tuple(queries.shape)} do not match the index's {self.meta['dim']} dimensions")
        self._apply_params()
        wanted = max(int(k), 1)
        _, candidates = self.index.search(_as_float32(queries), max(self.meta.get("rerank", RERANK), 4 * wanted))
        cand = torch.from_numpy(candidates).to(keys.device)
        valid = cand >= 0
        safe = cand.clamp(min=0)
        vectors = keys[safe.reshape(-1)].float().view(*safe.shape, -1)
        scores = torch.einsum("qd,qcd->qc", queries.to(keys.device).float(), vectors)
        scores = scores.masked_fill(~valid, float("-inf"))
        wanted = min(wanted, keys.shape[0])
        top, pos = torch.topk(scores, wanted, dim=1)
        idx = torch.gather(cand, 1, pos)
        short = torch.isinf(top).any(dim=1)
        if bool(short.any()):
            top[short], idx[short] = exact_topk(queries[short.cpu()].to(keys.device), keys, wanted)
        return top, idx

    def save(self, directory: Path, build_id: str) -> None:
        """Write ``index.faiss`` and ``index.json`` into ``directory`` (a bank folder being written)."""
        faiss = _faiss()
        faiss.write_index(self.index, str(Path(directory) / "index.faiss"))
        write_json(Path(directory) / "index.json", {**self.meta, "bank_build_id": build_id})

    @classmethod
    def load(cls, directory: str | Path, build_id: str | None, n_keys: int) -> "KeyIndex | None":
        """The index saved with the bank in ``directory`` (None when it has none).

        Raises:
            IndexMismatchError: the index belongs to another build of the bank or another key count.
        """
        directory = Path(directory)
        if not (directory / "index.json").is_file():
            return None
        meta = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        if meta.get("bank_build_id") != build_id or meta.get("n_keys") != n_keys:
            raise IndexMismatchError(
                f"its index ({directory / 'index.faiss'}) was built for bank build {meta.get('bank_build_id')} with "
                f"{meta.get('n_keys')} keys, but the bank is build {build_id} with {n_keys} keys"
            )
        index = _faiss().read_index(str(directory / "index.faiss"))
        return cls(meta["kind"], index, meta)
