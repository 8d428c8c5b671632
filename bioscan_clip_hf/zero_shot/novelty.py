""""Not in the reference library", calibrated by leaving taxa out of the keys.

CLIBD's unseen species are unseen in *training* but present among the keys, so contrasting them
with seen species measures the wrong thing (``reference/identification.md`` §3). Here the
calibration queries (validation records, all of taxa in the library) are searched twice or more:
once against the full library, and once with every key of their own species removed (then genus,
family, order), which is exactly what a specimen of a species missing from the library looks like.

Features of a query (per evidence source, :func:`novelty_features`): the similarity of the nearest
key, and per rank the margin between it and the nearest key of *another* taxon at that rank (a
query of a library species sits closer to its own species than to the next one; a query of a
missing species sits between several relatives).

A :class:`NoveltyModel` holds one logistic regression per rank on these features (the nearest
similarity and that rank's margin, per source: :func:`flag_columns`), fitted with the two classes
weighted equally (a prior of 1/2):

* ``species``: P(species absent), on full-library (0) vs own-species-removed (1) queries;
* ``genus``: P(genus absent | species absent), on species-removed vs genus-removed queries;
  ``family`` and ``order`` likewise one rank up.

The absence probability at a rank is the product up to it (so it never grows towards the order),
``novelty_probability`` is the species one, and ``novel_rank`` the highest rank whose absence
probability reaches the threshold (1/2): ``species`` = a new species of a known genus, ``genus`` =
a new genus of a known family, ...; ``None`` when the specimen appears to be in the library.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(1, 0.3, (50, 2)), rng.normal(-1, 0.3, (50, 2))])
    >>> y = np.array([0] * 50 + [1] * 50)
    >>> model = LogisticModel.fit(x, y)
    >>> bool(model.predict(np.array([[1.0, 1.0]]))[0] < 0.1), bool(model.predict(np.array([[-1.0, -1.0]]))[0] > 0.9)
    (True, True)
    >>> round(auroc([0.1, 0.2], [0.3, 0.15]), 2)
    0.75
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..taxonomy import RANKS
from .evidence import Shortlist
from .lineages import TaxonIndex

__all__ = [
    "FEATURES_PER_SOURCE", "NOVELTY_THRESHOLD", "LogisticModel", "NoveltyModel", "auroc", "flag_columns", "novel_rank",
    "novelty_features",
    "operating_point",
]

NOVELTY_THRESHOLD = 0.5
# Ranks from the species up: the order in which taxa are left out.
UPWARD = tuple(reversed(RANKS))


def auroc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """Area under the ROC curve of a score that should be larger for ``positives``.

    Mann-Whitney U with ties counted half: P(pos > neg) + 0.5 P(pos == neg). NaN if a side is empty.
    """
    neg = np.asarray(negatives, dtype=np.float64)
    pos = np.asarray(positives, dtype=np.float64)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    scores = np.concatenate([neg, pos])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[neg.size :].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def operating_point(negatives: Sequence[float], positives: Sequence[float], threshold: float = NOVELTY_THRESHOLD) -> dict:
    """AUROC and the rates at the threshold actually used ("positive if score >= threshold")."""
    neg, pos = np.asarray(negatives, dtype=np.float64), np.asarray(positives, dtype=np.float64)
    return {"auroc": auroc(neg, pos), "threshold": threshold,
            "tpr": float((pos >= threshold).mean()) if pos.size else float("nan"),
            "fpr": float((neg >= threshold).mean()) if neg.size else float("nan"),
            "n_in_library": int(neg.size), "n_absent": int(pos.size)}


def novelty_features(short: Shortlist, index: TaxonIndex) -> torch.Tensor:
    """``[nq, 1 + 4]``: nearest similarity, then per rank (species, genus, family, order) its margin
    over the nearest key of another taxon at that rank (the shortlist's bound stands in when the
    shortlist holds no other taxon)."""
    s1 = short.scores[:, 0]
    finite = torch.isfinite(short.scores)
    s1 = torch.where(finite[:, 0], s1, torch.zeros_like(s1))
    columns = [s1]
    for rank in UPWARD:
        taxa = torch.where(short.leaves >= 0, index.leaf_table(rank)[short.leaves], short.leaves)
        other = (taxa != taxa[:, :1]) & finite
        best_other = torch.where(other, short.scores, torch.full_like(short.scores, float("-inf"))).max(dim=1).values
        best_other = torch.where(torch.isfinite(best_other), best_other, short.bound)
        columns.append(torch.where(finite[:, 0], s1 - best_other, torch.zeros_like(s1)))
    return torch.stack(columns, dim=1).float()


FEATURES_PER_SOURCE = 1 + len(UPWARD)


def flag_columns(rank: str, n_sources: int) -> np.ndarray:
    """The features the flag at ``rank`` reads: per source, the nearest similarity and the margin at
    that rank (the margins at other ranks lowered the cross-fitted AUROC of the species flag on the
    synthetic and real COI validation queries)."""
    own = 1 + UPWARD.index(rank)
    return np.array([block * FEATURES_PER_SOURCE + c for block in range(n_sources) for c in (0, own)])


@dataclass
class LogisticModel:
    """Logistic regression on standardised features (Newton's method, a small L2 penalty)."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, l2: float = 1e-2) -> "LogisticModel":
        """Fit on features ``x`` [n, f], labels ``y`` [n] (0/1) and optional sample ``weights``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        design = np.hstack([(x - mean) / scale, np.ones((len(y), 1))])
        penalty = np.full(design.shape[1], 2 * l2)
        penalty[-1] = 0.0  # the bias is not shrunk
        params = np.zeros(design.shape[1])
        for _ in range(100):  # a handful of steps converge; the penalty keeps the Hessian definite
            p = 1.0 / (1.0 + np.exp(-np.clip(design @ params, -50, 50)))
            grad = design.T @ (w * (p - y)) + penalty * params
            hess = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            params -= step
            if np.abs(step).max() < 1e-9:
                break
        return cls(mean.tolist(), scale.tolist(), params[:-1].tolist(), float(params[-1]))

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(class 1) for features ``x`` [n, f]."""
        x = np.asarray(x, dtype=np.float64)
        z = ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


@dataclass
class NoveltyModel:
    """Absence probabilities per rank from novelty features (see module docstring).

    Attributes:
        sources: evidence sources whose :func:`novelty_features` are concatenated, in order.
        flags: per rank, the logistic model of P(absent at rank | absent one rank below).
        validation: how the model separated held-out calibration queries (cross-fitted):
            per rank ``{auroc, threshold, tpr, fpr, n_in_library, n_absent}``.
        threshold: absence probability from which a rank is called absent.
    """

    sources: list[str]
    flags: dict[str, LogisticModel]
    validation: dict[str, dict] = field(default_factory=dict)
    threshold: float = NOVELTY_THRESHOLD

    def absence(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[nq, 4]`` P(absent from the library) at order, family, genus, species (``RANKS`` order),
        from the :func:`novelty_features` of :attr:`sources`, concatenated in that order."""
        x = np.asarray(features, dtype=np.float64)
        out = np.zeros((x.shape[0], len(RANKS)))
        running = np.ones(x.shape[0])
        for rank in UPWARD:
            model = self.flags.get(rank)
            running = running * (model.predict(x[:, flag_columns(rank, len(self.sources))]) if model is not None else 0.0)
            out[:, RANKS.index(rank)] = running
        return out

    def to_dict(self) -> dict:
        return {"sources": list(self.sources), "threshold": self.threshold, "validation": self.validation,
                "flags": {rank: vars(model) for rank, model in self.flags.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "NoveltyModel":
        return cls(list(data["sources"]), {rank: LogisticModel(**m) for rank, m in data["flags"].items()},
                   dict(data.get("validation", {})), float(data.get("threshold", NOVELTY_THRESHOLD)))


def novel_rank(absence: np.ndarray, threshold: float = NOVELTY_THRESHOLD) -> list[str | None]:
    """Per query, the highest rank whose absence probability reaches ``threshold`` (None: in the library)."""
    out: list[str | None] = []
    for row in np.asarray(absence):
        absent = [rank for d, rank in enumerate(RANKS) if row[d] >= threshold]
        out.append(absent[0] if absent else None)
    return out
