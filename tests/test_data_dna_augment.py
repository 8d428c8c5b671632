"""Training-time barcode variation: what it changes, what it keeps, and that it is reproducible."""

from __future__ import annotations

import random

import pytest
import torch

from bioscan_clip_hf.data import BarcodeAugmentation, BioscanCollator

BARCODE = ("ACGTTGCA" * 83)[:660]


def test_off_by_default_and_identity_when_off():
    augment = BarcodeAugmentation()
    assert not augment.enabled
    assert augment(BARCODE) == BARCODE


def test_substitutions_change_bases_at_the_requested_rate_and_never_ambiguity_codes():
    barcode = BARCODE * 10 + "N" * 500
    augment = BarcodeAugmentation(substitution_rate=0.1, rng=random.Random(0))
    variant = augment(barcode)
    assert len(variant) == len(barcode)
    changed = [i for i, (a, b) in enumerate(zip(barcode, variant)) if a != b]
    n = 6600  # A/C/G/T positions; binomial(6600, 0.1): mean 660, sd 24
    assert abs(len(changed) - 0.1 * n) < 5 * 24
    assert all(i < n for i in changed), "an ambiguity code was substituted"
    assert all(variant[i] in "ACGT" for i in changed)


def test_trims_cut_only_the_ends_within_bounds():
    augment = BarcodeAugmentation(max_trim_start=4, max_trim_end=30, rng=random.Random(1))
    starts, ends = set(), set()
    for _ in range(300):
        variant = augment(BARCODE)
        start = BARCODE.find(variant)
        assert start != -1 and start <= 4 and len(BARCODE) - (start + len(variant)) <= 30
        starts.add(start)
        ends.add(len(BARCODE) - start - len(variant))
    assert starts == set(range(5))  # every frame shift 0..4 occurs
    assert max(ends) > 20


def test_short_reads_are_never_trimmed_away():
    augment = BarcodeAugmentation(max_trim_start=50, max_trim_end=50, rng=random.Random(2))
    assert augment("ACGTACGTAC") == "ACGTACGTAC"


@pytest.mark.parametrize("kwargs, message", [
    ({"substitution_rate": 1.0}, "substitution_rate"),
    ({"substitution_rate": -0.1}, "substitution_rate"),
    ({"max_trim_end": -2}, "trims must be >= 0"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BarcodeAugmentation(**kwargs)


def test_collator_applies_it_reproducibly_from_the_random_module(tiny_processor):
    records = [{"processid": f"P{i}", "dna_barcode": BARCODE, "order": "Diptera"} for i in range(4)]
    plain = BioscanCollator(tiny_processor, modalities=("dna", "text"))(records)
    collate = BioscanCollator(tiny_processor, modalities=("dna", "text"),
                              dna_augmentation=BarcodeAugmentation(substitution_rate=0.05, max_trim_start=4))
    random.seed(7)
    first = collate(records)
    random.seed(7)
    again = collate(records)
    assert torch.equal(first["dna_input_ids"], again["dna_input_ids"])
    assert not torch.equal(first["dna_input_ids"], plain["dna_input_ids"])
    # Four copies of one barcode become four different token sequences.
    assert len({tuple(row.tolist()) for row in first["dna_input_ids"]}) == 4
    assert torch.equal(first["input_ids"], plain["input_ids"])  # text is untouched
