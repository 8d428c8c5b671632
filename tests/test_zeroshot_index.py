"""Approximate search for large banks (bioscan_clip_hf/zero_shot/index.py) and half-precision,
memory-mapped keys: recall against exact search, exact scores, saved with the bank and refused when
it belongs to another build of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from bioscan_clip_hf.zero_shot.bank import KeyBank, StaleBankError
from bioscan_clip_hf.zero_shot.index import EXACT_MAX_KEYS, INDEX_KINDS, KeyIndex, choose_kind
from bioscan_clip_hf.zero_shot.search import exact_topk

pytest.importorskip("faiss")


def _clustered(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit keys in clusters of 20 (like records of a species) and 64 queries near random keys."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n // 20, dim, generator=gen)
    keys = torch.nn.functional.normalize(centres.repeat_interleave(20, 0) + 0.6 * torch.randn(n, dim, generator=gen), dim=1)
    picks = torch.randint(0, n, (64,), generator=gen)
    queries = torch.nn.functional.normalize(keys[picks] + 0.5 / dim**0.5 * torch.randn(64, dim, generator=gen), dim=1)
    return keys, queries


def _bank(keys: torch.Tensor) -> KeyBank:
    n = keys.shape[0]
    table = pd.DataFrame({"processid": [f"r{i}" for i in range(n)], "order": "Diptera", "family": None, "genus": None,
                          "species": None})
    return KeyBank(keys, table, {"modality": "dna", "model_fingerprint": "f" * 16})


def test_exact_is_the_default_below_a_million_keys():
    from bioscan_clip_hf.cli import build_parser

    assert choose_kind("auto", EXACT_MAX_KEYS - 1) == "flat" and choose_kind("auto", EXACT_MAX_KEYS) == "ivf"
    assert choose_kind("hnsw", 10) == "hnsw"
    with pytest.raises(ValueError, match="index must be one of"):
        choose_kind("lsh", 10)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    option = next(a for a in sub.choices["build-bank"]._actions if a.dest == "index")
    assert tuple(option.choices) == INDEX_KINDS and option.default == "auto"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_index_finds_the_exact_neighbours_with_exact_scores(kind):
    keys, queries = _clustered(8000, 32)
    index = KeyIndex.build(keys.half(), kind, progress=False)
    scores, idx = index.search(queries, keys, k=5)
    exact_scores, exact_idx = exact_topk(queries, keys, k=5)
    assert (idx[:, 0] == exact_idx[:, 0]).float().mean() >= 0.95
    recall5 = sum(len(set(a) & set(b)) for a, b in zip(idx.tolist(), exact_idx.tolist())) / idx.numel()
    assert recall5 >= 0.9
    # scores are exact inner products with the stored keys, best first
    torch.testing.assert_close(scores, (queries[:, None, :] * keys[idx]).sum(-1))
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_index_and_half_precision_keys_saved_with_the_bank_and_tied_to_its_build(tmp_path):
    keys, queries = _clustered(4000, 32)
    bank = _bank(keys.half())
    bank.index = KeyIndex.build(bank.embeddings, "ivf", progress=False)
    before = bank.search(queries, k=3)
    bank.save(tmp_path / "bank")
    loaded = KeyBank.load(tmp_path / "bank")
    assert loaded.embeddings.dtype == torch.float16 and torch.equal(loaded.embeddings, bank.embeddings)
    assert loaded.index is not None and loaded.index.meta["factory"].startswith("IVF")
    for got, want in zip(loaded.search(queries, k=3), before):
        torch.testing.assert_close(got, want)
    # exact=True bypasses the index; exact search over fp16 keys converts chunk by chunk
    torch.testing.assert_close(loaded.search(queries, k=3, exact=True), exact_topk(queries, keys.half().float(), k=3))

    # an index copied in from another build of the bank is refused like a stale bank
    bank.save(tmp_path / "rebuilt")
    shutil.copy(tmp_path / "rebuilt" / "index.json", tmp_path / "bank" / "index.json")
    shutil.copy(tmp_path / "rebuilt" / "index.faiss", tmp_path / "bank" / "index.faiss")
    with pytest.raises(StaleBankError, match="its index .* was built for bank build"):
        KeyBank.load(tmp_path / "bank")


def _mapped_file(address: int) -> str | None:
    """The file backing the memory mapping that holds ``address`` (Linux /proc/self/maps), if any."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if start <= address < end:
            return parts[5] if len(parts) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_loaded_keys_are_memory_mapped_from_the_safetensors_file(tmp_path):
    keys, _ = _clustered(2000, 32)
    _bank(keys.half()).save(tmp_path / "bank")
    loaded = KeyBank.load(tmp_path / "bank")
    backing = _mapped_file(loaded.embeddings.data_ptr())
    assert backing is not None and backing.endswith("embeddings.safetensors"), backing


def test_queries_whose_lists_hold_too_few_keys_are_searched_exactly():
    keys, queries = _clustered(120, 16)
    index = KeyIndex.build(keys, "ivf", progress=False)  # 3 lists of about 40 keys, 1 probed
    scores, idx = index.search(queries, keys, k=100)
    exact_scores, exact_idx = exact_topk(queries, keys, k=100)
    assert torch.equal(idx, exact_idx) and torch.equal(scores, exact_scores)
