"""Exact cosine top-k search over a key matrix, in bounded memory.

The keys and queries are expected to be L2-normalised, so the inner product is the cosine
similarity (what the original evaluation computes with ``faiss.IndexFlatIP``).

Tie rule (identical to faiss ``IndexFlatIP`` for ``k < 100``, the heap path faiss uses there):
keys are scanned in index order by a size-k heap that admits a key only when its score is
*strictly* greater than the current worst, and evicts the worst by (score, then smaller index).
In closed form, with ``v`` the k-th largest score of a query:

* every key scoring above ``v`` is returned;
* of the keys scoring exactly ``v``, faiss keeps those among the first ``k`` keys (in index order)
  that score ``>= v``, and of these the ``k - #(> v)`` with the largest indices;
* the result is ordered by score descending, equal scores by index **descending**.

:func:`exact_topk` reproduces this chunk by chunk: the rule is composable (running it on the
current heap followed by a new chunk gives the same heap as running it on everything seen so far),
and a chunk can only contribute its ``2k - 1`` best keys by (score descending, index ascending).
For ``k >= 100`` faiss switches to a reservoir whose choice among tied keys differs; the scores
returned are the same, only which of several exactly tied keys is named can differ.

Example:
    >>> import torch
    >>> keys = torch.nn.functional.normalize(torch.randn(1000, 16), dim=1)
    >>> scores, idx = exact_topk(keys[:3], keys, k=5)
    >>> idx[:, 0].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np
import torch

__all__ = ["exact_topk", "faiss_available", "faiss_topk", "reference_topk", "search"]

# Score matrix budget per chunk (elements); 2**25 floats = 128 MiB keeps peak memory bounded.
_CHUNK_ELEMENTS = 2**25


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package is importable."""
    return importlib.util.find_spec("faiss") is not None


def _stable_topk(scores: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kk`` best columns per row by (score descending, column ascending).

    ``torch.topk`` does not define which of several tied columns it returns at the cut, so it is
    asked for one extra column: rows where that column ties with the last kept one are recomputed
    with a stable sort (rare on real-valued data, so the fast path is a single top-k pass).
    """
    extra = min(kk + 1, scores.shape[1])
    vals, idx = torch.topk(scores, extra, dim=1, largest=True, sorted=True)
    if extra > kk:
        ambiguous = vals[:, kk] == vals[:, kk - 1]
    else:  # the block has exactly kk columns: nothing is cut
        ambiguous = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    vals, idx = vals[:, :kk], idx[:, :kk]
    # Order the chosen columns by column ascending first, then stably by score descending.
    idx, _ = torch.sort(idx, dim=1)
    vals = torch.gather(scores, 1, idx)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    idx = torch.gather(idx, 1, perm)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        v, i = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = v[:, :kk], i[:, :kk]
    return vals, idx


def _faiss_merge(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the faiss heap rule (see module docstring) to candidate sets, one row per query.

    ``vals``/``idx`` hold candidates in any order; ``idx`` are global key indices. Returns the k
    survivors ordered by score descending then index descending.
    """
    order = torch.argsort(idx, dim=1)
    idx = torch.gather(idx, 1, order)
    vals = torch.gather(vals, 1, order)
    vstar = torch.topk(vals, k, dim=1).values[:, -1:]
    at_least = vals >= vstar
    inserted_ties = (vals == vstar) & (torch.cumsum(at_least.int(), dim=1) <= k)
    need = k - (vals > vstar).sum(dim=1, keepdim=True)
    from_end = torch.flip(torch.cumsum(torch.flip(inserted_ties.int(), [1]), dim=1), [1])
    keep = (vals > vstar) | (inserted_ties & (from_end <= need))
    # Exactly k survivors per row: order them by (score desc, index desc) with two stable sorts.
    sel_idx = idx[keep].view(idx.shape[0], k)
    sel_val = vals[keep].view(idx.shape[0], k)
    perm = torch.argsort(sel_idx, dim=1, descending=True, stable=True)
    sel_idx, sel_val = torch.gather(sel_idx, 1, perm), torch.gather(sel_val, 1, perm)
    perm = torch.argsort(sel_val, dim=1, descending=True, stable=True)
    return torch.gather(sel_val, 1, perm), torch.gather(sel_idx, 1, perm)


def _rescore(queries: torch.Tensor, keys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """fp32 inner products of each query with its candidate keys (``idx`` is [nq, c])."""
    cand = keys[idx.reshape(-1)].float().view(idx.shape[0], idx.shape[1], -1)
    return torch.einsum("qd,qcd->qc", queries.float(), cand)


@torch.no_grad()
def exact_topk(
    queries: torch.Tensor | np.ndarray,
    keys: torch.Tensor | np.ndarray,
    k: int = 5,
    *,
    chunk_size: int | None = None,
    dtype: torch.dtype | str = torch.float32,
    query_batch: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-k of ``queries`` [nq, d] against ``keys`` [n, d], chunked over keys.

    Args:
        queries, keys: float arrays (torch or numpy); normalise them for cosine similarity.
        k: neighbours per query (clipped to the number of keys).
        chunk_size: keys per chunk; default keeps each score block near 128 MiB.
        dtype: ``torch.float32`` (exact) or ``torch.bfloat16``: the matmul runs in bf16 (much faster
            on CPUs with AMX / AVX-512 BF16 and on GPUs; much slower on CPUs without them) to shortlist
            the ``max(2k, k + 16)`` best keys by bf16 score; the shortlist is then rescored in fp32 from
            the keys as stored. The result is exact unless the bf16 rounding of the *scores* pushes a
            true neighbour out of the shortlist (approximate mode).
        query_batch: queries per block (bounds the score block together with ``chunk_size``).

    Keys stored in another dtype than ``dtype`` (fp16 or bf16 banks, memory-mapped) are converted
    one chunk at a time into a reused buffer, so the search never holds a second copy of the keys.

    Returns:
        ``(scores, indices)``: float32 [nq, k] and int64 [nq, k] on the keys' device, ordered by
        the faiss tie rule of the module docstring.
    """
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    keys = torch.as_tensor(keys)
    queries = torch.as_tensor(queries, device=keys.device)
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must be 2-D with equal dims")
    n = keys.shape[0]
    if n == 0:
        raise ValueError("the key matrix is empty")
    k = min(int(k), n)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    nq = queries.shape[0]
    out_v = torch.empty(nq, k, dtype=torch.float32, device=keys.device)
    out_i = torch.empty(nq, k, dtype=torch.int64, device=keys.device)
    for q0 in range(0, nq, query_batch):
        q = queries[q0 : q0 + query_batch].to(dtype)
        step = chunk_size or max(2 * k, _CHUNK_ELEMENTS // max(1, q.shape[0]))
        # One score buffer reused by every chunk: fresh 100 MB allocations cost page faults.
        buffer = torch.empty(q.shape[0] * min(step, n), dtype=dtype, device=keys.device)
        chunks = _Chunks(keys, step, dtype)
        if dtype == torch.bfloat16:
            best_v, best_i = _bf16_block(q, chunks, k, buffer)
        else:
            best_v, best_i = _fp32_block(q, chunks, k, buffer)
        out_v[q0 : q0 + q.shape[0]], out_i[q0 : q0 + q.shape[0]] = best_v, best_i
    return out_v, out_i


class _Chunks:
    """``(offset, block)`` over the keys in ``step``-row chunks, each in ``dtype`` (converted into one
    reused buffer when the keys are stored in another dtype)."""

    def __init__(self, keys: torch.Tensor, step: int, dtype: torch.dtype) -> None:
        self.keys, self.step, self.dtype = keys, step, dtype
        self._buffer = None if keys.dtype == dtype else torch.empty(min(step, keys.shape[0]), keys.shape[1], dtype=dtype,
                                                                       device=keys.device)

    def __iter__(self):
        for c0 in range(0, self.keys.shape[0], self.step):
            block = self.keys[c0 : c0 + self.step]
            if self._buffer is not None:
                block = self._buffer[: block.shape[0]].copy_(block)
            yield c0, block


def _fp32_block(q: torch.Tensor, chunks: _Chunks, k: int, buffer: torch.Tensor):
    """Exact search of one query block: per chunk the 2k-1 best keys, merged by the faiss rule."""
    best_v = best_i = None
    for c0, block in chunks:
        scores = torch.mm(q, block.T, out=buffer[: q.shape[0] * block.shape[0]].view(q.shape[0], block.shape[0]))
        v, i = _stable_topk(scores, min(2 * k - 1, block.shape[0]))
        i = i + c0
        best_v, best_i = (v, i) if best_v is None else (torch.cat([best_v, v], 1), torch.cat([best_i, i], 1))
        if best_v.shape[1] >= k:
            best_v, best_i = _faiss_merge(best_v, best_i, k)
    return best_v, best_i


def _bf16_block(q: torch.Tensor, chunks: _Chunks, k: int, buffer: torch.Tensor):
    """bf16 search of one query block: a shortlist by bf16 scores across all chunks, then the
    shortlist rescored once in fp32 (from the keys as stored) and ranked by the faiss rule."""
    keys = chunks.keys
    short = min(max(2 * k, k + 16), keys.shape[0])
    cand_v = cand_i = None
    for c0, block in chunks:
        scores = torch.mm(q, block.T, out=buffer[: q.shape[0] * block.shape[0]].view(q.shape[0], block.shape[0]))
        v, i = torch.topk(scores, min(short, block.shape[0]), dim=1)
        i = i + c0
        if cand_v is not None:
            v, i = torch.cat([cand_v, v], 1), torch.cat([cand_i, i], 1)
            v, pos = torch.topk(v, min(short, v.shape[1]), dim=1)
            i = torch.gather(i, 1, pos)
        cand_v, cand_i = v, i
    return _faiss_merge(_rescore(q, keys, cand_i), cand_i, k)


def faiss_topk(queries: torch.Tensor | np.ndarray, keys: torch.Tensor | np.ndarray, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k with ``faiss.IndexFlatIP`` (CPU, float32), as the original evaluation does."""
    import faiss

    kn = np.ascontiguousarray(torch.as_tensor(keys).float().cpu().numpy())
    qn = np.ascontiguousarray(torch.as_tensor(queries).float().cpu().numpy())
    index = faiss.IndexFlatIP(kn.shape[1])
    index.add(kn)
    d, i = index.search(qn, min(int(k), kn.shape[0]))
    return torch.from_numpy(d), torch.from_numpy(i)


def search(
    queries: torch.Tensor | np.ndarray,
    keys: torch.Tensor | np.ndarray,
    k: int = 5,
    *,
    backend: Literal["auto", "torch", "faiss"] = "auto",
    dtype: torch.dtype | str = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k search with a backend choice.

    ``"auto"`` uses the chunked torch search (:func:`exact_topk`): it gives faiss's results (same
    tie rule for k < 100), bounds memory, runs on GPU and supports bf16. ``"faiss"`` calls
    ``IndexFlatIP`` (optional extra ``bioscan-clip-hf[faiss]``).
    """
    if backend == "faiss":
        if not faiss_available():
            raise ImportError("backend='faiss' needs the optional faiss package: pip install 'bioscan-clip-hf[faiss]'")
        return faiss_topk(queries, keys, k)
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend must be auto, torch or faiss, got {backend!r}")
    return exact_topk(queries, keys, k, dtype=dtype)


def reference_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force numpy statement of the tie rule on a full score matrix (for tests and docs)."""
    nq, n = scores.shape
    k = min(k, n)
    out_v = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for r in range(nq):
        s = scores[r]
        vstar = np.sort(s)[::-1][k - 1]
        at_least = np.flatnonzero(s >= vstar)[:k]
        inserted = at_least[s[at_least] == vstar]
        above = np.flatnonzero(s > vstar)
        need = k - above.size
        chosen = np.concatenate([above, inserted[inserted.size - need :] if need else inserted[:0]])
        chosen = np.array(sorted(chosen.tolist(), key=lambda i: (-s[i], -i)), dtype=np.int64)
        out_i[r], out_v[r] = chosen, s[chosen]
    return out_v, out_i
