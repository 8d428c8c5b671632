"""The fast inference path (bioscan_clip_hf/zero_shot/runtime.py): dtype choice per device, bf16 / fp16
weights that agree with fp32, SDPA equal to eager attention, and banks that stay valid in any precision."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bioscan_clip_hf.zero_shot.bank import model_fingerprint
from bioscan_clip_hf.zero_shot.runtime import DTYPE_CHOICES, cpu_computes_bf16, prepare_model, resolve_dtype

CPU = torch.device("cpu")


def _features(model, processor) -> dict[str, torch.Tensor]:
    from bioscan_clip_hf.zero_shot.encode import encode_dna, encode_images, encode_texts

    gen = torch.Generator().manual_seed(0)
    images = [(torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy() for _ in range(6)]
    bases = "ACGT"
    barcodes = ["".join(bases[int(i)] for i in torch.randint(0, 4, (650,), generator=gen)) for _ in range(6)]
    texts = ["Diptera Culicidae Aedes Aedes aegypti", "Coleoptera Carabidae Carabus Carabus nemoralis", "Hymenoptera"]
    out = {}
    for name, (fn, items) in {"image": (encode_images, images), "dna": (encode_dna, barcodes), "text": (encode_texts, texts)}.items():
        feats, errors = fn(model, processor, items, progress=False)
        assert errors == [None] * len(items)
        out[name] = feats
    return out


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "cpuinfo_bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "cpuinfo_avx2"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma f16c\n")
    assert not cpu_computes_bf16(without)
    # The flag only counts where oneDNN also computes bf16 (it does on every x86 CPU with AVX-512).
    assert cpu_computes_bf16(with_bf16) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert not cpu_computes_bf16(tmp_path / "missing")


def test_dtype_choice_per_device():
    auto_cpu = resolve_dtype("auto", CPU)
    assert auto_cpu == (torch.bfloat16 if cpu_computes_bf16() else torch.float32)
    assert resolve_dtype(None, CPU) == auto_cpu
    assert resolve_dtype("float16", CPU) is torch.float16 and resolve_dtype(torch.bfloat16, CPU) is torch.bfloat16
    assert resolve_dtype("auto", torch.device("mps")) is torch.float32  # not measured there: the safe choice
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, float16"):
        resolve_dtype("int8", CPU)


def test_cli_offers_the_runtime_dtypes():
    from bioscan_clip_hf.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("predict", "embed", "build-bank", "eval"):
        dtype = next(a for a in sub.choices[command]._actions if a.dest == "dtype")
        assert tuple(dtype.choices) == DTYPE_CHOICES and dtype.default == "auto"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_agree_with_fp32_and_keep_the_fingerprint(tiny_model, tiny_processor, dtype):
    reference = _features(tiny_model, tiny_processor)
    model = copy.deepcopy(tiny_model)
    fingerprint = model_fingerprint(model)
    config = prepare_model(model, CPU, dtype)
    assert config.dtype == getattr(torch, dtype) and next(model.parameters()).dtype == config.dtype
    assert config.to_dict() == {"device": "cpu", "dtype": dtype, "attention": "sdpa", "compile": False}
    # Banks of the checkpoint stay valid: the fingerprint is that of the weights as loaded.
    assert model_fingerprint(model) == fingerprint
    half = _features(model, tiny_processor)
    for tower, feats in half.items():
        assert feats.dtype == torch.float32
        assert torch.allclose(feats.norm(dim=1), torch.ones(len(feats)), atol=1e-6)  # normalised in fp32
        cosine = torch.nn.functional.cosine_similarity(feats, reference[tower], dim=1)
        assert cosine.min() >= 0.999, (tower, cosine.min())


def test_sdpa_and_eager_attention_give_the_same_embeddings(tiny_model, tiny_processor):
    sdpa, eager = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    assert prepare_model(sdpa, CPU, "float32", attention="auto").attention == "sdpa"
    prepare_model(eager, CPU, "float32", attention="eager")
    assert eager.vision_model.config._attn_implementation == "eager"
    assert sdpa.vision_model.config._attn_implementation == "sdpa"
    a, b = _features(sdpa, tiny_processor), _features(eager, tiny_processor)
    for tower in a:
        torch.testing.assert_close(a[tower], b[tower], rtol=1e-4, atol=1e-5)


def test_bf16_classifier_answers_like_fp32(trained_tiny_model_dir):
    """bf16 weights give the fp32 answer (the trained tiny model and its bank), wherever precision can
    decide it: embeddings at cosine >= 0.999; the same label at every rank where fp32 is decisive, with
    the same probabilities; the same nearest key where fp32's top-1/top-2 margin exceeds what the measured
    bf16 error can overturn, and elsewhere a key fp32 scores within that error of its own choice.

    Near-ties are the rule here: this briefly trained model puts keys of related species within 1e-5
    cosine of each other, below the resolution of bf16 (and of fp32 across machines), so which of two
    such keys is nearest is not a property of the model; equality is only asserted where it is.
    """
    import pandas as pd

    from bioscan_clip_hf.zero_shot import KeyBank, ZeroShotClassifier

    bank_dir = trained_tiny_model_dir / "key_bank"
    barcodes = [b[20:] for b in KeyBank.load(bank_dir).table["dna_barcode"].tolist()[:40] if b]  # not the keys themselves
    answers, feats, nearest = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        clf = ZeroShotClassifier.from_pretrained(trained_tiny_model_dir, bank=bank_dir, device="cpu", dtype=dtype)
        assert clf.inference.dtype == getattr(torch, dtype)
        answers[dtype] = pd.DataFrame(clf.predict(dna=barcodes, progress=False))
        table = clf.embed(dna=barcodes, progress=False)
        assert table["error"].isna().all()
        feats[dtype] = torch.tensor(np.stack(table["embedding"].tolist()), dtype=torch.float32)
        nearest[dtype] = clf.bank.search(feats[dtype], k=1)[1][:, 0]
    cosine = torch.nn.functional.cosine_similarity(feats["float32"], feats["bfloat16"], dim=1)
    assert cosine.min() >= 0.999, cosine.min()

    fp32, bf16 = answers["float32"], answers["bfloat16"]
    assert fp32["error"].isna().all() and bf16["error"].isna().all()
    tolerance = 0.01  # probabilities may move this much; a label held by more than half + tolerance cannot flip
    for rank in ("order", "family", "genus", "species"):
        p32, p16 = fp32[f"{rank}_probability"].to_numpy(), bf16[f"{rank}_probability"].to_numpy()
        decisive = p32 > 0.5 + tolerance
        assert decisive.mean() >= 0.5, (rank, p32)  # else the label check below would test little
        assert fp32[rank][decisive].tolist() == bf16[rank][decisive].tolist(), rank
        np.testing.assert_allclose(p16[decisive], p32[decisive], atol=tolerance)
    np.testing.assert_allclose(bf16["novelty_probability"], fp32["novelty_probability"], atol=0.02)

    keys = clf.bank.embeddings.float()
    scores, scores_bf16 = feats["float32"] @ keys.T, feats["bfloat16"] @ keys.T
    error = float((scores - scores_bf16).abs().max()) + 1e-6  # bf16's largest score error (+ fp32 rounding)
    top2 = scores.topk(2, dim=1).values
    decisive = top2[:, 0] - top2[:, 1] > 2 * error
    assert torch.equal(nearest["bfloat16"][decisive], nearest["float32"][decisive])
    best = scores.gather(1, nearest["float32"][:, None])[:, 0]
    torch.testing.assert_close(best, scores.max(dim=1).values, rtol=0, atol=1e-6)  # the bank's search is exact
    chosen = scores.gather(1, nearest["bfloat16"][:, None])[:, 0]
    assert (best - chosen).max() <= 2 * error
