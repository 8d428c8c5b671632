"""Taxonomic top-k accuracy: micro and macro, seen / unseen and their harmonic mean.

Definitions follow the original CLIBD evaluation (``bioscanclip/util/util.py`` and
``scripts/result/generate_latex_table.py``):

* a query's prediction at one rank is the list of the labels of its k nearest keys, nearest first
  (duplicates allowed); it is a top-k hit when the true label is among the first k of them;
* micro top-k = hits / queries;
* macro top-k = mean, over the ground-truth classes present in the query set, of each class's
  top-k hit rate;
* harmonic mean (H.M.) of seen and unseen = 2 / (1/seen + 1/unseen), computed on the percentages
  rounded to one decimal, 0 when either is 0.

All values are percentages (0-100). Queries whose reference label is missing (None or "") are left
out, since the class is undefined. Load it offline by path:

    metric = evaluate.load("bioscan_clip_hf/metrics/taxonomic_accuracy")
    metric.compute(predictions=[["a", "b"], ["b", "a"]], references=["a", "a"], k_values=[1, 2])
    # {'micro_top1': 50.0, 'macro_top1': 50.0, 'micro_top2': 100.0, 'macro_top2': 100.0}

With ``groups=["seen", "unseen", ...]`` (one per row) each group is scored on its own and
``hm_<micro|macro>_top<k>`` is added (``seen_micro_top1``, ``unseen_micro_top1``, ...).
"""

import collections
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Sequence

import datasets
import evaluate

_CITATION = """\
@inproceedings{gong2025clibd,
  title={{CLIBD}: Bridging Vision and Genomics for Biodiversity Monitoring at Scale},
  author={Gong, ZeMing and Wang, Austin T. and Huo, Xiaoliang and Haurum, Joakim Bruslund and Lowe, Scott C. and Taylor, Graham W. and Chang, Angel X.},
  booktitle={International Conference on Learning Representations},
  year={2025}
}
"""

_DESCRIPTION = """\
Top-k micro and macro accuracy of retrieval-based taxonomic classification, per rank, as defined
by the BIOSCAN-CLIP / CLIBD evaluation: a top-k hit is the true label among the labels of the k
nearest keys; macro accuracy is the mean over the ground-truth classes present in the queries.
Values are percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): per query, the labels of its nearest keys, nearest first.
    references (`list[str]`): per query, the true label (None or "" rows are skipped).
    k_values (`list[int]`, default [1, 3, 5]): the k of top-k.
    groups (`list[str]`, optional): per query, a group name such as "seen" / "unseen"; scores are
        then reported per group (`<group>_micro_top1`, ...) and, when both "seen" and "unseen" are
        present, their harmonic mean (`hm_micro_top1`, ...).
Returns:
    dict of percentages: `micro_top<k>`, `macro_top<k>` (or per group, plus `hm_...`).
Examples:
    >>> metric = evaluate.load("bioscan_clip_hf/metrics/taxonomic_accuracy")
    >>> metric.compute(predictions=[["a", "b"], ["b", "a"]], references=["a", "a"], k_values=[1])
    {'micro_top1': 50.0, 'macro_top1': 50.0}
"""


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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TaxonomicAccuracy(evaluate.Metric):
    """`evaluate` wrapper around :func:`accuracy_report`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/bioscan-ml/clibd"],
        )

    def _compute(self, predictions, references, k_values=(1, 3, 5), groups=None):
        return accuracy_report(predictions, references, k_values=k_values, groups=groups)
