"""k-mer frequency evidence for DNA queries: alignment-free, training-free, exact.

A barcode becomes the L2-normalised vector of its overlapping k-mer counts (k = 5: 1,024
dimensions); windows containing a character other than A, C, G, T (``N``, IUPAC ambiguity codes,
padding) are skipped. The cosine similarity of two such profiles is the classic alignment-free
barcode distance (``reference/identification.md`` §3), the baseline every learned DNA score must
beat. The nearest keys of a query come from the same exact search as the learned embeddings
(:func:`~bioscan_clip_hf.zero_shot.search.exact_topk`), so ``--method kmer``, the novelty features,
the evaluation's 5-mer baseline and ``training/kmer_baseline.py`` share this one implementation.

Counting is vectorised: base codes -> rolling k-mer index -> one ``bincount`` per chunk of
sequences (about a million 658-nt barcodes per minute on one busy core).

Example:
    >>> import torch
    >>> p = kmer_profiles(["ACGTACGTAC", "ACGTACGTAC", "TTTTTTTTTT"])
    >>> p.shape, round(float(p[0] @ p[1]), 4), round(float(p[0] @ p[2]), 4)
    (torch.Size([3, 1024]), 1.0, 0.0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["K", "PAD_CODE", "base_codes", "kmer_profiles", "profiles_from_codes"]

K = 5
# Base codes: A0 C1 G2 T3, any other character 4, padding 5 (k-mers with a code > 3 are skipped).
PAD_CODE = 5
_CODES = np.full(256, 4, dtype=np.uint8)
for _i, _base in enumerate(b"ACGT"):
    _CODES[_base] = _i
    _CODES[_base + 32] = _i  # lower case
# Rows per counting chunk: bounds the [rows, length] index arrays to about 10 MB.
_CHUNK_ROWS = 4096


def base_codes(sequences: Sequence[str]) -> np.ndarray:
    """``[n, max_len]`` uint8 base codes (A0 C1 G2 T3, other 4, padding 5) of ``sequences``."""
    encoded = [np.frombuffer(s.encode("ascii", "replace"), dtype=np.uint8) for s in sequences]
    width = max((len(e) for e in encoded), default=0)
    codes = np.full((len(encoded), width), PAD_CODE, dtype=np.uint8)
    for row, e in zip(codes, encoded):
        row[: len(e)] = _CODES[e]
    return codes


def profiles_from_codes(codes: np.ndarray | torch.Tensor, k: int = K, normalize: bool = True) -> torch.Tensor:
    """k-mer count profiles ``[n, 4**k]`` (float32) of base-code rows (see :func:`base_codes`).

    A row without a single valid k-mer (too short, all ``N``) is all zeros, also when normalised.
    """
    codes = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.uint8)
    n, length = codes.shape
    width = 4**k
    out = np.zeros((n, width), dtype=np.float32)
    windows = length - k + 1
    for start in range(0, n if windows > 0 else 0, _CHUNK_ROWS):
        block = codes[start : start + _CHUNK_ROWS]
        index = np.zeros((block.shape[0], windows), dtype=np.int32)
        skip = np.zeros((block.shape[0], windows), dtype=bool)
        for p in range(k):
            part = block[:, p : p + windows]
            index = index * 4 + (part & 3)
            skip |= part > 3
        # Skipped windows count into one extra column per row, dropped after the single bincount.
        index[skip] = width
        index += (np.arange(block.shape[0], dtype=np.int32) * (width + 1))[:, None]
        counts = np.bincount(index.ravel(), minlength=block.shape[0] * (width + 1))
        out[start : start + block.shape[0]] = counts.reshape(block.shape[0], width + 1)[:, :width]
    profiles = torch.from_numpy(out)
    return torch.nn.functional.normalize(profiles, dim=1) if normalize else profiles


def kmer_profiles(sequences: Sequence[str], k: int = K, normalize: bool = True) -> torch.Tensor:
    """L2-normalised overlapping k-mer count profiles ``[n, 4**k]`` of barcodes (case-insensitive)."""
    profiles = torch.zeros(len(sequences), 4**k, dtype=torch.float32)
    for start in range(0, len(sequences), _CHUNK_ROWS):
        chunk = sequences[start : start + _CHUNK_ROWS]
        profiles[start : start + len(chunk)] = profiles_from_codes(base_codes(chunk), k, normalize)
    return profiles
