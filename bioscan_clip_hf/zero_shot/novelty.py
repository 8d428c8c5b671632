"""Novel-species detection from the distance to the nearest key, calibrated on seen vs unseen queries.

The distance is cosine distance, ``1 - similarity`` of a query to its nearest key. Queries of
species present in the keys (``val``) tend to land closer to a key than queries of species the
keys lack (``val_unseen``); the threshold that best separates the two (Youden's J = TPR - FPR, with
"unseen" as the positive class) is stored with the key bank. Per rank, a second threshold marks how
far a query may be from its nearest key for that key's label at that rank to still be trusted
(same criterion, "nearest label wrong" as the positive class); the deepest rank within its
threshold is reported as ``confident_rank``.

Example:
    >>> cal = calibrate_novelty([0.05, 0.1, 0.12], [0.3, 0.25, 0.11])
    >>> round(cal.auroc, 3), cal.is_novel(0.4)
    (0.889, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..taxonomy import RANKS

__all__ = ["NoveltyCalibration", "auroc", "best_threshold", "calibrate_novelty", "calibrate_ranks"]


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


def best_threshold(negatives: Sequence[float], positives: Sequence[float]) -> tuple[float, float, float]:
    """Threshold t maximising TPR - FPR for the rule "positive if score > t".

    Returns ``(t, tpr, fpr)``; t is the midpoint between adjacent distinct scores. Ties between
    thresholds go to the smallest one.
    """
    neg = np.sort(np.asarray(negatives, dtype=np.float64))
    pos = np.sort(np.asarray(positives, dtype=np.float64))
    if neg.size == 0 or pos.size == 0:
        raise ValueError("best_threshold needs at least one negative and one positive score")
    values = np.unique(np.concatenate([neg, pos]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2.0, [values[-1]]])
    tpr = 1.0 - np.searchsorted(pos, candidates, side="right") / pos.size
    fpr = 1.0 - np.searchsorted(neg, candidates, side="right") / neg.size
    best = int(np.argmax(tpr - fpr))
    return float(candidates[best]), float(tpr[best]), float(fpr[best])


@dataclass
class NoveltyCalibration:
    """Thresholds on the nearest-key cosine distance for one query modality.

    Attributes:
        threshold: distance above which a query is flagged ``is_novel_species``.
        auroc: seen-vs-unseen separability of the distance (1 = perfect, 0.5 = chance).
        tpr, fpr: share of unseen / seen calibration queries flagged at ``threshold``.
        rank_thresholds: per rank, the largest distance at which the nearest key's label is trusted.
        n_seen, n_unseen: calibration query counts.
    """

    threshold: float
    auroc: float
    tpr: float
    fpr: float
    n_seen: int
    n_unseen: int
    rank_thresholds: dict[str, float] = field(default_factory=dict)

    def is_novel(self, distance: float) -> bool:
        """Whether a query at ``distance`` from its nearest key is likely a species the keys lack."""
        return bool(distance > self.threshold)

    def confident_rank(self, distance: float) -> str | None:
        """The deepest rank whose threshold ``distance`` stays within (None if not even order)."""
        deepest = None
        for rank in RANKS:
            limit = self.rank_thresholds.get(rank)
            if limit is not None and distance <= limit:
                deepest = rank
        return deepest

    def to_dict(self) -> dict:
        """JSON-ready; infinite thresholds (a rank always / never trusted) become "inf" / "-inf",
        since strict JSON (the Hub, JavaScript) has no infinities."""
        data = asdict(self)
        for key in ("threshold", "auroc", "tpr", "fpr"):
            data[key] = _json_float(data[key])
        data["rank_thresholds"] = {rank: _json_float(value) for rank, value in self.rank_thresholds.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NoveltyCalibration":
        data = dict(data)
        for key in ("threshold", "auroc", "tpr", "fpr"):
            data[key] = float(data[key])
        data["rank_thresholds"] = {rank: float(value) for rank, value in data.get("rank_thresholds", {}).items()}
        return cls(**data)


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def calibrate_ranks(distances: Sequence[float], correct: dict[str, Sequence[bool]]) -> dict[str, float]:
    """Per-rank trust thresholds from nearest distances and whether the nearest label was right.

    Thresholds are made monotone (species <= genus <= family <= order), since a key close enough to
    trust its species must be close enough to trust its order. A rank where every calibration
    prediction was right (or every one wrong) gets +inf (or -inf).
    """
    d = np.asarray(distances, dtype=np.float64)
    out: dict[str, float] = {}
    for rank in RANKS:
        if rank not in correct:
            continue
        ok = np.asarray(correct[rank], dtype=bool)
        if ok.all():
            out[rank] = float("inf")
        elif not ok.any():
            out[rank] = float("-inf")
        else:
            out[rank], _, _ = best_threshold(d[ok], d[~ok])
    # Enforce order >= family >= genus >= species, walking from species upwards.
    running = float("-inf")
    for rank in reversed(RANKS):
        if rank in out:
            running = max(running, out[rank])
            out[rank] = running
    return out


def calibrate_novelty(
    seen_distances: Sequence[float],
    unseen_distances: Sequence[float],
    rank_correct: dict[str, Sequence[bool]] | None = None,
) -> NoveltyCalibration:
    """Calibrate the novelty threshold on seen (``val``) and unseen (``val_unseen``) queries.

    ``rank_correct`` (optional) maps rank -> per query (seen then unseen, same order as the
    distances) whether the nearest key's label at that rank was right; it sets ``rank_thresholds``.
    """
    threshold, tpr, fpr = best_threshold(seen_distances, unseen_distances)
    cal = NoveltyCalibration(
        threshold=threshold,
        auroc=auroc(seen_distances, unseen_distances),
        tpr=tpr,
        fpr=fpr,
        n_seen=len(seen_distances),
        n_unseen=len(unseen_distances),
    )
    if rank_correct:
        cal.rank_thresholds = calibrate_ranks(list(seen_distances) + list(unseen_distances), rank_correct)
    return cal
