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

import datasets
import evaluate

from .topk import accuracy_report

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


class TaxonomicAccuracy(evaluate.Metric):
    """`evaluate` wrapper around :func:`accuracy_report` (arguments: see ``_KWARGS_DESCRIPTION``)."""

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
