"""The 5-mer frequency nearest-neighbour baseline for DNA -> DNA, in the shape of a model, so the
paper's evaluator scores it with exactly the code that scores the trained model.

The profiles are those of ``--method kmer`` (:mod:`bioscan_clip_hf.zero_shot.kmer`: L2-normalised
overlapping k-mer counts, k = 5, windows with a non-ACGT character skipped); this module only wraps
them as ``processor(dna=...)`` + ``model.get_dna_features(...)`` for
``bioscan_clip_hf.evaluation.evaluate_model``.

Example:
    >>> from bioscan_clip_hf.evaluation import evaluate_model
    >>> model, processor = KmerFrequencyModel(k=5), KmerProcessor()
    >>> res = evaluate_model(model, processor, "outputs/realcoi/data", query_splits=("test", "test_unseen"))  # doctest: +SKIP
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import nn

from bioscan_clip_hf.zero_shot.kmer import K, base_codes, profiles_from_codes


class KmerProcessor:
    """Barcodes -> base codes (:func:`~bioscan_clip_hf.zero_shot.kmer.base_codes`), the input of
    :class:`KmerFrequencyModel`."""

    def __call__(self, dna: Sequence[str] | None = None, return_tensors: str = "pt", **_: Any) -> dict[str, torch.Tensor]:
        if dna is None:
            raise ValueError("the k-mer baseline only embeds DNA")
        return {"dna_input_ids": torch.from_numpy(base_codes(dna))}


class KmerFrequencyModel(nn.Module):
    """``get_dna_features`` = the k-mer profiles of the base codes; no trainable weights."""

    def __init__(self, k: int = K):
        super().__init__()
        self.k = k
        self.config = SimpleNamespace(modalities=["dna"], k=k)
        # The evaluator reads the device from the parameters; this one holds no data.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def get_dna_features(self, dna_input_ids: torch.Tensor, dna_attention_mask: torch.Tensor | None = None,
                         normalize: bool = True) -> torch.Tensor:
        return profiles_from_codes(dna_input_ids, self.k, normalize).to(dna_input_ids.device)
