"""BioscanClipModel: config, shapes for every subset of modalities, pooling, loss, gradients, init, towers."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertModel, ViTConfig, ViTModel

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, bioscan_clip_loss

B = 3


def make_inputs(config: BioscanClipConfig, batch: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    text_mask = torch.ones(batch, 20, dtype=torch.long)
    text_mask[:, 12:] = 0
    dna_mask = torch.ones(batch, config.dna_num_tokens, dtype=torch.long)
    dna_mask[:, 100:] = 0
    return {
        "pixel_values": torch.rand(batch, 3, size, size, generator=generator),
        "input_ids": torch.randint(0, config.text_config.vocab_size, (batch, 20), generator=generator),
        "attention_mask": text_mask,
        "token_type_ids": torch.zeros(batch, 20, dtype=torch.long),
        "dna_input_ids": torch.randint(0, 1027, (batch, config.dna_num_tokens), generator=generator),
        "dna_attention_mask": dna_mask,
    }


MODALITY_KEYS = {
    "image": ("pixel_values",),
    "dna": ("dna_input_ids", "dna_attention_mask"),
    "text": ("input_ids", "attention_mask", "token_type_ids"),
}
PAIR_FIELDS = {
    ("image", "text"): ("logits_per_image", "logits_per_text"),
    ("image", "dna"): ("logits_per_image_dna", "logits_per_dna_image"),
    ("dna", "text"): ("logits_per_dna_text", "logits_per_text_dna"),
}


def test_default_config_is_clibd_base():
    config = BioscanClipConfig()
    assert config.projection_dim == 768
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / 0.07))
    assert (config.vision_config.model_type, config.vision_config.layer_norm_eps, config.vision_config.patch_size) == ("vit", 1e-6, 16)
    assert (config.dna_config.vocab_size, config.dna_config.hidden_size, config.dna_config.num_hidden_layers) == (1027, 768, 12)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers, config.text_config.vocab_size) == (512, 4, 30522)
    assert config.dna_num_tokens == 133 and config.image_size == 224 and config.text_max_length == 20
    assert config.modalities == ["image", "dna", "text"]
    assert BioscanClipConfig.from_preset("clibd-base").to_dict() == config.to_dict()


def test_config_json_round_trip(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = BioscanClipConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == tiny_config.to_dict()
    assert json.loads(loaded.to_json_string()) == json.loads(tiny_config.to_json_string())
    assert type(loaded.vision_config) is ViTConfig and type(loaded.text_config) is BertConfig
    from_dict = BioscanClipConfig.from_dict(tiny_config.to_dict())
    assert from_dict.to_dict() == tiny_config.to_dict()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modalities": ["image", "smell"]}, "modalities"),
        ({"dna_pooling": "max"}, "dna_pooling"),
        ({"text_pooling": "cls"}, "text_pooling"),
        ({"dna_max_length": 2000}, "max_position_embeddings"),
        ({"dna_kmer_size": 6}, "vocab_size"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        BioscanClipConfig.from_preset("tiny", **overrides)
    with pytest.raises(ValueError, match="Unknown preset"):
        BioscanClipConfig.from_preset("huge")


SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("image", "dna", "text"), r)]


@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_forward_shapes_for_every_subset(tiny_model, tiny_config, subset):
    inputs = make_inputs(tiny_config)
    given = {key: inputs[key] for modality in subset for key in MODALITY_KEYS[modality]}
    with torch.no_grad():
        out = tiny_model(**given, return_loss=len(subset) > 1)
    for modality in ("image", "dna", "text"):
        embeds = getattr(out, f"{modality}_embeds")
        if modality in subset:
            assert embeds.shape == (B, tiny_config.projection_dim) and embeds.dtype == torch.float32
            torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(B))
        else:
            assert embeds is None
    for pair, (forward_name, backward_name) in PAIR_FIELDS.items():
        forward, backward = getattr(out, forward_name), getattr(out, backward_name)
        if set(pair) <= set(subset):
            assert forward.shape == (B, B)
            torch.testing.assert_close(backward, forward.t())
            scale = tiny_model.logit_scale.exp()
            a, b = (getattr(out, f"{m}_embeds") for m in pair)
            torch.testing.assert_close(forward, scale * a @ b.t())
        else:
            assert forward is None and backward is None
    assert (out.loss is not None) == (len(subset) > 1)


def test_loss_matches_independent_computation(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, batch=5)
    with torch.no_grad():
        out = tiny_model(**inputs, return_loss=True)
    embeds = [out.image_embeds, out.dna_embeds, out.text_embeds]
    scale = math.exp(math.log(1 / 0.07))
    # The original ClipLoss: every ordered pair (a, b), a != b, CE(s a b^T, I) and CE(s b a^T, I); mean of all 12.
    terms = []
    for a, b in itertools.permutations(embeds, 2):
        logits = scale * a @ b.t()
        targets = torch.eye(5)
        terms.append(-(targets * logits.log_softmax(dim=1)).sum(dim=1).mean())
        terms.append(-(targets * logits.t().log_softmax(dim=1)).sum(dim=1).mean())
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    pair = bioscan_clip_loss({"image": out.image_embeds, "text": out.text_embeds}, tiny_model.logit_scale)
    manual = (F.cross_entropy(scale * out.image_embeds @ out.text_embeds.t(), torch.arange(5))
              + F.cross_entropy(scale * out.text_embeds @ out.image_embeds.t(), torch.arange(5))) / 2
    torch.testing.assert_close(pair, manual)


def test_gradients_reach_every_trainable_tensor(tiny_config):
    torch.manual_seed(1)
    model = BioscanClipModel(tiny_config).train()
    inputs = make_inputs(tiny_config, batch=4)
    inputs["token_type_ids"][:, 10:] = 1  # so both token-type rows are used
    model(**inputs, return_loss=True).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_original_pooling_formulas(tiny_model, tiny_config):
    """Each tower computes the CLIBD formula, checked against transformers' own modules."""
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        # image: CLS of ViTModel (after its final LayerNorm) -> Linear
        cls = tiny_model.vision_model(inputs["pixel_values"]).last_hidden_state[:, 0]
        torch.testing.assert_close(tiny_model.get_image_features(inputs["pixel_values"], normalize=False), tiny_model.image_projection(cls))
        # DNA: BarcodeBERT as BertForMaskedLM with the decoder replaced, logits.softmax(-1).mean(1), no attention mask
        mlm = BertForMaskedLM(tiny_config.dna_config).eval()
        mlm.bert.load_state_dict(tiny_model.dna_model.state_dict(), strict=False)
        mlm.cls.predictions.transform.dense.load_state_dict(tiny_model.dna_head.dense.state_dict())
        mlm.cls.predictions.transform.LayerNorm.load_state_dict(tiny_model.dna_head.layer_norm.state_dict())
        mlm.cls.predictions.decoder = tiny_model.dna_projection
        expected = mlm(input_ids=inputs["dna_input_ids"]).logits.softmax(dim=-1).mean(dim=1)
        got = tiny_model.get_dna_features(inputs["dna_input_ids"], inputs["dna_attention_mask"], normalize=False)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(got.sum(dim=-1), torch.ones(B))  # non-negative, sums to 1 (reference 9.2)
        # text: mean of last_hidden_state over all 20 positions, padding included -> Linear
        hidden = tiny_model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        torch.testing.assert_close(
            tiny_model.get_text_features(inputs["input_ids"], inputs["attention_mask"], normalize=False),
            tiny_model.text_projection(hidden.mean(dim=1)),
        )


def test_text_embedding_does_not_depend_on_caller_padding(tiny_model, tiny_processor):
    """Under the original mean pooling, inputs shorter than 20 tokens are padded to 20 like CLIBD's."""
    labels = ["Diptera Culicidae Aedes Aedes aegypti", "Lepidoptera"]
    fixed = tiny_processor(text=labels)  # padded to 20
    longest = tiny_processor.tokenizer(labels, padding=True, return_tensors="pt")  # what the pipeline does
    assert longest["input_ids"].shape[1] < 20
    with torch.no_grad():
        a = tiny_model.get_text_features(**fixed)
        b = tiny_model.get_text_features(**longest)
        single = tiny_processor.tokenizer(labels[1:], return_tensors="pt")["input_ids"]
        c = tiny_model.get_text_features(single)  # unpadded, no mask, no token types
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a[1:], c, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dna_pooling", ["masked_softmax_mean", "masked_mean"])
def test_masked_poolings_ignore_padding(tiny_model, tiny_config, dna_pooling):
    config = BioscanClipConfig.from_preset("tiny", dna_pooling=dna_pooling, text_pooling="masked_mean")
    model = BioscanClipModel(config).eval()
    model.load_state_dict(tiny_model.state_dict())
    inputs = make_inputs(config)
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["dna_input_ids"][:, 100:] = 7  # positions the masks exclude
    changed["input_ids"][:, 12:] = 1000
    with torch.no_grad():
        a, b = model(**inputs), model(**changed)
        original_a, original_b = tiny_model(**inputs), tiny_model(**changed)
    torch.testing.assert_close(a.dna_embeds, b.dna_embeds)
    torch.testing.assert_close(a.text_embeds, b.text_embeds)
    # the original poolings do see the padding
    assert not torch.allclose(original_a.dna_embeds, original_b.dna_embeds)
    assert not torch.allclose(original_a.text_embeds, original_b.text_embeds)


def test_logit_scale_initialised_in_init_weights_also_when_missing_from_checkpoint(tmp_path, tiny_model):
    with torch.device("meta"):
        meta_model = BioscanClipModel(BioscanClipConfig.from_preset("tiny"))
    assert meta_model.logit_scale.is_meta
    assert tiny_model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    tiny_model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert "logit_scale" in weights
    weights["logit_scale"] = torch.tensor(1.5)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert BioscanClipModel.from_pretrained(tmp_path).logit_scale.item() == pytest.approx(1.5)
    del weights["logit_scale"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = BioscanClipModel.from_pretrained(tmp_path)
    assert reloaded.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    torch.testing.assert_close(reloaded.dna_projection.weight, tiny_model.dna_projection.weight)  # loaded, not re-initialised


def test_two_tower_model_and_missing_tower_errors(tiny_config):
    config = BioscanClipConfig.from_preset("tiny", modalities=["image", "dna"])
    model = BioscanClipModel(config).eval()
    assert not hasattr(model, "text_model") and not hasattr(model, "text_projection")
    inputs = make_inputs(config)
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], dna_input_ids=inputs["dna_input_ids"], return_loss=True)
    assert out.logits_per_image_dna.shape == (B, B) and out.logits_per_image is None
    with pytest.raises(ValueError, match="no text tower"):
        model(input_ids=inputs["input_ids"])


def test_bad_model_inputs(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config)
    with pytest.raises(ValueError, match="batch sizes differ: {'image': 3, 'dna': 2}"):
        tiny_model(pixel_values=inputs["pixel_values"], dna_input_ids=inputs["dna_input_ids"][:2], return_loss=True)
    with pytest.raises(ValueError, match="at least two modalities"):
        tiny_model(pixel_values=inputs["pixel_values"], return_loss=True)
    # Issue 12: one pair has no negatives, so its loss would be exactly 0 and train nothing.
    with pytest.raises(ValueError, match="at least 2 specimens per batch.*got a batch of 1"):
        tiny_model(pixel_values=inputs["pixel_values"][:1], dna_input_ids=inputs["dna_input_ids"][:1], return_loss=True)
    with pytest.raises(ValueError, match="at least 2 specimens"):
        bioscan_clip_loss({"image": torch.ones(1, 4), "dna": torch.ones(1, 4)}, tiny_model.logit_scale)
    with pytest.raises(ValueError, match="at least one of"):
        tiny_model()
    with pytest.raises(ValueError, match="dna_input_ids must have shape"):
        tiny_model.get_dna_features(inputs["dna_input_ids"][0])
    # different batch sizes are fine without a loss: that is retrieval
    with torch.no_grad():
        out = tiny_model(pixel_values=inputs["pixel_values"], dna_input_ids=inputs["dna_input_ids"][:2])
    assert out.logits_per_image_dna.shape == (B, 2)


def test_folder_with_another_model_type_is_refused(tmp_path):
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a 'bert' configuration"):
        BioscanClipModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a 'bert' configuration"):
        BioscanClipConfig.from_pretrained(tmp_path)


def test_from_towers_pretrained(tmp_path, tiny_config):
    torch.manual_seed(3)
    vit = ViTModel(tiny_config.vision_config)  # with its pooler, as tower checkpoints usually are
    dna_mlm = BertForMaskedLM(tiny_config.dna_config)
    text = BertModel(tiny_config.text_config)
    for name, tower in (("vit", vit), ("dna", dna_mlm), ("text", text)):
        tower.save_pretrained(tmp_path / name)
    model = BioscanClipModel.from_towers_pretrained(
        image=tmp_path / "vit", dna=tmp_path / "dna", text=tmp_path / "text", projection_dim=16
    ).eval()
    assert model.config.projection_dim == 16 and model.config.modalities == ["image", "dna", "text"]
    torch.testing.assert_close(model.vision_model.embeddings.patch_embeddings.projection.weight,
                               vit.embeddings.patch_embeddings.projection.weight)
    torch.testing.assert_close(model.dna_model.encoder.layer[1].output.dense.weight, dna_mlm.bert.encoder.layer[1].output.dense.weight)
    torch.testing.assert_close(model.dna_head.dense.weight, dna_mlm.cls.predictions.transform.dense.weight)
    torch.testing.assert_close(model.dna_head.layer_norm.bias, dna_mlm.cls.predictions.transform.LayerNorm.bias)
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    inputs = make_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(model.vision_model(inputs["pixel_values"]).last_hidden_state,
                                   vit.eval()(inputs["pixel_values"]).last_hidden_state)
    two = BioscanClipModel.from_towers_pretrained(image=tmp_path / "vit", dna=tmp_path / "dna")
    assert two.config.modalities == ["image", "dna"] and not hasattr(two, "text_model")
    with pytest.raises(ValueError, match="at least one tower"):
        BioscanClipModel.from_towers_pretrained()


def test_tiny_preset_is_fast_enough_for_the_demo(tiny_config):
    """One forward+backward of a batch of 32 with all three modalities (budget 0.5 s; generous here)."""
    import time

    torch.manual_seed(0)
    model = BioscanClipModel(tiny_config).train()
    inputs = make_inputs(tiny_config, batch=32)
    model(**inputs, return_loss=True).loss.backward()  # warm-up
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        model(**inputs, return_loss=True).loss.backward()
        timings.append(time.perf_counter() - start)
    assert min(timings) < 1.5  # shared 2-core machine: 3x headroom over the 0.5 s target


def test_dna_embedding_does_not_depend_on_how_the_caller_padded(tiny_model, tiny_processor):
    """Under the original softmax_mean pooling every position counts, padding included: ids padded to the longest
    barcode (padding=True) are completed with <UNK> to the full length, as the tokenizer's default does."""
    barcodes = ["ACGTAACGTT" * 9, "TTGACCA" * 30]
    full = tiny_processor.dna_tokenizer(barcodes, return_tensors="pt")
    short = tiny_processor.dna_tokenizer(barcodes, padding=True, return_tensors="pt")
    assert short["input_ids"].shape[1] < full["input_ids"].shape[1]
    with torch.no_grad():
        expected = tiny_model.get_dna_features(full["input_ids"], full["attention_mask"])
        got = tiny_model.get_dna_features(short["input_ids"], short["attention_mask"])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
