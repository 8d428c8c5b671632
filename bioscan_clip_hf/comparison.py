"""Paired comparison of two models scored on the same queries.

Accuracy differences of a few points on a few hundred queries are easily noise. Because both
models answer the *same* queries, the right test looks only at the queries where they disagree
(exact McNemar / sign test), and the confidence interval of the difference resamples queries,
keeping each query's pair of outcomes together (paired bootstrap).

Example:
    >>> a = [True, True, True, False, True, True]
    >>> b = [True, False, False, False, True, False]
    >>> result = paired_comparison(a, b)
    >>> result["wins"], result["losses"], round(result["difference"], 1)
    (3, 0, 50.0)
"""

from __future__ import annotations

from math import comb
from typing import Any, Sequence

import numpy as np

__all__ = ["exact_mcnemar_p", "paired_comparison"]


def exact_mcnemar_p(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the sign test on the discordant queries.

    Under the null hypothesis each disagreement is a fair coin, so the p-value is twice the
    binomial tail of the rarer outcome (capped at 1).

    Example:
        >>> round(exact_mcnemar_p(9, 1), 4)
        0.0215
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be non-negative, got wins={wins}, losses={losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_comparison(
    hits_a: Sequence[bool],
    hits_b: Sequence[bool],
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two models' per-query correctness on the same queries.

    Args:
        hits_a: whether model A's prediction is correct, one entry per query.
        hits_b: the same for model B, same queries in the same order.
        n_bootstrap: paired bootstrap resamples for the confidence interval.
        confidence: level of the interval.
        seed: seed of the resampling.

    Returns:
        ``{"n", "accuracy_a", "accuracy_b", "difference", "ci_low", "ci_high", "wins", "losses",
        "p_value", "confidence"}``: accuracies and their difference (A - B) in percent, the paired
        bootstrap percentile interval of the difference, the queries only A (wins) or only B
        (losses) gets right, and the exact McNemar p-value.

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    a = np.asarray(hits_a, dtype=bool)
    b = np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equally long, non-empty lists of outcomes, got {a.shape} and {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_bootstrap, diff.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    wins, losses = int((a & ~b).sum()), int((~a & b).sum())
    return {
        "n": int(a.size),
        "accuracy_a": 100.0 * float(a.mean()),
        "accuracy_b": 100.0 * float(b.mean()),
        "difference": 100.0 * float(diff.mean()),
        "ci_low": 100.0 * float(np.quantile(means, tail)),
        "ci_high": 100.0 * float(np.quantile(means, 1.0 - tail)),
        "wins": wins,
        "losses": losses,
        "p_value": exact_mcnemar_p(wins, losses),
        "confidence": confidence,
    }
