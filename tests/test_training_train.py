"""training/train.py end to end on the synthetic `tiny` set (CPU, tiny preset, a few steps each)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.config import TrainConfig, parse_args
from training.loop import NonFiniteLossError
from training.model_setup import build_model, configure_trainable
from training.optimization import build_scheduler, peak_learning_rate
from training.train import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(synthetic_tiny_dir) -> Path:
    """The synthetic ``tiny`` set (data's session fixture)."""
    return synthetic_tiny_dir


def _args(data: Path, out: Path, *extra: str, calibrate: bool = False) -> list[str]:
    """train.py's arguments; without ``calibrate`` one validation split is given, so the saved key bank is
    not calibrated (``save_best_model`` calibrates on a (seen, unseen) pair): only the best-model test
    checks the calibration, and each calibration costs seconds in every run of the tests that follow."""
    return ["--config", str(REPO / "training/configs/demo_synthetic.yaml"), "--dataset", str(data),
            "--output_dir", str(out), "--per_device_train_batch_size", "8", "--disable_tqdm",
            *(() if calibrate else ("--eval_query_splits", "val")), *extra]


# ------------------------------------------------------------------ configuration


def test_every_shipped_config_parses_and_overrides_apply(tmp_path):
    import yaml

    for path in sorted((REPO / "training/configs").glob("*.yaml")):
        if path.name.startswith("pretrain_"):  # training/pretrain_dna.py's (tests/test_training_pretrain_dna.py)
            continue
        cfg = parse_args(["--config", str(path), "--dataset", "x"])
        assert 2 <= len(cfg.modalities) <= 3, path
    cfg = parse_args(["--config", str(REPO / "training/configs/clibd_bioscan5m.yaml"), "--modalities", "dna", "text",
                      "--max_train_steps=7", "--push_to_hub", "--hub_model_id", "me/model", "--learning_rate", "none",
                      "--model_config_overrides", "{dna_pooling: masked_mean}", "--no_image_augmentation"])
    assert cfg.modalities == ["dna", "text"] and cfg.max_train_steps == 7 and cfg.push_to_hub is True
    assert cfg.learning_rate is None and cfg.model_config_overrides == {"dna_pooling": "masked_mean"}
    assert cfg.image_augmentation is False
    # From the file, typed as declared (YAML's 10000 for a float setting is a float).
    assert (cfg.per_device_train_batch_size, cfg.weight_decay, cfg.mixed_precision, cfg.seed) == (500, 0.01, "bf16", 42)
    assert isinstance(cfg.final_div_factor, float) and cfg.final_div_factor == 1e4
    lora = parse_args(["--config", str(REPO / "training/configs/lora_bioscan1m.yaml")])
    assert (lora.lora_r, lora.lora_scale) == (4, 1.0)
    demo = REPO / "training/configs/demo_synthetic.yaml"
    as_json = tmp_path / "demo.json"
    as_json.write_text(json.dumps(yaml.safe_load(demo.read_text())))
    assert parse_args(["--config", str(as_json), "--seed", "3"]) == parse_args(["--config", str(demo), "--seed", "3"])


def test_help_lists_every_setting_with_its_own_help(capsys, monkeypatch):
    import dataclasses

    # What `python training/train.py --help` prints (the script parses with exactly this call first;
    # tests/test_training_inputs.py runs the script itself).
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as done:
        parse_args(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: train.py [--config FILE.yaml|FILE.json] [--SETTING VALUE ...]")
    # A flag's block runs from its "  --name" line to the next option line.
    blocks = {}
    for block in ("\n" + usage).split("\n  -")[1:]:
        blocks[block.split()[0].lstrip("-").rstrip(",")] = " ".join(block.split())
    helps = {}
    for f in dataclasses.fields(TrainConfig):
        text = " ".join(f.metadata["help"].split())
        assert f.name in blocks, f"--{f.name} missing from --help"
        # Compared without spaces: argparse wraps lines after hyphens ("micro-" / "batch").
        assert text.replace(" ", "") in blocks[f.name].replace(" ", ""), f"--{f.name} does not show its own help"
        helps[f.name] = text
    shared = sorted(n for n in helps if list(helps.values()).count(helps[n]) > 1)
    assert not shared, f"settings sharing one help text: {shared}"
    assert "Same as --image_augmentation false." in blocks["no_image_augmentation"]


def test_onecycle_is_the_original_schedule():
    # 500 per GPU on 4 GPUs: max lr = 5e-5 x 2000 / 500 = 2e-4 (reference §2).
    cfg = TrainConfig(dataset="x")
    max_lr = peak_learning_rate(cfg, num_processes=4)
    assert max_lr == pytest.approx(2e-4)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=max_lr, weight_decay=0.01)
    total = 100
    sched = build_scheduler(opt, cfg, max_lr, total)
    lrs, betas = [], set()
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        betas.add(opt.param_groups[0]["betas"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(max_lr / 25)                 # div_factor 25
    assert max(lrs) == pytest.approx(max_lr)
    assert lrs.index(max(lrs)) == 29                             # 30 % warm-up, stepped per batch
    assert lrs[-1] == pytest.approx(max_lr / 25 / 1e4, rel=0.05)  # final_div_factor 1e4 (cosine to the end)
    assert all(b <= a for a, b in zip(lrs[29:], lrs[30:]))      # cosine decay, monotone
    assert betas == {(0.9, 0.999)}                                # cycle_momentum=False
    # A resumed run's schedule (built at step k, nothing pickled) is exactly where the straight one was.
    for k in (1, 29, 60, total):
        resumed = build_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr), cfg, max_lr, total, k)
        assert resumed.get_last_lr()[0] == (lrs[k] if k < total else sched.get_last_lr()[0])


# ------------------------------------------------------------------ runs


# image + DNA + text runs through the resume, LoRA and best-model tests below.
@pytest.mark.parametrize("modalities", ["image,dna", "image,text", "dna,text"])
def test_two_step_run_of_each_modality_combination(tiny_data, tmp_path, modalities):
    out = tmp_path / "run"
    extra = ["--report_to", "tensorboard"] if modalities == "dna,text" else []
    summary = main(_args(tiny_data, out, "--modalities", *modalities.split(","), "--max_train_steps", "2", "--eval_every", "0", *extra))
    assert summary["global_step"] == 2
    best = out / "best_model"
    config = json.loads((best / "config.json").read_text())
    assert config["modalities"] == modalities.split(",")
    assert (best / "model.safetensors").is_file() and (best / "key_bank" / "bank.json").is_file()
    bank = json.loads((best / "key_bank" / "bank.json").read_text())
    assert bank["modality"] == ("dna" if "dna" in modalities else "image")
    saved = (out / "train_config.yaml").read_text()
    assert "max_train_steps: 2" in saved
    versions = json.loads((out / "versions.json").read_text())
    assert versions["packages"]["torch"] == torch.__version__.split("+")[0] or versions["packages"]["torch"] == torch.__version__
    assert versions["total_steps"] == 2
    if extra:
        assert list((out / "logs").rglob("events.out.tfevents.*")), "no tensorboard event file"


def test_resume_latest_is_exact_from_epoch_end_and_mid_epoch(tiny_data, tmp_path):
    # 32 records / batch 8 = 4 steps per epoch; checkpoints at steps 3, 6 and each epoch end (4, 8), so
    # step_3 is mid-epoch 1 and epoch_1 an epoch end. Barcode augmentation is on too: its draws must also
    # replay exactly after a resume.
    common = ["--modalities", "image", "dna", "text", "--max_train_samples", "32", "--num_train_epochs", "2",
              "--eval_every", "0", "--checkpointing_steps", "3", "--checkpoints_total_limit", "none",
              "--dna_substitution_rate", "0.05", "--dna_max_trim_start", "4", "--dna_max_trim_end", "20"]
    straight = tmp_path / "straight"
    main(_args(tiny_data, straight, *common))
    final = load_file(straight / "checkpoints" / "epoch_2" / "model.safetensors")
    for start in ("epoch_1", "step_3"):
        resumed = tmp_path / f"from_{start}"
        shutil.copytree(straight / "checkpoints" / start, resumed / "checkpoints" / start)
        summary = main(_args(tiny_data, resumed, *common, "--resume_from_checkpoint", "latest"))
        assert summary["global_step"] == 8
        got = load_file(resumed / "checkpoints" / "epoch_2" / "model.safetensors")
        assert got.keys() == final.keys()
        for name, tensor in final.items():
            assert torch.equal(got[name], tensor), f"resumed from {start}: {name} differs"


def test_a_step_budget_ending_mid_epoch_saves_step_n_and_a_larger_budget_continues(tiny_data, tmp_path, capsys):
    # 20 records / batch 8: 2 steps per epoch; the 4 records that do not fill a batch are left out, with a note.
    # A constant rate keeps the schedule independent of the budget, so the two runs must agree exactly.
    common = ["--modalities", "dna", "text", "--max_train_samples", "20", "--eval_every", "0",
              "--lr_scheduler_type", "constant", "--learning_rate", "1e-3", "--checkpoints_total_limit", "none"]
    straight = tmp_path / "straight"
    main(_args(tiny_data, straight, *common, "--max_train_steps", "3"))
    assert "note: 4 of 20 training records do not fill a last global batch of 8" in capsys.readouterr().out
    # Only full batches: a contrastive loss over a lone record (no negatives) is never computed.
    assert json.loads((straight / "versions.json").read_text())["steps_per_epoch"] == 2
    stopped = tmp_path / "stopped"
    summary = main(_args(tiny_data, stopped, *common, "--max_train_steps", "1"))
    assert summary["stopped_mid_epoch"] is True and summary["global_step"] == 1
    assert [p.name for p in (stopped / "checkpoints").iterdir()] == ["step_1"]  # no epoch_1 marked finished
    state = json.loads((stopped / "checkpoints" / "step_1" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_done_in_epoch"], state["global_step"]) == (0, 1, 1)

    summary = main(_args(tiny_data, stopped, *common, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"))
    assert summary["global_step"] == 3 and summary["epochs"] == 1
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["epoch_1", "step_1", "step_3"]
    for name in ("epoch_1", "step_3"):
        want = load_file(straight / "checkpoints" / name / "model.safetensors")
        got = load_file(stopped / "checkpoints" / name / "model.safetensors")
        assert all(torch.equal(got[k], v) for k, v in want.items()), f"{name} differs from the uninterrupted run"


def test_non_finite_loss_stops_with_clear_message_and_keeps_saved_state(tiny_data, tmp_path):
    out = tmp_path / "run"
    # lr 1e6 blows the weights up in one step: the second batch's loss is NaN.
    argv = _args(tiny_data, out, "--modalities", "dna", "text", "--learning_rate", "1e6", "--lr_scheduler_type",
                 "constant", "--checkpointing_steps", "1", "--max_train_samples", "32", "--eval_every", "0")
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss.*batch 2.*without applying") as err:
        main(argv)
    last = out / "checkpoints" / "step_1"
    assert str(last) in str(err.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1"]
    assert json.loads((last / "trainer_state.json").read_text())["global_step"] == 1
    assert not (out / "train_summary.json").exists()


def test_lora_trains_only_adapters_projections_and_logit_scale(tiny_data, tmp_path):
    cfg = parse_args(_args(tiny_data, tmp_path / "run", "--lora_r", "4", "--modalities", "image", "dna", "text"))
    model, _ = build_model(cfg)
    trainable = {n for n, p in configure_trainable(model, cfg).named_parameters() if p.requires_grad}
    assert trainable, "nothing trainable"
    for name in trainable:
        assert ".lora_A." in name or ".lora_B." in name or name.endswith("logit_scale") or "_projection." in name, name
    assert sum(".lora_" in n for n in trainable) == 3 * 2 * 2 * 2  # towers x layers x (q, v) x (A, B)

    # Train 2 steps; the exported (merged) model differs from the initial weights only in q/v
    # (merged adapters), the projections and logit_scale.
    out = tmp_path / "run"
    main(_args(tiny_data, out, "--lora_r", "4", "--modalities", "image", "dna", "text", "--max_train_steps", "2",
               "--eval_every", "0", "--learning_rate", "1e-2"))
    from accelerate.utils import set_seed

    from bioscan_clip_hf import BioscanClipModel

    set_seed(cfg.seed)
    initial, _ = build_model(cfg)
    init = initial.state_dict()
    assert not any("lora" in k for k in load_file(out / "best_model" / "model.safetensors"))
    saved = BioscanClipModel.from_pretrained(out / "best_model").state_dict()
    changed = {k for k, v in saved.items() if not torch.equal(v, init[k])}
    adapted = ("query.weight", "value.weight", "q_proj.weight", "v_proj.weight")
    assert changed, "nothing trained"
    for name in changed:
        assert name.endswith(adapted) or "_projection." in name or name == "logit_scale", name
    assert any(n.endswith(adapted) for n in changed) and "logit_scale" in changed


def test_best_model_by_validation_reloads_with_automodel(tiny_data, tmp_path):
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor

    out = tmp_path / "run"
    summary = main(_args(tiny_data, out, "--modalities", "image", "dna", "text", "--num_train_epochs", "2",
                         "--max_train_samples", "32", "--eval_every", "1", calibrate=True))
    assert summary["best_epoch"] in (1, 2) and summary["best_val_selection_score"] is not None
    best = out / "best_model"
    evaluation = json.loads((best / "eval_results.json").read_text())
    assert evaluation["selection_score"] == pytest.approx(summary["best_val_selection_score"])
    assert "image->dna" in evaluation["pairs"]
    info = json.loads((best / "training_info.json").read_text())
    assert info["epoch"] == summary["best_epoch"] and info["synthetic"] is True
    bank = json.loads((best / "key_bank" / "bank.json").read_text())
    # Calibrated on every val + val_unseen record (the 2 eval_query_splits), for both query towers.
    from bioscan_clip_hf.data import load_bioscan

    n_val = sum(len(load_bioscan(tiny_data, split=s, decode_images=False)) for s in ("val", "val_unseen"))
    assert bank["modality"] == "dna" and bank["calibration"]["n_queries"] == n_val
    assert {"dna", "image"} <= set(bank["calibration"]["novelty"])

    # A fresh process that never imports bioscan_clip_hf: the classes come from the saved Hub code.
    code = (
        "import json, sys, torch\n"
        "from transformers import AutoModel, AutoProcessor\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "p = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "assert 'bioscan_clip_hf' not in sys.modules\n"
        "with torch.no_grad():\n"
        "    out = m(**p(dna=[sys.argv[2]], text=[sys.argv[3]], return_tensors='pt'))\n"
        "print(json.dumps({'module': type(m).__module__, 'dna': out.dna_embeds[0].tolist(), 'text': out.text_embeds[0].tolist()}))\n"
    )
    dna, text = "ACGT" * 160, "Diptera Culicidae Aedes Aedes aegypti"
    proc = subprocess.run([sys.executable, "-c", code, str(best), dna, text], capture_output=True, text=True,
                          cwd=tmp_path, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules")
    local = BioscanClipModel.from_pretrained(best).eval()
    batch = BioscanClipProcessor.from_pretrained(best)(dna=[dna], text=[text])
    with torch.no_grad():
        out = local(**batch)
    torch.testing.assert_close(torch.tensor(remote["dna"]), out.dna_embeds[0])
    torch.testing.assert_close(torch.tensor(remote["text"]), out.text_embeds[0])
