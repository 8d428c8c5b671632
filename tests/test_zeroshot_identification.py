"""The identification answer end to end on a tiny model and real COI barcodes: calibrated banks,
--method kmer against brute force, checklists, "not in the library" by leaving taxa out, fused
photo + barcode evidence, and the misleading cases of issue 11."""

import json

import numpy as np
import pytest

from bioscan_clip_hf.data import load_bioscan
from bioscan_clip_hf.taxonomy import RANKS
from bioscan_clip_hf.zero_shot import KeyBank, ZeroShotClassifier
from bioscan_clip_hf.zero_shot.calibration import LibraryCalibration


@pytest.fixture(scope="module")
def keys(zeroshot_data_dir):
    return load_bioscan(zeroshot_data_dir, split=["train", "key_unseen"], decode_images=False)


@pytest.fixture(scope="module")
def validation(zeroshot_data_dir):
    return [load_bioscan(zeroshot_data_dir, split=s, decode_images=False) for s in ("val", "val_unseen")]


@pytest.fixture(scope="module")
def calibrated_bank(tiny_model, tiny_processor, keys, validation):
    bank = KeyBank.build(tiny_model, tiny_processor, keys, modality="dna", progress=False)
    bank.calibrate(tiny_model, tiny_processor, *validation, methods=("nearest", "kmer"), progress=False)
    return bank


@pytest.fixture(scope="module")
def clf(tiny_model, tiny_processor, calibrated_bank):
    return ZeroShotClassifier(tiny_model, tiny_processor, calibrated_bank, device="cpu")


def _brute_force_profile(seq: str) -> np.ndarray:
    counts = np.zeros(1024)
    for i in range(len(seq) - 4):
        kmer = seq[i:i + 5].upper()
        if set(kmer) <= set("ACGT"):
            counts[int("".join(str("ACGT".index(c)) for c in kmer), 4)] += 1
    return counts / max(np.linalg.norm(counts), 1e-12)


def test_kmer_method_is_the_exact_5mer_nearest_neighbour(clf, keys, zeroshot_data_dir):
    queries = load_bioscan(zeroshot_data_dir, split=["test", "test_unseen"], decode_images=False)
    key_profiles = np.stack([_brute_force_profile(b) for b in keys["dna_barcode"]])
    rows = clf.predict(dna=queries["dna_barcode"], method="kmer", progress=False)
    read = clf.processor.dna_tokenizer.max_length  # longer barcodes are read on their first 660 nt (a note says so)
    for row, barcode in zip(rows, queries["dna_barcode"]):
        cosine = key_profiles @ _brute_force_profile(barcode[:read])
        named = keys["processid"].index(row["nearest_id"])
        assert row["error"] is None and row["method"] == "kmer" and row["modality"] == "dna"
        assert cosine[named] == pytest.approx(cosine.max(), abs=1e-6)  # the named key is a nearest one (ties: any)
        assert row["nearest_distance"] == pytest.approx(1.0 - cosine.max(), abs=1e-5)
        nearest_species = {keys["species"][i] for i in np.flatnonzero(cosine >= cosine.max() - 1e-6)}
        assert row["species"] in nearest_species  # max pooling: the nearest barcode's species
    photo_only = clf.predict(images=[keys[0]["image"]], method="kmer", progress=False)[0]
    assert "needs a barcode" in photo_only["error"]


def test_bank_stores_a_strict_json_calibration_per_modality_and_method(calibrated_bank, tmp_path):
    calibrated_bank.save(tmp_path / "bank")
    text = (tmp_path / "bank" / "bank.json").read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    cal = LibraryCalibration.from_dict(meta["calibration"])
    assert set(cal.probability) == {"dna/nearest", "dna/kmer", "image/nearest", "image+dna/nearest", "image+dna/kmer"}
    for key in cal.probability:
        entry = cal.probability[key]
        assert entry["n_queries"] == 9 and all(t > 0 for t in entry["temperatures"]) and 0 <= entry["floor"] < 1
        assert set(entry["validation"]) == set(RANKS)
    assert cal.plan("dna", "kmer").sources == ["kmer"]
    # Novelty: every calibration query is of a species in the library (val_unseen species have
    # key_unseen keys); the absent ones are the same queries with their own species left out.
    species = cal.novelty["dna"]["validation"]["species"]
    assert species["n_in_library"] == 9 and species["n_absent"] == 9
    assert KeyBank.load(tmp_path / "bank").calibration.to_dict() == cal.to_dict()


def test_a_calibration_this_code_cannot_apply_is_refused_in_one_note(tiny_model, tiny_processor, calibrated_bank, keys):
    """Banks calibrated by another version of the code, or for other evidence, answer uncalibrated and
    say why in one note, never a crash or a wrong probability."""
    good = calibrated_bank.meta["calibration"]
    older = {**json.loads(json.dumps(good)), "format": 2}
    shape = json.loads(json.dumps(good))  # a novelty model of another feature layout (5 weights, not 2)
    shape["novelty"]["dna"]["flags"]["species"]["weights"] = [0.1] * 5
    layout = json.loads(json.dumps(good))
    del layout["probability"]["dna/nearest"]["temperatures"]
    cases = [(older, calibrated_bank.table, "its calibration has format 2"),
             (shape, calibrated_bank.table, "its dna novelty model does not fit"),
             (layout, calibrated_bank.table, "not laid out as this version"),
             (good, calibrated_bank.table.drop(columns=["dna_barcode"]), "evidence this key bank does not have (kmer)")]
    for cal, table, why in cases:
        bank = KeyBank(calibrated_bank.embeddings, table, {**calibrated_bank.meta, "calibration": cal})
        assert bank.calibration is None and why in bank.calibration_problem
        row = ZeroShotClassifier(tiny_model, tiny_processor, bank, device="cpu").predict(
            dna=keys["dna_barcode"][:1], progress=False)[0]
        assert row["error"] is None and row["notes"].startswith("the key bank's calibration is not used (") and why in row["notes"]
        assert row["novelty_probability"] is None and 0 < row["species_probability"] <= 1


def test_bank_fingerprint_is_written_at_build_time_and_trusted_on_load(calibrated_bank, tmp_path, monkeypatch):
    import bioscan_clip_hf.zero_shot.bank as bank_module
    from bioscan_clip_hf.zero_shot.provenance import CONTENT_FINGERPRINT_KEY

    calibrated_bank.save(tmp_path / "bank")
    stored = json.loads((tmp_path / "bank" / "bank.json").read_text())[CONTENT_FINGERPRINT_KEY]
    assert stored == bank_module.bank_content_fingerprint(calibrated_bank.embeddings, calibrated_bank.table)

    def rehash(*_):
        raise AssertionError("a loaded bank re-hashed its keys")

    monkeypatch.setattr(bank_module, "bank_content_fingerprint", rehash)
    assert KeyBank.load(tmp_path / "bank").content_fingerprint == stored  # one read of bank.json, no hashing


def test_novelty_means_not_in_the_library(tiny_model, tiny_processor, keys, validation, clf):
    """A query of a species with keys is 'in the library'; the same query against a library without
    its species is not. Rows never claim a confident species for a specimen called novel."""
    queries = validation[1]  # val_unseen: unseen in training, yet in the library through key_unseen
    rows = clf.predict(dna=queries["dna_barcode"], progress=False)
    assert sum(r["novel_rank"] is None and r["novelty_probability"] < 0.5 for r in rows) >= 2  # real barcodes: one is odd
    best = min(range(len(rows)), key=lambda i: rows[i]["nearest_distance"])
    target = queries["species"][best]
    keep = [i for i, s in enumerate(keys["species"]) if s != target]
    bank = KeyBank.build(tiny_model, tiny_processor, keys.select(keep), modality="dna", progress=False)
    bank.meta["calibration"] = clf.bank.meta["calibration"]
    without = ZeroShotClassifier(tiny_model, tiny_processor, bank, device="cpu").predict(
        dna=queries["dna_barcode"][best:best + 1], progress=False)[0]
    assert rows[best]["novelty_probability"] < 0.5 < without["novelty_probability"]
    assert without["is_novel_species"] and without["novel_rank"] in RANKS
    for row in rows + [without]:
        if row["is_novel_species"]:
            assert row["confident_rank"] is None or RANKS.index(row["confident_rank"]) < RANKS.index(row["novel_rank"])


def _fused_classifier(tiny_model, tiny_processor, calibrated_bank, sources, temperatures=(1.0,), dropped=None):
    bank = KeyBank(calibrated_bank.embeddings, calibrated_bank.table, json.loads(json.dumps(calibrated_bank.meta)))
    entry = {"sources": sources, "temperatures": list(temperatures), "rest": -30.0, "floor": 0.0,
             "nll": 0.0, "n_queries": 9, "validation": {}}
    if dropped:
        entry["dropped"] = dropped
    bank.meta["calibration"]["probability"]["image+dna/nearest"] = entry
    return ZeroShotClassifier(tiny_model, tiny_processor, bank, device="cpu")


def test_fused_evidence_changes_with_the_photo(tiny_model, tiny_processor, calibrated_bank, keys):
    """Ambiguous DNA evidence (a flat barcode temperature) + a decisive photo: another photo, another answer."""
    from bioscan_clip_hf.zero_shot.encode import encode_images

    photos = [keys[i]["image"] for i in range(0, len(keys), 3)]  # drawn photos whose colour follows the genus
    feats, _ = encode_images(tiny_model, tiny_processor, photos, progress=False)
    spread = float((feats @ calibrated_bank.embeddings.T).std(dim=1).mean())  # the random tiny towers differ little
    clf = _fused_classifier(tiny_model, tiny_processor, calibrated_bank, ["dna", "image"], (10.0, spread / 4))
    barcode = keys["dna_barcode"][0]
    rows = clf.predict(images=photos, dna=[barcode] * len(photos), progress=False)
    assert all(r["modality"] == "image+dna" and r["error"] is None and "not used" not in (r["notes"] or "") for r in rows)
    assert len({r["species"] for r in rows}) > 1 and len({r["topk_scores"] for r in rows}) > 1
    alone = clf.predict(dna=[barcode], progress=False)[0]
    assert alone["modality"] == "dna"


def test_a_photo_that_is_not_used_is_said_so(tiny_model, tiny_processor, calibrated_bank, keys, real_photo_paths):
    why = "its image evidence did not lower the cross-fitted NLL"
    clf = _fused_classifier(tiny_model, tiny_processor, calibrated_bank, ["dna"], dropped={"image": why})
    barcode = keys["dna_barcode"][0]
    rows = clf.predict(images=real_photo_paths[:2], dna=[barcode] * 2, progress=False)
    for row in rows:
        assert row["modality"] == "dna" and row["notes"] == f"photo not used: {why}"
    assert rows[0]["topk_scores"] == rows[1]["topk_scores"]  # the photo did not count, and the row says so
    bare = KeyBank(calibrated_bank.embeddings, calibrated_bank.table, json.loads(json.dumps(calibrated_bank.meta)))
    del bare.meta["calibration"]["probability"]["image+dna/nearest"]
    row = ZeroShotClassifier(tiny_model, tiny_processor, bare, device="cpu").predict(
        images=real_photo_paths[:1], dna=[barcode], progress=False)[0]
    assert row["modality"] == "dna" and "photo not used" in row["notes"]


@pytest.mark.parametrize("method", ["nearest", "knn", "kmer", "text"])
def test_checklist_restricts_every_method(clf, keys, method, tmp_path):
    order, family = keys["order"][0], keys["family"][0]
    allowed = {s for s, o, f in zip(keys["species"], keys["order"], keys["family"]) if (o, f) == (order, family)}
    barcodes = keys["dna_barcode"][:6]
    rows = clf.predict(dna=barcodes, method=method, taxa=f"{order}/{family}", progress=False)
    for row in rows:
        assert row["family"] == family and row["species"] in allowed
        assert set(row["topk_labels"].split(";")) <= allowed
    names = tmp_path / "checklist.txt"
    names.write_text(f"{keys['genus'][0]}\n")
    assert {r["genus"] for r in clf.predict(dna=barcodes, method=method, taxa=names, progress=False)} == {keys["genus"][0]}
    with pytest.raises(ValueError, match="not in the reference library: Nonexistia"):
        clf.predict(dna=barcodes[:1], method=method, taxa=["Nonexistia", order], progress=False)


def test_evaluation_reports_calibration_and_novelty_beside_accuracy(tiny_model, tiny_processor, zeroshot_data_dir, tmp_path):
    from bioscan_clip_hf.evaluation import evaluate_model

    res = evaluate_model(tiny_model, tiny_processor, zeroshot_data_dir, query_splits=("test", "test_unseen"),
                         pairs=[("dna", "dna")], k_values=(1,), identification=("nearest", "kmer"), output_dir=tmp_path,
                         progress=False)
    report = res["identification"]["dna->dna"]
    assert report["calibration"] == {"fitted_on": 9, "cross_fitted": False}  # fitted on val, scored on test
    for method in ("nearest", "kmer"):
        entry = report["methods"][method]["dna"]
        assert entry["n_queries"] == 9 and set(entry["ranks"]) == set(RANKS)
        assert all(0 <= v["ece"] <= 1 and len(v["bins"]) == 15 for v in entry["ranks"].values())
        assert entry["confident"]["coverage"]["order"] >= entry["confident"]["coverage"]["species"]
    novelty = report["novelty"]["dna"]
    assert novelty["model"]["n_in_library"] == novelty["model"]["n_absent"] == 9
    assert set(novelty["nearest_distance_auroc"]) == {"dna", "kmer"}  # the 5-mer baseline on the same queries
    assert "Identification quality" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    val = evaluate_model(tiny_model, tiny_processor, zeroshot_data_dir, pairs=[("dna", "dna")], k_values=(1,),
                         identification=("nearest",), progress=False)
    assert val["identification"]["dna->dna"]["calibration"]["cross_fitted"]  # val queries: never scored in-sample


def test_cli_kmer_method_and_checklist(tiny_model_dir, tiny_model, calibrated_bank, keys, tmp_path, capsys):
    import pandas as pd

    from bioscan_clip_hf.cli import main

    bank_dir = calibrated_bank.save(tmp_path / "bank")
    fasta = tmp_path / "q.fasta"
    fasta.write_text("".join(f">{pid}\n{seq}\n" for pid, seq in zip(keys["processid"][:3], keys["dna_barcode"][:3])))
    out = tmp_path / "rows.csv"
    common = ["--model", str(tiny_model_dir), "--bank", str(bank_dir), "--no-progress", "--device", "cpu"]
    assert main(["predict", str(fasta), "--method", "kmer", "--taxa", keys["order"][0], "--output", str(out), *common]) == 0
    rows = pd.read_csv(out)
    assert set(rows["order"]) == {keys["order"][0]} and rows["species_probability"].between(0, 1).all()
    assert main(["predict", str(fasta), "--taxa", "Nonexistia", *common]) == 2
    assert "not in the reference library: Nonexistia" in capsys.readouterr().err
    for bad in ("nan", "-0.1", "1.5", "0"):  # the level of confident_rank is a probability in (0, 1]
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(fasta), "--confidence", bad, *common])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and f"--confidence: expected a probability in (0, 1], got '{bad}'" in err[0]
