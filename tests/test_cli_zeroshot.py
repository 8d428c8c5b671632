"""`bioscan-clip` end to end on a tiny model saved in the test: build-bank, predict (images, FASTA,
bad inputs, the misleading specimens of issue 11), provenance and --log, embed, list-taxa, eval, exit codes."""

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bioscan_clip_hf import __version__
from bioscan_clip_hf.cli import main


@pytest.fixture(scope="module")
def bank_dir(tiny_dna_bank_dir):
    """Written by `bioscan-clip build-bank` (tests/conftest.py)."""
    return tiny_dna_bank_dir


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
    assert meta["modality"] == "dna" and meta["n_keys"] == 24 and {"probability", "novelty"} <= set(meta["calibration"])
    assert main(["list-taxa", "--bank", str(bank_dir), "--rank", "genus", "--format", "csv"]) == 0
    taxa = capsys.readouterr().out.splitlines()
    assert taxa[0] == "order,family,genus,n_keys" and len(taxa) > 3


def test_predict_images_and_fasta_with_bad_rows(tiny_model_dir, bank_dir, inputs, tmp_path, capsys):
    folder, fasta = inputs
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(folder), str(fasta), "--recursive", "--model", str(tiny_model_dir), "--bank", str(bank_dir),
               "--output", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 1  # some rows failed
    err = capsys.readouterr().err
    assert "3 of 6 rows failed" in err and "rows have notes" in err  # P1 and S2 are short barcodes
    table = pd.read_csv(out).set_index("id")
    assert sorted(table.index) == ["P1", "P2", "S2", "bad", "broken", "empty"]
    # P1 is photo + barcode: both used, or the calibration left the photo out and says so.
    assert table.loc["P1", "modality"] == "image+dna" or "photo not used" in table.loc["P1", "notes"]
    assert table.loc["P2", "modality"] == "image"
    assert table.loc["S2", "modality"] == "dna"
    for good in ("P1", "P2", "S2"):
        assert pd.isna(table.loc[good, "error"]) and isinstance(table.loc[good, "species"], str)
        assert table.loc[good, "is_novel_species"] in (True, False)
    assert "could not be read as an image" in table.loc["broken", "error"] and "cannot identify image" in table.loc["broken", "error"]
    assert table.loc["S2", "notes"].startswith("short barcode: 13 nt")
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
        lines = out.splitlines()  # the provenance first, then the table
        assert lines[0].startswith("# bioscan-clip-hf ") and lines[1].startswith("# settings: ")
        assert lines[2].split()[:4] == ["id", "modality", "method", "rank"] and "model_fingerprint" not in lines[2]


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
               "--no-progress", "--device", "cpu"])  # no bank: the checklist's lineages are the candidates
    assert rc == 0
    row = pd.read_csv(io.StringIO(capsys.readouterr().out)).iloc[0]
    assert row["order"] == "Diptera" and row["order_probability"] == pytest.approx(1.0) and pd.isna(row["bank_fingerprint"])


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


def test_misleading_specimens_provenance_and_log(tiny_model_dir, bank_dir, zeroshot_data_dir, tmp_path, capsys):
    """The misleading inputs of issue 11 through the CLI: error rows naming the reason, a note for the
    cut barcode and the renamed duplicate; every output and the --log record carry the provenance."""
    from bioscan_clip_hf.data import load_bioscan

    barcode = load_bioscan(zeroshot_data_dir, split="test")[0]["dna_barcode"]
    protein = "KHAGRWSYNDBTCMV" * 40  # IUPAC letters only: every 5-mer is <UNK>
    fasta = tmp_path / "specimens.fasta"
    fasta.write_text(f">allN\n{'N' * 658}\n>protein\n{protein}\n>short\n{'N' * 20}ACGTACGT\n"
                     f">long\n{(barcode * 80)[:50_000]}\n>good\n{barcode}\n>good\n{barcode}\n")
    out, log = tmp_path / "pred.csv", tmp_path / "run.json"
    argv = ["predict", str(fasta), "--model", str(tiny_model_dir), "--bank", str(bank_dir), "--output", str(out),
            "--log", str(log), "--no-progress", "--device", "cpu"]
    assert main(argv) == 1
    assert "3 of 6 rows failed" in capsys.readouterr().err
    table = pd.read_csv(out).set_index("id")
    assert list(table.index) == ["allN", "protein", "short", "long", "good", "good#2"]
    for name, valid in (("allN", "0 of 132"), ("protein", "0 of 120"), ("short", "1 of 6")):
        assert table.loc[name, "error"].startswith(f"too few valid 5-mers: {valid} ") and pd.isna(table.loc[name, "species"])
    assert pd.isna(table.loc["long", "error"]) and isinstance(table.loc["long", "species"], str)
    assert "barcode has 50,000 nt, classified on its first 660 nt" in table.loc["long", "notes"]
    assert "renamed 'good#2'" in table.loc["good", "notes"] and "this one was renamed 'good#2'" in table.loc["good#2", "notes"]
    # Provenance: the same columns on every row; the settings are what the command used.
    entry = json.loads(log.read_text())
    prov = entry["provenance"]
    assert prov["model"]["id"] == str(tiny_model_dir) and prov["bank"]["n_keys"] == 24
    assert (table["model_fingerprint"] == prov["model"]["fingerprint"]).all()
    assert (table["bank_fingerprint"] == prov["bank"]["fingerprint"]).all()
    assert json.loads(table["settings"].iloc[0]) == prov["settings"] and prov["settings"]["min_valid_kmers"] == 0.5
    assert entry["command_line"].startswith("bioscan-clip predict ") and "--log" in entry["command_line"]
    assert set(entry["timing_s"]) == {"read_inputs", "load_model", "classify", "write"}
    assert entry["result"]["with_notes"] >= 3  # long, good, good#2 (the classifier may add its own)
    assert {k: v for k, v in entry["result"].items() if k != "with_notes"} == {"rows": 6, "failed": 3, "output": str(out), "format": "csv"}
    # A JSON log is never overwritten: refused before any work (exit 2, one line).
    assert main(argv) == 2 and "never overwritten" in capsys.readouterr().err
    # A lower --min-valid-kmers accepts the 28-nt record; Parquet carries the whole record in its metadata.
    parquet = tmp_path / "pred.parquet"
    assert main(argv[:6] + ["--output", str(parquet), "--format", "parquet", "--min-valid-kmers", "0.1",
                            "--log", str(tmp_path / "runs.log"), "--no-progress", "--device", "cpu"]) == 1
    frame = pd.read_parquet(parquet).set_index("id")
    assert pd.isna(frame.loc["short", "error"]) and frame.attrs["provenance"]["settings"]["min_valid_kmers"] == 0.1
    assert frame.attrs["provenance"]["bank"]["fingerprint"] == prov["bank"]["fingerprint"]
    assert "method=nearest, min_valid_kmers=0.1" in (tmp_path / "runs.log").read_text()


def test_barcodes_from_stdin(tiny_model_dir, bank_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(">x\nACGTACGTACGTTTGA\n>y\nTTTTACGTACGGA\n"))
    assert main(["predict", "-", "--model", str(tiny_model_dir), "--bank", str(bank_dir), "--format", "json",
                 "--no-progress", "--device", "cpu"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["x", "y"]


def test_16_bit_tiff_is_embedded_like_its_8_bit_photo(tiny_model_dir, real_photo_paths, tmp_path, capsys):
    """A 16-bit TIFF used to be whitened by convert("RGB"); now it embeds like the same photo in 8 bits."""
    gray = np.asarray(Image.open(real_photo_paths[0]).convert("L").resize((96, 64)))
    Image.fromarray(gray).save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.tif")
    Image.fromarray(np.full_like(gray, 255)).save(tmp_path / "white.png")  # what the 16-bit file became before
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(tmp_path), "--model", str(tiny_model_dir), "--output", str(out), "--no-progress",
                 "--device", "cpu", "--log", str(tmp_path / "embed.log")]) == 0
    table = pd.read_parquet(out).set_index("id")
    vectors = {name: np.asarray(table.loc[name, "embedding"]) for name in ("eight", "sixteen", "white")}
    assert np.allclose(vectors["sixteen"], vectors["eight"], atol=1e-5)
    assert not np.allclose(vectors["sixteen"], vectors["white"], atol=1e-3)
    prov = table.attrs["provenance"]
    assert prov["model"]["fingerprint"] and prov["bank"] is None and prov["settings"]["min_valid_kmers"] == 0.5
    assert "bioscan-clip embed" in (tmp_path / "embed.log").read_text()
