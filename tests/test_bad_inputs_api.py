"""The Python API refuses bad sources, damaged weights and damaged banks with one-line errors naming
them (README "Bad inputs"); the same rules as the CLI, from the same functions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bioscan_clip_hf.atomic import WriteTargetError
from bioscan_clip_hf.sources import ModelLoadError, SourceError, load_model, resolve_source
from bioscan_clip_hf.zero_shot import ZeroShotClassifier
from bioscan_clip_hf.zero_shot.bank import DamagedBankError, KeyBank, check_bank_target
from bioscan_clip_hf.zero_shot.writers import write_rows
from test_bad_inputs_cli import BANK_DAMAGE, _damage_bank, _damage_weights, make_bank


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and all(w in text for w in words), text


def _fake_hub_cache(root: Path, repo_id: str, model_dir: Path | None = None) -> Path:
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    if model_dir is None:
        snapshot.mkdir(parents=True)
    else:
        shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return root


SOURCES = [  # spec, words of the error
    ("modle/x", ["model modle/x", "no model repo of that name"]),
    ("./model", ["model path does not exist: ./model"]),
    ("/no/such/model", ["model path does not exist: /no/such/model"]),
    ("~/no-such-model", ["model path does not exist: ~/no-such-model"]),
    ("a/b/c", ["model path does not exist: a/b/c"]),
    ("here/modle", ["model path does not exist: here/modle"]),  # its first part is a local folder
    ("C:\\models\\x", ["model path does not exist"]),
]


@pytest.mark.parametrize("spec, words", SOURCES, ids=[s for s, _ in SOURCES])
def test_resolve_source_refuses_what_is_neither_local_nor_on_the_hub(tmp_path, monkeypatch, spec, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    with pytest.raises(SourceError) as exc:
        resolve_source(spec, cache_dir=tmp_path / "empty-cache")
    _one_line(exc, *words)


def test_resolve_source_local_paths_and_cached_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    assert resolve_source("org") == Path("org")
    cache = _fake_hub_cache(tmp_path / "cache", "bioscan-ml/clibd")
    assert resolve_source("bioscan-ml/clibd", cache_dir=cache) == "bioscan-ml/clibd"
    with pytest.raises(SourceError, match="key bank path does not exist: org/bank"):
        resolve_source("org/bank", what="key bank", cache_dir=cache)  # org/ is a folder here: a local path


def test_classifier_from_pretrained_uses_the_same_rules(tiny_model, tiny_model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(SourceError) as exc:
        ZeroShotClassifier.from_pretrained("modle/x")
    _one_line(exc, "modle/x")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_fake_hub_cache(tmp_path / "hub", "org/tiny", tiny_model_dir)))
    bank = make_bank(tiny_model, tmp_path / "bank")
    clf = ZeroShotClassifier.from_pretrained("org/tiny", bank=bank, device="cpu")
    assert len(clf.bank) == 6  # loaded from the cached snapshot, bank fingerprint matched


@pytest.mark.parametrize("how", ["empty", "truncated", "header"])
def test_damaged_weights_raise_model_load_error(tiny_model_dir, tmp_path, how):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _damage_weights(model, how)
    with pytest.raises(ModelLoadError) as exc:
        load_model(model)
    _one_line(exc, f"cannot load model {model}")
    with pytest.raises(ModelLoadError):
        ZeroShotClassifier.from_pretrained(model)


def test_a_folder_without_a_model_is_named(tiny_model, tmp_path):
    bank = make_bank(tiny_model, tmp_path / "bank")
    with pytest.raises(ModelLoadError) as exc:
        load_model(bank)
    _one_line(exc, f"cannot load model {bank}")


@pytest.mark.parametrize("how", BANK_DAMAGE)
def test_keybank_load_refuses_damaged_banks(tiny_model, tmp_path, how):
    bank = make_bank(tiny_model, tmp_path / "bank")
    words = _damage_bank(bank, how, make_bank(tiny_model, tmp_path / "other"))
    with pytest.raises(DamagedBankError) as exc:
        KeyBank.load(bank, model=tiny_model)
    _one_line(exc, str(bank), words)


def test_keybank_save_never_deletes_a_folder_that_is_not_a_bank(tiny_model, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    bank = KeyBank.load(make_bank(tiny_model, tmp_path / "bank"))
    with pytest.raises(WriteTargetError) as exc:
        bank.save(folder)
    _one_line(exc, str(folder), "no bank.json")
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    assert check_bank_target(tmp_path / "bank") == tmp_path / "bank"  # an existing bank may be replaced


def test_write_rows_refuses_unwritable_outputs(tmp_path):
    rows = [{"id": "S1", "error": None}]
    for target, words in [(tmp_path / "no" / "p.csv", ["does not exist"]), ("/dev/full", ["No space left"]),
                          (tmp_path, ["is a folder"])]:
        with pytest.raises(WriteTargetError) as exc:
            write_rows(rows, "csv", target)
        _one_line(exc, str(target), *words)
