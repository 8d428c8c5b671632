"""Units of the answer (k-mer profiles, taxon index and checklists, probabilities, calibration fit,
ECE, novelty model, confident rank), FASTA / sequence reading, input pairing and output writers."""

import json

import numpy as np
import pandas as pd
import pytest

import doctest
import importlib
import math

import torch

from bioscan_clip_hf.zero_shot.evidence import (
    Candidates, KeySource, Shortlist, expected_calibration_error, fit_temperatures, mean_nll, reliability_bins,
)
from bioscan_clip_hf.zero_shot.identify import confident_ranks
from bioscan_clip_hf.zero_shot.kmer import kmer_profiles
from bioscan_clip_hf.zero_shot.lineages import TaxonIndex
from bioscan_clip_hf.zero_shot.novelty import LogisticModel, NoveltyModel, auroc, flag_columns, novel_rank
from bioscan_clip_hf.zero_shot.specimens import gather_queries, queries_from_python
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


RANKS = ("order", "family", "genus", "species")


@pytest.mark.parametrize("name", ["kmer", "lineages", "evidence", "identify", "novelty", "calibration"])
def test_docstring_examples(name):
    module = importlib.import_module(f"bioscan_clip_hf.zero_shot.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_kmer_profiles_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGTNRacgt"), size=rng.integers(3, 90))) for _ in range(40)] + ["", "NNNNNNN"]
    got = kmer_profiles(seqs, normalize=False).numpy()
    for row, seq in zip(got, seqs):
        want = np.zeros(1024)
        s = seq.upper()
        for i in range(len(s) - 4):
            kmer = s[i:i + 5]
            if set(kmer) <= set("ACGT"):
                want[int("".join(str("ACGT".index(c)) for c in kmer), 4)] += 1
        np.testing.assert_array_equal(row, want)
    unit = kmer_profiles(seqs)
    counted = torch.from_numpy(got.sum(axis=1) > 0)
    assert torch.allclose(unit[counted].norm(dim=1), torch.ones(int(counted.sum()))) and unit[~counted].abs().sum() == 0


def test_taxon_index_keeps_homonyms_apart_and_reads_checklists(tmp_path):
    index = TaxonIndex.from_lineages([("D", "a", "G", "G x"), ("D", "b", "G", "G y"), ("H", "c", "X", None), ("D", "a", "G", "G x")])
    assert index.n_taxa("genus") == 3 and index.n_taxa("species") == 3  # genus G of two families, twice
    assert index.record_taxa("genus")[0] == index.record_taxa("genus")[3] != index.record_taxa("genus")[1]
    assert index.select("d/A").tolist() == [True, False, False, True]  # a path of consecutive ranks, any case
    assert index.select(["G y", "H"]).tolist() == [False, True, True, False]
    names = tmp_path / "names.txt"
    names.write_text("# a regional list\nD/b\n")
    table = tmp_path / "taxa.csv"
    table.write_text("order,genus\nD,G\n")
    assert index.select(names).tolist() == [False, True, False, False]
    assert index.select(table).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="not in the reference library: Zzz, D/c"):
        index.select("Zzz,D/c")


def _shortlist(scores, leaves):
    scores = torch.tensor(scores, dtype=torch.float32)
    leaves = torch.tensor(leaves)
    return Shortlist(scores, leaves, torch.where(leaves >= 0, torch.arange(leaves.shape[1]).expand_as(leaves), leaves))


def test_probabilities_roll_up_by_full_path_and_parents_outweigh_children():
    index = TaxonIndex.from_lineages([("D", "a", "G", "G x"), ("D", "b", "G", "G y"), ("D", "a", "F", "F z"), ("H", "c", "X", "X w")])
    short = _shortlist([[0.9, 0.89, 0.88, 0.2]], [[0, 1, 2, 3]])
    cand = Candidates([short], index)
    per_rank = cand.rank_probabilities(cand.probabilities([0.05], rest=-30.0))
    genus_ids, _ = per_rank["genus"]
    labels = [index.label("genus", int(t)) for t in genus_ids[0] if t >= 0]
    assert labels.count("G") == 2  # the two G's (families a and b) stay apart
    top = {r: float(per_rank[r][1][0, 0]) for r in RANKS}
    assert top["order"] >= top["family"] >= top["genus"] >= top["species"] and top["order"] > top["species"]

    def prob(rank, label):
        ids, p = per_rank[rank]
        return sum(float(q) for t, q in zip(ids[0], p[0]) if t >= 0 and index.label(rank, int(t)) == label)

    assert prob("family", "a") == pytest.approx(prob("species", "G x") + prob("species", "F z"))  # children summed
    assert float(sum(per_rank["species"][1][0])) <= 1.0 + 1e-9


def test_sum_pooling_rewards_several_close_keys():
    index = TaxonIndex.from_lineages([("D", "a", "G", "G x"), ("D", "a", "G", "G y")])
    short = _shortlist([[0.90, 0.89, 0.89, 0.89]], [[0, 1, 1, 1]])
    for pooling, winner in (("max", "G x"), ("sum", "G y")):
        short.pooling = pooling
        cand = Candidates([short], index)
        ids, _ = cand.rank_probabilities(cand.probabilities([0.01], rest=-30.0))["species"]
        assert index.label("species", int(ids[0, 0])) == winner


def test_fitted_temperature_recovers_the_generating_one_and_calibrates():
    rng = np.random.default_rng(0)
    n, k, true_t = 1500, 6, 0.05
    lineages = [(f"O{i % 3}", f"F{i % 6}", f"G{i}", f"S{i}") for i in range(60)]
    index = TaxonIndex.from_lineages(lineages)
    leaves = np.stack([rng.choice(60, k, replace=False) for _ in range(n)])
    scores = np.sort(rng.uniform(0.5, 0.8, (n, k)), axis=1)[:, ::-1].copy()
    logits = scores / true_t
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    pick = np.array([rng.choice(k, p=p) for p in probs])
    truth_leaf = leaves[np.arange(n), pick]
    truths = {r: index.taxon_of_leaf[r][truth_leaf] for r in RANKS}
    cand = Candidates([_shortlist(scores.tolist(), leaves.tolist())], index)
    temps, rest, floor, nll = fit_temperatures(cand, truths)
    assert temps[0] == pytest.approx(true_t, rel=0.15) and floor < 0.05 and math.isfinite(nll)
    ids, p = cand.rank_probabilities(cand.probabilities(temps, rest, floor))["species"]
    ok = ids[:, 0].numpy() == truths["species"]
    assert expected_calibration_error(p[:, 0].numpy(), ok) < 0.045  # 15-bin ECE of 1,500 draws: ~0.02 from sampling alone


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_fitting_nll_equals_the_nll_of_the_answered_probabilities(pooling):
    # The fit's precomputed NLL must be exactly the NLL of the distributions users get: two sources
    # with leaves missing from one shortlist (bounds), unlisted leaves (rest), a floor, unknown truths.
    rng = np.random.default_rng(1)
    lineages = [(f"O{i % 2}", f"F{i % 4}", f"G{i % 8}", f"S{i}") for i in range(30)]
    index = TaxonIndex.from_lineages(lineages)
    shorts = []
    for _ in range(2):
        leaves = np.stack([rng.choice(30, 6, replace=False) for _ in range(40)])
        scores = np.sort(rng.uniform(0.2, 0.9, (40, 6)), axis=1)[:, ::-1].copy()
        short = _shortlist(scores.tolist(), leaves.tolist())
        short.pooling = pooling
        shorts.append(short)
    cand = Candidates(shorts, index)
    truth_leaf = rng.integers(0, 30, 40)
    truths = {r: index.taxon_of_leaf[r][truth_leaf].copy() for r in RANKS}
    truths["species"][:3] = -1
    for params in ([0.05, 0.2, -2.0, 0.01], [0.5, 0.01, 1.0, 0.2], [0.02, 0.02, -30.0, 1e-6]):
        assert cand.nll_function(truths)(params) == pytest.approx(float(mean_nll(cand, params, truths)), rel=1e-9)


def test_ece_and_reliability_bins():
    conf = [0.05, 0.95, 0.95, 0.5, 1.0]
    ok = [False, True, False, True, True]
    bins = reliability_bins(conf, ok)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 5 and bins[-1]["n"] == 3  # 1.0 joins the last bin
    want = (1 * 0.05 + 3 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3) + 1 * 0.5) / 5
    assert expected_calibration_error(conf, ok) == pytest.approx(want)


def test_novelty_model_is_monotone_up_the_ranks_and_roundtrips_strict_json():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))  # the novelty features of one source
    flags = {r: LogisticModel.fit(x[:, flag_columns(r, 1)], (x[:, 1 + i] + rng.normal(0, 0.5, 200) > 0).astype(float))
             for i, r in enumerate(reversed(RANKS))}
    model = NoveltyModel(["dna"], flags)
    absence = model.absence(x)
    assert np.all(np.diff(absence, axis=1) >= -1e-12)  # order <= family <= genus <= species
    ranks = novel_rank(absence)
    for row, r in zip(absence, ranks):
        assert (r is None) == (row[3] < 0.5)
        if r is not None:
            assert row[RANKS.index(r)] >= 0.5 and all(row[d] < 0.5 for d in range(RANKS.index(r)))
    restored = NoveltyModel.from_dict(json.loads(json.dumps(model.to_dict(), allow_nan=False)))
    np.testing.assert_allclose(restored.absence(x), absence)


def test_confident_rank_never_reaches_an_absent_rank():
    rng = np.random.default_rng(2)
    probs = np.sort(rng.uniform(0.5, 1.0, (500, 4)), axis=1)[:, ::-1].copy()  # order >= ... >= species
    absence = np.sort(rng.uniform(0, 1, (500, 4)), axis=1)
    ranks = confident_ranks({r: torch.from_numpy(probs[:, d]) for d, r in enumerate(RANKS)}, absence, 0.6)
    novel = novel_rank(absence)
    assert any(r is not None for r in ranks)
    for c, n in zip(ranks, novel):
        if c is not None and n is not None:
            assert RANKS.index(c) < RANKS.index(n)


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
