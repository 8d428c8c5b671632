"""DNA k-mer tokenizer: hand-computed ids, parity with a per-sequence transcription of the original, the
transformers tokenizer conventions (AutoTokenizer, pad, encode, decode, MLM collator), errors."""

from __future__ import annotations

import csv
import functools
import itertools
import random

import numpy as np
import pytest
import torch

from bioscan_clip_hf import BarcodeKmerTokenizer


def original_ids(sequence: str, max_len: int = 660, k: int = 5, stride: int | None = None) -> list[int]:
    """The original pipeline, one barcode at a time (PadSequence -> KmerTokenizer -> torchtext vocab -> [0, *ids])."""
    stride = stride or k
    padded = sequence[:max_len] + "N" * max(0, max_len - len(sequence))
    kmers = [padded[i : i + k] for i in range(0, len(padded) - k + 1, stride)]
    vocab = torchtext_style_vocab(k)
    return [0] + [vocab.get(kmer, 2) for kmer in kmers]


@functools.lru_cache
def torchtext_style_vocab(k: int) -> dict[str, int]:
    """Specials first, then every k-mer in lexicographic order (all counts 1 -> torchtext sorts by token)."""
    tokens = ["<MASK>", "<CLS>", "<UNK>"] + ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    return {token: index for index, token in enumerate(tokens)}


@pytest.fixture(scope="module")
def tok() -> BarcodeKmerTokenizer:
    return BarcodeKmerTokenizer()


@pytest.fixture(scope="module")
def real_barcodes(shared_data_dir) -> list[str]:
    with open(shared_data_dir / "real-coi" / "coi_insecta.tsv", newline="") as handle:
        return [row["dna_barcode"] for row in csv.DictReader(handle, delimiter="\t")]


def test_hand_computed_ids(tok):
    ids = tok(["AAAAA" + "TTTTT" + "ACGTN" + "acgta" + "CCCCC" + "AAAAC"], return_tensors="pt")["input_ids"][0]
    assert ids.dtype == torch.int64 and ids.shape == (133,)
    assert ids[:7].tolist() == [0, 3, 1026, 2, 2, 3 + 341, 4]  # CCCCC = 1*(4^4+4^3+4^2+4+1) = 341; AAAAC = 1
    assert ids[7:].tolist() == [2] * 126  # N padding


def test_vocabulary(tok):
    vocab = tok.get_vocab()
    assert tok.vocab_size == len(vocab) == 1027
    assert vocab["<MASK>"] == 0 and vocab["<CLS>"] == 1 and vocab["<UNK>"] == 2
    assert vocab["AAAAA"] == 3 and vocab["TTTTT"] == 1026 and vocab["ACGTA"] == 3 + 0b00011011 * 4 + 0
    assert tok.convert_ids_to_tokens([3, 1026, 2]) == ["AAAAA", "TTTTT", "<UNK>"]


def test_truncation_at_660_and_padding_mask(tok):
    long = "ACGTA" * 140  # 700 characters
    changed_tail = long[:660] + "T" * 40
    out = tok([long, changed_tail, "ACGTAC"], return_tensors="np")
    assert out["input_ids"].shape == (3, 133)
    np.testing.assert_array_equal(out["input_ids"][0], out["input_ids"][1])  # nothing after 660 counts
    assert out["input_ids"][0, -1] == tok.get_vocab()["ACGTA"]
    short = out["input_ids"][2]
    assert short[:3].tolist() == [0, tok.get_vocab()["ACGTA"], 2]  # "C" + "NNNN" -> <UNK>
    assert (short[3:] == 2).all()
    assert out["attention_mask"][0].sum() == 133
    assert out["attention_mask"][2].tolist() == [1, 1, 1] + [0] * 130  # lead + 2 k-mers overlap the barcode


def test_parity_with_original_on_real_barcodes(tok, real_barcodes):
    rng = random.Random(0)
    sample = rng.sample(real_barcodes, 300)
    # Edge cases the original maps to <UNK>: lower case, IUPAC codes, gaps, long and very short input.
    sample += ["acgt" * 170, "ACGTRYKMSWN-" * 60, "A", "GATTACA" * 100, sample[0].lower()[:300] + sample[1]]
    ids = tok(sample, return_tensors="np")["input_ids"]
    expected = np.array([original_ids(s) for s in sample])
    np.testing.assert_array_equal(ids, expected)


def test_other_settings():
    tok = BarcodeKmerTokenizer(k=4, stride=2, max_length=12, leading_id=None)
    out = tok(["ACGTACGTAC"], return_tensors="pt")
    assert out["input_ids"].shape == (1, 5)
    assert tok.convert_ids_to_tokens(out["input_ids"][0].tolist()) == ["ACGT", "GTAC", "ACGT", "GTAC", "<UNK>"]
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 1, 1]  # every window starts inside the barcode
    assert BarcodeKmerTokenizer(k=6).vocab_size == 3 + 4**6


@pytest.mark.parametrize(("k", "stride"), [(3, 3), (6, 4), (7, 7), (8, 3)])  # table path (k <= 6) and k > 6
def test_parity_for_other_k_and_stride(real_barcodes, k, stride):
    tok = BarcodeKmerTokenizer(k=k, stride=stride, max_length=300)
    sample = real_barcodes[:20] + ["ACGTN" * 30, "acgtRY-" * 50, "G"]
    expected = np.array([original_ids(s, max_len=300, k=k, stride=stride) for s in sample])
    np.testing.assert_array_equal(tok(sample, return_tensors="np")["input_ids"], expected)


def test_clean_option():
    strict, clean = BarcodeKmerTokenizer(), BarcodeKmerTokenizer(clean=True)
    messy = " acgt-ACGTa\nCGTAC "
    assert clean([messy])["input_ids"] == clean(["ACGTACGTACGTAC"])["input_ids"]
    with pytest.raises(ValueError, match="index 0.*pass clean=True"):
        strict([messy])
    assert strict(["acgta"])["input_ids"][0][1] == 2  # original behaviour: lower case is <UNK>


def test_save_and_load(tmp_path):
    tok = BarcodeKmerTokenizer(k=4, stride=4, max_length=400, leading_id=1, clean=True)
    tok.save_pretrained(tmp_path)
    loaded = BarcodeKmerTokenizer.from_pretrained(tmp_path)
    assert loaded.settings == tok.settings and loaded.model_max_length == tok.model_max_length == 101
    assert (tmp_path / "vocab.txt").read_text().splitlines()[:4] == ["<MASK>", "<CLS>", "<UNK>", "AAAA"]
    assert BarcodeKmerTokenizer.from_pretrained(tmp_path, clean=False).clean is False
    with pytest.raises(OSError, match="No DNA tokenizer found"):
        BarcodeKmerTokenizer.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="No DNA tokenizer found.*empty"):  # not the default settings, silently
        BarcodeKmerTokenizer.from_pretrained(tmp_path / "empty")


def test_auto_tokenizer_loads_a_saved_tokenizer_as_remote_code(tmp_path, real_barcodes):
    """A saved tokenizer folder carries its code and auto_map: AutoTokenizer needs no bioscan_clip_hf class."""
    from transformers import AutoTokenizer

    tok = BarcodeKmerTokenizer(k=4, stride=2, max_length=300)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenization_barcode.py").is_file()
    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__module__.startswith("transformers_modules") and loaded.settings == tok.settings
    sample = real_barcodes[:50]
    np.testing.assert_array_equal(loaded(sample, return_tensors="np")["input_ids"], tok(sample, return_tensors="np")["input_ids"])


def test_transformers_conventions(tok):
    """pad, encode, tokenize, decode and batch_decode behave as transformers tokenizers do."""
    sample = ["ACGTAC", "A" * 30, "ACGTA" * 140]
    fixed = tok(sample, return_tensors="pt")
    unpadded = tok(sample, padding=False)
    assert [len(ids) for ids in unpadded["input_ids"]] == [3, 7, 133]  # lead + k-mers overlapping the barcode
    padded = tok.pad(unpadded, padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    for key in ("input_ids", "attention_mask"):  # pad() with <UNK> == tokenising with N padding
        assert torch.equal(padded[key], fixed[key]), key
    assert tok(sample[:2], padding=True, return_tensors="np")["input_ids"].shape == (2, 7)
    assert tok(sample, max_length=10, return_tensors="np")["input_ids"].shape == (3, 10)
    assert tok(sample, truncation=False, return_tensors="np")["input_ids"].shape == (3, 141)
    assert tok(sample, add_special_tokens=False, return_tensors="np")["input_ids"].shape == (3, 132)
    assert tok(sample, pad_to_multiple_of=8, padding=True, return_tensors="np")["input_ids"].shape == (3, 136)
    assert tok.encode("ACGTAACGTA") == fixed["input_ids"][0].tolist()[:1] + [111, 111] + [2] * 130
    assert tok.tokenize("ACGTAC") == ["ACGTA", "CNNNN"] and tok.convert_tokens_to_ids(["ACGTA", "CNNNN"]) == [111, 2]
    assert tok.decode(fixed["input_ids"][0, :4]) == "<MASK>ACGTA<UNK><UNK>"
    assert tok.batch_decode(fixed["input_ids"], skip_special_tokens=True) == ["ACGTA", "A" * 30, "ACGTA" * 132]
    assert tok.decode(fixed["input_ids"], skip_special_tokens=True) == tok.batch_decode(fixed["input_ids"], skip_special_tokens=True)
    assert tok.decode(tok.encode("ACGTAGNNNNACGTA"), skip_special_tokens=True) == "ACGTANNNNNACGTA"  # <UNK> -> N
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id, tok.cls_token_id) == (2, 2, 0, 1)
    assert len(tok) == tok.vocab_size == 1027
    with pytest.raises(ValueError, match="padding=True"):
        tok(sample, padding=False, return_tensors="pt")
    with pytest.raises(ValueError, match="does not support text_pair"):
        tok(sample, text_pair=sample)


def test_overlapping_kmers_decode_to_the_bases():
    tok = BarcodeKmerTokenizer(k=4, stride=2, max_length=12, leading_id=None)
    ids = tok(["ACGTACGTAC"])["input_ids"][0]
    assert tok.decode(ids, skip_special_tokens=True) == "ACGTACGTAC"
    assert tok.decode(ids) == "ACGTGTACACGTGTAC<UNK>"


def test_masked_language_modelling_collator_never_masks_specials(tok, real_barcodes):
    """transformers' MLM collator works on the tokenizer's output and, as BarcodeBERT, never masks <UNK>."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.5, seed=0)
    encoded = tok(real_barcodes[:8] + ["ACGTAGNNNNACGTA"])
    batch = collator([{"input_ids": ids} for ids in encoded["input_ids"]])
    original = torch.tensor(encoded["input_ids"])
    masked = batch["labels"] != -100
    assert masked.any() and not masked[original < 3].any()  # the leading id and <UNK> stay
    assert (batch["input_ids"][masked] != original[masked]).any()


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (["ACGT", 42], TypeError, "index 1 is int, not a string"),
        (["ACGT", None], TypeError, "index 1 is NoneType"),
        (["ACGT", "ACGT", ""], ValueError, "index 2 is empty"),
        (["ACGT", "ACGTXZ*"], ValueError, "index 1 contains characters outside the IUPAC nucleotide alphabet: '\\*XZ'"),
        (["ACGTé"], ValueError, "index 0 contains characters outside .*'é'"),
        (["ACGT", "AC GT"], ValueError, "index 1 .*' '"),
    ],
)
def test_bad_barcodes(tok, batch, error, message):
    with pytest.raises(error, match=message):
        tok(batch)


def test_clean_empty_after_cleaning():
    with pytest.raises(ValueError, match="index 1 is empty after cleaning"):
        BarcodeKmerTokenizer(clean=True)(["ACGT", " - "])


def test_decode_round_trip(tok, real_barcodes):
    clean = next(b[:655] for b in real_barcodes if len(b) >= 655 and set(b[:655]) <= set("ACGT"))
    for barcode in ("ACGTA" * 132, clean):
        assert tok.decode(tok.encode(barcode), skip_special_tokens=True) == barcode


def test_errors_past_max_length_and_in_later_chunks(tok):
    good = "ACGT" * 170  # 680 characters: the last 20 are not tokenised but still checked
    with pytest.raises(ValueError, match="index 1 contains .*'X'"):
        tok([good, good[:670] + "X" + good[671:]])
    with pytest.raises(ValueError, match="index 0 contains .*'é'"):
        tok([good + "é"])
    batch = ["ACGTA"] * 2500
    batch[2100] = "ACGT*"
    with pytest.raises(ValueError, match=r"index 2100 contains .*'\*'"):
        tok(batch)
    assert tok.validate(["acgt-N", "ACGT"]) == ["acgt-N", "ACGT"]
