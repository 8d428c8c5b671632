"""Classification rules over retrieval results and text-prompt probabilities, at every rank.

* :func:`nearest_rule`: the original CLIBD rule, every rank from the single nearest key.
* :func:`knn_vote`: per rank, the label most frequent among the k nearest keys (ties: the label
  whose best key is nearest); its score is its share of the k votes.
* :func:`text_rollup`: species (lineage) probabilities from text prompts summed up to genus,
  family and order, as pybioclip does; each rank's prediction is the most probable label there.

Each returns, per query, ``{rank: (label, score, topk_labels, topk_scores)}``.

Example:
    >>> labels = {"order": ["A", "A", "B"], "family": ["a", "a", "b"], "genus": ["x", "y", "z"], "species": ["1", "2", "3"]}
    >>> knn_vote(labels, [[2, 0, 1]], [[0.9, 0.8, 0.7]], k=3)[0]["order"][:2]
    ('A', 0.6666666666666666)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ..taxonomy import RANKS

__all__ = ["RANKS", "knn_vote", "nearest_rule", "text_rollup"]

Prediction = dict[str, tuple]


def nearest_rule(labels: dict[str, Sequence], indices, scores, k: int = 5) -> list[Prediction]:
    """All ranks from the nearest key; the top-k list is the k nearest keys' labels (duplicates kept)."""
    out = []
    for idx_row, score_row in zip(np.asarray(indices)[:, :k], np.asarray(scores)[:, :k]):
        pred = {}
        for rank, lab in labels.items():
            tops = [lab[int(i)] for i in idx_row]
            pred[rank] = (tops[0], float(score_row[0]), tops, [float(s) for s in score_row])
        out.append(pred)
    return out


def knn_vote(labels: dict[str, Sequence], indices, scores, k: int = 5) -> list[Prediction]:
    """Majority vote per rank among the k nearest keys (missing labels do not vote)."""
    out = []
    for idx_row, score_row in zip(np.asarray(indices)[:, :k], np.asarray(scores)[:, :k]):
        n = len(idx_row)
        pred = {}
        for rank, lab in labels.items():
            votes: dict = defaultdict(int)
            first_pos: dict = {}
            for pos, i in enumerate(idx_row):
                label = lab[int(i)]
                if label is None:
                    continue
                votes[label] += 1
                first_pos.setdefault(label, pos)
            ranked = sorted(votes, key=lambda lbl: (-votes[lbl], first_pos[lbl]))
            shares = [votes[lbl] / n for lbl in ranked]
            pred[rank] = (ranked[0] if ranked else None, shares[0] if shares else 0.0, ranked, shares)
        out.append(pred)
    return out


def text_rollup(probabilities, lineages: Sequence[Sequence], k: int = 5) -> list[Prediction]:
    """Sum lineage probabilities up each rank and take the most probable label per rank.

    ``probabilities`` is [nq, n_lineages] (rows sum to 1); ``lineages[j]`` is the (order, family,
    genus, species) of lineage j. Labels are grouped by their full path from the order down, so a
    genus name used in two families is not merged; the label reported is the last element.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    groups = {}
    for depth, rank in enumerate(RANKS):
        paths: dict[tuple, list[int]] = defaultdict(list)
        for j, lineage in enumerate(lineages):
            paths[tuple(lineage[: depth + 1])].append(j)
        keys = list(paths)
        member = np.zeros((len(lineages), len(keys)))
        for col, key in enumerate(keys):
            member[paths[key], col] = 1.0
        groups[rank] = (keys, member)
    out = []
    for row in probs:
        pred = {}
        for rank, (keys, member) in groups.items():
            summed = row @ member
            order = np.argsort(-summed, kind="stable")[:k]
            labels = [keys[j][-1] for j in order]
            pred[rank] = (labels[0], float(summed[order[0]]), labels, [float(summed[j]) for j in order])
        out.append(pred)
    return out
