"""Every writer of the package, killed at each file boundary, leaves the old state or the new one, and
what it writes follows the umask (issue 12 item 3). A "kill" is a write patched to raise."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from bioscan_clip_hf import atomic
from bioscan_clip_hf.zero_shot import bank as bank_module
from bioscan_clip_hf.zero_shot.bank import KeyBank
from bioscan_clip_hf.zero_shot.writers import write_rows
from test_bad_inputs_cli import make_bank


class Killed(Exception):
    """Stands for SIGKILL at a file boundary."""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".tmp-*"))


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _image_bank(dna_bank: KeyBank) -> KeyBank:
    """The same keys re-embedded as an image bank (the issue's half-finished rebuild)."""
    return KeyBank(torch.nn.functional.normalize(torch.randn_like(dna_bank.embeddings), dim=-1), dna_bank.table.copy(),
                   {**dna_bank.meta, "modality": "image"})


def _kill_after(monkeypatch, module, name: str):
    """Patch ``module.name`` to write its file, then die before the next file is started."""
    real = getattr(module, name)

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed(name)

    monkeypatch.setattr(module, name, write_then_die)


@pytest.mark.parametrize("boundary", ["save_file", "write_table", "write_json"],
                         ids=["after-embeddings", "after-keys", "after-bank.json"])
def test_keybank_rebuild_killed_at_each_file_leaves_the_old_bank(tiny_model, tmp_path, monkeypatch, umask022, boundary):
    folder = make_bank(tiny_model, tmp_path / "bank")
    old = KeyBank.load(folder, model=tiny_model)
    new = _image_bank(old)
    target = bank_module.pq if boundary == "write_table" else bank_module
    _kill_after(monkeypatch, target, boundary)
    with pytest.raises(Killed):
        new.save(folder)
    monkeypatch.undo()
    kept = KeyBank.load(folder, model=tiny_model)
    assert kept.modality == "dna" and torch.equal(kept.embeddings, old.embeddings)
    assert _leftovers(tmp_path) == []
    new.save(folder)
    done = KeyBank.load(folder, model=tiny_model)
    assert done.modality == "image" and torch.equal(done.embeddings, new.embeddings.float())
    assert {p.name: _mode(p) for p in folder.iterdir()} == dict.fromkeys(bank_module.BANK_FILES, 0o644)
    assert _mode(folder) == 0o755


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_predictions_killed_before_the_rename_leave_the_old_file(tmp_path, monkeypatch, umask022, fmt):
    out = tmp_path / f"pred.{fmt}"
    write_rows([{"id": "OLD", "error": None}], fmt, out)
    old = out.read_bytes()
    monkeypatch.setattr(atomic, "_fsync", lambda path: (_ for _ in ()).throw(Killed("before rename")))
    with pytest.raises(Killed):
        write_rows([{"id": f"NEW{i}", "error": None} for i in range(1000)], fmt, out)
    monkeypatch.undo()
    assert out.read_bytes() == old and _leftovers(tmp_path) == []
    write_rows([{"id": "NEW", "error": None}], fmt, out)
    assert _mode(out) == 0o644


def test_eval_results_are_replaced_together(tmp_path, monkeypatch, umask022):
    from bioscan_clip_hf import evaluation

    ranks = ("order", "family", "genus", "species")
    per_rank = {r: {f"{s}_{kind}_top1": 50.0 for s in ("seen", "unseen") for kind in ("micro", "macro")} for r in ranks}
    results = {"pairs": {"dna->dna": per_rank}, "protocol": {"query_splits": ["val", "val_unseen"]}}
    monkeypatch.setattr(evaluation, "markdown_table", lambda res: f"table {res['protocol'].get('title')}\n")
    old = {"protocol": {**results["protocol"], "title": "old"}, "pairs": results["pairs"]}
    evaluation.write_results(old, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["accuracy.png", "results.json", "results.md"]
    _kill_after(monkeypatch, evaluation, "accuracy_figure")  # the table and JSON are rendered, the plot dies
    with pytest.raises(Killed):
        evaluation.write_results({**old, "protocol": {**old["protocol"], "title": "new"}}, tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.setattr(evaluation, "markdown_table", lambda res: "new table\n")
    evaluation.write_results({**old, "protocol": {**old["protocol"], "title": "new"}}, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["protocol"]["title"] == "new"
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == dict.fromkeys(before, 0o644)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_save_pretrained_weights_follow_the_umask(tiny_model, tmp_path, mask):
    old = os.umask(mask)
    try:
        tiny_model.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: _mode(p) for p in (tmp_path / "m").iterdir() if p.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~mask and set(modes.values()) == {0o666 & ~mask}


def test_model_folder_written_through_atomic_dir_is_one_unit(tiny_model, tiny_processor, tmp_path, monkeypatch):
    """The pattern of convert-clibd and the best model of training: old folder until the new one is whole."""
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    before = sorted(p.name for p in folder.rglob("*"))
    monkeypatch.setattr(type(tiny_processor), "save_pretrained", lambda self, d: (_ for _ in ()).throw(Killed("proc")))
    with pytest.raises(Killed):
        with atomic.atomic_dir(folder) as tmp:
            tiny_model.save_pretrained(tmp)
            tiny_processor.save_pretrained(tmp)
    assert sorted(p.name for p in folder.rglob("*")) == before and _leftovers(tmp_path) == []


def test_parquet_output_of_embed_killed_leaves_nothing(tmp_path, monkeypatch):
    from bioscan_clip_hf.zero_shot.writers import write_frame_parquet

    out = tmp_path / "emb.parquet"
    real = pd.DataFrame.to_parquet

    def half_then_die(self, path, *args, **kwargs):
        real(self.iloc[: len(self) // 2], path, *args, **kwargs)
        raise Killed("half written")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_die)
    frame = pd.DataFrame({"id": [f"S{i}" for i in range(10)], "error": [None] * 10})
    with pytest.raises(Killed):
        write_frame_parquet(frame, out, {})
    assert not out.exists() and _leftovers(tmp_path) == []
