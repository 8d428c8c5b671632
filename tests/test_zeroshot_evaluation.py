"""The paper's protocol on a small labelled set: every pair, JSON / Markdown / PNG outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bioscan_clip_hf.data import load_bioscan
from bioscan_clip_hf.evaluation import ALL_PAIRS, evaluate_model, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_model_all_pairs_and_outputs(tiny_model, tiny_processor, zeroshot_data_dir, tmp_path):
    tiny_model.train()
    res = evaluate_model(tiny_model, tiny_processor, zeroshot_data_dir, output_dir=tmp_path, title="test data", progress=False,
                         identification=("nearest",))
    assert tiny_model.training  # mode restored
    tiny_model.eval()
    assert res["protocol"]["pairs"] == [f"{q}->{k}" for q, k in ALL_PAIRS]
    assert res["protocol"]["n_seen"] == 6 and res["protocol"]["n_unseen"] == 3 and res["protocol"]["n_keys"] == 24
    for pair, per_rank in res["pairs"].items():
        for rank, rep in per_rank.items():
            assert rep["n_seen"] == 6 and rep["n_unseen"] == 3
            assert 0 <= rep["seen_macro_top1"] <= rep["seen_macro_top5"] <= 100
    # Image features separate genera perfectly on this data (colour = genus) -> 100% image->image genus.
    assert res["pairs"]["image->image"]["genus"]["seen_micro_top1"] == 100.0
    # Every pair also reports the quality of the calibrated answer (cross-fitted on these val
    # queries), and so do specimens with photo and barcode against the DNA and the image keys.
    expected = {p for p in res["pairs"] if not p.endswith("->text")} | {"image+dna->dna", "image+dna->image"}
    assert set(res["identification"]) == expected
    for pair, report in res["identification"].items():
        assert report["calibration"]["cross_fitted"] and report["methods"]["nearest"]
        query = pair.split("->")[0].replace("averaged", "image+dna").replace("concatenated", "image+dna")
        assert set(report["methods"]["nearest"]) == {query}
    top1 = [v for pr in res["pairs"].values() for rep in pr.values() for key, v in rep.items()
            if key.endswith("_top1") and not key.startswith("hm_")]
    assert res["selection_score"] == pytest.approx(sum(top1) / len(top1))

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["pairs"].keys() == res["pairs"].keys()
    table = (tmp_path / "results.md").read_text()
    assert table == markdown_table(res)
    assert "| Species | image → image |" in table and "Micro H.M." in table and "test data" in table
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_dataset_object_and_pair_subset(tiny_model, tiny_processor, zeroshot_data_dir):
    data = load_bioscan(zeroshot_data_dir)  # DatasetDict
    res = evaluate_model(tiny_model, tiny_processor, data, query_splits=("test", "test_unseen"),
                         pairs=[("dna", "dna")], k_values=(1,), progress=False, identification=())
    assert list(res["pairs"]) == ["dna->dna"] and "seen_micro_top1" in res["pairs"]["dna->dna"]["order"]
    with pytest.raises(ValueError, match="no split"):
        evaluate_model(tiny_model, tiny_processor, data, query_splits=("val", "nope"), progress=False)


def test_training_evaluate_wrapper(tiny_model_dir, zeroshot_data_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "training" / "evaluate.py"), "--model", str(tiny_model_dir), "--data",
         str(zeroshot_data_dir), "--split", "test", "--out", str(tmp_path), "--no-progress", "--device", "cpu",
         "--identification", "nearest"],  # every method's scoring: test_cli_zeroshot.py::test_eval_subcommand
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| Order |" in proc.stdout and "| dna → dna | nearest (" in proc.stdout
    assert json.loads((tmp_path / "results.json").read_text())["protocol"]["query_splits"] == ["test", "test_unseen"]


@pytest.mark.parametrize(
    "towers, pairs",
    [
        (["image", "dna"], ["image->image", "dna->dna", "image->dna", "dna->image", "averaged->averaged", "concatenated->concatenated"]),
        (["image", "text"], ["image->image", "image->text"]),
    ],
)
def test_pairs_follow_the_model_towers(tiny_processor, zeroshot_data_dir, towers, pairs):
    from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel

    model = BioscanClipModel(BioscanClipConfig.from_preset("tiny", modalities=towers)).eval()
    res = evaluate_model(model, tiny_processor, zeroshot_data_dir, k_values=(1,), progress=False, identification=())
    assert res["protocol"]["pairs"] == pairs


def test_per_query_predictions_match_the_reported_accuracy(tiny_model, tiny_processor, zeroshot_data_dir):
    data = load_bioscan(zeroshot_data_dir)
    res = evaluate_model(tiny_model, tiny_processor, data, query_splits=("test", "test_unseen"),
                         pairs=[("dna", "dna")], k_values=(1,), progress=False, per_query=True, identification=())
    rows = res["predictions"]["dna->dna"]
    assert [r["processid"] for r in rows] == list(data["test"]["processid"]) + list(data["test_unseen"]["processid"])
    for rank in ("order", "genus", "species"):
        for group in ("seen", "unseen"):
            hits = [r["predicted"][rank] == r["true"][rank] for r in rows if r["group"] == group]
            assert 100 * sum(hits) / len(hits) == pytest.approx(res["pairs"]["dna->dna"][rank][f"{group}_micro_top1"])
    # The nearest key is the exact cosine nearest neighbour among train + key_unseen.
    keys = [r for split in ("train", "key_unseen") for r in data[split]]
    feats = tiny_model.get_dna_features(**{k: v for k, v in tiny_processor(dna=[k["dna_barcode"] for k in keys]).items()
                                           if k.startswith("dna_")}).detach()
    query = data["test"][0]
    qf = tiny_model.get_dna_features(**{k: v for k, v in tiny_processor(dna=[query["dna_barcode"]]).items()
                                        if k.startswith("dna_")}).detach()
    best = int((qf @ feats.T).argmax())
    assert rows[0]["nearest_key"] == keys[best]["processid"]
    assert rows[0]["similarity"] == pytest.approx(float((qf @ feats.T).max()), abs=1e-5)
    assert "predictions" not in evaluate_model(tiny_model, tiny_processor, data, pairs=[("dna", "dna")], identification=(),
                                               k_values=(1,), progress=False)
