"""`bioscan-clip` end to end on a tiny model saved in the test: build-bank, predict (images, FASTA,
bad inputs), embed, list-taxa, eval, exit codes."""

import json
import shutil

import pandas as pd
import pytest

from bioscan_clip_hf import __version__
from bioscan_clip_hf.cli import main


@pytest.fixture(scope="module")
def bank_dir(tiny_model_dir, zeroshot_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_bank")
    rc = main(["build-bank", "--model", str(tiny_model_dir), "--data", str(zeroshot_data_dir), "--modality", "dna",
               "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    return out


@pytest.fixture()
def inputs(tmp_path, real_photo_paths):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(real_photo_paths[0], folder / "P1.jpg")
    shutil.copy(real_photo_paths[-1], folder / "nested" / "P2.jpg")
    (folder / "broken.jpg").write_bytes(b"definitely not a jpeg")
    fasta = tmp_path / "seqs.fasta"
    fasta.write_bytes(b">P1 paired with P1.jpg\r\nacgtacgtac\r\nGTACGTNNNN\r\n>S2\r\nAACT-TTATATTTT\r\n>empty\r\n>bad\r\nACGTXX\r\n")
    return folder, fasta


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"bioscan-clip {__version__}"


def test_bank_files_and_list_taxa(bank_dir, capsys):
    meta = json.loads((bank_dir / "bank.json").read_text())
    assert meta["modality"] == "dna" and meta["n_keys"] == 24 and set(meta["calibration"]) == {"image", "dna"}
    assert main(["list-taxa", "--bank", str(bank_dir), "--rank", "genus", "--format", "csv"]) == 0
    taxa = capsys.readouterr().out.splitlines()
    assert taxa[0] == "order,family,genus,n_keys" and len(taxa) > 3


def test_predict_images_and_fasta_with_bad_rows(tiny_model_dir, bank_dir, inputs, tmp_path, capsys):
    folder, fasta = inputs
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(folder), str(fasta), "--recursive", "--model", str(tiny_model_dir), "--bank", str(bank_dir),
               "--output", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 1  # some rows failed
    assert "3 of 6 rows failed" in capsys.readouterr().err
    table = pd.read_csv(out).set_index("id")
    assert sorted(table.index) == ["P1", "P2", "S2", "bad", "broken", "empty"]
    assert table.loc["P1", "modality"] == "image+dna" and table.loc["P2", "modality"] == "image"
    assert table.loc["S2", "modality"] == "dna"
    for good in ("P1", "P2", "S2"):
        assert pd.isna(table.loc[good, "error"]) and isinstance(table.loc[good, "species"], str)
        assert table.loc[good, "is_novel_species"] in (True, False)
    assert "cannot identify image" in table.loc["broken", "error"]
    assert table.loc["empty", "error"] == "empty sequence" and "invalid characters" in table.loc["bad", "error"]


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_predict_fasta_only_to_stdout(tiny_model_dir, bank_dir, inputs, capsys, fmt):
    _, fasta = inputs
    good = fasta.parent / "good.fa"
    good.write_text(">x\nACGTACGTAC\n>y\nTTTTACGTAC\n")
    rc = main(["predict", str(good), "--model", str(tiny_model_dir), "--bank", str(bank_dir), "--format", fmt,
               "--rank", "family", "--method", "knn", "--k", "3", "--no-progress", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    if fmt == "json":
        rows = json.loads(out)
        assert [r["id"] for r in rows] == ["x", "y"] and all(r["genus"] is None and r["family"] for r in rows)
    else:
        assert out.splitlines()[0].split()[:4] == ["id", "modality", "method", "rank"]


def test_missing_paths_give_one_line_and_exit_2(tiny_model_dir, bank_dir, inputs, tmp_path, capsys):
    _, fasta = inputs
    cases = [
        ["predict", str(fasta), "--model", str(tmp_path / "no_model"), "--bank", str(bank_dir)],
        ["predict", str(fasta), "--model", str(tiny_model_dir), "--bank", str(tmp_path / "no_bank")],
        ["predict", str(tmp_path / "no_input.fasta"), "--model", str(tiny_model_dir), "--bank", str(bank_dir)],
        ["predict", str(fasta), "--model", str(tiny_model_dir), "--bank", str(bank_dir), "--format", "parquet"],
        ["list-taxa", "--bank", str(tmp_path)],
    ]
    for argv in cases:
        assert main(argv + (["--no-progress"] if argv[0] == "predict" else [])) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bioscan-clip: error:") and "Traceback" not in err[0]


def test_stale_bank_refused(tiny_model_dir, bank_dir, inputs, tmp_path, capsys):
    _, fasta = inputs
    stale = tmp_path / "stale"
    shutil.copytree(bank_dir, stale)
    meta = json.loads((stale / "bank.json").read_text())
    meta["model_fingerprint"] = "0123456789abcdef"
    (stale / "bank.json").write_text(json.dumps(meta))
    assert main(["predict", str(fasta), "--model", str(tiny_model_dir), "--bank", str(stale), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "0123456789abcdef" in err and "rebuild" in err


def test_embed_and_text_method(tiny_model_dir, bank_dir, inputs, tmp_path, capsys):
    folder, fasta = inputs
    out = tmp_path / "emb.parquet"
    rc = main(["embed", str(folder / "P1.jpg"), str(fasta), "--text", "Diptera Culicidae", "--model", str(tiny_model_dir),
               "--output", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 1  # the empty and the bad record
    table = pd.read_parquet(out)
    assert table["modality"].tolist().count("image") == 1 and table["modality"].tolist().count("text") == 1
    assert table["embedding"].notna().sum() == 4  # P1 image, P1 dna, S2 dna, text
    taxa = tmp_path / "taxa.csv"
    taxa.write_text("order,family,genus,species\nDiptera,Culicidae,Aedes,Aedes aegypti\nDiptera,Culicidae,Culex,Culex pipiens\n")
    rc = main(["predict", str(folder / "P1.jpg"), "--model", str(tiny_model_dir), "--method", "text", "--taxa", str(taxa),
               "--no-progress", "--device", "cpu", "--bank", str(bank_dir)])
    assert rc == 0
    row = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out)).iloc[0]
    assert row["order"] == "Diptera" and row["order_score"] == pytest.approx(1.0)


def test_eval_subcommand(tiny_model_dir, zeroshot_data_dir, tmp_path, capsys):
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(zeroshot_data_dir), "--out", str(tmp_path),
               "--no-progress", "--device", "cpu", "--title", "test data"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Species | image → image |" in out and "|  | dna → dna |" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.md", "accuracy.png"}


def test_other_modules_register_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("predict", "embed", "build-bank", "eval", "list-taxa", "push", "convert-clibd", "push-dataset"):
        assert cmd in text
