"""training/realcoi_eval.py end to end on the real COI barcodes: two splits, a few training steps each,
of the recipe that starts from a pre-trained DNA tower."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training.realcoi_eval import MODELS, PRETRAINED, PROTOCOLS, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def realcoi_result(shared_data_dir, tmp_path_factory):
    """The pre-trained-tower recipe (a tiny tower pre-trained for 1 step here), so the run scores all
    four models: trained, its pre-trained start, untrained and the 5-mer baseline."""
    from training.pretrain_dna import main as pretrain_main

    work = tmp_path_factory.mktemp("realcoi")
    # Every third genus of the real TSV with all its rows (533 of the 1,420 distinct records): the
    # builder's seen/unseen rules still hold, and each split has a third of the keys to encode.
    with open(shared_data_dir / "real-coi" / "coi_insecta.tsv", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
    genera = set(sorted({row["genus"] for row in rows})[::3])
    rows = [row for row in rows if row["genus"] in genera]
    tsv = work / "coi_subset.tsv"
    with open(tsv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    # 32 barcodes of the TSV itself: this test checks the mechanics, not the honesty rule.
    barcodes = list(dict.fromkeys(row["dna_barcode"] for row in rows))[:32]
    corpus = work / "corpus.fasta"
    corpus.write_text("".join(f">b{i}\n{b}\n" for i, b in enumerate(barcodes)))
    tower = work / "tower"
    pretrain_main(["--corpus", str(corpus), "--output_dir", str(tower), "--model_preset", "tiny", "--max_train_steps", "1",
                   "--validation_fraction", "0", "--disable_tqdm"])
    out = work / "result.json"
    args = ["--tsv", str(tsv), "--split-seeds", "1", "2", "--work", str(work / "runs"), "--out", str(out),
            "--config", str(REPO / "training" / "configs" / "realcoi_dna_text_pretrained.yaml"),
            f"--train-override=--dna_init={tower}", "--train-override=--model_preset=tiny",
            "--train-override=--max_train_steps=2", "--train-override=--eval_every=0",
            # one query split: the saved key bank is not calibrated (training's tests cover that)
            "--train-override=--eval_query_splits=val"]
    assert main(args) == 0
    return json.loads(out.read_text()), out, args


def test_a_pretrained_recipe_is_also_scored_unaligned(realcoi_result):
    summary = realcoi_result[0]["summary"]
    assert summary["models"] == ["trained", PRETRAINED, *MODELS[1:]]
    for protocol in PROTOCOLS:
        for cell in summary[protocol].values():
            assert set(cell) >= {"trained_vs_pretrained", "trained_vs_untrained", "trained_vs_kmer5_nn"}
    # The pre-trained start is its own model: not the untrained one with another name.
    paper = [q["paper"] for q in summary["queries"]]
    assert any(p[PRETRAINED]["similarity"] != p["untrained"]["similarity"] for p in paper)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_queries_of_every_split_are_pooled_and_paired(realcoi_result, protocol):
    result, _, _ = realcoi_result
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
    result, _, _ = realcoi_result
    novel = [q["novel_species"] for q in result["summary"]["queries"] if q["group"] == "unseen"]
    species = [q["species"] for q in result["summary"]["queries"] if q["group"] == "unseen"]
    for model in MODELS:
        assert all(n[model]["species"] != s for n, s in zip(novel, species))
    # ... while the paper's keys (train + key_unseen) let the k-mer baseline name most of them.
    paper = [q["paper"]["kmer5_nn"]["species"] for q in result["summary"]["queries"] if q["group"] == "unseen"]
    assert sum(p == s for p, s in zip(paper, species)) > 0.6 * len(species)
    assert 0 < result["summary"]["novel_species_genus_among_keys"] < len(species)


def test_each_split_holds_out_other_species_and_the_plot_is_written(realcoi_result):
    result, out, _ = realcoi_result
    queries = result["summary"]["queries"]
    unseen = {seed: {q["species"] for q in queries if q["split_seed"] == seed and q["group"] == "unseen"} for seed in (1, 2)}
    assert unseen[1] and unseen[2] and unseen[1] != unseen[2]
    for seed in (1, 2):
        ids = [q["processid"] for q in queries if q["split_seed"] == seed]
        assert len(ids) == len(set(ids))
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_finished_split_is_reused_and_another_recipe_refused(realcoi_result, capsys):
    _, out, args = realcoi_result
    from training.arguments import ConfigError
    from training.realcoi_eval import train_split

    config = Path(args[args.index("--config") + 1])
    overrides = [a for a in args if a.startswith("--train-override=")]
    overrides = [a.split("=", 1)[1] for a in overrides]
    split = Path(args[args.index("--work") + 1]) / "split1"
    model = split / "run" / "best_model"
    before = (model / "model.safetensors").stat().st_mtime_ns
    assert train_split(config, split / "data", split / "run", overrides) == model
    assert "finished earlier with this recipe; reused" in capsys.readouterr().err
    assert (model / "model.safetensors").stat().st_mtime_ns == before  # not trained again
    with pytest.raises(ConfigError, match="trained with another recipe"):
        train_split(config, split / "data", split / "run", [*overrides, "--learning_rate=1e-4"])
    stranger = split.parent / "split99" / "run"  # a folder with files this script did not record
    stranger.mkdir(parents=True)
    (stranger / "train_config.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="did not record"):
        train_split(config, split / "data", stranger, overrides)


def test_missing_tsv_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tsv", str(tmp_path / "nope.tsv")])
    assert "nope.tsv" in capsys.readouterr().err


def test_memoised_dna_features_equal_the_model_and_encode_each_barcode_once(tiny_model, tiny_processor, shared_data_dir):
    import csv

    import torch

    from training.realcoi_eval import MemoisedDna

    with open(shared_data_dir / "real-coi" / "coi_insecta.tsv", newline="") as f:
        barcodes = list(dict.fromkeys(row["dna_barcode"] for row in csv.DictReader(f, delimiter="\t")))[:6]
    batch = tiny_processor(dna=barcodes, return_tensors="pt")
    ids, mask = batch["dna_input_ids"], batch["dna_attention_mask"]
    calls = []
    memo = MemoisedDna(tiny_model)
    inner = tiny_model.get_dna_features
    memo.inner.get_dna_features = lambda i, m=None, normalize=True: calls.append(len(i)) or inner(i, m, normalize=normalize)
    try:
        first = memo.get_dna_features(ids[:4], mask[:4])
        again = memo.get_dna_features(ids[2:], mask[2:])  # two known rows, two new ones
    finally:
        del memo.inner.get_dna_features
    with torch.no_grad():
        expected = tiny_model.get_dna_features(ids, mask)
    assert calls == [4, 2]
    assert torch.allclose(first, expected[:4], atol=1e-6) and torch.allclose(again, expected[2:], atol=1e-6)
