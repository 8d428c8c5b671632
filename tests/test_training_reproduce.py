"""training/reproduce.py and bioscan_clip_hf.paper: the shipped paper numbers, the side-by-side table, every
stage end to end on tiny data (a real `accelerate launch`), skipping finished stages, refusing to mix runs."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from bioscan_clip_hf.data import load_bioscan
from bioscan_clip_hf.metrics.taxonomic_accuracy.topk import harmonic_mean
from bioscan_clip_hf.paper import PAPER_FILE, compare_with_paper, comparison_markdown, paper_table, plot_comparison
from bioscan_clip_hf.taxonomy import RANKS
from training.arguments import run_cli
from training.reproduce import main

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("seen", "unseen", "hm")


def _paper_value(paper: str, aligned: str, pair: str, rank: str) -> dict[str, float | None]:
    row = next(r for r in paper_table(paper)["rows"] if (r["aligned"], r["pair"], r["rank"]) == (aligned, pair, rank))
    return {g: row[g] for g in GROUPS}


def _exit_code(argv: list[str]) -> int:
    return run_cli(main, argv, prog="reproduce.py")


# ------------------------------------------------------------------ the shipped numbers


def test_paper_numbers_ship_as_package_data_with_their_source():
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert PAPER_FILE in package_data["bioscan_clip_hf"]
    assert resources.files("bioscan_clip_hf").joinpath(PAPER_FILE).is_file()

    exact = paper_table("clibd-bioscan1m")
    assert exact["read_off_plot"] is False and "retrieval-accuracy.png" in exact["source"]
    assert exact["protocol"]["query_splits"] == ["test", "test_unseen"]
    # Spot checks against clibd-original.md §3.3, and every published H.M. agrees with its own seen /
    # unseen values: a mistyped number would break the agreement.
    assert _paper_value("clibd-bioscan1m", "I+D+T", "dna->dna", "species") == {"seen": 95.6, "unseen": 90.4, "hm": 92.9}
    assert _paper_value("clibd-bioscan1m", "none", "image->dna", "order") == {"seen": 7.7, "unseen": 9.6, "hm": 8.5}
    for row in exact["rows"]:
        assert abs(harmonic_mean(row["seen"], row["unseen"]) - row["hm"]) <= 0.1, row
    assert len([r for r in exact["rows"] if r["aligned"] == "I+D+T"]) == 4 * 3 + 1  # + species image->text

    approx = paper_table("clibd-bioscan5m")
    assert approx["read_off_plot"] is True and approx["uncertainty"] == 1.5 and "pixel measurement" in approx["source"]
    assert {r["aligned"] for r in approx["rows"]} == {"I+D+T", "none"} and len(approx["rows"]) == 24
    assert all(r["hm"] is None for r in approx["rows"])  # the plots give no H.M.
    assert _paper_value("clibd-bioscan5m", "I+D+T", "image->dna", "species") == {"seen": 51, "unseen": 13, "hm": None}


# ------------------------------------------------------------------ the side-by-side table


def _hand_made_results(offsets: dict[str, tuple[float, float]], aligned: str = "I+D+T",
                       protocol_of: str = "clibd-bioscan1m") -> dict:
    """Results with, per pair, the BIOSCAN-1M paper's seen / unseen values moved by the given offsets,
    evaluated on the splits of ``protocol_of``'s table."""
    pairs = {}
    for pair, (d_seen, d_unseen) in offsets.items():
        pairs[pair] = {}
        for rank in RANKS:
            paper = _paper_value("clibd-bioscan1m", aligned, pair, rank)
            seen, unseen = paper["seen"] + d_seen, paper["unseen"] + d_unseen
            pairs[pair][rank] = {"seen_macro_top1": seen, "unseen_macro_top1": unseen,
                                 "hm_macro_top1": harmonic_mean(seen, unseen), "seen_micro_top1": 0.0}
    protocol = paper_table(protocol_of)["protocol"]
    return {"protocol": {key: protocol[key] for key in ("query_splits", "key_splits")}, "pairs": pairs}


def test_side_by_side_table_on_a_hand_made_result(tmp_path):
    # dna->dna: +0.04 seen (rounds away), -2.0 unseen; image->image: -10 / +1.26 (rounds to +1.3); no image->dna.
    results = _hand_made_results({"dna->dna": (0.04, -2.0), "image->image": (-10.0, 1.26)})
    comparison = compare_with_paper(results, "clibd-bioscan1m", subject={"modalities": ["image", "dna", "text"],
                                                                        "model": "hand-made", "synthetic": False})
    assert comparison["aligned"] == "I+D+T" and comparison["read_off_plot"] is False
    rows = comparison["rows"]
    assert [(r["rank"], r["pair"]) for r in rows[:3]] == [("order", "dna->dna"), ("order", "image->image"),
                                                           ("order", "image->dna")]
    assert len(rows) == 13 and comparison["missing_pairs"] == ["image->dna", "image->text"]
    species_dna = next(r for r in rows if (r["rank"], r["pair"]) == ("species", "dna->dna"))
    assert species_dna["paper"] == {"seen": 95.6, "unseen": 90.4, "hm": 92.9}
    assert species_dna["ours"]["seen"] == 95.6 and species_dna["ours"]["unseen"] == 88.4
    assert species_dna["difference"]["seen"] == 0.0 and species_dna["difference"]["unseen"] == -2.0
    genus_image = next(r for r in rows if (r["rank"], r["pair"]) == ("genus", "image->image"))
    assert genus_image["difference"]["seen"] == -10.0 and genus_image["difference"]["unseen"] == 1.3
    assert all(r["ours"] is None and r["difference"] is None for r in rows if r["pair"] in ("image->dna", "image->text"))

    md = comparison_markdown(comparison).splitlines()
    assert md[0].startswith("### CLIBD, BIOSCAN-1M") and "(I+D+T), macro top-1" in md[0]
    table = [line for line in md if line.startswith("| ")]
    assert len(table) == 1 + 13 and table[0].count("|") == 12  # header + one line per row, 11 columns
    assert "| Species | dna → dna | 95.6 | 95.6 | +0.0 | 88.4 | 90.4 | -2.0 |" in "\n".join(md)
    assert "|  | image → dna | — | 51.6 | — |" in "\n".join(md)
    assert "~" not in "\n".join(md) and "SYNTHETIC" not in "\n".join(md)

    # Another variant of the same paper, and the refusals.
    ida = compare_with_paper(_hand_made_results({"dna->dna": (0, 0)}, "I+D"), "clibd-bioscan1m", aligned="I+D")
    assert all(r["difference"] == {"seen": 0.0, "unseen": 0.0, "hm": 0.0} for r in ida["rows"] if r["pair"] == "dna->dna")
    with pytest.raises(ValueError, match="query_splits"):
        compare_with_paper({**results, "protocol": {"query_splits": ["val", "val_unseen"],
                                                    "key_splits": ["key_seen", "key_unseen"]}}, "clibd-bioscan1m")
    # BIOSCAN-1M's keys are CLIBD's seen_keys (key_seen), not a BIOSCAN-5M-style train + key_unseen.
    with pytest.raises(ValueError, match=r"key_splits \['train', 'key_unseen'\].*\['key_seen', 'key_unseen'\]"):
        compare_with_paper(_hand_made_results({"dna->dna": (0, 0)}, protocol_of="clibd-bioscan5m"), "clibd-bioscan1m")
    with pytest.raises(ValueError, match="reports I\\+D\\+T, none"):
        compare_with_paper(results, "clibd-bioscan5m", aligned="I+D")
    with pytest.raises(ValueError, match="no model aligning"):
        compare_with_paper(results, "clibd-bioscan1m", subject={"modalities": ["dna", "text"]})

    path = plot_comparison(comparison, tmp_path / "comparison.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # one panel per pair, side by side


def test_values_read_off_plots_are_marked():
    results = _hand_made_results({"dna->dna": (0, 0)}, protocol_of="clibd-bioscan5m")  # 1M values vs the 5M readings
    comparison = compare_with_paper(results, "clibd-bioscan5m", subject={"synthetic": True})
    species = next(r for r in comparison["rows"] if (r["rank"], r["pair"]) == ("species", "dna->dna"))
    assert species["paper"] == {"seen": 98, "unseen": 96, "hm": round(harmonic_mean(98, 96), 1)}
    assert species["paper_hm_derived"] and species["difference"]["seen"] == round(95.6 - 98, 1)
    text = comparison_markdown(comparison)
    assert "| Species | dna → dna | 95.6 | ~98.0 | ~-2.4 | 90.4 | ~96.0 | ~-5.6 | 92.9 | ~97.0 |" in text
    assert "read off a plot (about ±1.5 points)" in text and "SYNTHETIC data" in text


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``--smoke``: the synthetic tiny set generated in the BIOSCAN-1M layout (seen keys in ``key_seen``),
    every stage, training through a real ``accelerate launch``."""
    root = tmp_path_factory.mktemp("reproduce")
    out = root / "smoke"
    argv = ["--paper", "clibd-bioscan1m", "--data", str(root / "data"), "--smoke", "--out", str(out), "--no-progress"]
    return argv, out, main(argv)


def test_smoke_runs_every_stage_and_fills_the_paper_columns(smoke_run):
    argv, out, comparison = smoke_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"data", "train", "evaluate"} and manifest["stages"]["train"]["status"] == "done"
    command = manifest["stages"]["train"]["command"]
    assert command.startswith("accelerate launch --config_file") and command.endswith("--resume_from_checkpoint latest")
    summary = json.loads((out / "train" / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and (out / "train" / "best_model" / "model.safetensors").is_file()

    # The original's BIOSCAN-1M protocol: trained on pretrain + train, keys key_seen + key_unseen (all_keys),
    # for model selection, the saved key bank and the test evaluation alike; no key is ever a training record.
    data = Path(argv[argv.index("--data") + 1])
    assert summary["train_splits"] == ["pretrain", "train"]
    config = yaml.safe_load((out / "train" / "train_config.yaml").read_text())
    assert config["eval_key_splits"] == ["key_seen", "key_unseen"]
    keys = load_bioscan(data, split=["key_seen", "key_unseen"], decode_images=False, cache_dir=data.parent / "cache")["processid"]
    training = set(load_bioscan(data, split=["pretrain", "train"], decode_images=False, cache_dir=data.parent / "cache")["processid"])
    bank = pd.read_parquet(out / "train" / "best_model" / "key_bank" / "keys.parquet")
    assert sorted(bank["processid"]) == sorted(keys) and not training & set(keys)

    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["protocol"]["query_splits"] == ["test", "test_unseen"]
    assert results["protocol"]["key_splits"] == ["key_seen", "key_unseen"] and results["protocol"]["n_keys"] == len(keys)
    assert results["subject"]["synthetic"] is True and comparison["subject"] == results["subject"]
    assert comparison["aligned"] == "I+D+T" and len(comparison["rows"]) == 13 and not comparison["missing_pairs"]
    for row in comparison["rows"]:
        assert row["paper"] == _paper_value("clibd-bioscan1m", "I+D+T", row["pair"], row["rank"])
        measured = results["pairs"][row["pair"]][row["rank"]]
        assert row["ours"] == {g: round(measured[f"{g}_macro_top1"], 1) for g in GROUPS}
    assert json.loads((out / "comparison.json").read_text()) == comparison
    md = (out / "comparison.md").read_text()
    assert "SYNTHETIC data" in md and "Smoke run" in md and "single_species" in md
    with Image.open(out / "comparison.png") as image:
        assert image.format == "PNG"


def test_rerun_skips_finished_stages(smoke_run, capsys):
    argv, out, first = smoke_run
    files = [out / "train" / "train_summary.json", out / "train" / "best_model" / "model.safetensors",
             out / "eval" / "results.json"]
    before = [f.stat().st_mtime_ns for f in files]
    capsys.readouterr()
    again = main(argv)
    err = capsys.readouterr().err
    assert "[train]" in err and "finished earlier with this recipe" in err and "accelerate launch" not in err
    assert "results of these weights on this data; skipped" in err
    assert [f.stat().st_mtime_ns for f in files] == before and again["rows"] == first["rows"]


def test_other_training_settings_in_the_same_folder_are_refused(smoke_run, capsys):
    argv, out, _ = smoke_run
    manifest = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    assert _exit_code([*argv, "--", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "was trained with other settings" in err and "seed: 42 -> 1" in err and "choose another --out" in err
    assert len(err.strip().splitlines()) == 1 and (out / "manifest.json").read_bytes() == manifest


def test_print_train_command_records_the_run_and_launches_nothing(synthetic_tiny_dir, tmp_path, capsys):
    out = tmp_path / "cluster"
    argv = ["--paper", "clibd-bioscan5m", "--data", str(synthetic_tiny_dir), "--smoke", "--out", str(out),
            "--print-train-command", "--accelerate-args=--num_machines 2 --num_processes 8", "--", "--seed", "3"]
    assert main(argv) is None
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("accelerate launch --num_machines 2 --num_processes 8 ")
    assert "--seed 3 --resume_from_checkpoint latest" in printed and not (out / "train").exists()
    train = json.loads((out / "manifest.json").read_text())["stages"]["train"]
    assert train["status"] == "running" and train["command"] == printed and train["settings"]["seed"] == 3


@pytest.fixture(scope="module")
def release_run(tmp_path_factory, tiny_model_dir):
    """A BIOSCAN-5M release folder (the builders' test layout) built by reproduce.py and evaluated with --model."""
    from test_data_releases import write_5m_release

    root = tmp_path_factory.mktemp("reproduce_release")
    write_5m_release(root / "release", as_zip=False)
    argv = ["--paper", "clibd-bioscan5m", "--data", str(root / "data"), "--raw", str(root / "release"),
            "--model", str(tiny_model_dir), "--out", str(root / "out"), "--no-progress"]
    return root, argv, main(argv)


def test_release_is_built_and_given_weights_are_evaluated(release_run):
    root, _, comparison = release_run
    report = json.loads((root / "data" / "build_report.json").read_text())
    assert report["builder"] == "bioscan5m" and report["counts"]["test"] == 1 and report["dropped_total"] > 0
    assert comparison["read_off_plot"] and len(comparison["rows"]) == 12 and comparison["subject"]["synthetic"] is False
    assert "~" in (root / "out" / "comparison.md").read_text()


def test_original_checkpoint_is_converted_and_replaces_other_weights_never_mixed(release_run, tmp_path, capsys):
    """The same run folder, now with an original best.pth instead of the model evaluated before: converted,
    evaluated in place of the old results (never beside them), and both stages skipped on a rerun."""
    from bioscan_clip_hf.processing_bioscan_clip import default_text_vocab_dir
    from reference_clibd import ReferenceCLIBD, ReferenceSizes, original_state_dict, randomize_

    root, argv, first = release_run
    torch.manual_seed(0)
    torch.save(original_state_dict(randomize_(ReferenceCLIBD(ReferenceSizes(), "clibd", ("image", "dna", "text")))),
               tmp_path / "best.pth")
    at = argv.index("--model")
    argv = [*argv[:at], "--checkpoint", str(tmp_path / "best.pth"), "--text-tokenizer", str(default_text_vocab_dir()),
            *argv[at + 2:]]
    report = (root / "data" / "build_report.json").stat().st_mtime_ns
    capsys.readouterr()
    second = main(argv)
    err = capsys.readouterr().err
    old, new = first["subject"]["model_fingerprint"], second["subject"]["model_fingerprint"]
    assert old != new and f"held results of model {old}" in err and f"evaluating model {new}" in err
    assert (root / "out" / "model" / "conversion_report.json").is_file()
    assert json.loads((root / "out" / "eval" / "results.json").read_text())["subject"]["model_fingerprint"] == new
    assert json.loads((root / "out" / "comparison.json").read_text())["subject"]["model_fingerprint"] == new
    assert second["subject"]["modalities"] == ["image", "dna", "text"] and len(second["rows"]) == 12
    assert "complete" in err and (root / "data" / "build_report.json").stat().st_mtime_ns == report  # not rebuilt

    main(argv)
    err = capsys.readouterr().err
    assert "converted earlier from this checkpoint" in err and "results of these weights on this data; skipped" in err


def test_bad_inputs_are_named_in_one_line(tmp_path, capsys, release_run, tiny_model_dir):
    root, argv, _ = release_run
    model = str(tiny_model_dir)
    cases = [
        (["--data", str(tmp_path / "none"), "--model", model], "does not exist: pass --raw"),
        (["--data", str(tmp_path / "d"), "--raw", str(tmp_path), "--model", model], "no BIOSCAN_Insect_Dataset_metadata.tsv"),
        (["--data", str(root / "data"), "--model", str(tmp_path / "missing")], "model path does not exist"),
        (["--data", str(root / "data"), "--model", "nobody/nothing"], "no such local path, and no model repo"),
        (["--data", str(root / "data"), "--checkpoint", str(tmp_path / "best.pth")], "no such file"),
        (["--data", str(root / "data"), "--model", model, "--", "--seed", "1"],
         "training settings, --smoke and --print-train-command apply to training only"),
        (["--data", str(root / "data"), "--model", model, "--out", str(root / "out")],
         "holds a reproduction of clibd-bioscan5m"),
    ]
    for n, (case, message) in enumerate(cases):
        out = [] if "--out" in case else ["--out", str(tmp_path / f"out{n}")]
        assert _exit_code(["--paper", "clibd-bioscan1m", *case, *out]) == 2, case
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
