"""Per-rank probability distributions from similarity evidence: one meaning of a score for every method.

Every method only changes how the evidence is gathered; what comes out is the same: per rank, a
probability distribution over the taxa of the reference library (``reference/identification.md``
§2). A :class:`KeySource` is one kind of evidence: key vectors (DNA, image or text embeddings of the
library, or 5-mer profiles of its barcodes), each labelled with a leaf (full lineage) of a shared
:class:`~bioscan_clip_hf.zero_shot.lineages.TaxonIndex`. Its :meth:`~KeySource.shortlist` is the
exact top-K of a batch of queries.

From one or more shortlists (photo and barcode of one specimen give two), :class:`Candidates`:

1. groups the shortlisted keys by leaf and pools each leaf's similarities per source: ``max``
   (the leaf's nearest key: ``nearest``, ``kmer``, ``text``) or ``sum`` (log-sum-exp over the
   leaf's keys, a similarity-weighted vote in which a taxon with several close keys gains: ``knn``);
2. divides by the source's temperature (fitted by NLL on validation queries,
   :func:`fit_temperatures`) and adds the sources' log-evidence (a product of experts). A leaf
   absent from one source's shortlist gets that source's *bound*: the last shortlisted
   similarity, which every key outside the shortlist is at most;
3. takes the softmax over the candidate leaves plus one *rest* entry: the library's leaves outside
   every shortlist, each taken at the bounds shifted by a log-weight fitted with the temperatures.
   So weak evidence (a flat shortlist) leaves much mass outside what is shown, and a truth outside
   the shortlist still has a probability when fitting;
4. mixes in a fitted *floor*: a small share spread evenly over the library, because a reference
   library has mislabelled and look-alike records, so even a perfect match is wrong at some rate.
   Without it one such record in the validation set drives the NLL-fitted temperature up and
   every other answer becomes under-confident (measured on the real COI barcodes).

:meth:`Candidates.rank_probabilities` rolls the leaf probabilities up each rank by summing
children grouped by full path, so a parent is never less probable than its child.

Example:
    >>> import torch
    >>> from bioscan_clip_hf.zero_shot.lineages import TaxonIndex
    >>> index = TaxonIndex.from_lineages([("D", "a", "G", "G 1"), ("D", "a", "G", "G 2"), ("H", "b", "X", "X 1")])
    >>> keys = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    >>> source = KeySource("dna", keys, torch.arange(3))
    >>> short = source.shortlist(keys[:1], k=3)
    >>> cand = Candidates([short], index)
    >>> probs = cand.rank_probabilities(cand.probabilities([0.05], rest=-5.0))
    >>> ids, p = probs["genus"]
    >>> index.label("genus", int(ids[0, 0])), round(float(p[0, 0]), 3)
    ('G', 1.0)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..taxonomy import RANKS
from .lineages import TaxonIndex
from .search import exact_topk

__all__ = [
    "Candidates", "KNN_K", "KeySource", "POOLING", "SHORTLIST", "Shortlist", "expected_calibration_error", "fit_temperatures",
    "mean_nll", "reliability_bins", "shortlist_depth",
]

# Keys shortlisted per query and source: for the max-pooled methods enough leaves that the rest
# carries little mass; for knn the neighbours that vote. Chosen on the synthetic and real COI
# validation queries (BENCHMARKS.md, Identification quality).
SHORTLIST = 64
KNN_K = 10
POOLING = {"nearest": "max", "kmer": "max", "text": "max", "knn": "sum"}


def shortlist_depth(method: str) -> int:
    """Keys shortlisted per query and source for ``method``."""
    return KNN_K if POOLING[method] == "sum" else SHORTLIST
_LOG_T_RANGE = (math.log(1e-4), math.log(10.0))
_REST_RANGE = (-30.0, 10.0)
_FLOOR_LOGIT_RANGE = (-14.0, -1.0)  # floor share from 8e-7 to 0.27


@dataclass
class Shortlist:
    """The K nearest keys of a batch of queries for one source.

    Attributes:
        scores: ``[nq, K]`` similarities, descending (``-inf`` pads rows with fewer keys).
        leaves: ``[nq, K]`` leaf id of each key (``-1`` for padding).
        keys: ``[nq, K]`` row of each key in its source (``-1`` for padding).
        pooling: ``max`` or ``sum`` (see module docstring).
    """

    scores: torch.Tensor
    leaves: torch.Tensor
    keys: torch.Tensor
    pooling: str = "max"

    @property
    def bound(self) -> torch.Tensor:
        """``[nq]`` the last finite similarity: no key outside the shortlist is more similar."""
        finite = torch.isfinite(self.scores)
        last = finite.sum(dim=1).clamp(min=1) - 1
        return self.scores.gather(1, last[:, None]).squeeze(1)


@dataclass
class KeySource:
    """Key vectors of one kind of evidence, each with the leaf id of its lineage.

    ``keys`` are L2-normalised (inner product = cosine); ``leaf`` is ``[n]`` int64;
    ``records`` (optional) maps each key to its row in the bank (for ``nearest_id``); ``search``
    (optional) replaces the exact search over ``keys``: ``search(queries, k) -> (scores, rows)``,
    e.g. :meth:`KeyBank.search <bioscan_clip_hf.zero_shot.bank.KeyBank.search>` (its index, its
    key dtype). A :meth:`subset` searches exactly.
    """

    name: str
    keys: torch.Tensor
    leaf: torch.Tensor
    records: torch.Tensor | None = None
    search: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None

    def _top(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.search is not None:
            scores, rows = self.search(queries, k)
        else:
            scores, rows = exact_topk(queries.to(self.keys.device), self.keys, k)
        return scores.cpu().float(), rows.cpu()

    def __len__(self) -> int:
        return self.keys.shape[0]

    def subset(self, mask: np.ndarray | torch.Tensor) -> "KeySource":
        """The keys where ``mask`` is true (a checklist); ``records`` keep pointing into the bank."""
        rows = torch.as_tensor(np.flatnonzero(np.asarray(mask)), device=self.keys.device)
        records = self.records[rows.cpu()] if self.records is not None else rows.cpu()
        return KeySource(self.name, self.keys[rows], self.leaf[rows.cpu()], records)

    def shortlist(
        self,
        queries: torch.Tensor,
        k: int = SHORTLIST,
        pooling: str = "max",
        exclude: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Shortlist:
        """Exact top-``k`` keys of ``queries``.

        ``exclude=(key_taxa, query_taxa)`` leaves out, for each query, the keys whose taxon
        (``key_taxa[j]``) equals the query's (``query_taxa[i]``): the query's own taxon removed from
        the library, as when calibrating novelty by leaving taxa out. The search then asks for
        ``k`` plus that taxon's key count, so the result stays exact.
        """
        nq = queries.shape[0]
        scores = torch.full((nq, k), float("-inf"))
        rows = torch.full((nq, k), -1, dtype=torch.int64)
        if nq and len(self):
            if exclude is None:
                got_s, got_i = self._top(queries, k)
                width = got_s.shape[1]
                scores[:, :width], rows[:, :width] = got_s, got_i
            else:
                self._excluded(queries, k, exclude, scores, rows)
        leaves = torch.where(rows >= 0, self.leaf[rows.clamp(min=0)], torch.full_like(rows, -1))
        keys = rows if self.records is None else torch.where(rows >= 0, self.records[rows.clamp(min=0)], rows)
        return Shortlist(scores, leaves, keys, pooling)

    def _excluded(self, queries, k, exclude, scores, rows) -> None:
        key_taxa, query_taxa = (np.asarray(a) for a in exclude)
        counts = np.bincount(key_taxa[key_taxa >= 0], minlength=max(int(query_taxa.max(initial=0)) + 1, 1))
        own = np.where(query_taxa >= 0, counts[np.clip(query_taxa, 0, None)], 0) if counts.size else np.zeros_like(query_taxa)
        need = np.minimum(k + own, len(self))
        # Group queries by the next power of two of the depth needed: few searches, each exact.
        buckets = np.ceil(np.log2(np.maximum(need, 1))).astype(int)
        key_taxa_t = torch.from_numpy(key_taxa)
        for bucket in np.unique(buckets):
            members = np.flatnonzero(buckets == bucket)
            depth = int(min(2**bucket, len(self)))
            got_s, got_i = self._top(queries[members], depth)
            drop = key_taxa_t[got_i] == torch.from_numpy(query_taxa[members])[:, None]
            got_s = got_s.masked_fill(drop, float("-inf"))
            # Stable re-sort: the kept keys in their original order, the dropped ones last.
            order = torch.argsort(drop.to(torch.int8), dim=1, stable=True)[:, :k]
            kept_s, kept_i = got_s.gather(1, order), got_i.gather(1, order)
            kept_i = kept_i.masked_fill(~torch.isfinite(kept_s), -1)
            width = kept_s.shape[1]
            scores[members, :width], rows[members, :width] = kept_s, kept_i


def _segments(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal ids per row: ``(slot [nq, M], slot_id [nq, M])``.

    ``slot[i, j]`` is the group of position j; ``slot_id[i, s]`` the id of group s (``-1`` for an
    unused slot or the group of ids ``< 0``, which must be ignored).
    """
    sentinel = int(ids.max().clamp(min=0)) + 1 if ids.numel() else 1
    keyed = torch.where(ids >= 0, ids, torch.full_like(ids, sentinel))
    ordered, perm = torch.sort(keyed, dim=1, stable=True)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    slot_sorted = torch.cumsum(new.to(torch.int64), dim=1) - 1
    slot = torch.empty_like(slot_sorted).scatter_(1, perm, slot_sorted)
    slot_id = torch.full_like(ids, -1).scatter_(1, slot_sorted, ordered)
    slot_id = slot_id.masked_fill(slot_id == sentinel, -1)
    return slot, slot_id


class Candidates:
    """The candidate leaves of a batch of queries and each source's pooled evidence for them.

    Args:
        shortlists: one :class:`Shortlist` per source, same queries in the same order.
        index: the taxon index the leaf ids refer to.
        library: ``[n_leaves]`` bool, the leaves the library holds (default: all of ``index``;
            a checklist holds fewer). Leaves of the library outside every shortlist share the rest
            mass (see :meth:`probabilities`).
    """

    def __init__(self, shortlists: Sequence[Shortlist], index: TaxonIndex, library: np.ndarray | None = None):
        self.index = index
        self.shortlists = list(shortlists)
        self.slot, self.leaf = _segments(torch.cat([s.leaves for s in self.shortlists], dim=1))
        self.valid = self.leaf >= 0
        offsets = np.cumsum([0] + [s.leaves.shape[1] for s in self.shortlists])
        # Per source: its slots, the best similarity per slot (-inf: no key there) and its bound;
        # these do not depend on the temperature, so fitting computes them once.
        self._pooled = []
        for short, a, b in zip(self.shortlists, offsets[:-1], offsets[1:]):
            slots = self.slot[:, a:b]
            best = torch.full(self.leaf.shape, float("-inf"), dtype=torch.float64)
            best = best.scatter_reduce(1, slots, short.scores.double(), reduce="amax", include_self=True)
            bound = short.bound.double()
            # A max-pooled source's log-evidence is this over its temperature: a leaf it did not
            # shortlist stands at its bound.
            filled = torch.where(torch.isfinite(best), best, bound[:, None].expand_as(best))
            self._pooled.append((short, slots, best, bound, filled))
        library = np.ones(len(index.leaves), dtype=bool) if library is None else np.asarray(library, dtype=bool)
        self.n_library = max(int(library.sum()), 1)
        self.n_unlisted = (self.n_library - self.valid.sum(dim=1)).clamp(min=0).double()
        self._targets: dict[tuple, tuple] = {}
        # Earliest shortlist position (rank within its source) of each candidate slot's keys.
        positions = torch.cat([torch.arange(s.leaves.shape[1]).expand_as(s.leaves) for s in self.shortlists], dim=1)
        leaf_first = torch.full(self.leaf.shape, positions.shape[1], dtype=torch.int64).scatter_reduce(
            1, self.slot, positions.contiguous(), reduce="amin", include_self=True)
        self._rank_groups = {}
        for rank in RANKS:
            taxa = torch.where(self.valid, index.leaf_table(rank)[self.leaf], self.leaf)
            slot, ids = _segments(taxa)
            listed = torch.zeros(taxa.shape, dtype=torch.float64).scatter_add(1, slot, self.valid.double())
            leaves_per_taxon = torch.from_numpy(np.bincount(index.taxon_of_leaf[rank][library], minlength=index.n_taxa(rank)))
            total = torch.where(ids >= 0, leaves_per_taxon[ids.clamp(min=0)].double(), torch.zeros_like(listed))
            # Ties in probability go to the taxon with the most similar key (earliest in a shortlist).
            first = torch.full(taxa.shape, positions.shape[1], dtype=torch.int64).scatter_reduce(
                1, slot, leaf_first, reduce="amin", include_self=True)
            self._rank_groups[rank] = (slot, ids, (total - listed).clamp(min=0), leaves_per_taxon.double(), first)

    def logits(self, temperatures: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([nq, S] summed log-evidence per candidate slot (-inf for unused slots), [nq] the summed
        bounds: the log-evidence of a leaf outside every shortlist)``."""
        total = torch.zeros(self.leaf.shape, dtype=torch.float64)
        bounds = torch.zeros(self.leaf.shape[0], dtype=torch.float64)
        for (short, slots, best, bound, filled), temp in zip(self._pooled, temperatures):
            scaled_bound = bound / temp
            if short.pooling == "sum":
                values = short.scores.double() / temp
                shift = torch.where(torch.isfinite(best), best / temp, torch.zeros_like(best))
                mass = torch.zeros_like(best).scatter_add(1, slots, torch.exp(values - shift.gather(1, slots)))
                total += torch.where(torch.isfinite(best), torch.log(mass) + shift, scaled_bound[:, None].expand_as(best))
            else:
                total += filled / temp
            bounds += scaled_bound
        return total.masked_fill(~self.valid, float("-inf")), bounds

    def probabilities(self, temperatures: Sequence[float], rest: float = 0.0, floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(leaf probabilities [nq, S], probability of each unlisted leaf [nq])``.

        Every library leaf outside the shortlists is taken as at the sources' bounds, shifted by
        ``rest`` (a log-weight fitted with the temperatures, normally < 0: those leaves are at most
        as similar as the bound); together they are one more softmax entry, shared equally by them.
        ``floor`` is the share spread evenly over all library leaves whatever the evidence: the
        rate at which even a near-identical match is wrong (mislabelled or look-alike references).
        """
        logits, bounds = self.logits(temperatures)
        rest_logit = bounds + rest + torch.log(self.n_unlisted)
        probs = torch.softmax(torch.cat([logits, rest_logit[:, None]], dim=1), dim=1).nan_to_num(0.0)
        per_leaf = torch.where(self.n_unlisted > 0, probs[:, -1] / self.n_unlisted.clamp(min=1), torch.zeros_like(bounds))
        even = floor / self.n_library
        leaf_probs = ((1.0 - floor) * probs[:, :-1] + even).masked_fill(~self.valid, 0.0)
        return leaf_probs, (1.0 - floor) * per_leaf + even

    def rank_probabilities(self, dist: tuple[torch.Tensor, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per rank ``(taxon ids, probabilities)``, each ``[nq, S]``, of the taxa with a shortlisted
        leaf, sorted by probability descending (ids ``-1`` with probability 0 fill the unused places).
        A taxon's probability adds its unlisted leaves' share of the rest mass."""
        leaf_probs, per_leaf = dist
        out = {}
        for rank, (slot, ids, unlisted, _, first) in self._rank_groups.items():
            summed = torch.zeros_like(leaf_probs).scatter_add(1, slot, leaf_probs) + unlisted * per_leaf[:, None]
            by_first = torch.argsort(first, dim=1, stable=True)
            summed, ids_first = summed.gather(1, by_first), ids.gather(1, by_first)
            probs, order = torch.sort(summed.masked_fill(ids_first < 0, -1.0), dim=1, descending=True, stable=True)
            out[rank] = (ids_first.gather(1, order), probs.clamp(min=0.0))
        return out

    def true_probabilities(self, dist: tuple[torch.Tensor, torch.Tensor], truths: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Per rank ``[nq]`` probability of the true taxon id (``truths[rank]``; -1 = unknown -> NaN),
        shortlisted or not."""
        leaf_probs, per_leaf = dist
        out = {}
        for rank in self._rank_groups:
            hit, known, truth_leaves = self._target(rank, truths[rank])
            # The true taxon's listed leaves, then its unlisted leaves' share of the rest mass.
            listed = (leaf_probs * hit).sum(dim=1)
            n_listed = hit.sum(dim=1)
            p = listed + (truth_leaves - n_listed) * per_leaf
            out[rank] = torch.where(known, p, torch.full_like(p, float("nan")))
        return out

    def nll_function(self, truths: dict[str, np.ndarray], ranks: Sequence[str] = RANKS) -> Callable[[Sequence[float]], float]:
        """The mean NLL of the true taxa over ``ranks`` as a function of ``(temperatures..., rest,
        floor)``: :func:`mean_nll`'s value, with everything the parameters do not change computed
        once (fitting evaluates it a few hundred times; about 10 tensor operations per call).
        Only the leaves' total per true taxon is needed, so no per-rank distribution is built."""
        targets = [self._target(rank, truths[rank]) for rank in ranks]
        hit = torch.stack([t[0] for t in targets], dim=2)  # [nq, S, R]
        known = torch.stack([t[1] for t in targets], dim=1)  # [nq, R]
        truth_leaves = torch.stack([t[2] for t in targets], dim=1)
        unlisted_truth = truth_leaves - hit.sum(dim=1)
        log_unlisted = torch.log(self.n_unlisted)
        has_unlisted = self.n_unlisted > 0
        linear = all(short.pooling == "max" for short, *_ in self._pooled)
        if linear:  # every source max-pooled: the summed log-evidence is linear in 1 / temperature
            filled = torch.stack([p[4] for p in self._pooled], dim=2)  # [nq, S, sources]
            bounds = torch.stack([p[3] for p in self._pooled], dim=1)  # [nq, sources]
        invalid = ~self.valid

        def nll(params: Sequence[float]) -> float:
            temps, rest, floor = params[:-2], float(params[-2]), float(params[-1])
            if linear:
                inverse = torch.tensor([1.0 / t for t in temps], dtype=torch.float64)
                logits, bound = (filled @ inverse).masked_fill_(invalid, float("-inf")), bounds @ inverse
            else:
                logits, bound = self.logits(temps)
            rest_logit = bound + rest + log_unlisted
            norm = torch.logsumexp(torch.cat([logits, rest_logit[:, None]], dim=1), dim=1, keepdim=True)
            probs = torch.exp(logits - norm)
            per_leaf = torch.where(has_unlisted, torch.exp(rest_logit - norm[:, 0]) / self.n_unlisted.clamp(min=1), 0.0)
            listed = torch.bmm(probs[:, None, :], hit).squeeze(1)
            p = (1.0 - floor) * (listed + unlisted_truth * per_leaf[:, None]) + (floor / self.n_library) * truth_leaves
            values = -torch.log(p.nan_to_num(0.0).clamp(min=1e-12))[known]
            return float(values.mean()) if values.numel() else float("nan")

        return nll

    def _target(self, rank: str, truth: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hit [nq, S]: slot leaf in the true taxon, known [nq], leaves of the true taxon [nq])``,
        cached per truth array (fitting evaluates the same truths hundreds of times)."""
        key = (rank, id(truth))
        if key not in self._targets:
            true = torch.as_tensor(truth, dtype=torch.int64)
            taxa = torch.where(self.valid, self.index.leaf_table(rank)[self.leaf], self.leaf)
            hit = ((taxa == true[:, None]) & self.valid & (true[:, None] >= 0)).double()
            leaves_per_taxon = self._rank_groups[rank][3]
            self._targets[key] = (hit, true >= 0, leaves_per_taxon[true.clamp(min=0)], truth)
        return self._targets[key][:3]


def mean_nll(cand: Candidates, params: Sequence, truths: dict[str, np.ndarray], ranks: Sequence[str] = RANKS):
    """Mean NLL (a 0-d tensor) of the true taxa over ``ranks`` for ``params`` = (temperatures..., rest, floor)."""
    probs = cand.true_probabilities(cand.probabilities(params[:-2], params[-2], params[-1]), truths)
    values = torch.cat([-torch.log(probs[r].clamp(min=1e-12))[~torch.isnan(probs[r])] for r in ranks])
    return values.mean() if values.numel() else torch.tensor(float("nan"), dtype=torch.float64)


@contextmanager
def _single_threaded() -> Iterator[None]:
    """Torch on one thread inside: a fit runs thousands of ops on small tensors, for which the
    intra-op thread pool costs far more than it gives (a float64 softmax of 30 x 65: 0.01 ms on one
    thread, 15 ms on two threads of a loaded 2-core machine; measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _golden(f: Callable[[float], float], lo: float, hi: float, steps: int = 10) -> float:
    """Minimiser of a unimodal ``f`` on ``[lo, hi]`` (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_temperatures(
    cand: Candidates, truths: dict[str, np.ndarray], ranks: Sequence[str] = RANKS, rounds: int = 2,
) -> tuple[list[float], float, float, float]:
    """Temperatures (one per source of ``cand``), rest log-weight and floor minimising the mean
    NLL of the true taxa over ``ranks``; returns ``(temperatures, rest, floor, nll)``.

    Coordinate descent in log / logit space: per parameter a coarse grid, then a golden-section
    search around its best point (a few dozen NLL evaluations, no gradients: cheaper than L-BFGS
    on the small validation sets this fits, and safe on flat stretches of the NLL).
    """
    n = len(cand.shortlists)
    params = [math.log(0.05)] * n + [0.0, -6.0]  # log temperatures..., rest, logit of the floor
    ranges = [_LOG_T_RANGE] * n + [_REST_RANGE, _FLOOR_LOGIT_RANGE]

    def actual(values: list[float]) -> list[float]:
        return [math.exp(v) for v in values[:n]] + [values[n], 1.0 / (1.0 + math.exp(-values[n + 1]))]

    nll = cand.nll_function(truths, ranks)

    def loss(values: list[float]) -> float:
        value = nll(actual(values))
        return value if math.isfinite(value) else float("inf")

    with _single_threaded():
        for _ in range(rounds):
            for m, (lo, hi) in enumerate(ranges):
                def along(x: float, m: int = m) -> float:
                    trial = list(params)
                    trial[m] = x
                    return loss(trial)

                grid = np.linspace(lo, hi, 7)
                best = int(np.argmin([along(x) for x in grid]))
                params[m] = _golden(along, grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
        fitted = actual(params)
        return fitted[:n], fitted[n], fitted[n + 1], loss(params)


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins: ``{"low", "high", "n", "confidence", "accuracy"}`` per bin
    (empty bins have n = 0 and no averages)."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    which = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = which == b
        n = int(members.sum())
        bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "n": n,
                     "confidence": float(conf[members].mean()) if n else None,
                     "accuracy": float(ok[members].mean()) if n else None})
    return bins


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width bins of (n_b / N) |accuracy_b - confidence_b|.

    >>> round(expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True]), 3)
    0.4
    """
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b["n"] for b in bins)
    if total == 0:
        return float("nan")
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]))
