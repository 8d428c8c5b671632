"""Split rules (paper §2.1), the real COI set, the schema helpers and ``load_bioscan``."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import datasets
import pytest

from bioscan_clip_hf.data import (
    FEATURES,
    RANKS,
    SCHEMA_COLUMNS,
    SPLITS,
    assign_paper_splits,
    build_realcoi_dataset,
    check_splits,
    dataset_key_splits,
    key_splits,
    load_bioscan,
    record_taxonomy_text,
)
from bioscan_clip_hf.data.schema import BIOSCAN5M_SPLITS, normalise_value


def _species_by_split(species, splits):
    out = defaultdict(set)
    for name, split in zip(species, splits):
        out[split].add(name)
    return out


def test_paper_split_rules_on_a_constructed_set():
    species = [f"s{i}" for i in range(50) for _ in range(2 + i % 9)] + ["single"] + [None] * 7
    splits = assign_paper_splits(species, seed=3)
    by = _species_by_split(species, splits)
    seen = by["train"] | by["val"] | by["test"]
    unseen = by["key_unseen"] | by["val_unseen"] | by["test_unseen"]
    assert len(unseen) == 10 and len(seen) == 40 and not seen & unseen  # 20 % of 50 eligible species
    assert by["val"] | by["test"] <= by["train"]
    assert by["val_unseen"] | by["test_unseen"] == by["key_unseen"]
    assert not by["val_unseen"] & by["test_unseen"] and abs(len(by["val_unseen"]) - len(by["test_unseen"])) <= 1
    assert by["pretrain"] == {"single", None}
    counts = Counter(splits)
    seen_records = sum(counts[s] for s in ("train", "val", "test"))
    assert 0.05 < counts["val"] / seen_records < 0.15 and 0.05 < counts["test"] / seen_records < 0.15
    for name in unseen:  # half queries, half keys within each unseen species
        queries = sum(1 for s, sp in zip(splits, species) if sp == name and s != "key_unseen")
        total = species.count(name)
        assert queries == total // 2
    assert assign_paper_splits(species, seed=3) == splits
    assert assign_paper_splits(species, seed=4) != splits

    # The BIOSCAN-1M layout: the same draws, the seen keys relabelled from train to key_seen (never trained on).
    layout_1m = assign_paper_splits(species, seed=3, seen_keys_split="key_seen")
    assert {(a, b) for a, b in zip(splits, layout_1m) if a != b} == {("train", "key_seen")}
    by_1m = _species_by_split(species, layout_1m)
    assert by_1m["val"] | by_1m["test"] <= by_1m["key_seen"] <= by_1m["train"]
    assert key_splits(layout_1m) == ["key_seen", "key_unseen"] and key_splits(splits) == ["train", "key_unseen"]


def test_split_names_and_schema_helpers():
    assert check_splits(["train", "key_unseen"]) == ["train", "key_unseen"]
    with pytest.raises(ValueError, match="'validation'.*valid splits are: pretrain, train, val, test, key_seen, key_unseen"):
        check_splits(["train", "validation"])
    assert RANKS == ("order", "family", "genus", "species") and len(SPLITS) == 9
    assert list(FEATURES) == list(SCHEMA_COLUMNS) and isinstance(FEATURES["image"], datasets.Image)
    for missing in (None, math.nan, "", " not_classified ", "NaN"):
        assert normalise_value(missing) is None
    record = {"order": "Diptera", "family": "Sciaridae", "genus": None, "species": math.nan}
    assert record_taxonomy_text(record) == "Diptera Sciaridae not_classified not_classified"


@pytest.fixture(scope="module")
def realcoi_dir(shared_data_dir, tmp_path_factory):
    return build_realcoi_dataset(shared_data_dir / "real-coi" / "coi_insecta.tsv",
                                 tmp_path_factory.mktemp("realcoi"), seed=42)


def test_real_coi_set_follows_the_paper_rules(realcoi_dir, tmp_path):
    dataset = load_bioscan(realcoi_dir, cache_dir=tmp_path / "cache")
    by = {split: set(ds["species"]) for split, ds in dataset.items()}
    seen = by["train"] | by["val"] | by["test"]
    unseen = by["key_unseen"] | by["val_unseen"] | by["test_unseen"]
    assert not seen & unseen and len(unseen) > 0.15 * len(seen | unseen)
    assert by["val_unseen"] | by["test_unseen"] == by["key_unseen"] and not by["val_unseen"] & by["test_unseen"]
    ids = [pid for ds in dataset.values() for pid in ds["processid"]]
    assert len(ids) == len(set(ids))
    train = dataset["train"]
    assert train[0]["image"] is None and set(train[0]["dna_barcode"]) <= set("ACGT")
    report = json.loads((realcoi_dir / "build_report.json").read_text())
    # the file repeats many rows: exact repeats and repeated processids are left out, with their ids
    assert report["dropped"]["duplicate_record"]["count"] > 0
    assert report["total_records"] + report["dropped_total"] == 5622
    assert report["total_records"] == len(ids)


def test_real_coi_build_is_deterministic(realcoi_dir, shared_data_dir, tmp_path):
    again = build_realcoi_dataset(shared_data_dir / "real-coi" / "coi_insecta.tsv", tmp_path / "again", seed=42)
    first = load_bioscan(realcoi_dir, split="val_unseen", cache_dir=tmp_path / "c1")
    second = load_bioscan(again, split="val_unseen", cache_dir=tmp_path / "c2")
    assert first["processid"] == second["processid"]


def test_real_coi_missing_columns(tmp_path):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("processid\tsequence\torder\tfamily\n1\tACGT\tDiptera\tSciaridae\n")
    with pytest.raises(ValueError, match="missing required column.*dna_barcode, genus, species"):
        build_realcoi_dataset(tsv, tmp_path / "out")


def test_load_bioscan_split_selection(synthetic_tiny_dir, tmp_path):
    cache = tmp_path / "cache"
    keys = load_bioscan(synthetic_tiny_dir, split=["train", "key_unseen"], cache_dir=cache)
    train = load_bioscan(synthetic_tiny_dir, split="train", cache_dir=cache)
    key_unseen = load_bioscan(synthetic_tiny_dir, split="key_unseen", cache_dir=cache)
    assert isinstance(keys, datasets.Dataset) and len(keys) == len(train) + len(key_unseen)
    assert keys["split"] == ["train"] * len(train) + ["key_unseen"] * len(key_unseen)
    every = load_bioscan(synthetic_tiny_dir, cache_dir=cache)
    assert isinstance(every, datasets.DatasetDict) and list(every) == list(BIOSCAN5M_SPLITS)
    # The evaluation keys of a BIOSCAN-5M-layout set, whichever way the data set is given.
    assert dataset_key_splits(synthetic_tiny_dir) == dataset_key_splits(every) == ["train", "key_unseen"]
    assert dataset_key_splits(keys) == ["train", "key_unseen"]
    stream = load_bioscan(synthetic_tiny_dir, split=["val", "test"], streaming=True, cache_dir=cache)
    assert isinstance(stream, datasets.IterableDataset)
    assert len(list(stream)) == len(every["val"]) + len(every["test"])
    with pytest.raises(ValueError, match="valid splits are"):
        load_bioscan(synthetic_tiny_dir, split="validation")
    with pytest.raises(FileNotFoundError, match="no shards"):
        load_bioscan(tmp_path, split="train")


def test_load_bioscan_reports_absent_splits(tmp_path, synthetic_tiny_dir):
    from bioscan_clip_hf.data.parquet import shard_name, write_shard

    write_shard([{"processid": "x", "split": "train", "dna_barcode": "ACGT"}], tmp_path / "data" / shard_name("train", 0, 1))
    with pytest.raises(ValueError, match=r"no split\(s\) \['test'\]; it has: train"):
        load_bioscan(tmp_path, split=["train", "test"])
    assert load_bioscan(tmp_path, split="train", cache_dir=tmp_path / "cache")[0]["image"] is None
