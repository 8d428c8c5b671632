"""The taxonomic accuracy metric on hand-computed cases, and loading it with evaluate offline."""

from pathlib import Path

import pytest

from bioscan_clip_hf.metrics.taxonomic_accuracy.topk import (
    accuracy_report,
    harmonic_mean,
    macro_accuracy,
    micro_accuracy,
)

METRIC_DIR = Path(__file__).resolve().parents[1] / "bioscan_clip_hf" / "metrics" / "taxonomic_accuracy"

# 5 queries; class A has 3 queries, B 1, C 1.
PREDS = [["A", "B", "A"], ["B", "A", "C"], ["C", "C", "C"], ["B", "B", "A"], ["A", "A", "C"]]
REFS = ["A", "A", "A", "B", "C"]


def test_micro_by_hand():
    # top-1 hits: q0, q3 -> 2/5; top-2: q0, q1, q3 -> 3/5; top-3: q0, q1, q3, q4 -> 4/5
    assert micro_accuracy(PREDS, REFS, 1) == pytest.approx(40.0)
    assert micro_accuracy(PREDS, REFS, 2) == pytest.approx(60.0)
    assert micro_accuracy(PREDS, REFS, 3) == pytest.approx(80.0)


def test_macro_is_mean_over_present_classes():
    # top-1: A 1/3, B 1, C 0 -> 44.44; top-3: A 2/3, B 1, C 1 -> 88.89
    assert macro_accuracy(PREDS, REFS, 1) == pytest.approx(100 * (1 / 3 + 1 + 0) / 3)
    assert macro_accuracy(PREDS, REFS, 3) == pytest.approx(100 * (2 / 3 + 1 + 1) / 3)


def test_missing_references_are_skipped_and_duplicates_count_once():
    assert micro_accuracy([["A", "A"], ["B"]], ["A", None], 1) == 100.0
    assert macro_accuracy([["X", "A"]], ["A"], 1) == 0.0
    assert micro_accuracy([], [], 1) == 0.0


def test_harmonic_mean_on_rounded_percentages():
    assert harmonic_mean(0.0, 50.0) == 0.0
    assert harmonic_mean(59.26, 45.04) == pytest.approx(2 / (1 / 59.3 + 1 / 45.0))
    # The paper's table: Img->Img species 59.3 / 45.0 -> 51.2
    assert round(harmonic_mean(59.3, 45.0), 1) == 51.2


def test_groups_give_seen_unseen_and_hm():
    rep = accuracy_report(PREDS, REFS, k_values=[1], groups=["seen", "seen", "unseen", "seen", "unseen"])
    assert rep["seen_micro_top1"] == pytest.approx(200 / 3)  # q0 hit, q1 miss, q3 hit
    assert rep["unseen_micro_top1"] == 0.0  # q2 (A predicted C), q4 (C predicted A)
    assert rep["hm_micro_top1"] == 0.0
    assert rep["seen_macro_top1"] == pytest.approx(75.0)  # A: 1/2, B: 1


def test_evaluate_load_offline():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(METRIC_DIR))
    out = metric.compute(predictions=PREDS, references=REFS, k_values=[1, 3])
    assert out == pytest.approx({"micro_top1": 40.0, "macro_top1": 100 * (4 / 3) / 3, "micro_top3": 80.0,
                                 "macro_top3": 100 * (2 / 3 + 1 + 1) / 3})
    grouped = metric.compute(predictions=PREDS[:2], references=REFS[:2], k_values=[1], groups=["seen", "unseen"])
    assert grouped["hm_micro_top1"] == 0.0
