"""What training/train.py refuses and how: every bad setting, input or checkpoint is one line on stderr
and exit code 2, before anything is written; checkpoints hold tensors and JSON only and a pickle with
code is refused; files appear complete with the umask's modes; the optional `pretrain` split and `--disable_tqdm`; `dna_init`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.arguments import run_cli
from training.train import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "demo_synthetic.yaml"


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    """train.py's arguments; one validation split, so the saved key bank is not calibrated: these tests never
    read it, and a calibration costs seconds per run (tests/test_training_train.py's best-model test checks it)."""
    return ["--config", str(CONFIG), "--dataset", str(data), "--output_dir", str(out), "--modalities", "dna", "text",
            "--per_device_train_batch_size", "8", "--max_train_samples", "32", "--eval_every", "0", "--disable_tqdm",
            "--eval_query_splits", "val", *extra]


def _copy_data(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a Parquet data set without the shards of the ``drop`` splits."""
    (dst / "data").mkdir(parents=True)
    for shard in (src / "data").glob("*.parquet"):
        if not shard.name.startswith(tuple(f"{s}-" for s in drop)):
            shutil.copy(shard, dst / "data" / shard.name)
    return dst


def _dna_mlm_folder(folder: Path, k: int = 4, bert_vocab: int | None = None) -> Path:
    """A tiny BertForMaskedLM with a k-mer DNA tokenizer beside it, as training/pretrain_dna.py writes."""
    from transformers import BertConfig, BertForMaskedLM

    from bioscan_clip_hf.tokenization_barcode import BarcodeKmerTokenizer

    tokenizer = BarcodeKmerTokenizer(k=k, stride=k, max_length=400, leading_id=0)
    torch.manual_seed(1)
    mlm = BertForMaskedLM(BertConfig(vocab_size=bert_vocab or tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    mlm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def short_run(synthetic_tiny_dir, tmp_path_factory) -> Path:
    """A 2-step DNA + text run with a checkpoint after each step (both kept)."""
    out = tmp_path_factory.mktemp("short_run") / "run"
    main(_args(synthetic_tiny_dir, out, "--max_train_steps", "2", "--checkpointing_steps", "1",
               "--checkpoints_total_limit", "none"))
    return out


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = run_cli(main, argv, prog="train.py")
    err = capsys.readouterr().err
    return code, err.strip().splitlines()


# ------------------------------------------------------------------ bad settings and inputs


def _bad_cases(data: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    unknown_key = tmp / "unknown_key.yaml"
    unknown_key.write_text(f"dataset: {data}\nlearning_rat: 0.1\n")
    wrong_type = tmp / "wrong_type.yaml"
    wrong_type.write_text(f"dataset: {data}\nnum_train_epochs: many\n")
    no_val_unseen = _copy_data(data, tmp / "no_val_unseen", drop=("val_unseen",))
    not_a_checkpoint = tmp / "not_a_checkpoint"
    not_a_checkpoint.mkdir()
    vocab_mismatch = _dna_mlm_folder(tmp / "vocab_mismatch", k=4, bert_vocab=1027)
    return [
        ("unknown flag", ["--no_such_setting", "1"], "unknown setting --no_such_setting"),
        ("misspelt flag", ["--learning_rat", "0.1"], "unknown setting --learning_rat (did you mean --learning_rate?)"),
        ("unknown YAML key", ["--config", str(unknown_key)], "unknown_key.yaml: unknown setting 'learning_rat' (did you mean learning_rate?)"),
        ("wrong type, flag", ["--per_device_train_batch_size", "ten"], "--per_device_train_batch_size: invalid int value: 'ten'"),
        ("wrong type, YAML", ["--config", str(wrong_type)], "wrong_type.yaml: setting 'num_train_epochs' expects an integer, got 'many'"),
        ("bad choice", ["--lr_scheduler_type", "cosine"], "--lr_scheduler_type: invalid choice: 'cosine'"),
        ("negative learning rate", ["--learning_rate", "-1e-3"], "`learning_rate` must be > 0, got -0.001"),
        ("NaN learning rate", ["--learning_rate", "nan"], "`learning_rate` must be a finite number, got nan"),
        ("batch of one", ["--per_device_train_batch_size", "1"], "`per_device_train_batch_size` must be >= 2 (InfoNCE needs negatives)"),
        ("one modality", ["--modalities", "dna"], "`modalities` must be two or three distinct"),
        ("missing dataset", ["--dataset", str(tmp / "no_such_data")], f"dataset path does not exist: {tmp / 'no_such_data'}"),
        ("missing split", ["--dataset", str(no_val_unseen), "--eval_query_splits", "val", "val_unseen"],
         "has no split(s) ['val_unseen'] listed in eval_query_splits"),
        ("missing resume path", ["--resume_from_checkpoint", str(tmp / "nope")], f"resume_from_checkpoint {tmp / 'nope'}: no such folder"),
        ("resume from a non-checkpoint", ["--resume_from_checkpoint", str(not_a_checkpoint)], "not a checkpoint of training/train.py"),
        ("dna_init not a model", ["--dna_init", str(not_a_checkpoint)], "not a model folder (no config.json)"),
        ("dna_init tokenizer mismatch", ["--dna_init", str(vocab_mismatch)], "its tokenizer has 259 ids but its model 1027 embeddings"),
        ("missing tower", ["--text_tower", str(tmp / "no_such_tower")], f"text_tower path does not exist: {tmp / 'no_such_tower'}"),
        ("push without a repo", ["--push_to_hub"], "`push_to_hub` needs `hub_model_id`"),
    ]


def test_every_bad_input_is_one_line_and_exit_code_2_before_anything_is_written(synthetic_tiny_dir, tmp_path, capsys):
    cases = _bad_cases(synthetic_tiny_dir, tmp_path)
    capsys.readouterr()  # what building the cases printed
    for name, extra, message in cases:
        out = tmp_path / "runs" / name.replace(" ", "_")
        code, lines = _run(_args(synthetic_tiny_dir, out, *extra), capsys)
        assert code == 2, name
        assert len(lines) == 1 and lines[0].startswith("train.py: error: "), (name, lines)
        assert message in lines[0], (name, lines[0])
        assert not out.exists(), f"{name}: something was written"


def test_the_script_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "training/train.py"), "--dataset", str(tmp_path), "--learning_rate",
                           "nan"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["train.py: error: `learning_rate` must be a finite number, got nan"]


# ------------------------------------------------------------------ checkpoints


class _Payload:
    """Unpickling this runs code that writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.mark.parametrize("planted, message", [
    ("custom_checkpoint_0.pkl", "it holds custom_checkpoint_0.pkl, which train.py never writes"),
    ("optimizer.bin", "optimizer.bin holds pickled objects other than tensors (GLOBAL exec)"),
])
def test_a_checkpoint_with_pickled_code_is_refused_and_the_code_never_runs(synthetic_tiny_dir, short_run, tmp_path, capsys,
                                                                          planted, message):
    crafted = tmp_path / "crafted"
    shutil.copytree(short_run / "checkpoints" / "step_1", crafted)
    marker = tmp_path / "pwned"
    torch.save({"state": {}, "param_groups": [], "payload": _Payload(marker)}, crafted / planted)
    # The payload is live: an unrestricted load runs it.
    torch.load(crafted / planted, weights_only=False)
    assert marker.read_text() == "code ran"
    marker.unlink()

    out = tmp_path / "resumed"
    code, lines = _run(_args(synthetic_tiny_dir, out, "--max_train_steps", "3", "--resume_from_checkpoint", str(crafted)),
                       capsys)
    assert code == 2 and len(lines) == 1
    assert f"refusing to resume from {crafted}: {message}" in lines[0]
    assert not marker.exists(), "the checkpoint's pickled code ran"
    assert not out.exists()


def test_checkpoints_hold_tensors_and_json_only_with_the_umask_modes(short_run):
    umask = os.umask(0)
    os.umask(umask)
    assert sorted(p.name for p in (short_run / "checkpoints").iterdir()) == ["step_1", "step_2"]
    step = short_run / "checkpoints" / "step_1"
    assert sorted(p.name for p in step.iterdir()) == ["model.safetensors", "optimizer.bin", "rng_state_0.json",
                                                       "trainer_state.json"]
    torch.load(step / "optimizer.bin", weights_only=True)  # tensors, numbers and strings only
    rng = json.loads((step / "rng_state_0.json").read_text())
    assert set(rng) >= {"python", "numpy", "torch"}
    state = json.loads((step / "trainer_state.json").read_text())
    assert (state["format"], state["global_step"], state["scheduler_steps"]) == (2, 1, 1)
    written = [p for p in short_run.rglob("*")]
    assert any(p.name == "model.safetensors" and p.parent.name == "best_model" for p in written)
    for path in written:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, f"{path}: mode {oct(path.stat().st_mode & 0o777)}"
    assert not [p for p in written if p.name.startswith(".")], "temporary files left behind"


def test_a_checkpoint_killed_half_way_leaves_the_previous_one_intact(synthetic_tiny_dir, tmp_path, monkeypatch):
    import training.checkpointing as checkpointing

    calls = {"n": 0}
    real = checkpointing.rng_state

    def rng_state_then_crash():
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint dies after accelerate wrote model and optimizer
            raise OSError(28, "No space left on device")
        return real()

    monkeypatch.setattr(checkpointing, "rng_state", rng_state_then_crash)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        main(_args(synthetic_tiny_dir, out, "--max_train_steps", "3", "--checkpointing_steps", "1",
                   "--checkpoints_total_limit", "none"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_1"]  # no step_2, no temporary folder
    assert json.loads((out / "checkpoints" / "step_1" / "trainer_state.json").read_text())["global_step"] == 1


# ------------------------------------------------------------------ optional splits, dna_init


def test_a_data_set_without_pretrain_split_trains_on_train_with_a_note_and_no_progress_bar(synthetic_tiny_dir, tmp_path,
                                                                                          capfd):
    from bioscan_clip_hf.data import load_bioscan

    # Copies never loaded before: `datasets` generates their splits (and would show its bars).
    data = _copy_data(synthetic_tiny_dir, tmp_path / "no_pretrain", drop=("pretrain",))
    control = _copy_data(synthetic_tiny_dir, tmp_path / "control")
    summary = main(_args(data, tmp_path / "run", "--max_train_steps", "1"))
    assert summary["train_splits"] == ["train"] and summary["global_step"] == 1
    out, err = capfd.readouterr()
    assert f"note: {data} has no `pretrain` split (no unlabelled records); training on train only" in out
    # --disable_tqdm (in _args): no bar at all, "Generating split" of datasets included ...
    assert "Generating" not in out + err and "%|" not in out + err, err[-2000:]
    # ... and the user's setting is back after the run: a fresh load shows its bars again.
    load_bioscan(control, split="train")
    assert "Generating train" in capfd.readouterr().err
    # `train` itself is required.
    no_train = _copy_data(synthetic_tiny_dir, tmp_path / "no_train", drop=("pretrain", "train"))
    assert run_cli(main, _args(no_train, tmp_path / "run2"), prog="train.py") == 2
    assert "has no split(s) ['train'] listed in train_splits" in capfd.readouterr().err


def test_dna_init_folder_becomes_the_dna_tower_with_its_tokenizer(synthetic_tiny_dir, tmp_path):
    from transformers import BertForMaskedLM

    from bioscan_clip_hf import BioscanClipProcessor
    from bioscan_clip_hf.tokenization_barcode import BarcodeKmerTokenizer
    from training.config import parse_args
    from training.model_setup import build_model

    folder = _dna_mlm_folder(tmp_path / "pretrained_dna", k=4)
    argv = _args(synthetic_tiny_dir, tmp_path / "run", "--dna_init", str(folder), "--max_train_steps", "2")
    model, processor = build_model(parse_args(argv))
    mlm = BertForMaskedLM.from_pretrained(folder)
    tower = model.dna_model.state_dict()
    for name, weight in mlm.bert.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(tower[name], weight), name
    assert torch.equal(model.dna_head.dense.weight, mlm.cls.predictions.transform.dense.weight)
    assert model.config.text_config.hidden_size == 32 and model.config.projection_dim == 32  # the preset's shape
    barcode = "ACGTTGCA" * 50
    expected = BarcodeKmerTokenizer.from_pretrained(folder)([barcode], return_tensors="pt")["input_ids"]
    assert expected.shape == (1, 101)  # 4-mers of 400 bases + the leading id, not the preset's 5-mers
    assert torch.equal(processor(dna=[barcode])["dna_input_ids"], expected)

    summary = main(argv)
    saved = BioscanClipProcessor.from_pretrained(summary["best_model"])
    assert torch.equal(saved(dna=[barcode])["dna_input_ids"], expected)
