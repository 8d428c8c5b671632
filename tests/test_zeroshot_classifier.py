"""Key bank build / save / load (stale refused), and ZeroShotClassifier on a tiny model."""

import copy

import pytest
import torch

from bioscan_clip_hf.data import load_bioscan
from bioscan_clip_hf.zero_shot import KeyBank, StaleBankError, ZeroShotClassifier, model_fingerprint
from bioscan_clip_hf.zero_shot.classifier import PREDICTION_COLUMNS


@pytest.fixture(scope="module")
def keys(zeroshot_data_dir):
    return load_bioscan(zeroshot_data_dir, split=["train", "key_unseen"], decode_images=False)


@pytest.fixture(scope="module")
def dna_bank(tiny_model, tiny_processor, keys):
    return KeyBank.build(tiny_model, tiny_processor, keys, modality="dna", progress=False)


def test_bank_roundtrip_and_stale_bank_refused(tmp_path, tiny_model, dna_bank):
    assert len(dna_bank) == 24 and dna_bank.embeddings.shape[1] == tiny_model.config.projection_dim
    torch.testing.assert_close(dna_bank.embeddings.norm(dim=1), torch.ones(24))
    dna_bank.save(tmp_path / "bank")
    loaded = KeyBank.load(tmp_path / "bank", model=tiny_model)
    assert torch.equal(loaded.embeddings, dna_bank.embeddings)
    assert loaded.table["species"].tolist() == dna_bank.table["species"].tolist()
    assert loaded.fingerprint == model_fingerprint(tiny_model)

    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.dna_projection.bias.add_(0.01)
    with pytest.raises(StaleBankError) as err:
        KeyBank.load(tmp_path / "bank", model=other)
    assert dna_bank.fingerprint in str(err.value) and model_fingerprint(other) in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a key bank"):
        KeyBank.load(tmp_path)


def test_nearest_on_key_records_finds_themselves(tiny_model, tiny_processor, dna_bank, keys):
    clf = ZeroShotClassifier(tiny_model, tiny_processor, dna_bank, device="cpu")
    barcodes = keys["dna_barcode"][:4]
    rows = clf.predict(dna=barcodes, ids=keys["processid"][:4], progress=False)
    assert [tuple(r) for r in rows] == [PREDICTION_COLUMNS] * 4
    table = dna_bank.table.set_index("processid")
    for row, species in zip(rows, keys["species"][:4]):
        assert row["error"] is None and row["modality"] == "dna"
        # The tiny random DNA tower maps all barcodes close together, so the query's own key is
        # among the nearest (distance ~0) but not always first; the species is the nearest key's.
        assert row["nearest_distance"] == pytest.approx(0.0, abs=1e-4)
        assert species in row["topk_labels"].split(";")
        assert row["species"] == table.loc[row["nearest_id"], "species"]
        probs = [row[f"{r}_probability"] for r in ("order", "family", "genus", "species")]
        assert probs == sorted(probs, reverse=True) and 0 < probs[-1] < probs[0] <= 1  # not one number at every rank
        scores = [float(x) for x in row["topk_scores"].split(";")]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(probs[-1], abs=1e-4)
        # An uncalibrated bank says so and gives no novelty verdict.
        assert "no calibration" in row["notes"] and row["novelty_probability"] is None and row["is_novel_species"] is None


def test_bad_rows_get_errors_and_others_continue(tiny_model, tiny_processor, dna_bank, keys, tmp_path):
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"not an image")
    clf = ZeroShotClassifier(tiny_model, tiny_processor, dna_bank, device="cpu")
    rows = clf.predict(dna=[keys["dna_barcode"][0], "ACGT!!", ""], progress=False)
    assert rows[0]["error"] is None and rows[0]["species"] is not None
    assert "invalid characters" in rows[1]["error"] and rows[1]["species"] is None
    assert rows[2]["error"] == "empty sequence"
    rows = clf.predict(images=[bad_image], progress=False)
    assert rows[0]["error"] and "broken.jpg" in rows[0]["error"]


def test_knn_text_rank_and_paired_queries(tiny_model, tiny_processor, dna_bank, real_photo_paths, keys):
    clf = ZeroShotClassifier(tiny_model, tiny_processor, dna_bank, device="cpu")
    photos = real_photo_paths[:2]
    calls = []
    knn = clf.predict(images=photos, dna=keys["dna_barcode"][:2], method="knn", rank="genus", k=3, progress=False,
                      batch_size=1, callback=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 2 images then 2 barcodes, one per batch
    assert all(r["genus"] and r["species"] is None and r["species_probability"] is None for r in knn)
    assert all(0 < r["genus_probability"] <= 1 for r in knn)
    text = clf.predict(images=photos, method="text", rank="species", progress=False)
    for row in text:
        assert row["error"] is None and row["modality"] == "image"
        assert row["order_probability"] >= row["family_probability"] >= row["genus_probability"] >= row["species_probability"] > 0
    taxa = [{"order": "Diptera", "family": "Culicidae", "genus": "Aedes", "species": "Aedes aegypti"},
            {"order": "Diptera", "family": "Culicidae", "genus": "Culex", "species": "Culex pipiens"}]
    own = ZeroShotClassifier(tiny_model, tiny_processor, None, device="cpu").predict(
        dna=keys["dna_barcode"][:1], method="text", taxa=taxa, progress=False)[0]
    assert own["order"] == "Diptera" and own["order_probability"] == pytest.approx(1.0)
    assert own["family_probability"] == pytest.approx(1.0) and own["species"] in {"Aedes aegypti", "Culex pipiens"}
    assert "no key bank" in own["notes"]
    with pytest.raises(ValueError, match="needs a key bank"):
        ZeroShotClassifier(tiny_model, tiny_processor, None, device="cpu").predict(dna=["ACGT"], method="nearest")


def test_averaged_bank_and_calibration(tiny_model, tiny_processor, keys, zeroshot_data_dir):
    bank = KeyBank.build(tiny_model, tiny_processor, keys, modality="averaged", progress=False)
    seen = load_bioscan(zeroshot_data_dir, split="val", decode_images=False)
    unseen = load_bioscan(zeroshot_data_dir, split="val_unseen", decode_images=False)
    cal = bank.calibrate(tiny_model, tiny_processor, seen, unseen, methods=("nearest",), progress=False)
    assert cal.plan("image+dna", "nearest").sources == ["averaged"] and cal.plan("dna", "nearest") is None
    assert cal.probability["image+dna/nearest"]["n_queries"] == 9  # 6 val + 3 val_unseen: all in the library
    clf = ZeroShotClassifier(tiny_model, tiny_processor, bank, device="cpu")
    images = [keys[i]["image"] for i in range(2)]
    rows = clf.predict(images=images, dna=keys["dna_barcode"][:2], progress=False)
    assert rows[0]["modality"] == "image+dna" and isinstance(rows[0]["is_novel_species"], bool)
    assert rows[0]["species"] == keys["species"][0]
    lone = clf.predict(dna=keys["dna_barcode"][:1], progress=False)[0]
    assert "needs both an image and a barcode" in lone["error"]


def test_from_pretrained_uses_key_bank_folder(tiny_model_dir, tiny_model, dna_bank, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    dna_bank.save(model_dir / "key_bank")
    clf = ZeroShotClassifier.from_pretrained(model_dir, device="cpu")
    assert clf.bank is not None and len(clf.bank) == len(dna_bank)
    emb = clf.embed(dna=["ACGTACGT", "ACGQ"], texts=["Diptera"], progress=False)
    assert emb["modality"].tolist() == ["dna", "dna", "text"]
    assert len(emb["embedding"][0]) == tiny_model.config.projection_dim and emb["embedding"][1] is None
