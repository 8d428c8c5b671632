"""Model card rendering (hub_cards/model_card_template.md via huggingface_hub.ModelCard) and CITATION.cff."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from bioscan_clip_hf.evaluation import markdown_table
from bioscan_clip_hf.hub import EVALUATION_FILENAME, evaluation_records, render_model_card

REPO_ROOT = Path(__file__).resolve().parents[1]
RANKS = ("order", "family", "genus", "species")
PAIRS = ("image->image", "dna->dna", "image->dna", "averaged->averaged")


def _evaluation(title: str = "synthetic demo data (tiny)") -> dict:
    """A result in the format of bioscan_clip_hf.evaluation.evaluate_model, with distinct percentages."""
    pairs = {}
    value = 3.17
    for pair in PAIRS:
        per_rank = {}
        for rank in RANKS:
            rep = {}
            for k in (1, 3, 5):
                for avg in ("micro", "macro"):
                    seen, unseen = round(value, 2), round(value * 0.61 + 1.3, 2)
                    value = (value * 1.37 + 7.9) % 97
                    rep[f"seen_{avg}_top{k}"] = seen
                    rep[f"unseen_{avg}_top{k}"] = unseen
                    rep[f"hm_{avg}_top{k}"] = round(2 / (1 / seen + 1 / unseen), 4)
            rep["n_seen"], rep["n_unseen"] = 40, 25
            per_rank[rank] = rep
        pairs[pair] = per_rank
    return {
        "protocol": {"query_splits": ["val", "val_unseen"], "key_splits": ["train", "key_unseen"], "n_seen": 40,
                     "n_unseen": 25, "n_keys": 300, "k_values": [1, 3, 5], "pairs": list(PAIRS), "skipped": {},
                     "title": title},
        "pairs": pairs,
        "novelty": {},
        "selection_score": 42.0,
        "seconds": 1.0,
    }


@pytest.fixture()
def model_dir(tmp_path, tiny_model_dir) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _metrics_by_config(card_data: dict) -> dict[tuple[str, str], dict]:
    out = {}
    for entry in card_data["model-index"]:
        for result in entry["results"]:
            for metric in result["metrics"]:
                out[(result["dataset"]["split"], metric["config"])] = metric
    return out


def test_rendered_card_parses_and_holds_the_evaluation_numbers(tmp_path, model_dir):
    evaluation = _evaluation()
    (model_dir / EVALUATION_FILENAME).write_text(json.dumps(evaluation))
    card = render_model_card(model_dir, "bioscan-ml/bioscan-clip-tiny", revision="0123abcd",
                             datasets=["bioscan-ml/BIOSCAN-5M"], base_model=["prajjwal1/bert-small"],
                             training={"epochs": 3, "batch size": 32})
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    data = loaded.data.to_dict()

    # YAML: lowercase keys the Hub reads.
    assert all(key == key.lower() for key in data)
    assert data["license"] == "mit"
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "zero-shot-image-classification"
    assert {"custom_code", "biology", "dna-barcoding", "synthetic-data"} <= set(data["tags"])
    assert data["datasets"] == ["bioscan-ml/BIOSCAN-5M"]
    assert data["base_model"] == ["prajjwal1/bert-small"]
    assert data["metrics"] == ["accuracy"]

    # model-index: every top-1 micro and macro accuracy of both query splits, for every pair and rank.
    metrics = _metrics_by_config(data)
    expected = 0
    for pair, per_rank in evaluation["pairs"].items():
        for rank, rep in per_rank.items():
            for group, split in (("seen", "val"), ("unseen", "val_unseen")):
                for avg in ("micro", "macro"):
                    metric = metrics[(split, f"{pair}/{rank}/top1/{avg}")]
                    assert metric["value"] == rep[f"{group}_{avg}_top1"]
                    assert metric["type"] == "accuracy"
                    expected += 1
    assert len(metrics) == expected == len(PAIRS) * len(RANKS) * 2 * 2

    # Body: the paper-style table (top-1, seen / unseen / H.M.), the pinned usage, limitations and citations.
    body = loaded.text
    assert markdown_table(evaluation, k=1).strip() in body
    species = evaluation["pairs"]["image->dna"]["species"]
    assert f"| {species['seen_micro_top1']:.1f} | {species['unseen_micro_top1']:.1f} | {species['hm_micro_top1']:.1f} |" in body
    assert 'AutoModel.from_pretrained("bioscan-ml/bioscan-clip-tiny", revision="0123abcd", trust_remote_code=True)' in body
    assert "Demonstration model trained on synthetic data" in body and "say nothing about real insects" in body
    assert "| epochs | 3 |" in body
    for heading in ("## Model details", "## How to use", "## Training", "## Evaluation",
                    "## Limitations and advice for biologists", "## Citation"):
        assert heading in body
    for key in ("gong2025clibd", "arias2023barcodebert", "gharaee2023bioscan1m", "gharaee2024bioscan5m"):
        assert key in body


def test_card_without_evaluation_has_no_model_index(model_dir):
    card = render_model_card(model_dir, "org/plain")
    data = card.data.to_dict()
    assert "model-index" not in data
    assert "No evaluation results" in card.text
    assert "synthetic-data" not in data["tags"]
    # The tiny model has a text tower, so the card shows the zero-shot pipeline.
    assert 'pipeline("zero-shot-image-classification", model="org/plain", revision="main"' in card.text


def test_card_describes_the_saved_image_preprocessing(model_dir):
    """The "Images" line renders the folder's preprocessor_config.json, not a fixed sentence."""
    card = render_model_card(model_dir, "org/plain")
    assert "normalised per channel with mean [0.5, 0.5, 0.5] and std [0.5, 0.5, 0.5]" in card.text  # tiny preset
    assert "no mean/std normalisation" not in card.text
    config_path = model_dir / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config.update(do_normalize=False, size={"shortest_edge": 128}, crop_size={"height": 112, "width": 112})
    config_path.write_text(json.dumps(config))
    card = render_model_card(model_dir, "org/plain")
    assert "shorter side resized to 128 px" in card.text and "centre crop 112x112 px" in card.text
    assert "scaled by 0.00392157 to [0, 1], no mean/std normalisation." in card.text
    assert "github.com/bioscan-ml" not in card.text  # the original authors' organisation does not host this project


def test_evaluation_records_reject_other_json():
    with pytest.raises(ValueError, match="not an evaluate_model result"):
        evaluation_records({"results": []})
    records = evaluation_records(_evaluation())
    assert {r.group for r in records} == {"seen", "unseen", "hm"}
    assert len(records) == len(PAIRS) * len(RANKS) * 3 * 2 * 3


def test_published_metadata_does_not_claim_the_original_authors_repository():
    """No repository of the original authors' organisation (which does not hold this project) is given as its
    home: pyproject URLs, CITATION.cff and the card templates (citations of their papers stay)."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not any("bioscan-ml" in url for url in project.get("urls", {}).values())
    assert "repository-code" not in yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    for template in ("model_card_template.md", "dataset_card_template.md"):
        assert "github.com/bioscan-ml" not in (REPO_ROOT / "hub_cards" / template).read_text(), template


def test_citation_cff_lists_the_papers():
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "license"} <= set(cff)
    assert cff["preferred-citation"]["title"].startswith("CLIBD")
    titles = " | ".join(ref["title"] for ref in cff["references"])
    for name in ("BarcodeBERT", "BIOSCAN-1M", "BIOSCAN-5M"):
        assert name in titles
    for ref in [cff["preferred-citation"], *cff["references"]]:
        assert ref["authors"] and ref["year"] and ref["url"].startswith("https://")


def test_card_from_a_real_evaluation(tmp_path, trained_tiny_model_dir, synthetic_tiny_dir):
    """End to end: evaluate_model's JSON for the trained tiny model, saved next to the weights as training
    does, gives a card whose model-index holds exactly its top-1 figures."""
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
    from bioscan_clip_hf.evaluation import evaluate_model

    folder = tmp_path / "model"
    shutil.copytree(trained_tiny_model_dir, folder)
    model = BioscanClipModel.from_pretrained(folder)
    processor = BioscanClipProcessor.from_pretrained(folder)
    evaluation = evaluate_model(model, processor, synthetic_tiny_dir, query_splits=("test", "test_unseen"),
                                k_values=(1,), title="synthetic tiny set", progress=False)
    (folder / EVALUATION_FILENAME).write_text(json.dumps(evaluation))
    card = render_model_card(folder, "org/tiny-demo")
    path = tmp_path / "README.md"
    card.save(path)
    data = ModelCard.load(path).data.to_dict()
    metrics = _metrics_by_config(data)
    for pair, per_rank in evaluation["pairs"].items():
        for rank, rep in per_rank.items():
            for group, split in (("seen", "test"), ("unseen", "test_unseen")):
                for avg in ("micro", "macro"):
                    assert metrics[(split, f"{pair}/{rank}/top1/{avg}")]["value"] == rep[f"{group}_{avg}_top1"]
    assert "synthetic-data" in data["tags"]
    assert markdown_table(evaluation, k=1).strip() in card.text
