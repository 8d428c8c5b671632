"""Novelty calibration, FASTA / sequence reading, input pairing, output writers and the vote rules."""

import json

import numpy as np
import pandas as pd
import pytest

from bioscan_clip_hf.zero_shot.classify import knn_vote, nearest_rule, text_rollup
from bioscan_clip_hf.zero_shot.inputs import gather_queries, queries_from_python
from bioscan_clip_hf.zero_shot.novelty import NoveltyCalibration, auroc, best_threshold, calibrate_novelty, calibrate_ranks
from bioscan_clip_hf.zero_shot.sequences import parse_fasta, read_sequences
from bioscan_clip_hf.zero_shot.writers import write_rows


def test_auroc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    neg = rng.integers(0, 10, 60).astype(float)
    pos = rng.integers(3, 13, 40).astype(float)
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert auroc(neg, pos) == pytest.approx(np.mean(pairs))
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert np.isnan(auroc([], [1.0]))


def test_threshold_and_calibration_roundtrip():
    t, tpr, fpr = best_threshold([0.1, 0.2, 0.3], [0.5, 0.6, 0.25])
    assert 0.3 < t < 0.5 and tpr == pytest.approx(2 / 3) and fpr == 0.0
    cal = calibrate_novelty([0.1, 0.2, 0.3], [0.5, 0.6, 0.7], {"species": [1, 1, 0, 0, 0, 0], "order": [1] * 6})
    assert cal.auroc == 1.0 and cal.is_novel(0.55) and not cal.is_novel(0.2)
    assert cal.rank_thresholds["order"] == float("inf")
    assert cal.confident_rank(0.1) == "species" and cal.confident_rank(0.45) == "order"
    assert NoveltyCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    # strict JSON (the Hub, JavaScript) has no Infinity: the always-trusted rank is stored as a string
    never_trusted = calibrate_novelty([0.1, 0.2], [0.5, 0.6], {"species": [0] * 4, "order": [1] * 4})
    text = json.dumps(never_trusted.to_dict(), allow_nan=False)
    assert NoveltyCalibration.from_dict(json.loads(text)).rank_thresholds == {"order": float("inf"), "species": float("-inf")}


def test_rank_thresholds_are_monotone():
    d = [0.1, 0.2, 0.3, 0.4]
    out = calibrate_ranks(d, {"order": [1, 0, 1, 0], "family": [1, 1, 1, 0], "species": [1, 1, 0, 0]})
    assert out["species"] <= out["family"] <= out["order"]


def test_fasta_wrapped_lowercase_gaps_n_empty_crlf(tmp_path):
    text = ">rec1 some description\r\nacgt-acgt\r\nNNac..gt\r\n\r\n>empty\r\n>rec3\rACGT ACGT\r>bad\nACGTQQ\n"
    path = tmp_path / "x.fasta"
    path.write_bytes(text.encode())
    recs = read_sequences(path)
    assert [(r.id, r.sequence, r.error) for r in recs] == [
        ("rec1", "ACGTACGTNNACGT", None),
        ("empty", "", "empty sequence"),
        ("rec3", "ACGTACGT", None),
        ("bad", "ACGTQQ", "invalid characters 'Q' (expected IUPAC DNA codes)"),
    ]
    with pytest.raises(ValueError, match="before the first '>'"):
        parse_fasta("ACGT\n>a\nACGT")


def test_plain_sequence_file(tmp_path):
    path = tmp_path / "seqs.txt"
    path.write_text("# comment\nid1\tACGT\n\nacgtn\n")
    recs = read_sequences(path)
    assert [(r.id, r.sequence) for r in recs] == [("id1", "ACGT"), ("seqs:4", "ACGTN")]


def test_gather_pairs_images_and_records_by_id(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("s1.jpg", "s2.png", "sub/s3.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "seqs.fasta").write_text(">s1\nACGT\n>s9\nACGT\n")
    flat = {(q.id, q.modality) for q in gather_queries([tmp_path])}
    assert flat == {("s1", "image+dna"), ("s2", "image"), ("s9", "dna")}
    deep = {q.id for q in gather_queries([tmp_path], recursive=True)}
    assert "s3" in deep
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gather_queries([tmp_path / "missing"])


def test_queries_from_python_pairs_by_position():
    qs = queries_from_python(images=["a.jpg", "b.jpg"], dna=["acgt", "ACGZ"], ids=["x", "y"])
    assert [(q.id, q.modality, q.dna, q.error) for q in qs] == [
        ("x", "image+dna", "ACGT", None), ("y", "image", None, "invalid characters 'Z' (expected IUPAC DNA codes)")]
    with pytest.raises(ValueError, match="equal numbers"):
        queries_from_python(images=["a.jpg"], dna=["ACGT", "ACGT"])


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "table"])
def test_writers(tmp_path, fmt, capsys):
    rows = [{"id": "a", "species": "x", "score": 0.5, "error": None}, {"id": "b", "species": None, "score": float("nan"), "error": "bad"}]
    out = tmp_path / f"out.{fmt}"
    write_rows(rows, fmt, out)
    if fmt == "parquet":
        assert pd.read_parquet(out)["id"].tolist() == ["a", "b"]
    elif fmt == "json":
        assert json.loads(out.read_text())[1] == {"id": "b", "species": None, "score": None, "error": "bad"}
    elif fmt == "csv":
        assert pd.read_csv(out)["error"].tolist()[1] == "bad"
    else:
        assert out.read_text().splitlines()[0].split() == ["id", "species", "score", "error"]
    if fmt != "parquet":
        write_rows(rows, fmt, None)
        assert capsys.readouterr().out.startswith("id" if fmt != "json" else "[")
    else:
        with pytest.raises(ValueError, match="needs --output"):
            write_rows(rows, fmt, None)


LABELS = {
    "order": ["O1", "O1", "O2", "O2"],
    "family": ["F1", "F1", "F2", "F2"],
    "genus": ["G1", "G2", "G3", "G3"],
    "species": ["S1", "S2", "S3", "S4"],
}


def test_nearest_rule_takes_every_rank_from_one_key():
    pred = nearest_rule(LABELS, [[1, 2, 3]], [[0.9, 0.8, 0.7]], k=3)[0]
    assert [pred[r][0] for r in LABELS] == ["O1", "F1", "G2", "S2"]
    assert pred["order"][2] == ["O1", "O2", "O2"]  # top-k keeps duplicates, as the original


def test_knn_vote_per_rank_with_tie_to_nearest():
    pred = knn_vote(LABELS, [[0, 2, 3, 1]], [[0.9, 0.8, 0.7, 0.6]], k=4)[0]
    assert pred["order"][0] == "O1"  # 2 vs 2: O1's best key is nearer
    assert pred["genus"][:2] == ("G3", 0.5)
    assert pred["species"][0] == "S1"


def test_text_rollup_sums_probabilities_up_the_tree():
    lineages = [("O1", "F1", "G1", "S1"), ("O1", "F1", "G1", "S2"), ("O2", "F2", "G3", "S3")]
    pred = text_rollup([[0.3, 0.3, 0.4]], lineages, k=3)[0]
    assert pred["species"][:2] == ("S3", 0.4)
    assert pred["genus"][0] == "G1" and pred["genus"][1] == pytest.approx(0.6)
    assert pred["order"][0] == "O1"
