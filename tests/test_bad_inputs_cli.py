"""`bioscan-clip` refuses bad inputs with exit code 2 and one stderr line naming the input, before any
work, without a traceback and without touching what should stay (README "Bad inputs").

In-process ``cli.main(argv)`` calls for speed, plus one real run of the command in its own process.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bioscan_clip_hf import cli
from bioscan_clip_hf.zero_shot.bank import KeyBank, model_fingerprint

BARCODE = "AACATTATATTTTATTTTTGGAATTTGAGCAGGAATAGTAGGAACTTCTTTAAGATTATTAATTCGAGCTGAATTAGGAACTCCAGGATC" * 6


def make_bank(model, folder: Path, n: int = 6) -> Path:
    """A small DNA key bank tied to ``model``'s weights (random keys: these tests check refusals)."""
    torch.manual_seed(1)
    keys = torch.nn.functional.normalize(torch.randn(n, model.config.projection_dim), dim=-1)
    table = pd.DataFrame({"processid": [f"K{i}" for i in range(n)], "order": ["Diptera"] * n,
                          "family": ["Culicidae"] * n, "genus": ["Aedes", "Culex"] * (n // 2),
                          "species": [f"Aedes s{i}" for i in range(n)], "dna_barcode": [BARCODE] * n})
    return KeyBank(keys, table, {"modality": "dna", "n_keys": n, "dim": keys.shape[1],
                                 "model_fingerprint": model_fingerprint(model)}).save(folder)


@pytest.fixture(scope="module")
def paths(tiny_model, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs_cli")
    fasta = root / "seqs.fasta"
    fasta.write_text(f">S1\n{BARCODE}\n>S2\n{BARCODE[::-1]}\n")
    return {"model": tiny_model_dir, "bank": make_bank(tiny_model, root / "bank"), "fasta": fasta, "root": root}


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of ``bioscan-clip argv``."""
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_refused(rc: int, err: list[str], *names: str) -> None:
    assert rc == 2, err
    assert len(err) == 1 and "error:" in err[0] and "Traceback" not in err[0], err
    for name in names:
        assert str(name) in err[0], (name, err)


@pytest.fixture()
def no_work(monkeypatch):
    """Make any model loading fail the test: the refusal must come before the work starts."""
    def loading_started(args):
        raise AssertionError("work started before the arguments and outputs were checked")

    monkeypatch.setattr(cli, "_load_model", loading_started)


ARGUMENTS = [  # (extra argv, words the one line must hold)
    (["--k", "0"], ["--k", "'0'"]),
    (["--k", "-3"], ["--k", "'-3'"]),
    (["--method", "text", "--k", "0"], ["--k", "'0'"]),
    (["--batch-size", "0"], ["--batch-size", "'0'"]),
    (["--batch-size", "many"], ["--batch-size", "'many'"]),
    (["--rank", "kingdom"], ["--rank", "kingdom"]),
    (["--format", "parquet"], ["--format parquet", "--output"]),
]


@pytest.mark.parametrize("extra, words", ARGUMENTS, ids=[" ".join(a) for a, _ in ARGUMENTS])
def test_bad_arguments_are_refused_before_any_work(paths, capsys, no_work, extra, words):
    rc, err = run(["predict", paths["fasta"], "--model", paths["model"], "--no-progress", *extra], capsys)
    assert_refused(rc, err, *words)


def _read_only(root: Path) -> Path:
    target = root / "keep.csv"
    target.write_text("precious\n")
    target.chmod(0o444)
    return target


OUTPUTS = [  # (make the target under root, words in the message)
    (lambda root: root / "missing" / "out.csv", ["missing", "does not exist"]),
    (lambda root: root, ["is a folder"]),
    (lambda root: Path("/dev/full"), ["/dev/full", "No space left"]),
    (_read_only, ["keep.csv", "read-only"]),
]


@pytest.mark.parametrize("command", ["predict", "embed"])
@pytest.mark.parametrize("make, words", OUTPUTS, ids=["missing-folder", "a-folder", "dev-full", "read-only"])
def test_unwritable_output_is_refused_before_any_work(paths, tmp_path, capsys, no_work, command, make, words):
    target = make(tmp_path)
    before = target.read_bytes() if target.is_file() else None
    rc, err = run([command, paths["fasta"], "--model", paths["model"], "--output", target, "--no-progress"], capsys)
    assert_refused(rc, err, *words)
    if before is not None:  # root could overwrite it; the CLI does not
        assert target.read_bytes() == before and stat.S_IMODE(target.stat().st_mode) == 0o444
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_folder_outputs_are_checked_before_any_work(paths, tmp_path, capsys, no_work):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    rc, err = run(["build-bank", "--model", paths["model"], "--data", paths["root"], "--out", notes, "--no-progress"],
                  capsys)
    assert_refused(rc, err, notes, "no bank.json")
    assert (notes / "mine.txt").read_text() == "keep me"
    afile = tmp_path / "eval.txt"
    afile.write_text("")
    rc, err = run(["eval", "--model", paths["model"], "--data", paths["root"], "--out", afile], capsys)
    assert_refused(rc, err, afile, "existing file")
    rc, err = run(["list-taxa", "--bank", paths["bank"], "--output", tmp_path / "nowhere" / "taxa.csv"], capsys)
    assert_refused(rc, err, "nowhere", "does not exist")


def test_model_sources_are_named(paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for spec, words in [("modle/x", ["modle/x", "no model repo of that name"]),
                        ("./nope", ["model path does not exist: ./nope"]),
                        ("outputs/modle", ["model path does not exist: outputs/modle"]),  # outputs/ is here
                        ("a/b/c", ["model path does not exist: a/b/c"])]:
        rc, err = run(["predict", paths["fasta"], "--model", spec, "--no-progress"], capsys)
        assert_refused(rc, err, *words)
    for spec, words in [("dtaa/x", ["data set dtaa/x", "no dataset repo of that name"]),
                        ("./dtaa", ["data set path does not exist: ./dtaa"])]:
        rc, err = run(["eval", "--model", paths["model"], "--data", spec, "--out", tmp_path / "eval"], capsys)
        assert_refused(rc, err, *words)


def _damage_weights(folder: Path, how: str) -> None:
    weights = folder / "model.safetensors"
    if how == "empty":
        weights.write_bytes(b"")
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:  # the header cut short
        weights.write_bytes(weights.read_bytes()[:20])


@pytest.mark.parametrize("how", ["empty", "truncated", "header"])
def test_damaged_model_weights_give_one_line(paths, tmp_path, capsys, how):
    model = tmp_path / "model"
    shutil.copytree(paths["model"], model)
    _damage_weights(model, how)
    rc, err = run(["predict", paths["fasta"], "--model", model, "--bank", paths["bank"], "--no-progress"], capsys)
    assert_refused(rc, err, f"cannot load model {model}")


def _damage_bank(bank: Path, how: str, other: Path) -> str:
    if how == "short keys.parquet":
        data = (bank / "keys.parquet").read_bytes()
        (bank / "keys.parquet").write_bytes(data[: len(data) // 2])
        return "keys.parquet is damaged"
    if how == "bank.json not JSON":
        (bank / "bank.json").write_text('{"modality": "dna", ')
        return "bank.json is damaged"
    if how == "empty embeddings":
        (bank / "embeddings.safetensors").write_bytes(b"")
        return "embeddings.safetensors is damaged"
    shutil.copy(other / "embeddings.safetensors", bank / "embeddings.safetensors")  # a half-finished old-style rebuild
    return "different builds"


BANK_DAMAGE = ["short keys.parquet", "bank.json not JSON", "empty embeddings", "files of two builds"]


@pytest.mark.parametrize("how", BANK_DAMAGE)
def test_damaged_bank_gives_one_line(tiny_model, paths, tmp_path, capsys, how):
    bank = tmp_path / "bank"
    shutil.copytree(paths["bank"], bank)
    words = _damage_bank(bank, how, make_bank(tiny_model, tmp_path / "other"))
    rc, err = run(["list-taxa", "--bank", bank], capsys)
    assert_refused(rc, err, str(bank), words)


def test_damaged_bank_is_refused_by_predict(paths, tiny_model, tmp_path, capsys):
    bank = tmp_path / "bank"
    shutil.copytree(paths["bank"], bank)
    _damage_bank(bank, "short keys.parquet", paths["bank"])
    rc, err = run(["predict", paths["fasta"], "--model", paths["model"], "--bank", bank, "--no-progress"], capsys)
    assert_refused(rc, err, str(bank), "keys.parquet is damaged")


def test_inputs_may_follow_flags():
    args = cli.build_parser().parse_args(["predict", "photos", "--recursive", "file.fasta", "--model", "m", "--k", "3"])
    assert args.inputs == ["photos", "file.fasta"] and args.recursive and args.k == 3


def test_hub_id_is_announced(paths, tmp_path, capsys, monkeypatch):
    """A Hub id in the (offline) cache is loaded from there, and the CLI says so."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--bioscan-ml--tiny"
    shutil.copytree(paths["model"], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    stale = tmp_path / "stale"
    shutil.copytree(paths["bank"], stale)
    meta = json.loads((stale / "bank.json").read_text())
    (stale / "bank.json").write_text(json.dumps({**meta, "model_fingerprint": "0" * 16}))
    rc, err = run(["predict", paths["fasta"], "--model", "bioscan-ml/tiny", "--bank", stale, "--no-progress"], capsys)
    assert rc == 2 and err[0] == "bioscan-clip: loading bioscan-ml/tiny from the Hub"
    assert len(err) == 2 and "was built with model weights 0000000000000000" in err[1]  # it got as far as the bank

    # Without --bank, the key_bank/ shipped in the Hub repo is used, as ZeroShotClassifier.from_pretrained does.
    shutil.copytree(paths["bank"], repo / "snapshots" / ("0" * 40) / "key_bank")
    out = tmp_path / "pred.csv"
    rc, err = run(["predict", paths["fasta"], "--model", "bioscan-ml/tiny", "--output", out, "--no-progress",
                   "--device", "cpu"], capsys)
    assert rc == 0, err
    assert set(pd.read_csv(out)["species"]) <= {f"Aedes s{i}" for i in range(6)}  # the bundled bank's species
    rc, err = run(["list-taxa", "--model", "bioscan-ml/tiny", "--format", "csv", "--output", tmp_path / "taxa.csv"], capsys)
    assert rc == 0 and len(pd.read_csv(tmp_path / "taxa.csv")) == 6


def test_every_row_failed_is_exit_2_with_the_rows_written(paths, tmp_path, capsys):
    fasta = tmp_path / "junk.fasta"
    fasta.write_text(">J1\nHELLOWORLD\n>J2\nXXXXXXXXXXXXXXXXXXXXXXXX\n")
    out = tmp_path / "pred.csv"
    rc, err = run(["predict", fasta, "--model", paths["model"], "--bank", paths["bank"], "--output", out,
                   "--no-progress", "--device", "cpu"], capsys)
    assert rc == 2 and err[-1].startswith("bioscan-clip: error: all 2 rows failed"), err
    table = pd.read_csv(out)
    assert list(table["id"]) == ["J1", "J2"] and table["error"].notna().all()


def test_inputs_after_a_flag_are_classified(paths, tmp_path, capsys):
    second = tmp_path / "more.fasta"
    second.write_text(f">S3\n{BARCODE}\n")
    out = tmp_path / "pred.csv"
    rc, err = run(["predict", paths["fasta"], "--no-progress", second, "--model", paths["model"], "--bank",
                   paths["bank"], "--output", out, "--device", "cpu"], capsys)
    assert rc == 0, err
    assert sorted(pd.read_csv(out)["id"]) == ["S1", "S2", "S3"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_installed_command_answers_in_one_line(paths, tmp_path):
    """One real process (the others run in-process for speed): a typo that looks like a Hub id."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "bioscan_clip_hf.cli", "predict", str(paths["fasta"]), "--model",
                           "modle/x"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert err == ["bioscan-clip: error: model modle/x: no such local path, and no model repo of that name in the "
                   "local Hugging Face cache (offline: HF_HUB_OFFLINE is set)"]
