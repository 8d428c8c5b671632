"""Top-k micro / macro accuracy and the seen/unseen harmonic mean (pure Python, no ``evaluate``).

Kept apart from the ``evaluate`` module so the package's evaluation can use it without importing
the ``evaluate`` library. Definitions: see ``taxonomic_accuracy.py``.
"""

import collections
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Sequence


def _valid(label: Optional[str]) -> bool:
    return label is not None and label != ""


def topk_hits(predictions: Sequence[Sequence[str]], references: Sequence[str], k: int) -> List[bool]:
    """Per query: is the true label among the first ``k`` predicted labels? (invalid rows skipped)"""
    return [ref in list(pred)[:k] for pred, ref in zip(predictions, references) if _valid(ref)]


def micro_accuracy(predictions: Sequence[Sequence[str]], references: Sequence[str], k: int) -> float:
    """Fraction of queries (in percent) with a top-k hit; 0.0 when there is no valid query."""
    hits = topk_hits(predictions, references, k)
    return 100.0 * sum(hits) / len(hits) if hits else 0.0


def macro_accuracy(predictions: Sequence[Sequence[str]], references: Sequence[str], k: int) -> float:
    """Mean over the true classes present in ``references`` of their top-k hit rate (percent)."""
    per_class: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
    for pred, ref in zip(predictions, references):
        if not _valid(ref):
            continue
        per_class[ref][0] += int(ref in list(pred)[:k])
        per_class[ref][1] += 1
    if not per_class:
        return 0.0
    return 100.0 * sum(h / n for h, n in per_class.values()) / len(per_class)


def harmonic_mean(seen: float, unseen: float) -> float:
    """H.M. of two percentages, rounded to one decimal first as the paper's tables do; 0 if either is 0."""
    seen, unseen = round(seen, 1), round(unseen, 1)
    if seen == 0 or unseen == 0:
        return 0.0
    return 2.0 / (1.0 / seen + 1.0 / unseen)


def accuracy_report(
    predictions: Sequence[Sequence[str]],
    references: Sequence[str],
    k_values: Iterable[int] = (1, 3, 5),
    groups: Optional[Sequence[str]] = None,
) -> Dict[str, float]:
    """Micro and macro top-k (percent), optionally per group with the seen/unseen harmonic mean."""
    k_values = [int(k) for k in k_values]
    if groups is None:
        out: Dict[str, float] = {}
        for k in k_values:
            out[f"micro_top{k}"] = micro_accuracy(predictions, references, k)
            out[f"macro_top{k}"] = macro_accuracy(predictions, references, k)
        return out
    if len(groups) != len(references):
        raise ValueError(f"groups has {len(groups)} entries but there are {len(references)} references")
    out = {}
    for name in dict.fromkeys(groups):
        rows = [i for i, g in enumerate(groups) if g == name]
        sub = accuracy_report([predictions[i] for i in rows], [references[i] for i in rows], k_values)
        out.update({f"{name}_{key}": value for key, value in sub.items()})
    if "seen" in groups and "unseen" in groups:
        for k in k_values:
            for kind in ("micro", "macro"):
                out[f"hm_{kind}_top{k}"] = harmonic_mean(out[f"seen_{kind}_top{k}"], out[f"unseen_{kind}_top{k}"])
    return out
