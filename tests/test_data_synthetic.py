"""The synthetic set keeps its promises: taxon signal in DNA and images, BIOSCAN schema and splits."""

from __future__ import annotations

import io
import itertools
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from bioscan_clip_hf.data import SCHEMA_COLUMNS, SPLITS, load_bioscan
from bioscan_clip_hf.data.schema import BIOSCAN5M_SPLITS
from bioscan_clip_hf.synthetic import generate_synthetic_records


@pytest.fixture(scope="module")
def records():
    return generate_synthetic_records("tiny", seed=0, progress=False)


def _kmer_distance(a: str, b: str, k: int = 8) -> float:
    """Alignment-free distance: 1 - Jaccard similarity of the k-mer sets."""
    sa = {a[i : i + k] for i in range(len(a) - k + 1)}
    sb = {b[i : i + k] for i in range(len(b) - k + 1)}
    return 1 - len(sa & sb) / len(sa | sb)


def _mean_distance(pairs, distance) -> float:
    values = [distance(a, b) for a, b in pairs]
    assert values, "no pairs"
    return float(np.mean(values))


def _pairs_by_relation(records, max_pairs: int = 400):
    """Pairs of species-labelled records grouped by their closest shared rank."""
    labelled = [r for r in records if r["species"]]
    groups = defaultdict(list)
    for a, b in itertools.combinations(labelled, 2):
        if a["species"] == b["species"]:
            relation = "species"
        elif a["genus"] == b["genus"]:
            relation = "genus"
        elif a["family"] == b["family"]:
            relation = "family"
        elif a["order"] == b["order"]:
            relation = "order"
        else:
            relation = "none"
        groups[relation].append((a, b))
    rng = np.random.default_rng(0)
    return {k: [v[i] for i in rng.permutation(len(v))[:max_pairs]] for k, v in groups.items()}


def test_dna_distance_grows_with_taxonomic_distance(records):
    groups = _pairs_by_relation(records)
    d = {
        relation: _mean_distance([(a["dna_barcode"], b["dna_barcode"]) for a, b in pairs], _kmer_distance)
        for relation, pairs in groups.items()
    }
    across_families = _mean_distance(
        [(a["dna_barcode"], b["dna_barcode"]) for a, b in groups["order"] + groups["none"]], _kmer_distance
    )
    assert d["species"] < d["genus"] < d["family"] < across_families, d


def test_barcodes_look_like_coi(records):
    lengths = [len(r["dna_barcode"]) for r in records]
    assert 500 <= min(lengths) and max(lengths) <= 700
    assert any(len(r["dna_barcode"]) > 660 for r in records)  # exercises truncation downstream
    assert any("N" in r["dna_barcode"] for r in records)
    assert set("".join(r["dna_barcode"] for r in records)) <= set("ACGTN")
    at = np.mean([(r["dna_barcode"].count("A") + r["dna_barcode"].count("T")) / len(r["dna_barcode"]) for r in records])
    assert 0.55 < at < 0.8  # insect COI is AT-rich


def _histogram(record) -> np.ndarray:
    """Colour histogram (4x4x4 bins) of the foreground (pixels far from the border's median
    colour): invariant to pose and background, a 'simple pixel statistic'."""
    pixels = np.asarray(Image.open(io.BytesIO(record["image"]["bytes"])).convert("RGB"), dtype=np.int64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    foreground = pixels[np.abs(pixels - np.median(border, axis=0)).sum(-1) > 60] // 64
    codes = foreground[:, 0] * 16 + foreground[:, 1] * 4 + foreground[:, 2]
    hist = np.bincount(codes, minlength=64).astype(float)
    return hist / hist.sum()


def test_images_of_a_genus_are_closer_than_images_across_orders(records):
    groups = _pairs_by_relation(records, max_pairs=150)
    histograms = {r["processid"]: _histogram(r) for r in records if r["species"]}
    l1 = lambda a, b: float(np.abs(histograms[a["processid"]] - histograms[b["processid"]]).sum())  # noqa: E731
    within_genus = _mean_distance(groups["species"] + groups["genus"], l1)
    across_orders = _mean_distance(groups["none"], l1)
    assert within_genus < 0.6 * across_orders, (within_genus, across_orders)


def test_images_are_stored_like_cropped_256(records):
    for record in records[:20]:
        image = Image.open(io.BytesIO(record["image"]["bytes"]))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert min(image.size) == 256 and max(image.size) <= 352


def test_schema_and_split_rules(records):
    assert all(set(r) == set(SCHEMA_COLUMNS) for r in records)
    assert len({r["processid"] for r in records}) == len(records)
    by_split = defaultdict(list)
    for r in records:
        by_split[r["split"]].append(r)
    assert set(by_split) == set(BIOSCAN5M_SPLITS)  # the default layout: seen keys inside train
    species = {split: {r["species"] for r in rows} for split, rows in by_split.items()}
    assert species["pretrain"] == {None}  # like BIOSCAN-5M: species unknown
    assert any(r["genus"] is None for r in by_split["pretrain"])
    seen = species["train"] | species["val"] | species["test"]
    unseen = species["key_unseen"] | species["val_unseen"] | species["test_unseen"]
    assert None not in seen | unseen | species["other_heldout"]
    assert not seen & unseen
    assert species["val"] | species["test"] <= species["train"]  # every seen query species has keys
    assert species["val_unseen"] | species["test_unseen"] == species["key_unseen"]
    assert not species["val_unseen"] & species["test_unseen"]
    assert not species["other_heldout"] & (seen | unseen)
    assert 0.1 <= len(unseen) / len(seen | unseen) <= 0.3
    assert 150 <= len(records) <= 300


def test_deterministic_from_seed(records):
    again = generate_synthetic_records("tiny", seed=0, progress=False)
    assert [r["dna_barcode"] for r in again] == [r["dna_barcode"] for r in records]
    assert again[5]["image"]["bytes"] == records[5]["image"]["bytes"]
    other = generate_synthetic_records("tiny", seed=1, progress=False)
    assert [r["dna_barcode"] for r in other] != [r["dna_barcode"] for r in records]


def test_unknown_size_is_an_error():
    with pytest.raises(ValueError, match="tiny"):
        generate_synthetic_records("huge")


def test_written_folder_loads_with_the_schema(synthetic_tiny_dir, tmp_path, records):
    dataset = load_bioscan(synthetic_tiny_dir, cache_dir=tmp_path / "cache")
    assert list(dataset) == [s for s in SPLITS if s in dataset]
    assert sum(len(d) for d in dataset.values()) == len(records)
    train = dataset["train"]
    assert train.column_names == list(SCHEMA_COLUMNS)
    assert isinstance(train[0]["image"], Image.Image)
    assert (synthetic_tiny_dir / "build_report.json").is_file() and (synthetic_tiny_dir / "README.md").is_file()


def test_command_line(tmp_path, capsys):
    from bioscan_clip_hf.synthetic import main

    out = tmp_path / "syn"
    assert main(["--out", str(out), "--size", "tiny", "--seed", "0"]) == 0
    assert sorted(p.name.split("-")[0] for p in (out / "data").glob("*.parquet")) == sorted(BIOSCAN5M_SPLITS)
    assert "synthetic records" in capsys.readouterr().err
