"""Exact top-k search: equals a brute-force numpy computation and faiss IndexFlatIP, ties included."""

import numpy as np
import pytest
import torch

from bioscan_clip_hf.zero_shot.search import exact_topk, faiss_available, faiss_topk, reference_topk, search


def heap_oracle(scores: np.ndarray, k: int) -> np.ndarray:
    """The faiss heap written out literally: scan keys in order, admit a key when its score beats
    the current worst strictly, evict the worst by (score, then smaller index); output by score
    descending, equal scores by index descending."""
    out = []
    for row in scores:
        heap: list[tuple[float, int]] = []
        for j, s in enumerate(row.tolist()):
            if len(heap) < k:
                heap.append((s, j))
            else:
                worst = min(heap)
                if s > worst[0]:
                    heap.remove(worst)
                    heap.append((s, j))
        out.append([j for _, j in sorted(heap, reverse=True)])
    return np.array(out)


def test_random_continuous_equals_argsort():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((2000, 32)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries = keys[rng.integers(0, 2000, 17)] + 0.1 * rng.standard_normal((17, 32)).astype(np.float32)
    scores, idx = exact_topk(queries, keys, k=7, chunk_size=300)
    full = queries.astype(np.float64) @ keys.T.astype(np.float64)
    expected = np.argsort(-full, axis=1)[:, :7]
    assert (idx.numpy() == expected).all()
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(full, expected, 1), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_ties_follow_the_heap_rule_across_chunks(seed):
    rng = np.random.default_rng(seed)
    n, d, nq = int(rng.integers(50, 700)), int(rng.integers(1, 6)), int(rng.integers(1, 25))
    k = int(rng.integers(1, min(n, 40)))
    # Small integers: exact arithmetic and massive ties at every score.
    keys = rng.integers(-2, 3, (n, d)).astype(np.float32)
    queries = rng.integers(-2, 3, (nq, d)).astype(np.float32)
    full = queries @ keys.T
    expected = heap_oracle(full, k)
    for chunk in (2 * k, 2 * k + 7, 97, n):
        _, idx = exact_topk(queries, keys, k=k, chunk_size=max(chunk, 2 * k))
        assert (idx.numpy() == expected).all(), chunk
    _, ref = reference_topk(full, k)
    assert (ref == expected).all()


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("nq", [3, 40])  # faiss takes a different code path from 20 queries up
def test_identical_to_faiss_with_ties(nq):
    rng = np.random.default_rng(nq)
    keys = rng.integers(-2, 3, (3000, 6)).astype(np.float32)
    queries = rng.integers(-2, 3, (nq, 6)).astype(np.float32)
    for k in (1, 5, 31):
        fs, fi = faiss_topk(queries, keys, k)
        ts, ti = exact_topk(queries, keys, k, chunk_size=256)
        assert torch.equal(fi, ti)
        assert torch.equal(fs, ts)
        bs, bi = search(queries, keys, k, backend="faiss")
        assert torch.equal(bi, fi)


def test_bf16_matches_fp32_on_well_separated_data():
    torch.manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(3000, 64), dim=1)
    queries = torch.nn.functional.normalize(keys[:50] + 0.05 * torch.randn(50, 64), dim=1)
    s32, i32 = exact_topk(queries, keys, k=5)
    s16, i16 = exact_topk(queries, keys, k=5, dtype="bfloat16", chunk_size=500)
    assert (i16[:, 0] == i32[:, 0]).all()
    assert (i16[:, 0] == torch.arange(50)).all()
    assert s16.dtype == torch.float32
    torch.testing.assert_close(s16[:, 0], s32[:, 0], atol=2e-2, rtol=0)


def test_k_larger_than_keys_and_bad_input():
    keys = torch.eye(3)
    scores, idx = exact_topk(torch.eye(3), keys, k=10)
    assert idx.shape == (3, 3)
    assert idx[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="equal dims"):
        exact_topk(torch.ones(2, 4), keys)
    with pytest.raises(ValueError, match="empty"):
        exact_topk(torch.ones(2, 3), torch.ones(0, 3))
    with pytest.raises(ValueError, match="dtype"):
        exact_topk(torch.ones(2, 3), keys, dtype=torch.float16)
