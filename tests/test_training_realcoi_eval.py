"""training/realcoi_eval.py end to end on the real COI barcodes: two splits, a few training steps each."""

from __future__ import annotations

import json

import pytest

from training.realcoi_eval import MODELS, PROTOCOLS, main


@pytest.fixture(scope="module")
def realcoi_result(shared_data_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("realcoi")
    out = work / "result.json"
    code = main(["--tsv", str(shared_data_dir / "real-coi" / "coi_insecta.tsv"), "--split-seeds", "1", "2",
                 "--work", str(work / "runs"), "--out", str(out), "--train-override=--max_train_steps=3",
                 "--train-override=--eval_every=0"])
    assert code == 0
    return json.loads(out.read_text()), out


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_queries_of_every_split_are_pooled_and_paired(realcoi_result, protocol):
    result, _ = realcoi_result
    summary, splits = result["summary"], result["splits"]
    assert summary["split_seeds"] == [1, 2]
    for group in ("seen", "unseen"):
        assert summary["n_queries"][group] == sum(s[protocol]["trained"]["protocol"][f"n_{group}"] for s in splits.values())
    assert len(summary["queries"]) == summary["n_queries"]["seen"] + summary["n_queries"]["unseen"]
    for rank, group in PROTOCOLS[protocol]["cells"]:
        cell = summary[protocol][f"{rank}_{group}"]
        assert cell["n"] == summary["n_queries"][group]
        for model in MODELS:
            # Pooled = the splits' correct counts, as the evaluator reported them, added up.
            reported = sum(round(s[protocol][model]["pairs"]["dna->dna"][rank][f"{group}_micro_top1"]
                                 * s[protocol][model]["protocol"][f"n_{group}"] / 100) for s in splits.values())
            assert cell[model]["correct"] == reported
            rows = [q[protocol][model] for q in summary["queries"] if q["group"] == group]
            if rank in ("genus", "species"):
                truth = [q[rank] for q in summary["queries"] if q["group"] == group]
                assert sum(r[rank] == t for r, t in zip(rows, truth)) == reported
        paired = cell["trained_vs_untrained"]
        assert paired["n"] == cell["n"]
        assert paired["difference"] == pytest.approx(cell["trained"]["micro"] - cell["untrained"]["micro"])


def test_novel_species_keys_hold_no_record_of_the_query_species(realcoi_result):
    result, _ = realcoi_result
    novel = [q["novel_species"] for q in result["summary"]["queries"] if q["group"] == "unseen"]
    species = [q["species"] for q in result["summary"]["queries"] if q["group"] == "unseen"]
    for model in MODELS:
        assert all(n[model]["species"] != s for n, s in zip(novel, species))
    # ... while the paper's keys (train + key_unseen) let the k-mer baseline name most of them.
    paper = [q["paper"]["kmer5_nn"]["species"] for q in result["summary"]["queries"] if q["group"] == "unseen"]
    assert sum(p == s for p, s in zip(paper, species)) > 0.6 * len(species)
    assert 0 < result["summary"]["novel_species_genus_among_keys"] < len(species)


def test_each_split_holds_out_other_species_and_the_plot_is_written(realcoi_result):
    result, out = realcoi_result
    queries = result["summary"]["queries"]
    unseen = {seed: {q["species"] for q in queries if q["split_seed"] == seed and q["group"] == "unseen"} for seed in (1, 2)}
    assert unseen[1] and unseen[2] and unseen[1] != unseen[2]
    for seed in (1, 2):
        ids = [q["processid"] for q in queries if q["split_seed"] == seed]
        assert len(ids) == len(set(ids))
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_missing_tsv_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tsv", str(tmp_path / "nope.tsv")])
    assert "nope.tsv" in capsys.readouterr().err
