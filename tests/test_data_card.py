"""Dataset card (hub_cards/dataset_card_template.md) and the push-dataset command, up to the upload."""

from __future__ import annotations

import argparse
import shutil

import datasets
import pytest
from huggingface_hub import DatasetCard

from bioscan_clip_hf.data import SCHEMA_COLUMNS, add_push_dataset_parser, load_bioscan, push_dataset
from bioscan_clip_hf.data.schema import BIOSCAN5M_SPLITS as SPLITS  # the synthetic set's layout


def test_card_metadata(synthetic_tiny_dir):
    card = DatasetCard.load(synthetic_tiny_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit" and "synthetic" in data["tags"] and "synthetic" in data["pretty_name"]
    assert data["task_categories"] and data["size_categories"] == ["n<1K"]
    assert all(key == key.lower() for key in data)
    (config,) = data["configs"]
    assert [f["split"] for f in config["data_files"]] == list(SPLITS)
    assert {f["path"] for f in config["data_files"]} == {f"data/{s}-*.parquet" for s in SPLITS}
    features = {f["name"]: f["dtype"] for f in data["dataset_info"]["features"]}
    assert list(features) == list(SCHEMA_COLUMNS) and features["image"] == "image"
    assert sum(s["num_examples"] for s in data["dataset_info"]["splits"]) > 150
    assert data["pretty_name"].lower().count("synthetic") == 1
    # datasets reads the split sizes (a split without num_bytes makes it drop them with "malformed")
    (info,) = datasets.info.DatasetInfosDict.from_dataset_card_data(card.data).values()
    assert list(info.splits) == list(SPLITS)
    assert all(split.num_bytes > 0 for split in info.splits.values())
    assert info.dataset_size == sum(split.num_bytes for split in info.splits.values())
    assert info.download_size == sum(p.stat().st_size for p in (synthetic_tiny_dir / "data").glob("*.parquet"))
    assert "Synthetic data" in card.text and "@inproceedings{gong2025clibd" in card.text
    assert "| `key_unseen` |" in card.text and "Evaluation keys (CLIBD's `all_keys`) are `train` + `key_unseen`" in card.text
    assert "`key_seen`" not in card.text.split("## Columns")[0]  # no BIOSCAN-1M note on a BIOSCAN-5M layout


def test_push_dry_run_uploads_a_folder_that_loads_offline(synthetic_tiny_dir, tmp_path):
    plan = push_dataset(synthetic_tiny_dir, "someone/bioscan-synthetic", dry_run=True)
    assert plan["url"] is None and plan["files"][0] == "README.md" and "build_report.json" in plan["files"]
    assert not any(f.startswith(".build") for f in plan["files"])
    assert 'load_bioscan("someone/bioscan-synthetic"' in plan["readme"]
    assert DatasetCard(plan["readme"]).data.to_dict() == DatasetCard.load(synthetic_tiny_dir / "README.md").data.to_dict()
    upload = tmp_path / "upload"
    for name in plan["files"]:
        (upload / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic_tiny_dir / name, upload / name)
    # what the Hub would serve: the card's configs drive load_dataset(<repo>) with no script
    by_card = datasets.load_dataset(str(upload), cache_dir=str(tmp_path / "cache"))
    assert list(by_card) == list(SPLITS)
    by_parquet = datasets.load_dataset(
        "parquet", data_files={"train": str(upload / "data" / "train-*.parquet")}, split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert isinstance(by_parquet.features["image"], datasets.Image)
    assert len(by_parquet) == len(load_bioscan(synthetic_tiny_dir, split="train", cache_dir=tmp_path / "cache"))


def test_push_refuses_incomplete_folders(tmp_path, synthetic_tiny_dir):
    with pytest.raises(FileNotFoundError, match="no data/"):
        push_dataset(tmp_path, "someone/x", dry_run=True)
    folder = tmp_path / "copy"
    shutil.copytree(synthetic_tiny_dir, folder)
    next((folder / "data").glob("val-*.parquet")).unlink()
    with pytest.raises(ValueError, match="declares splits"):
        push_dataset(folder, "someone/x", dry_run=True)
    (folder / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_dataset(folder, "someone/x", dry_run=True)


def test_push_dataset_parser(synthetic_tiny_dir, capsys):
    parser = argparse.ArgumentParser(prog="bioscan-clip")
    add_push_dataset_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["push-dataset", str(synthetic_tiny_dir), "someone/x", "--dry-run", "--private"])
    assert args.private and args.dry_run and args.repo_id == "someone/x"
    assert args.func(args) == 0
    assert "someone/x" in capsys.readouterr().out
