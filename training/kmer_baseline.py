"""A k-mer frequency nearest-neighbour baseline for DNA -> DNA, scored by the paper's evaluator.

Each barcode becomes the L2-normalised vector of its overlapping k-mer counts (k = 5: 1,024
dimensions; windows containing a non-ACGT character are skipped), and classification is the
evaluator's exact cosine nearest key, so the baseline and the trained model are measured by
exactly the same code (``bioscan_clip_hf.evaluation.evaluate_model``).

Example:
    >>> from bioscan_clip_hf.evaluation import evaluate_model
    >>> model, processor = KmerFrequencyModel(k=5), KmerProcessor()
    >>> res = evaluate_model(model, processor, "outputs/realcoi/data", query_splits=("test", "test_unseen"))  # doctest: +SKIP
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

_CODES = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODES[_b] = _i
PAD = 5


class KmerProcessor:
    """Barcodes -> base codes (A0 C1 G2 T3, other 4, padding 5), the input of :class:`KmerFrequencyModel`."""

    def __call__(self, dna: Sequence[str] | None = None, return_tensors: str = "pt", **_: Any) -> dict[str, torch.Tensor]:
        if dna is None:
            raise ValueError("the k-mer baseline only embeds DNA")
        seqs = [_CODES[np.frombuffer(s.upper().encode("ascii", "replace"), dtype=np.uint8)] for s in dna]
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), PAD, dtype=np.int64)
        for row, s in zip(ids, seqs):
            row[: len(s)] = s
        return {"dna_input_ids": torch.from_numpy(ids)}


class KmerFrequencyModel(nn.Module):
    """``get_dna_features`` = L2-normalised overlapping k-mer counts; no trainable weights."""

    def __init__(self, k: int = 5):
        super().__init__()
        self.k = k
        self.config = SimpleNamespace(modalities=["dna"], k=k)
        # The evaluator reads the device from the parameters; this one holds no data.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def get_dna_features(self, dna_input_ids: torch.Tensor, dna_attention_mask: torch.Tensor | None = None,
                         normalize: bool = True) -> torch.Tensor:
        ids = dna_input_ids
        windows = ids.unfold(1, self.k, 1)  # [B, L-k+1, k]
        valid = (windows < 4).all(dim=-1)
        powers = 4 ** torch.arange(self.k - 1, -1, -1, device=ids.device)
        index = (windows.clamp(max=3) * powers).sum(-1)
        counts = torch.zeros(ids.shape[0], 4**self.k, device=ids.device)
        counts.scatter_add_(1, index, valid.float())
        return nn.functional.normalize(counts, dim=-1) if normalize else counts
