"""The answer for a batch of specimens: per-rank distributions, novelty, the deepest confident rank.

:func:`identify` gathers each evidence source's shortlist, pools and fuses it into per-rank
probabilities (:mod:`.evidence`, with the temperatures fitted when the bank was built), computes
the absence probabilities of :class:`~.novelty.NoveltyModel` from its own sources, and derives:

* ``novel_rank``: the highest rank at which the specimen appears absent from the library;
* ``confident_rank``: the deepest rank r such that, at r and every rank above it,
  P(in the library at r) x P(label at r) >= ``confidence`` (default 0.9). Because the first factor
  shrinks and the second never grows going down the ranks, the confident ranks are the prefix
  order .. confident_rank, and a rank called absent (absence >= 1/2) is never confident.

Example:
    >>> import torch
    >>> from bioscan_clip_hf.zero_shot.evidence import KeySource
    >>> from bioscan_clip_hf.zero_shot.lineages import TaxonIndex
    >>> index = TaxonIndex.from_lineages([("D", "a", "G", "G 1"), ("H", "b", "X", "X 1")])
    >>> keys = torch.eye(2)
    >>> out = identify(index, {"dna": KeySource("dna", keys, torch.arange(2))}, {"dna": keys[:1]},
    ...                Plan(["dna"], [0.05], "nearest", rest=-5.0), k=2)
    >>> index.label("genus", int(out.ranks["genus"][0][0, 0])), out.confident_rank
    ('G', ['species'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..taxonomy import RANKS
from .evidence import POOLING, SHORTLIST, Candidates, KeySource, Shortlist, shortlist_depth
from .lineages import TaxonIndex
from .novelty import NoveltyModel, novel_rank, novelty_features

__all__ = ["CONFIDENCE", "Identification", "Plan", "check_confidence", "confident_ranks", "identify", "shortlists"]

CONFIDENCE = 0.9


@dataclass
class Plan:
    """Which sources answer, and the fitted map of their similarities to probabilities (one entry of
    a bank calibration; see :class:`~.evidence.Candidates` for ``temperatures``, ``rest``, ``floor``).

    ``dropped`` names the sources the query had but the plan leaves out, with the reason
    (e.g. a photo whose evidence did not help on validation queries).
    """

    sources: list[str]
    temperatures: list[float]
    method: str = "nearest"
    rest: float = 0.0
    floor: float = 0.0
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def pooling(self) -> str:
        return POOLING[self.method]


@dataclass
class Identification:
    """Arrays for a batch of queries (see :func:`identify`)."""

    ranks: dict[str, tuple[torch.Tensor, torch.Tensor]]
    nearest_key: torch.Tensor
    nearest_similarity: torch.Tensor
    absence: np.ndarray | None
    novel_rank: list[str | None]
    confident_rank: list[str | None]
    shortlists: dict[str, Shortlist] = field(default_factory=dict)


def shortlists(
    sources: dict[str, KeySource], vectors: dict[str, torch.Tensor], names: Sequence[str], k: int,
    pooling: str = "max", exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Shortlist]:
    """One shortlist per named source (``exclude`` as in :meth:`KeySource.shortlist`)."""
    return [sources[name].shortlist(vectors[name], k, pooling, exclude) for name in names]


def check_confidence(confidence: Any) -> float:
    """``confidence`` as a float in (0, 1] (the level of ``confident_rank``); ValueError naming the
    value for anything else, NaN included.

    >>> check_confidence("0.95")
    0.95
    """
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:  # also false for NaN
        raise ValueError(f"confidence must be a probability in (0, 1], got {confidence!r}")
    return value


def confident_ranks(probs: dict[str, torch.Tensor], absence: np.ndarray | None, confidence: float = CONFIDENCE) -> list[str | None]:
    """Deepest rank per query where P(in library) x P(label) stays >= ``confidence`` from the order down."""
    n = next(iter(probs.values())).shape[0]
    out: list[str | None] = [None] * n
    alive = np.ones(n, dtype=bool)
    for d, rank in enumerate(RANKS):
        p = probs[rank].double().numpy()
        if absence is not None:
            p = p * (1.0 - absence[:, d])
        alive &= p >= confidence
        for i in np.flatnonzero(alive):
            out[i] = rank
    return out


def identify(
    index: TaxonIndex,
    sources: dict[str, KeySource],
    vectors: dict[str, torch.Tensor],
    plan: Plan,
    k: int = 5,
    novelty: NoveltyModel | None = None,
    confidence: float = CONFIDENCE,
) -> Identification:
    """Identify a batch of queries.

    Args:
        index: the library's taxa (the sources' leaf ids refer to it).
        sources: evidence sources by name; ``vectors``: each source's query vectors ``[nq, d]``.
        plan: sources, fitted parameters and method (``nearest``/``knn``/``kmer``/``text``).
        k: alternatives kept per rank (the evidence itself does not depend on it).
        novelty: the bank's novelty model for these queries' modality (None: no verdict).
        confidence: the level of ``confident_rank``.
    """
    depth = shortlist_depth(plan.method)
    shorts = dict(zip(plan.sources, shortlists(sources, vectors, plan.sources, depth, plan.pooling)))
    library = np.zeros(len(index.leaves), dtype=bool)
    for name in plan.sources:
        library[sources[name].leaf.numpy()] = True
    cand = Candidates([shorts[s] for s in plan.sources], index, library)
    per_rank = cand.rank_probabilities(cand.probabilities(plan.temperatures, plan.rest, plan.floor))
    ranks = {r: (ids[:, :k], p[:, :k]) for r, (ids, p) in per_rank.items()}
    first = shorts[plan.sources[0]]
    absence = None
    if novelty is not None:
        feats = []
        for name in novelty.sources:
            short = shorts.get(name) if depth == SHORTLIST else None
            if short is None:
                short = sources[name].shortlist(vectors[name], SHORTLIST)
            feats.append(novelty_features(short, index))
        absence = novelty.absence(torch.cat(feats, dim=1).numpy())
    top = {r: p[:, 0] for r, (_, p) in ranks.items()}
    return Identification(
        ranks=ranks,
        nearest_key=first.keys[:, 0],
        nearest_similarity=first.scores[:, 0],
        absence=absence,
        novel_rank=novel_rank(absence, novelty.threshold) if novelty is not None else [None] * first.scores.shape[0],
        confident_rank=confident_ranks(top, absence, confidence),
        shortlists=shorts,
    )
