"""Fitting a library's calibration on validation queries: temperatures per query modality x method,
and the novelty model per query modality, by leaving taxa out.

A :class:`LibraryCalibration` is what a key bank stores in ``bank.json`` (strict JSON):

* ``probability["<query modality>/<method>"]``: the :class:`~.identify.Plan`: evidence sources,
  one temperature per source, the rest weight and the floor (:class:`~.evidence.Candidates`),
  fitted by the NLL of the true taxa over the four ranks, plus validation figures. Query
  modalities are ``dna``, ``image`` and ``image+dna`` (a specimen with both). Where several source
  sets could answer (a barcode's learned embedding with or without its 5-mer profile; a photo with
  the barcode or not), the fullest set competes with the alternatives on held-out NLL (fitted on
  half the queries, scored on the other half) and is kept only when it wins by ``FUSION_MARGIN``;
  what is left out is recorded with the reason (``dropped``), and an answer without its photo
  says so in ``notes``.
* ``novelty["<query modality>"]``: a :class:`~.novelty.NoveltyModel`; the candidate feature sets
  (learned embedding, 5-mer profile, both) compete on 5-fold cross-fitted AUROC of the species flag,
  the fullest kept unless another beats it by ``NOVELTY_MARGIN``.

Methods and their sources: ``nearest`` / ``knn``: the learned embedding of each query modality
against the bank's keys (and the barcode's 5-mer profile, see above); ``kmer``: 5-mer profiles of
the barcode against the bank's barcodes (plus the photo's embedding, for ``image+dna``); ``text``:
the query embeddings against the prompts of the bank's lineages.

Example:
    >>> cal = LibraryCalibration.from_dict({"format": FORMAT, "probability": {}, "novelty": {}})
    >>> cal.plan("dna", "nearest") is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import finite_json
from ..taxonomy import RANKS
from .evidence import (
    POOLING, SHORTLIST, Candidates, KeySource, Shortlist, expected_calibration_error, fit_temperatures, mean_nll, shortlist_depth,
)
from .identify import Plan, shortlists
from .lineages import TaxonIndex
from .novelty import FEATURES_PER_SOURCE, UPWARD, LogisticModel, NoveltyModel, flag_columns, novelty_features, operating_point

__all__ = ["FORMAT", "METHODS", "QUERY_MODALITIES", "CalibrationMismatch", "LibraryCalibration", "calibrate_library",
           "candidate_sources", "leave_out_features", "novelty_candidates", "stored_sources", "summary_lines",
           "unusable_reason"]

# Bumped whenever the stored plans or novelty models change meaning or shape.
FORMAT = 3
METHODS = ("nearest", "knn", "kmer", "text")
QUERY_MODALITIES = ("dna", "image", "image+dna")
_LEVELS = (None, *UPWARD)
# Nats of held-out NLL per query by which fused evidence must beat the alternative.
FUSION_MARGIN = 0.005
# Cross-fitted AUROC by which a smaller novelty feature set must beat the fullest one.
NOVELTY_MARGIN = 0.01


@dataclass
class LibraryCalibration:
    """Probability plans and novelty models of one library (see module docstring)."""

    probability: dict[str, dict[str, Any]] = field(default_factory=dict)
    novelty: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def plan(self, query_modality: str, method: str) -> Plan | None:
        entry = self.probability.get(f"{query_modality}/{method}")
        if not entry:
            return None
        return Plan(list(entry["sources"]), list(entry["temperatures"]), method, float(entry["rest"]), float(entry["floor"]),
                    dropped=dict(entry.get("dropped", {})))

    def novelty_model(self, query_modality: str) -> NoveltyModel | None:
        entry = self.novelty.get(query_modality)
        return NoveltyModel.from_dict(entry) if entry else None

    def to_dict(self) -> dict[str, Any]:
        return finite_json({"format": FORMAT, "probability": self.probability, "novelty": self.novelty, **self.info})

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "LibraryCalibration | None":
        """The stored calibration, or None for a bank without one.

        Raises:
            CalibrationMismatch: it was written by another version of this code (another format,
                or plans / novelty models of another shape): :func:`unusable_reason` says why.
        """
        if not data:
            return None
        reason = unusable_reason(data)
        if reason is not None:
            raise CalibrationMismatch(reason)
        info = {k: v for k, v in data.items() if k not in ("format", "probability", "novelty")}
        return cls(dict(data.get("probability", {})), dict(data.get("novelty", {})), info)


class CalibrationMismatch(ValueError):
    """A stored calibration this version of the code cannot apply (see :func:`unusable_reason`)."""


def unusable_reason(data: dict[str, Any]) -> str | None:
    """Why a stored calibration cannot be applied by this code (None: it can).

    A calibration is fitted for one layout of evidence and novelty features; one written by another
    version (another ``format``, or models whose shapes do not fit the features this code computes)
    would give wrong probabilities or fail, so it is not used at all.
    """
    if data.get("format") != FORMAT:
        return f"its calibration has format {data.get('format')!r}, this version of bioscan-clip-hf reads format {FORMAT}"
    try:
        for key, entry in data.get("probability", {}).items():
            qmod, method = key.split("/")
            if qmod not in QUERY_MODALITIES or method not in METHODS or len(entry["temperatures"]) != len(entry["sources"]):
                return f"its calibration plan {key!r} does not fit this version's evidence sources"
        for qmod, entry in data.get("novelty", {}).items():
            width = len(flag_columns("species", len(entry["sources"])))
            if qmod not in QUERY_MODALITIES or any(len(m["weights"]) != width or len(m["mean"]) != width
                                                   for m in entry["flags"].values()):
                return f"its {qmod} novelty model does not fit this version's novelty features"
    except (AttributeError, KeyError, TypeError, ValueError):
        return "its calibration is not laid out as this version of bioscan-clip-hf writes it"
    return None


def stored_sources(data: dict[str, Any]) -> set[str]:
    """The evidence sources a stored calibration's plans and novelty models read (its layout checked
    by :func:`unusable_reason` first)."""
    return {name for part in ("probability", "novelty") for entry in data.get(part, {}).values() for name in entry["sources"]}


def candidate_sources(query_modality: str, method: str, available: Sequence[str]) -> list[list[str]]:
    """The source sets that can answer ``query_modality`` with ``method``, the fused set first,
    then the alternative it must beat: for a barcode, each of its evidence sources alone; for a
    specimen with a photo, the same without the photo.
    For ``nearest`` / ``knn`` a barcode's evidence is its learned embedding and, when the library
    stores barcodes, its 5-mer profile. Empty when the library cannot use the query's modalities."""
    feats = {"dna": ["dna"], "image": ["image"], "image+dna": ["dna", "image"]}[query_modality]
    if method in ("nearest", "knn"):
        combined = [c for c in ("averaged", "concatenated") if c in available]
        if combined:
            return [[combined[0]]] if query_modality == "image+dna" else []
        if any(n not in available for n in feats):
            return []
        # The barcode's 5-mer profile joins its learned embedding when the library has barcodes.
        extra = ["kmer"] if "dna" in feats and "kmer" in available else []
        full = feats + extra
        if query_modality == "image+dna":  # the question is whether the photo helps the barcode
            return [full, [n for n in full if n != "image"]]
        return [full] + [[n] for n in full if len(full) > 1]
    elif method == "kmer":
        if "dna" not in feats:
            return []
        names = ["kmer"] + [f for f in feats if f == "image"]
    elif method == "text":
        names = [f"text:{f}" for f in feats]
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if any(n not in available for n in names):
        return []
    if len(names) > 1:  # the fused set against the barcode's evidence alone
        return [names, [n for n in names if n not in ("image", "text:image")]]
    return [names]


def novelty_candidates(query_modality: str, available: Sequence[str]) -> list[list[str]]:
    """Feature source sets for the novelty model, the fullest first: the learned and the 5-mer
    sources of ``query_modality`` together, each alone, and for ``image+dna`` also without the photo."""
    learned = [n for n in (candidate_sources(query_modality, "nearest", available) or [[]])[0] if n != "kmer"]
    kmer = ["kmer"] if "dna" in query_modality and "kmer" in available else []
    if not learned:
        return [kmer] if kmer and query_modality == "dna" else []
    sets = [learned + kmer, learned] + ([kmer] if kmer else [])
    if query_modality == "image+dna" and "image" in learned:
        sets.append([n for n in learned + kmer if n != "image"])
    unique: list[list[str]] = []
    for names in sets:
        if names and names not in unique:
            unique.append(names)
    return unique


def _rows(short: Shortlist, rows: np.ndarray) -> Shortlist:
    idx = torch.as_tensor(rows, dtype=torch.int64)
    return Shortlist(short.scores[idx], short.leaves[idx], short.keys[idx], short.pooling)


def _folds(n: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number of each of n queries (a seeded permutation, so folds are balanced)."""
    return np.random.default_rng(seed).permutation(n) % n_folds


def _fit_plan(index: TaxonIndex, shorts: list[Shortlist], truths: dict[str, np.ndarray], rounds: int = 2) -> dict[str, Any]:
    temps, rest, floor, nll = fit_temperatures(Candidates(shorts, index), truths, rounds=rounds)
    return {"temperatures": temps, "rest": rest, "floor": floor, "nll": nll}


def _params(fit: dict[str, Any]) -> list[float]:
    return [*fit["temperatures"], fit["rest"], fit["floor"]]


def _held_out_nll(index, shorts, truths, half) -> float:
    """Mean NLL on one half of the queries of the plan fitted on the other half.

    One round of coordinate descent: this only ranks the candidate source sets, each fitted alike
    (the set kept is then fitted in full on all queries); it halves the cost of choosing."""
    train, test = np.flatnonzero(~half), np.flatnonzero(half)
    fit = _fit_plan(index, [_rows(s, train) for s in shorts], {r: t[train] for r, t in truths.items()}, rounds=1)
    held = Candidates([_rows(s, test) for s in shorts], index)
    return float(mean_nll(held, _params(fit), {r: t[test] for r, t in truths.items()}))


def plan_ece(index: TaxonIndex, shorts: list[Shortlist], truths: dict[str, np.ndarray], plan: Plan) -> dict:
    """Per rank ECE (15 bins), accuracy and mean confidence of the top label, on queries with a known truth."""
    cand = Candidates(shorts, index)
    per_rank = cand.rank_probabilities(cand.probabilities(plan.temperatures, plan.rest, plan.floor))
    out = {}
    for rank, (ids, p) in per_rank.items():
        known = truths[rank] >= 0
        conf = p[:, 0].numpy()[known]
        ok = (ids[:, 0].numpy() == truths[rank])[known]
        out[rank] = {"ece": expected_calibration_error(conf, ok), "accuracy": float(ok.mean()) if ok.size else float("nan"),
                     "confidence": float(conf.mean()) if conf.size else float("nan"), "n": int(known.sum())}
    return out


def leave_out_features(
    index: TaxonIndex, sources: dict[str, KeySource], vectors: dict[str, torch.Tensor], truths: dict[str, np.ndarray],
    names: Sequence[str], k: int = SHORTLIST, levels: Sequence[str | None] = _LEVELS,
) -> dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Novelty features of every query at every leave-out level, and what is absent there.

    Returns ``{level: (features [nq, 5 * len(names)], absent [nq, 4] bool, usable [nq] bool)}``;
    level None = the full library, else every key of the query's own taxon at that rank removed
    (unusable where that would remove every key, or the query's taxon is unknown).
    """
    counts = {r: index.counts(r) for r in RANKS}
    n_keys = len(index)
    out = {}
    for level in levels:
        feats = []
        for name in names:
            src = sources[name]
            exclude = None
            if level is not None:
                exclude = (index.leaf_table(level)[src.leaf].numpy(), truths[level])
            feats.append(novelty_features(src.shortlist(vectors[name], k, "max", exclude), index))
        absent = np.zeros((len(truths["species"]), len(RANKS)), dtype=bool)
        usable = np.ones(len(truths["species"]), dtype=bool)
        removed = np.zeros(len(truths["species"]), dtype=np.int64)
        if level is not None:
            t = truths[level]
            usable &= t >= 0
            removed = np.where(t >= 0, counts[level][np.clip(t, 0, None)], 0)
            usable &= removed < n_keys
        for d, rank in enumerate(RANKS):
            t = truths[rank]
            have = np.where(t >= 0, counts[rank][np.clip(t, 0, None)], 0)
            within = level is not None and RANKS.index(rank) >= RANKS.index(level)
            absent[:, d] = (t < 0) | within | (have - removed <= 0)
        out[level] = (torch.cat(feats, dim=1).numpy(), absent, usable)
    return out


def _flag_data(variants, rank: str, columns: np.ndarray):
    """(x, y, query index, weights) for the flag at ``rank``: the level below vs ``rank`` left out."""
    below = None if rank == "species" else UPWARD[UPWARD.index(rank) - 1]
    xs, ys, qs = [], [], []
    for level in (below, rank):
        feats, absent, usable = variants[level]
        rows = np.flatnonzero(usable)
        xs.append(feats[rows][:, columns])
        ys.append(absent[rows, RANKS.index(rank)].astype(np.float64))
        qs.append(rows)
    x, y, q = np.concatenate(xs), np.concatenate(ys), np.concatenate(qs)
    pos = y.sum()
    weights = np.where(y > 0, 0.5 / max(pos, 1), 0.5 / max(len(y) - pos, 1))
    return x, y, q, weights


def _fit_novelty(variants, names_all: list[str], names: list[str], n_queries: int, n_folds: int = 5) -> NoveltyModel | None:
    width = FEATURES_PER_SOURCE
    subset = np.concatenate([np.arange(width) + width * names_all.index(n) for n in names])
    folds = _folds(n_queries, n_folds, seed=1)
    flags: dict[str, LogisticModel] = {}
    # Cross-fitted absence probabilities of every query at every level, for the validation figures.
    running = {level: np.ones(n_queries) for level in _LEVELS}
    cv_absence: dict[Any, np.ndarray] = {level: np.zeros((n_queries, len(RANKS))) for level in _LEVELS}
    for rank in UPWARD:
        columns = subset[flag_columns(rank, len(names))]
        x, y, q, w = _flag_data(variants, rank, columns)
        if y.sum() < 2 or (1 - y).sum() < 2:
            break  # cannot separate what was never (or always) absent: no verdict from this rank up
        flags[rank] = LogisticModel.fit(x, y, w)
        fold_models = []
        for f in range(n_folds):
            train = folds[q] != f
            enough = y[train].sum() >= 1 and (1 - y[train]).sum() >= 1
            fold_models.append(LogisticModel.fit(x[train], y[train], w[train]) if enough else flags[rank])
        for level in _LEVELS:
            feats = variants[level][0][:, columns]
            pred = np.zeros(n_queries)
            for f, model in enumerate(fold_models):
                pred[folds == f] = model.predict(feats[folds == f])
            running[level] = running[level] * pred
            cv_absence[level][:, RANKS.index(rank)] = running[level]
    if "species" not in flags:
        return None
    validation = {}
    for rank in flags:
        # Negatives: the rank present (full library, or a lower rank left out); positives: it left out.
        neg_levels = [None] + list(UPWARD[: UPWARD.index(rank)])
        neg = np.concatenate([cv_absence[lv][variants[lv][2], RANKS.index(rank)] for lv in neg_levels])
        pos = cv_absence[rank][variants[rank][2], RANKS.index(rank)]
        validation[rank] = operating_point(neg, pos)
    # The headline separation: own species left out vs full library (the hard, common case).
    validation["species"] = operating_point(cv_absence[None][variants[None][2], RANKS.index("species")],
                                            cv_absence["species"][variants["species"][2], RANKS.index("species")])
    return NoveltyModel(names, flags, validation)


def _calibrate_plan(index, sources, method, sets, n, truths, vecs) -> dict[str, Any]:
    """The plan of one query modality x method: the source set chosen on held-out NLL, then fitted on all."""
    needed = sets[0]
    shorts = dict(zip(needed, shortlists(sources, vecs, needed, shortlist_depth(method), POOLING[method])))
    entry: dict[str, Any] = {}
    chosen = sets[0]
    if len(sets) > 1:
        half = _folds(n, 2) == 1
        held = {"+".join(s): _held_out_nll(index, [shorts[name] for name in s], truths, half) for s in sets}
        # The fused set must beat the best alternative by a margin, not by a rounding.
        alternative = min(sets[1:], key=lambda names: held["+".join(names)])
        chosen = sets[0] if held["+".join(sets[0])] < held["+".join(alternative)] - FUSION_MARGIN else alternative
        entry["held_out_nll"] = held
        entry["dropped"] = {name: f"its {name} evidence did not lower the held-out NLL on {n} validation queries by "
                                  f"{FUSION_MARGIN} ({held['+'.join(chosen)]:.3f} without it, "
                                  f"{held['+'.join(sets[0])]:.3f} with it)" for name in sets[0] if name not in chosen}
    fit = _fit_plan(index, [shorts[name] for name in chosen], truths)
    plan = Plan(chosen, fit["temperatures"], method, fit["rest"], fit["floor"])
    entry.update(sources=chosen, **fit, n_queries=int(n), validation=plan_ece(index, [shorts[name] for name in chosen], truths, plan))
    return entry


def _calibrate_novelty(index, sources, sets, n, truths, vecs) -> dict[str, Any] | None:
    """The novelty model of one query modality: the feature set with the best cross-fitted AUROC."""
    names_all = sets[0]
    variants = leave_out_features(index, sources, vecs, truths, names_all)
    models = [m for m in (_fit_novelty(variants, names_all, s, n) for s in sets) if m is not None]
    if not models:
        return None
    # The fullest feature set unless a smaller one separates clearly better: on a few hundred
    # validation queries, AUROC differences under NOVELTY_MARGIN are noise.
    scores = [np.nan_to_num(m.validation["species"]["auroc"], nan=-1.0) for m in models]
    best = next(m for m, score in zip(models, scores) if score >= max(scores) - NOVELTY_MARGIN)
    entry = best.to_dict()
    entry["candidates"] = {"+".join(m.sources): m.validation["species"]["auroc"] for m in models}
    entry["n_queries"] = int(n)
    return entry


def calibrate_library(
    index: TaxonIndex,
    sources: dict[str, KeySource],
    vectors: dict[str, torch.Tensor],
    available: dict[str, np.ndarray],
    lineages: Sequence[Sequence[Any]],
    methods: Sequence[str] = METHODS,
    progress: bool = True,
) -> LibraryCalibration:
    """Fit the plans and novelty models of a library on validation queries.

    Args:
        index: the library's taxa; ``sources``: its evidence sources by name (see module docstring).
        vectors: per source, the query vectors ``[nq, d]`` (rows of queries lacking it are ignored).
        available: per source, ``[nq]`` bool: which queries have it.
        lineages: the queries' true ``(order, family, genus, species)``; all must be in the library
            (queries of taxa absent from it are dropped and counted in ``info``).
        methods: which methods to calibrate.
    """
    truths_all = {r: index.taxa_of(lineages, r) for r in RANKS}
    in_library = truths_all["species"] >= 0
    cal = LibraryCalibration(info={"n_queries": int(len(lineages)), "dropped_not_in_library": int((~in_library).sum())})

    def queries_with(names: Sequence[str], minimum: int):
        """The in-library queries that have every named source: (count, truths, vectors), or None."""
        rows = np.flatnonzero(in_library & np.all([available[s] for s in names], axis=0))
        if len(rows) < minimum:
            return None
        idx = torch.as_tensor(rows)
        return len(rows), {r: t[rows] for r, t in truths_all.items()}, {s: vectors[s][idx] for s in names}

    bar = tqdm(total=len(QUERY_MODALITIES) * (len(methods) + 1), desc="calibrating", unit="fit", disable=not progress,
               leave=False)
    for qmod in QUERY_MODALITIES:
        for method in methods:
            bar.update(1)
            sets = candidate_sources(qmod, method, list(sources))
            picked = queries_with(sets[0], 4) if sets else None
            if picked is not None:
                cal.probability[f"{qmod}/{method}"] = _calibrate_plan(index, sources, method, sets, *picked)
        bar.update(1)
        sets = novelty_candidates(qmod, list(sources))
        picked = queries_with(sets[0], 8) if sets else None
        entry = _calibrate_novelty(index, sources, sets, *picked) if picked is not None else None
        if entry is not None:
            cal.novelty[qmod] = entry
    bar.close()
    return cal



def summary_lines(cal: LibraryCalibration) -> list[str]:
    """One line per plan and novelty model: what was fitted and how it did on the validation queries."""
    lines = []
    for key, entry in cal.probability.items():
        ece = ", ".join(f"{r} {v['ece']:.3f}" for r, v in entry["validation"].items() if v["ece"] is not None)
        temps = "/".join(f"{t:.4g}" for t in entry["temperatures"])
        lines.append(f"calibrated {key} ({'+'.join(entry['sources'])}, T {temps}, floor {entry['floor']:.3f}) on "
                     f"{entry['n_queries']} queries: ECE {ece}")
        lines += [f"{key}: {name} left out: {why}" for name, why in entry.get("dropped", {}).items()]
    for qmod, entry in cal.novelty.items():
        v = entry["validation"]["species"]
        lines.append(f"novelty {qmod} ({'+'.join(entry['sources'])}) on {entry['n_queries']} queries, own species left "
                     f"out: AUROC {v['auroc']:.3f}, TPR {v['tpr']:.2f} / FPR {v['fpr']:.2f} at {v['threshold']} (cross-fitted)")
    return lines
