"""``bioscan-clip push``: the staged folder is exactly what gets uploaded (tests/test_core_hub.py loads such a
folder in a clean process). The Hub calls are exercised against a recording stand-in for ``HfApi`` (no network
in tests)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from bioscan_clip_hf.hub import ModelFolderError, add_push_parser, push_model_folder


@pytest.fixture()
def model_folder(tmp_path, tiny_model_dir) -> Path:
    """A model folder as training leaves it: model, processor, key bank, evaluation, plus training leftovers."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "key_bank").mkdir()
    (folder / "key_bank" / "embeddings.safetensors").write_bytes(b"bank")
    (folder / "key_bank" / "keys.parquet").write_bytes(b"table")
    for junk in ("optimizer.pt", "training_args.bin", "rng_state.pth"):
        (folder / junk).write_bytes(b"x")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_bioscan_clip.cpython-311.pyc").write_bytes(b"x")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_bytes(b"x")
    return folder


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-clip")
    add_push_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_dry_run_stages_exactly_the_publishable_files(tmp_path, model_folder, capsys):
    staging = tmp_path / "staging"
    from bioscan_clip_hf.cli import main as cli_main

    assert cli_main(["push", str(model_folder), "--repo-id", "my-org/bioscan-clip-tiny", "--dry-run",
                     "--staging-dir", str(staging), "--dataset", "bioscan-ml/BIOSCAN-5M"]) == 0
    printed = capsys.readouterr().out
    assert "Would upload" in printed and "my-org/bioscan-clip-tiny@main" in printed

    staged = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    for wanted in ("config.json", "model.safetensors", "modeling_bioscan_clip.py", "configuration_bioscan_clip.py",
                   "processing_bioscan_clip.py", "image_processing_bioscan_clip.py", "pipeline_bioscan_clip.py",
                   "tokenization_barcode.py", "dna_tokenizer/tokenization_barcode.py", "processor_config.json",
                   "preprocessor_config.json", "tokenizer.json", "README.md", "key_bank/embeddings.safetensors",
                   "key_bank/keys.parquet"):
        assert wanted in staged, f"{wanted} not staged: {staged}"
        assert wanted in printed
    assert any(p.startswith("dna_tokenizer/") for p in staged)
    leftovers = [p for p in staged if p.endswith((".pt", ".bin", ".pth", ".pyc")) or p.startswith(("checkpoint-", ".", "__"))]
    assert not leftovers
    assert 'revision="main"' in (staging / "README.md").read_text()

    # That the staged files alone load in a clean process (package unimportable, offline, empty cache) with
    # AutoModel, AutoProcessor and the pipeline is tested by tests/test_core_hub.py on a folder staged the same way.


def test_staging_appears_complete_or_not_at_all(tmp_path, model_folder, monkeypatch):
    """A failure while staging (here: rendering the card, after every other file was copied) leaves no
    partial staging folder a later upload could take for the model, nor temporary files beside it."""
    from bioscan_clip_hf import hub

    def broken_card(*args, **kwargs):
        raise RuntimeError("card rendering failed")

    monkeypatch.setattr(hub, "render_model_card", broken_card)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="card rendering failed"):
        hub.stage_model_folder(model_folder, tmp_path / "out" / "staging", "my-org/x")
    assert list((tmp_path / "out").iterdir()) == []


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records calls, remembers what each upload contained."""

    def __init__(self, has_card: bool):
        self.has_card = has_card
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []
        self.card_text: str | None = None

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def file_exists(self, repo_id, filename, **kwargs):
        self.calls.append(("file_exists", {"repo_id": repo_id, "filename": filename, **kwargs}))
        return self.has_card and filename == "README.md"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        root = Path(kwargs["folder_path"])
        self.uploaded = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if "README.md" in self.uploaded:
            self.card_text = (root / "README.md").read_text()
        return SimpleNamespace(oid="c0ffee" * 6 + "abcd", commit_url="https://huggingface.co/x/commit/1")

    def upload_file(self, **kwargs):
        self.calls.append(("upload_file", kwargs))
        self.card_text = kwargs["path_or_fileobj"].decode()
        return SimpleNamespace(oid="f" * 40, commit_url="https://huggingface.co/x/commit/2")


def test_push_creates_repo_uploads_and_pins_the_generated_card(model_folder):
    api = RecordingApi(has_card=False)
    result = push_model_folder(model_folder, "my-org/tiny", private=True, revision="v1", api=api)
    names = [name for name, _ in api.calls]
    assert names == ["create_repo", "create_branch", "file_exists", "upload_folder", "upload_file"]
    assert api.calls[0][1]["private"] is True and api.calls[0][1]["exist_ok"] is True
    assert api.calls[1][1]["branch"] == "v1"
    assert api.calls[3][1]["revision"] == "v1"
    assert "README.md" in api.uploaded and "model.safetensors" in api.uploaded
    assert not any(p.endswith((".pt", ".bin", ".pth")) for p in api.uploaded)
    # The second commit pins the usage snippet to the commit holding the weights.
    assert 'revision="c0ffeec0ffee' in api.card_text
    assert result.card == "generated" and result.card_commit_url
    assert not result.staging_dir.exists(), "the temporary staging folder is removed after a real push"


def test_existing_card_is_kept_unless_overwrite(model_folder):
    api = RecordingApi(has_card=True)
    result = push_model_folder(model_folder, "my-org/tiny", api=api)
    assert "README.md" not in api.uploaded and "model.safetensors" in api.uploaded
    assert "upload_file" not in [name for name, _ in api.calls]
    assert result.card == "kept existing card on the Hub"

    api = RecordingApi(has_card=True)
    (model_folder / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n")
    result = push_model_folder(model_folder, "my-org/tiny", api=api, overwrite_card=True)
    assert "README.md" in api.uploaded and api.card_text.endswith("# My own card\n")
    assert result.card == "folder"
    assert "upload_file" not in [name for name, _ in api.calls]


def test_incomplete_folders_are_refused(tmp_path, model_folder, capsys):
    (model_folder / "processor_config.json").unlink()
    (model_folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="model.safetensors, processor_config.json"):
        push_model_folder(model_folder, "my-org/tiny", dry_run=True, staging_dir=tmp_path / "s")
    args = _parse(["push", str(model_folder), "--repo-id", "my-org/tiny", "--dry-run"])
    assert args.func(args) == 2
    assert "not a complete model folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="org/name"):
        push_model_folder(model_folder, "no-org", dry_run=True)
