"""How good the answers are on held-out queries: calibration (ECE, reliability), confident-rank
accuracy and coverage, and "not in the library" detection by leaving taxa out.

:func:`identification_quality` fits a :class:`~.calibration.LibraryCalibration` on calibration
queries (``val``) and scores it on other queries (``test``) through the same code that answers
users (:func:`~.identify.identify`). When the queries to score *are* the calibration queries (the
training's validation), it cross-fits instead: two folds, each scored by the calibration fitted
on the other, so no figure comes from a query its own fit has seen.

Per method (``nearest``, ``knn``, ``kmer``, ...): per rank ECE (15 equal-width bins), accuracy
and mean confidence of the top label and the reliability bins; accuracy at the confident rank and
the share of queries confident down to each rank (coverage). Novelty: the queries are searched
against the full library and with their own species left out; AUROC and the operating point
(TPR, FPR at 1/2) of ``novelty_probability``, beside the AUROC of the plain nearest-key distance of
each evidence source (the learned embedding, the 5-mer profile) on the same queries.

Example:
    >>> report = identification_quality(index, sources, cal_set, test_set, methods=("nearest", "kmer"))  # doctest: +SKIP
    >>> report["methods"]["nearest"]["ranks"]["species"]["ece"], report["novelty"]["dna"]["model"]["auroc"]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..taxonomy import RANKS
from .calibration import QUERY_MODALITIES, LibraryCalibration, calibrate_library, leave_out_features
from .evidence import SHORTLIST, KeySource, expected_calibration_error, reliability_bins
from .identify import CONFIDENCE, identify
from .lineages import TaxonIndex
from .novelty import FEATURES_PER_SOURCE, auroc, operating_point

__all__ = ["QuerySet", "identification_quality", "pool_scores", "score_queries"]


@dataclass
class QuerySet:
    """Queries with their vectors per source, which queries have each source, and true lineages."""

    vectors: dict[str, torch.Tensor]
    available: dict[str, np.ndarray]
    lineages: list[tuple]

    def __len__(self) -> int:
        return len(self.lineages)

    def rows(self, rows: np.ndarray) -> "QuerySet":
        idx = torch.as_tensor(rows, dtype=torch.int64)
        return QuerySet({n: v[idx] for n, v in self.vectors.items()}, {n: a[rows] for n, a in self.available.items()},
                        [self.lineages[i] for i in rows])


def score_queries(index: TaxonIndex, sources: dict[str, KeySource], cal: LibraryCalibration, queries: QuerySet,
           methods: Sequence[str], confidence: float) -> dict[str, Any]:
    """Per method and novelty model, the per-query outcomes of ``cal`` on ``queries``; pool the
    outcomes of one or more calibrated splits with :func:`pool_scores`."""
    truths = {r: index.taxa_of(queries.lineages, r) for r in RANKS}
    out: dict[str, Any] = {"methods": {}, "novelty": {}}
    for method in methods:
        for qmod in QUERY_MODALITIES:
            plan = cal.plan(qmod, method)
            if plan is None:
                continue
            rows = np.flatnonzero(np.all([queries.available[s] for s in plan.sources], axis=0) & (truths["species"] >= 0))
            if not len(rows):
                continue
            novelty = cal.novelty_model("+".join(m for m in ("image", "dna") if m in qmod))
            names = list(dict.fromkeys(plan.sources + (novelty.sources if novelty else [])))
            sub = queries.rows(rows)
            result = identify(index, sources, {n: sub.vectors[n] for n in names}, plan, k=1, novelty=novelty,
                              confidence=confidence)
            record = {"sources": plan.sources, "confident_rank": result.confident_rank, "truth": {}, "top": {}, "p": {}}
            for rank in RANKS:
                ids, probs = result.ranks[rank]
                record["truth"][rank] = truths[rank][rows]
                record["top"][rank] = ids[:, 0].numpy()
                record["p"][rank] = probs[:, 0].numpy()
            out["methods"].setdefault(method, {})[qmod] = record
    for qmod, entry in cal.novelty.items():
        model = cal.novelty_model(qmod)
        names_all = list(dict.fromkeys(model.sources + [n for n in ("dna", "image", "kmer") if n in sources]))
        names_all = [n for n in names_all if n in queries.vectors]
        rows = np.flatnonzero(np.all([queries.available[s] for s in names_all], axis=0) & (truths["species"] >= 0))
        if not len(rows):
            continue
        sub = queries.rows(rows)
        sub_truths = {r: t[rows] for r, t in truths.items()}
        variants = leave_out_features(index, sources, sub.vectors, sub_truths, names_all, SHORTLIST, levels=(None, "species"))
        columns = np.concatenate([np.arange(FEATURES_PER_SOURCE) + FEATURES_PER_SOURCE * names_all.index(n)
                                  for n in model.sources])
        scores, distances = {}, {}
        for level in (None, "species"):
            feats, _, usable = variants[level]
            scores[level] = model.absence(feats[usable][:, columns])[:, RANKS.index("species")]
            distances[level] = {n: 1.0 - feats[usable][:, FEATURES_PER_SOURCE * names_all.index(n)] for n in names_all}
        out["novelty"][qmod] = {"sources": model.sources, "scores": scores, "distances": distances}
    return out


def pool_scores(parts: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """Figures from the per-query outcomes of one or more scored parts (folds)."""
    report: dict[str, Any] = {"methods": {}, "novelty": {}}
    keys = {(m, q) for part in parts for m, per in part["methods"].items() for q in per}
    for method, qmod in sorted(keys):
        records = [part["methods"][method][qmod] for part in parts if qmod in part["methods"].get(method, {})]
        ranks = {}
        for rank in RANKS:
            truth = np.concatenate([r["truth"][rank] for r in records])
            top = np.concatenate([r["top"][rank] for r in records])
            p = np.concatenate([r["p"][rank] for r in records])
            known = truth >= 0
            ok = top[known] == truth[known]
            ranks[rank] = {"ece": expected_calibration_error(p[known], ok), "accuracy": float(ok.mean()) if ok.size else None,
                           "confidence": float(p[known].mean()) if ok.size else None, "n": int(known.sum()),
                           "bins": reliability_bins(p[known], ok)}
        confident = [c for r in records for c in r["confident_rank"]]
        right = []
        for r in records:
            for i, c in enumerate(r["confident_rank"]):
                if c is not None:
                    right.append(bool(r["top"][c][i] == r["truth"][c][i]))
        coverage = {rank: float(np.mean([c is not None and RANKS.index(c) >= d for c in confident]))
                    for d, rank in enumerate(RANKS)}
        report["methods"].setdefault(method, {})[qmod] = {
            "sources": records[0]["sources"], "n_queries": len(confident), "ranks": ranks,
            "confident": {"confidence": confidence, "accuracy": float(np.mean(right)) if right else None,
                          "n_confident": len(right), "coverage": coverage},
        }
    for qmod in sorted({q for part in parts for q in part["novelty"]}):
        entries = [part["novelty"][qmod] for part in parts if qmod in part["novelty"]]
        neg = np.concatenate([e["scores"][None] for e in entries])
        pos = np.concatenate([e["scores"]["species"] for e in entries])
        baselines = {}
        for name in entries[0]["distances"][None]:
            baselines[name] = auroc(np.concatenate([e["distances"][None][name] for e in entries]),
                                    np.concatenate([e["distances"]["species"][name] for e in entries]))
        report["novelty"][qmod] = {"sources": entries[0]["sources"], "model": operating_point(neg, pos),
                                   "nearest_distance_auroc": baselines,
                                   "definition": "in library: queries vs the full library; absent: the same queries "
                                                 "with every key of their own species left out"}
    return report


def identification_quality(
    index: TaxonIndex,
    sources: dict[str, KeySource],
    calibration_queries: QuerySet | None,
    queries: QuerySet,
    methods: Sequence[str] = ("nearest",),
    confidence: float = CONFIDENCE,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit on ``calibration_queries`` and score ``queries`` (None: 2-fold cross-fitting on ``queries``).

    Returns ``{"calibration": {...}, "methods": {method: {query modality: {"sources", "n_queries",
    "ranks": {rank: {ece, accuracy, confidence, n, bins}}, "confident": {...}}}}, "novelty":
    {query modality: {"sources", "model": {auroc, tpr, fpr, threshold, n_in_library, n_absent},
    "nearest_distance_auroc": {source: auroc}}}}``.
    """
    if calibration_queries is not None:
        cal = calibrate_library(index, sources, calibration_queries.vectors, calibration_queries.available,
                                calibration_queries.lineages, methods, progress)
        parts = [score_queries(index, sources, cal, queries, methods, confidence)]
        how = {"fitted_on": len(calibration_queries), "cross_fitted": False}
    else:
        folds = np.random.default_rng(0).permutation(len(queries)) % 2
        parts = []
        for f in (0, 1):
            fit, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            part_set = queries.rows(fit)
            cal = calibrate_library(index, sources, part_set.vectors, part_set.available, part_set.lineages, methods, progress)
            parts.append(score_queries(index, sources, cal, queries.rows(held), methods, confidence))
        how = {"fitted_on": len(queries), "cross_fitted": True}
    report = pool_scores(parts, confidence)
    report["calibration"] = how
    return report
