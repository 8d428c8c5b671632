"""transformers' ``zero-shot-image-classification`` pipeline on our model folders, with taxon names as labels."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from transformers import pipeline

ORDERS = ["Diptera", "Hymenoptera", "Coleoptera", "Lepidoptera", "Hemiptera"]
# Order names rendered like the original taxonomy strings of records identified to order only.
TEMPLATE = "{} not_classified not_classified not_classified"


def test_pipeline_scores_are_the_models_image_text_probabilities(tmp_path, tiny_model_dir):
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor

    clf = pipeline("zero-shot-image-classification", model=str(tiny_model_dir), trust_remote_code=True)
    images = [Image.new("RGB", (320, 240), (210, 120, 40)), Image.new("RGB", (256, 300), (30, 90, 160))]
    path = tmp_path / "specimen.jpg"
    images[1].save(path)
    single = clf(images[0], candidate_labels=ORDERS, hypothesis_template=TEMPLATE)
    batch = clf([images[0], str(path)], candidate_labels=ORDERS, hypothesis_template=TEMPLATE)

    model = BioscanClipModel.from_pretrained(tiny_model_dir).eval()
    processor = BioscanClipProcessor.from_pretrained(tiny_model_dir)
    # The processor pads texts to 20 tokens, the pipeline to the longest label: same probabilities anyway.
    inputs = processor(images=[images[0], Image.open(path)], text=[TEMPLATE.format(o) for o in ORDERS])
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(dim=-1)

    assert [p["label"] for p in single] == [p["label"] for p in batch[0]]
    for row, preds in zip(probs, batch):
        assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
        for p in preds:
            assert p["score"] == pytest.approx(row[ORDERS.index(p["label"])].item(), abs=1e-5)


def test_pipeline_defaults_to_the_models_text_format(tiny_model_dir):
    """Labels go in as written (no "This is a photo of {}.") and are padded/truncated to the model's 20 tokens
    exactly as the processor does, so the scores are the model's own probabilities, also for long labels."""
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor, taxonomy_text

    clf = pipeline("zero-shot-image-classification", model=str(tiny_model_dir), trust_remote_code=True)
    assert type(clf).__name__ == "BioscanClipZeroShotImageClassificationPipeline"
    labels = [taxonomy_text("Diptera", "Culicidae", "Aedes", "Aedes aegypti"),
              taxonomy_text("Lepidoptera", "Gelechiidae", "Tuta", "Tuta absoluta"),
              taxonomy_text("Hymenoptera", "Ichneumonidae", "Pseudorhyssa", "Pseudorhyssa maculicoxis"),
              taxonomy_text("Coleoptera")]
    processor = BioscanClipProcessor.from_pretrained(tiny_model_dir)
    assert len(processor.tokenizer(labels[2])["input_ids"]) > 20  # longer than the model's text
    image = Image.new("RGB", (320, 240), (210, 120, 40))
    scores = {p["label"]: p["score"] for p in clf(image, candidate_labels=labels)}
    model = BioscanClipModel.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        probs = model(**processor(images=[image], text=labels)).logits_per_image.softmax(dim=-1)[0]
    for label, probability in zip(labels, probs.tolist()):
        assert scores[label] == pytest.approx(probability, abs=1e-6)
    templated = clf(image, candidate_labels=["Diptera"], hypothesis_template="{} not_classified not_classified x")
    assert templated[0]["label"] == "Diptera"  # the template stays overridable


def test_pipeline_needs_a_text_tower(tmp_path):
    from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor

    folder = tmp_path / "image_dna"
    BioscanClipModel(BioscanClipConfig.from_preset("tiny", modalities=["image", "dna"])).save_pretrained(folder)
    BioscanClipProcessor.from_preset("tiny").save_pretrained(folder)
    clf = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match="no text tower"):
        clf(Image.new("RGB", (256, 256)), candidate_labels=ORDERS)


def test_pipeline_beats_chance_at_order_level_on_held_out_images(tmp_path, trained_tiny_model_dir, synthetic_tiny_dir):
    """The trained tiny model, through the stock pipeline, names the order of held-out synthetic photos
    better than chance (SYNTHETIC data: this checks the plumbing carries signal, not real accuracy)."""
    from bioscan_clip_hf.data import load_bioscan

    held_out = load_bioscan(synthetic_tiny_dir, split=["val", "val_unseen", "test", "test_unseen", "other_heldout"],
                            cache_dir=str(tmp_path / "cache"))
    orders = sorted({o for o in load_bioscan(synthetic_tiny_dir, split="train", cache_dir=str(tmp_path / "cache"))["order"] if o})
    clf = pipeline("zero-shot-image-classification", model=str(trained_tiny_model_dir), trust_remote_code=True)
    preds = clf([r["image"] for r in held_out], candidate_labels=orders, hypothesis_template=TEMPLATE)
    accuracy = sum(p[0]["label"] == o for p, o in zip(preds, held_out["order"])) / len(held_out)
    chance = 1 / len(orders)
    # Two binomial standard deviations above chance, so a lucky guess on ~50 images does not pass.
    bar = chance + 2 * math.sqrt(chance * (1 - chance) / len(held_out))
    assert accuracy > bar, f"order accuracy {accuracy:.2f} on {len(held_out)} images <= {bar:.2f} (chance {chance:.2f})"
