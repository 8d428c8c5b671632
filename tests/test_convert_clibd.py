"""Parity of ``bioscan-clip convert-clibd`` against an independent reference of the original model.

The reference (``tests/reference_clibd.py``) shares no code with the package: a timm-style ViT written
from timm's definition, transformers' ``BertForMaskedLM`` / ``BertModel`` for the DNA and text towers,
the original LoRA wrappers and forward rules. With random weights it computes embeddings, saves its
state dict exactly as the original did, the converter turns that into a model folder, and the
converted model must reproduce the embeddings (cosine >= 0.9999, max abs diff <= 1e-4 per tower).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bioscan_clip_hf.convert_clibd import CheckpointError, add_convert_parser, convert_checkpoint, main
from bioscan_clip_hf.processing_bioscan_clip import default_text_vocab_dir
from reference_clibd import (
    ReferenceCLIBD,
    ReferenceSizes,
    lora_deltas_off,
    original_state_dict,
    randomize_,
    reference_dna_ids,
)

COS_MIN = 0.9999
MAX_ABS = 1e-4
BARCODES = [
    "AACATTATATTTTATTTTTGGAATTTGAGCAGGAATAGTAGGAACTTCTTTAAGAATTTTAATTCGAGCTGAATTAGGTCAACCAGGATCATTAATTGGAGATGATCAAATTTATAATGTAATTGTTACAGCTCATGCTTTTATTATAATTTTTTTTATAGTTATACCTATTATAATTGGAGGATTTGGAAATTGATTAGTTCC",
    "ACTTTATATTTTATTTTTGGTGCTTGAGCTGGAATAGTAGGTACATCTTTAAGAATCTTAATTCGTGCTGAATTAGGTCAACCTGGAACTTTAATTGGTGATGATCAAATTTATAATGTTATTGTTACAGCTCACGCATTTATTATAATTTTTTTTATAGTTATACCAATTATAATTGGAGGATTTGGAAATTGATTAGTTCCTTTAATA" * 3,
    "NNNNNACGTRYACGTTGCAacgtTTGACCA-GGTACCATGCAT",
]
TEXTS = ["Diptera Cecidomyiidae not_classified not_classified", "Lepidoptera Gelechiidae Tuta Tuta absoluta",
         "Hymenoptera Braconidae Apanteles Apanteles sp"]


@pytest.fixture(scope="module")
def text_tokenizer_dir() -> Path:
    return default_text_vocab_dir()


def _reference(layout: str, modalities: tuple[str, ...], seed: int = 0) -> ReferenceCLIBD:
    torch.manual_seed(seed)
    return randomize_(ReferenceCLIBD(ReferenceSizes(), layout, modalities), seed=seed).eval()


def _save_original(ref: ReferenceCLIBD, path: Path, module_prefix: bool = False) -> dict[str, torch.Tensor]:
    sd = original_state_dict(ref)
    if module_prefix:  # a DDP-wrapped model saved without unwrapping
        sd = {f"module.{k}": v for k, v in sd.items()}
    torch.save(sd, path)
    return sd


def _assert_parity(ref_emb: torch.Tensor, ours: torch.Tensor, tower: str) -> None:
    cos = F.cosine_similarity(ref_emb, ours, dim=-1)
    diff = (ref_emb - ours).abs().max().item()
    assert cos.min().item() >= COS_MIN, f"{tower}: cosine {cos.tolist()} < {COS_MIN}"
    assert diff <= MAX_ABS, f"{tower}: max abs diff {diff:.2e} > {MAX_ABS}"
    # The comparison is only meaningful if different inputs give clearly different embeddings.
    off_diag = (ref_emb @ ref_emb.T)[~torch.eye(len(ref_emb), dtype=torch.bool)]
    assert off_diag.max().item() < 0.999, f"{tower}: reference embeddings of different inputs coincide"


@pytest.mark.parametrize(
    ("layout", "modalities", "module_prefix"),
    [
        ("clibd", ("image", "dna", "text"), False),  # final full fine-tune, ViT LoRA deltas to merge
        ("v1_lora", ("image", "dna", "text"), True),  # v1 LoRA everywhere, legacy names, DDP prefix
        ("clibd", ("image", "dna"), True),
        ("clibd", ("image", "text"), False),
        ("v1_lora", ("image", "dna"), False),
    ],
)
def test_converted_model_matches_reference(tmp_path, text_tokenizer_dir, layout, modalities, module_prefix):
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor

    ref = _reference(layout, modalities)
    ckpt = tmp_path / "best.pth"
    _save_original(ref, ckpt, module_prefix)
    out = convert_checkpoint(ckpt, tmp_path / "converted", text_tokenizer=text_tokenizer_dir)

    model = BioscanClipModel.from_pretrained(out).eval()
    processor = BioscanClipProcessor.from_pretrained(out)
    assert model.config.modalities == list(modalities)
    assert (model.config.dna_pooling, model.config.text_pooling) == ("softmax_mean", "mean")

    torch.manual_seed(1)
    pixels = torch.rand(3, 3, 224, 224)
    inputs = processor(dna=BARCODES, text=TEXTS)
    # The processor of the converted folder tokenises DNA exactly as the original pipeline.
    assert torch.equal(inputs["dna_input_ids"], reference_dna_ids(BARCODES))

    ref_emb = ref.embed(
        pixel_values=pixels,
        dna_ids=inputs["dna_input_ids"] if "dna" in modalities else None,
        input_ids=inputs["input_ids"] if "text" in modalities else None,
        token_type_ids=inputs["token_type_ids"],
        attention_mask=inputs["attention_mask"],
    )
    with torch.no_grad():
        ours = {"image": model.get_image_features(pixels)}
        if "dna" in modalities:
            ours["dna"] = model.get_dna_features(inputs["dna_input_ids"], inputs["dna_attention_mask"])
        if "text" in modalities:
            ours["text"] = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    assert set(ours) == set(ref_emb)
    for tower in ref_emb:
        _assert_parity(ref_emb[tower], ours[tower], tower)

    report = json.loads((out / "conversion_report.json").read_text())
    assert report["modalities"] == list(modalities)
    assert report["stripped_module_prefix"] is module_prefix
    assert report["merged_lora"]["image"] == 2 * ReferenceSizes().vision_layers
    if layout == "v1_lora":
        assert report["layout"] == "lora" and report["renamed_legacy_prefixes"]
        assert report["logit_scale_added"]
        assert model.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item(), abs=1e-6)
    else:
        assert not report["logit_scale_added"]
        assert model.logit_scale.item() == pytest.approx(ref.logit_scale.item(), abs=1e-6)
    dropped = report["dropped_keys"]
    assert any(k.endswith("embeddings.position_ids") for k in dropped)
    assert any(k.endswith("cls.predictions.bias") for k in dropped) == ("dna" in modalities)
    assert any("pooler.dense" in k for k in dropped) == ("text" in modalities)


@pytest.mark.parametrize(
    ("layout", "modalities", "released_entries"),
    [
        ("clibd", ("image", "dna", "text"), 480),
        ("clibd", ("image", "dna"), 406),
        ("clibd", ("image", "text"), 275),
        ("v1_lora", ("image", "dna", "text"), 543),
    ],
)
def test_reference_state_dict_has_the_released_layout(layout, modalities, released_entries):
    """The reference saves the key layout of the released checkpoints (reference §9.1: 480 / 406 / 275
    entries for the final models, 543 for v1 LoRA): extrapolated from the small towers to 12 ViT blocks,
    12 BarcodeBERT layers and 4 bert-small layers, the entry count matches."""
    sizes = ReferenceSizes()
    sd = original_state_dict(_reference(layout, modalities))
    towers = {  # tower prefix, its first block, small depth, released depth
        "image": ("image_encoder.", ".blocks.0.", sizes.vision_layers, 12),
        "dna": ("dna_encoder.", ".encoder.layer.0.", sizes.dna_layers, 12),
        "text": ("language_encoder.", ".encoder.layer.0.", sizes.text_layers, 4),
    }
    bert_per_layer = 20 if layout == "v1_lora" else 16  # v1: query/value as w + w_a + w_b
    full = len(sd)
    for tower, (prefix, block, depth, released_depth) in towers.items():
        per_block = sum(k.startswith(prefix) and block in k for k in sd)
        expected = 0 if tower not in modalities else (16 if tower == "image" else bert_per_layer)
        assert per_block == expected, tower
        full += per_block * (released_depth - depth)
    assert full == released_entries
    assert ("logit_scale" in sd) == (layout == "clibd")
    vit = "base_image_encoder" if layout == "clibd" else "lora_vit"
    assert sd[f"image_encoder.{vit}.blocks.0.attn.qkv.qkv.weight"].shape == (3 * sizes.vision_hidden, sizes.vision_hidden)


def test_vit_lora_deltas_matter(tmp_path):
    """Dropping the ViT LoRA deltas (instead of merging) visibly changes the image embedding, so the
    parity test above would catch a converter that ignored them."""
    ref = _reference("clibd", ("image", "dna"))
    pixels = torch.rand(2, 3, 224, 224)
    with_deltas = ref.embed(pixel_values=pixels)["image"]
    ref.load_state_dict(lora_deltas_off(ref.state_dict()))
    without = ref.embed(pixel_values=pixels)["image"]
    assert F.cosine_similarity(with_deltas, without).min().item() < COS_MIN


def test_converted_folder_loads_through_auto_classes(tmp_path, text_tokenizer_dir):
    from transformers import AutoModel, AutoProcessor

    ckpt = tmp_path / "best.pth"
    _save_original(_reference("clibd", ("image", "dna", "text")), ckpt)
    parser = argparse.ArgumentParser()
    add_convert_parser(parser.add_subparsers())
    out = tmp_path / "model"
    args = parser.parse_args(["convert-clibd", str(ckpt), "--text-tokenizer", str(text_tokenizer_dir), "--out", str(out)])
    assert args.func(args) == 0
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "BioscanClipModel"
    with torch.no_grad():
        emb = model(**processor(dna=BARCODES[:1], text=TEXTS[:1]))
    assert emb.dna_embeds.shape == (1, ReferenceSizes().output_dim)
    # The folder is a normal model folder of ours: publishable, and its card says where it came from.
    from bioscan_clip_hf.hub import check_model_folder, render_model_card

    check_model_folder(out)
    card = render_model_card(out, "org/clibd-converted")
    assert "converted with `bioscan-clip convert-clibd` from `best.pth` (clibd layout" in card.text
    # A second conversion into the same folder is refused unless --overwrite.
    assert main([str(ckpt), "--text-tokenizer", str(text_tokenizer_dir), "--out", str(out)]) == 2
    assert main([str(ckpt), "--text-tokenizer", str(text_tokenizer_dir), "--out", str(out), "--overwrite"]) == 0


def test_another_models_checkpoint_is_refused(tmp_path, text_tokenizer_dir, capsys):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                                      intermediate_size=64))
    ckpt = tmp_path / "bert.pth"
    torch.save(bert.state_dict(), ckpt)
    with pytest.raises(CheckpointError, match="not a BIOSCAN-CLIP/CLIBD checkpoint.*'bert', 'cls'"):
        convert_checkpoint(ckpt, tmp_path / "out", text_tokenizer=text_tokenizer_dir)
    assert main([str(ckpt), "--text-tokenizer", str(text_tokenizer_dir), "--out", str(tmp_path / "out")]) == 2
    assert "not a BIOSCAN-CLIP/CLIBD checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path, text_tokenizer_dir):
    sd = original_state_dict(_reference("clibd", ("image", "dna", "text")))
    del sd["image_encoder.base_image_encoder.blocks.1.mlp.fc2.bias"]
    del sd["dna_encoder.base_dna_encoder.cls.predictions.decoder.bias"]
    sd["language_encoder.extra_head.weight"] = torch.zeros(3)
    sd["image_encoder.base_image_encoder.norm.weight"] = torch.ones(7)
    ckpt = tmp_path / "best.pth"
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint(ckpt, tmp_path / "out", text_tokenizer=text_tokenizer_dir)
    message = str(err.value)
    assert "missing keys (2)" in message
    assert "image_encoder.base_image_encoder.blocks.1.mlp.fc2.bias" in message
    assert "dna_encoder.base_dna_encoder.cls.predictions.decoder.bias" in message
    assert "unexpected keys (1)" in message and "language_encoder.extra_head.weight" in message
    assert "image_encoder.base_image_encoder.norm.weight: expected [128], found [7]" in message


def test_only_plain_tensors_are_unpickled(tmp_path, text_tokenizer_dir):
    """Checkpoints are read with weights_only=True: a pickle carrying arbitrary objects is refused."""
    sd = original_state_dict(_reference("clibd", ("image", "dna")))
    ckpt = tmp_path / "best.pth"
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1e-3)}, ckpt)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        convert_checkpoint(ckpt, tmp_path / "out", text_tokenizer=text_tokenizer_dir)
