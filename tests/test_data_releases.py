"""BIOSCAN-5M and BIOSCAN-1M builders on tiny fixtures written in the exact release layouts."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from bioscan_clip_hf.data import (
    build_bioscan1m_dataset,
    build_bioscan5m_dataset,
    dataset_key_splits,
    load_bioscan,
    read_clibd_partition,
)

REPO = Path(__file__).resolve().parents[1]
LONG_BARCODE = "ACGT" * 180  # 720 nt: longer than the tokenizer's 660


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (256, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def _chunk(processid: str, split: str) -> str:
    """The release's rule: first 2 (pretrain) or 1 (train, other_heldout) hex chars of md5, else none."""
    digest = hashlib.md5(processid.encode()).hexdigest()
    return {"pretrain": digest[:2], "train": digest[:1], "other_heldout": digest[:1]}.get(split, "")


# processid, split, order, family, genus, species, barcode, image: "ok" | "missing" | "corrupt"
ROWS_5M = [
    ("AAA001-21", "pretrain", "Diptera", "Cecidomyiidae", "", "", "ACGT" * 160, "ok"),
    ("AAA002-21", "pretrain", "Diptera", "", "", "", "ACGTN" * 120, "ok"),
    ("AAA003-21", "train", "Lepidoptera", "Gelechiidae", "Tuta", "Tuta absoluta", LONG_BARCODE, "ok"),
    ("AAA004-21", "train", "Lepidoptera", "Gelechiidae", "Tuta", "Tuta absoluta", "ACGT" * 160, "missing"),
    ("AAA005-21", "train", "Hemiptera", "Miridae", "Phoenicocoris", "Phoenicocoris obscurellus", "ACGT" * 160, "corrupt"),
    ("AAA006-21", "val", "Lepidoptera", "Gelechiidae", "Tuta", "Tuta absoluta", "ACGT" * 160, "ok"),
    ("AAA007-21", "test", "Hemiptera", "Cicadellidae", "Tylozygus", "Tylozygus geometricus", "ACGT" * 160, "ok"),
    ("AAA008-21", "key_unseen", "Coleoptera", "Carabidae", "Carabus", "Carabus novus", "ACGT" * 160, "ok"),
    ("AAA009-21", "val_unseen", "Coleoptera", "Carabidae", "Carabus", "Carabus novus", "ACGT" * 160, "ok"),
    ("AAA010-21", "test_unseen", "Coleoptera", "Carabidae", "Carabus", "Carabus alter", "ACGT" * 160, "ok"),
    ("AAA011-21", "other_heldout", "Diptera", "Sciaridae", "Bradysia", "Bradysia sp. 1", "ACGT" * 160, "ok"),
    ("AAA012-21", "train", "Diptera", "Sciaridae", "Bradysia", "Bradysia x", "ACGT*XX" * 90, "ok"),
    ("AAA013-21", "train", "Diptera", "Sciaridae", "Bradysia", "Bradysia x", "", "ok"),
    ("AAA003-21", "train", "Diptera", "Sciaridae", "Bradysia", "Bradysia y", "ACGT" * 160, "ok"),
]
COLUMNS_5M = ["processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus",
              "species", "dna_bin", "dna_barcode", "country", "split", "index_bioscan_1M_insect", "chunk"]


def write_5m_release(root: Path, as_zip: bool) -> tuple[Path, list[Path]]:
    """Metadata CSV (NaN = empty cells, as pandas writes them) + cropped_256 folder or zips."""
    root.mkdir(parents=True, exist_ok=True)
    metadata = root / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    files = {}
    with open(metadata, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS_5M)
        writer.writeheader()
        for n, (pid, split, order, family, genus, species, barcode, image) in enumerate(ROWS_5M):
            chunk = _chunk(pid, split)
            writer.writerow({"processid": pid, "sampleid": f"S-{n}", "taxon": species or genus or family,
                             "phylum": "Arthropoda", "class": "Insecta", "order": order, "family": family,
                             "subfamily": "", "genus": genus, "species": species, "dna_bin": f"BOLD:A{n:04d}",
                             "dna_barcode": barcode, "country": "Canada", "split": split,
                             "index_bioscan_1M_insect": "", "chunk": chunk})
            path = f"cropped_256/{split}/{chunk}/{pid}.jpg" if chunk else f"cropped_256/{split}/{pid}.jpg"
            if image == "ok":
                files.setdefault(path, _jpeg(n))
            elif image == "corrupt":
                files[path] = _jpeg(n)[:400]  # truncated JPEG: passes Image.open, fails load()
    if as_zip:  # like the release's per-split zips; one deflated, one stored
        sources = [root / "BIOSCAN_5M_cropped_256_pretrain_train.zip", root / "BIOSCAN_5M_cropped_256_eval.zip"]
        archives = [zipfile.ZipFile(sources[0], "w", zipfile.ZIP_DEFLATED), zipfile.ZipFile(sources[1], "w")]
        for path, data in files.items():
            archive = archives[0] if path.split("/")[1] in ("pretrain", "train") else archives[1]
            archive.writestr(f"bioscan5m/images/{path}", data)
        for archive in archives:
            archive.close()
    else:
        images = root / "bioscan5m" / "images"
        for path, data in files.items():
            (images / path).parent.mkdir(parents=True, exist_ok=True)
            (images / path).write_bytes(data)
        sources = [images]
    return metadata, sources


@pytest.fixture(scope="module")
def release_5m(tmp_path_factory):
    return write_5m_release(tmp_path_factory.mktemp("release5m"), as_zip=False)


@pytest.fixture(scope="module")
def built_5m(release_5m, tmp_path_factory):
    metadata, images = release_5m
    out = tmp_path_factory.mktemp("built5m")
    build_bioscan5m_dataset(metadata, images, out, shard_size=2)
    return out


def _all_records(folder: Path, tmp_path: Path) -> dict[str, dict]:
    dataset = load_bioscan(folder, cache_dir=tmp_path / "cache", decode_images=False)
    return {r["processid"]: r for split in dataset.values() for r in split}


def test_5m_build_keeps_good_records_and_reports_bad_ones(built_5m, release_5m, tmp_path):
    records = _all_records(built_5m, tmp_path)
    assert sorted(records) == ["AAA001-21", "AAA002-21", "AAA003-21", "AAA006-21", "AAA007-21", "AAA008-21",
                               "AAA009-21", "AAA010-21", "AAA011-21"]
    report = json.loads((built_5m / "build_report.json").read_text())
    dropped = {reason: [r["processid"] for r in entry["records"]] for reason, entry in report["dropped"].items()}
    assert dropped == {
        "missing_image": ["AAA004-21"],
        "unreadable_image": ["AAA005-21"],
        "invalid_barcode": ["AAA012-21"],
        "missing_barcode": ["AAA013-21"],
        "duplicate_processid": ["AAA003-21"],
    }
    assert "'*X'" in report["dropped"]["invalid_barcode"]["records"][0]["detail"]
    assert report["counts"] == {"key_unseen": 1, "other_heldout": 1, "pretrain": 2, "test": 1, "test_unseen": 1,
                                "train": 1, "val": 1, "val_unseen": 1}
    assert report["notes"]["barcodes_longer_than_660_kept_whole"] == 1
    # NaN / empty ranks become None; long barcodes are kept whole; image bytes are the release's.
    assert records["AAA001-21"]["genus"] is None and records["AAA001-21"]["species"] is None
    assert records["AAA002-21"]["family"] is None and records["AAA001-21"]["subfamily"] is None
    assert records["AAA003-21"]["dna_barcode"] == LONG_BARCODE
    assert records["AAA003-21"]["species"] == "Tuta absoluta" and records["AAA003-21"]["split"] == "train"
    metadata, images = release_5m
    chunk = _chunk("AAA003-21", "train")
    assert records["AAA003-21"]["image"]["bytes"] == (images[0] / f"cropped_256/train/{chunk}/AAA003-21.jpg").read_bytes()
    assert (built_5m / "data" / "pretrain-00000-of-00001.parquet").is_file()
    card = DatasetCard.load(built_5m / "README.md")
    assert card.data.license == "cc-by-3.0" and "BIOSCAN-5M" in card.data.pretty_name
    assert "5 (" not in card.text and "dropped 1 (duplicate processid)" in card.text


def test_5m_from_zip_in_parallel_matches_folder_build(built_5m, tmp_path):
    metadata, images = write_5m_release(tmp_path / "zipped", as_zip=True)
    out = build_bioscan5m_dataset(metadata, images, tmp_path / "out", shard_size=2, num_proc=2)
    assert _all_records(out, tmp_path) == _all_records(built_5m, tmp_path)


def test_5m_resume_rebuilds_only_missing_shards(release_5m, tmp_path):
    metadata, images = release_5m
    out = build_bioscan5m_dataset(metadata, images, tmp_path / "out", shard_size=1)
    shards = sorted((out / "data").glob("*.parquet"))
    planned = len(list((out / ".build").glob("*.parquet.json")))  # shards whose records were all dropped
    assert planned == 11 and len(shards) == 9  # write no file (an empty Parquet file breaks readers)
    kept, lost = shards[0], shards[-1]
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()  # an interrupted build: the last shard never finished
    (out / ".build" / f"{lost.name}.json").unlink()
    build_bioscan5m_dataset(metadata, images, out, shard_size=1)
    assert lost.is_file() and kept.stat().st_mtime_ns == kept_mtime
    report = json.loads((out / "build_report.json").read_text())
    assert report["notes"]["shards_reused_from_previous_run"] == planned - 1
    assert report["total_records"] == 9 and report["dropped_total"] == 5
    with pytest.raises(ValueError, match="different parameters"):
        build_bioscan5m_dataset(metadata, images, out, shard_size=3)


def test_5m_bad_metadata_is_named(tmp_path, release_5m):
    metadata, images = release_5m
    broken = tmp_path / "broken.csv"
    lines = metadata.read_text().splitlines()
    header = lines[0].replace("dna_barcode", "barcode").replace(",chunk", ",part")
    broken.write_text("\n".join([header, *lines[1:]]))
    with pytest.raises(ValueError, match="missing required column.*dna_barcode, chunk"):
        build_bioscan5m_dataset(broken, images, tmp_path / "out")
    bad_split = tmp_path / "bad_split.csv"
    bad_split.write_text(metadata.read_text().replace(",val_unseen,", ",validation_unseen,"))
    with pytest.raises(ValueError, match=r"line 10: unknown split 'validation_unseen'; valid splits are: pretrain"):
        build_bioscan5m_dataset(bad_split, images, tmp_path / "out")
    bad_split.write_text(metadata.read_text().replace(",val_unseen,", ",key_seen,"))  # BIOSCAN-1M's, not a 5M split
    with pytest.raises(ValueError, match=r"line 10: unknown split 'key_seen'; valid splits are: pretrain, train, val, test, key_unseen"):
        build_bioscan5m_dataset(bad_split, images, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="cropped_256"):
        build_bioscan5m_dataset(metadata, [tmp_path], tmp_path / "out")


# sampleid, processid, order, family, genus, species, nucraw, chunk_number, list ("" = none), image ok?
ROWS_1M = [
    ("BIOUG001-A01", "P001", "Diptera", "Sciaridae", "not_classified", "not_classified", "ACGT" * 160, 1, "no_split", True),
    ("BIOUG001-A02", "P002", "Diptera", "Cecidomyiidae", "Aphidoletes", "Aphidoletes aphidimyza", LONG_BARCODE, 1, "train_seen", True),
    ("BIOUG001-A03", "P003", "Diptera", "Cecidomyiidae", "Aphidoletes", "Aphidoletes aphidimyza", "ACGT" * 160, 2, "seen_keys", True),
    ("BIOUG001-A04", "P004", "Diptera", "Cecidomyiidae", "Aphidoletes", "Aphidoletes aphidimyza", "ACGT" * 160, 2, "val_seen", True),
    ("BIOUG001-A05", "P005", "Diptera", "Cecidomyiidae", "Aphidoletes", "Aphidoletes aphidimyza", "ACGT" * 160, 2, "test_seen", False),
    ("BIOUG001-A06", "P006", "Hemiptera", "Miridae", "Lygus", "Lygus lineolaris", "ACGT" * 160, 3, "val_unseen", True),
    ("BIOUG001-A07", "P007", "Hemiptera", "Miridae", "Lygus", "Lygus lineolaris", "ACGT" * 160, 3, "val_unseen_keys", True),
    ("BIOUG001-A08", "P008", "Hemiptera", "Miridae", "Lygus", "Lygus vanduzeei", "ACGT" * 160, 3, "test_unseen", True),
    ("BIOUG001-A09", "P009", "Hemiptera", "Miridae", "Lygus", "Lygus vanduzeei", "ACGT" * 160, 3, "test_unseen_keys", True),
    ("BIOUG001-A10", "P010", "Hemiptera", "Miridae", "Lygus", "Lygus solo", "ACGT" * 160, 3, "single_species", True),
    ("BIOUG001-A11", "P011", "Hemiptera", "Miridae", "Lygus", "Lygus solo", "ACGT" * 160, 3, "", True),
    ("BIOUG001-A12", "P012", "Diptera", "Cecidomyiidae", "Aphidoletes", "Aphidoletes aphidimyza", "ACGT" * 160, 2, "test_seen", True),
]
COLUMNS_1M = ["sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe",
              "genus", "species", "subspecies", "nucraw", "image_file", "large_diptera_family", "chunk_number"]
LISTS_1M = ["no_split", "single_species", "train_seen", "seen_keys", "val_seen", "test_seen", "val_unseen",
            "test_unseen", "val_unseen_keys", "test_unseen_keys", "all_keys", "no_split_and_seen_train"]


def write_1m_release(root: Path) -> tuple[Path, Path, Path, Path]:
    """TSV + images under part<chunk>/ + the CLIBD partition lists as a folder and as a zip."""
    root.mkdir(parents=True, exist_ok=True)
    metadata = root / "BIOSCAN_Insect_Dataset_metadata.tsv"
    images = root / "cropped_256"
    lists: dict[str, list[str]] = {name: [] for name in LISTS_1M}
    with open(metadata, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS_1M, delimiter="\t")
        writer.writeheader()
        for n, (sid, pid, order, family, genus, species, barcode, chunk, split, has_image) in enumerate(ROWS_1M):
            writer.writerow({"sampleid": sid, "processid": pid, "uri": f"BOLD:B{n:04d}", "name": species,
                             "phylum": "Arthropoda", "class": "Insecta", "order": order, "family": family,
                             "subfamily": "not_classified", "tribe": "not_classified", "genus": genus,
                             "species": species, "subspecies": "not_classified", "nucraw": barcode,
                             "image_file": f"{sid}.jpg", "large_diptera_family": "", "chunk_number": chunk})
            if has_image:
                (images / f"part{chunk}").mkdir(parents=True, exist_ok=True)
                (images / f"part{chunk}" / f"{sid}.jpg").write_bytes(_jpeg(100 + n))
            if split:
                lists[split].append(sid)
    lists["all_keys"] = lists["seen_keys"] + lists["val_unseen_keys"] + lists["test_unseen_keys"]
    partition = root / "CLIBD_partitioning"
    partition.mkdir()
    archive_path = root / "CLIBD_partitioning.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for name, ids in lists.items():
            (partition / f"{name}.txt").write_text("\n".join(ids) + "\n")
            archive.writestr(f"CLIBD_partitioning/{name}.txt", "\n".join(ids) + "\n")
    return metadata, images, partition, archive_path


@pytest.fixture(scope="module")
def release_1m(tmp_path_factory):
    return write_1m_release(tmp_path_factory.mktemp("release1m"))


def test_1m_build_maps_clibd_partition_onto_bioscan5m_splits(release_1m, tmp_path):
    metadata, images, partition, archive = release_1m
    out = build_bioscan1m_dataset(metadata, [images], archive, tmp_path / "out", shard_size=3)
    records = _all_records(out, tmp_path)
    assert {pid: r["split"] for pid, r in records.items()} == {
        "P001": "pretrain", "P002": "train", "P003": "key_seen", "P004": "val", "P006": "val_unseen",
        "P007": "key_unseen", "P008": "test_unseen", "P009": "key_unseen", "P010": "pretrain", "P012": "test",
    }
    # The original's protocol: it trains on no_split + train_seen and evaluates against all_keys =
    # seen_keys + val/test_unseen_keys. The seen_keys record P003 is a key and never training data.
    assert dataset_key_splits(out) == ["key_seen", "key_unseen"]
    keys = load_bioscan(out, split=dataset_key_splits(out), cache_dir=tmp_path / "cache", decode_images=False)
    training = load_bioscan(out, split=["pretrain", "train"], cache_dir=tmp_path / "cache", decode_images=False)
    assert sorted(keys["processid"]) == ["P003", "P007", "P009"] and "P003" not in training["processid"]
    assert records["P001"]["genus"] is None and records["P001"]["species"] is None  # not_classified -> None
    assert records["P002"]["subfamily"] is None and records["P002"]["dna_barcode"] == LONG_BARCODE
    assert records["P002"]["dna_bin"] == "BOLD:B0001"
    assert records["P002"]["image"]["bytes"] == (images / "part1" / "BIOUG001-A02.jpg").read_bytes()
    report = json.loads((out / "build_report.json").read_text())
    dropped = {reason: [r["processid"] for r in entry["records"]] for reason, entry in report["dropped"].items()}
    assert dropped == {"missing_image": ["P005"], "not_in_partition": ["P011"]}
    card = DatasetCard.load(out / "README.md")
    declared = [f["split"] for f in card.data.configs[0]["data_files"]]
    assert card.data.license == "cc-by-nc-sa-4.0" and declared == ["pretrain", "train", "val", "test", "key_seen",
                                                                    "key_unseen", "val_unseen", "test_unseen"]
    assert "are `key_seen` + `key_unseen`" in card.text and "| `key_seen` | 1 | keys for seen species (never trained on) |" in card.text
    assert "`seen_keys` -> `key_seen`" in card.text and "split=[\"key_seen\", \"key_unseen\"]" in card.text
    folder_build = build_bioscan1m_dataset(metadata, [images], partition, tmp_path / "out2", shard_size=3)
    assert _all_records(folder_build, tmp_path) == records

    # A BIOSCAN-1M folder built before key_seen existed (its seen keys inside train) is refused, not misread.
    for shard in (folder_build / "data").glob("key_seen-*.parquet"):
        shard.unlink()
    with pytest.raises(ValueError, match="BIOSCAN-1M build without a key_seen split.*rebuild it"):
        dataset_key_splits(folder_build)


def test_1m_partition_errors(release_1m, tmp_path):
    metadata, images, partition, archive = release_1m
    assert read_clibd_partition(partition) == read_clibd_partition(archive)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in partition.glob("*.txt"):
        (broken / path.name).write_text(path.read_text())
    (broken / "val_seen.txt").write_text("BIOUG001-A02\n")  # also in train_seen
    with pytest.raises(ValueError, match="BIOUG001-A02.*train_seen.txt and val_seen.txt"):
        read_clibd_partition(broken)
    (broken / "val_seen.txt").unlink()
    with pytest.raises(ValueError, match="missing partition list.*val_seen"):
        read_clibd_partition(broken)


def test_build_dataset_script(release_5m, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("build_dataset", REPO / "training" / "build_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    metadata, images = release_5m
    out = tmp_path / "cli"
    assert script.main(["bioscan5m", "--metadata", str(metadata), "--images", *map(str, images), "--out", str(out),
                        "--splits", "train", "val", "--num-proc", "1"]) == 0
    assert json.loads((out / "build_report.json").read_text())["counts"] == {"train": 1, "val": 1}
    assert "dropped" in capsys.readouterr().err
