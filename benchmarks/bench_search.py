"""Exact top-k search over 1,000,000 keys x 768 dims: chunked torch (fp32, bf16) vs faiss IndexFlatIP.

Each method runs in its own child process (so its peak memory is its own) on the same keys and
queries: keys are random unit vectors (synthetic), queries are noisy copies of random keys (so the
true nearest key is known). Reported: queries/s; the machine's measured matmul rate for the same
chunks (the roofline: queries/s if the search cost only its matmuls, timed in the same process
right before the search, so both see the same machine load); the fraction of the roofline reached; peak resident memory and peak above the keys; agreement with faiss (fp32) and
top-1 recall of bf16 against fp32.

    python benchmarks/bench_search.py            # writes benchmarks/results/search.json
    python benchmarks/bench_search.py --keys 100000 --out /tmp/search.json   # quick check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bioscan_clip_hf.zero_shot.search import exact_topk, faiss_available  # noqa: E402


def _status(field: str) -> int:
    """A memory figure (bytes) from /proc/self/status: VmRSS (now) or VmHWM (peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def make_data(n: int, d: int, nq: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Unit keys generated chunk by chunk (no full-size temporaries) and noisy copies as queries."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.empty(n, d, dtype=dtype)
    step = 65536
    for i in range(0, n, step):
        block = torch.randn(min(step, n - i), d, generator=gen)
        keys[i : i + step] = torch.nn.functional.normalize(block, dim=1).to(dtype)
    truth = torch.randint(0, n, (nq,), generator=gen)
    queries = torch.nn.functional.normalize(keys[truth].float() + 0.02 * torch.randn(nq, d, generator=gen), dim=1)
    return keys, queries, truth.numpy()


def matmul_only(queries: torch.Tensor, keys: torch.Tensor, dtype: torch.dtype) -> float:
    """Seconds for the search's matmuls alone (same chunks, same reused output buffer): the roofline."""
    q = queries.to(dtype)
    nq = q.shape[0]
    step = max(10, 2**25 // nq)
    buffer = torch.empty(nq * step, dtype=dtype)
    torch.mm(q, keys[:step].T, out=buffer[: nq * min(step, keys.shape[0])].view(nq, -1))  # warm-up
    start = time.perf_counter()
    for c0 in range(0, keys.shape[0], step):
        block = keys[c0 : c0 + step]
        torch.mm(q, block.T, out=buffer[: nq * block.shape[0]].view(nq, block.shape[0]))
    return time.perf_counter() - start


def run_method(method: str, n: int, d: int, nq: int, k: int, out) -> None:
    """In a child process: make the data, time the matmul-only pass, then the search."""
    torch.set_num_threads(os.cpu_count() or 1)
    dtype = torch.bfloat16 if method == "torch_bf16" else torch.float32
    keys, queries, truth = make_data(n, d, nq, dtype)
    rss_keys = _status("VmRSS")
    roofline_s = matmul_only(queries, keys, dtype)
    _reset_peak()
    extra = {}
    if method == "faiss":
        import faiss

        start = time.perf_counter()
        index = faiss.IndexFlatIP(d)
        index.add(keys.numpy())
        extra["add_seconds"] = time.perf_counter() - start
        del keys  # faiss holds its own copy; the peak below is faiss's own footprint
        start = time.perf_counter()
        scores, idx = index.search(queries.numpy(), k)
        elapsed = time.perf_counter() - start
    else:
        exact_topk(queries, keys[: 2**25 // nq], k, dtype=dtype)  # warm-up: same chunk shape (oneDNN primitives)
        start = time.perf_counter()
        scores, idx = exact_topk(queries, keys, k, dtype=dtype)
        elapsed = time.perf_counter() - start
        scores, idx = scores.numpy(), idx.numpy()
    peak = _status("VmHWM")
    out.put({
        "method": method, "seconds": elapsed, "queries_per_s": nq / elapsed,
        "matmul_only_seconds": roofline_s,
        "matmul_gflops": 2.0 * n * d * nq / roofline_s / 1e9,
        "roofline_queries_per_s": nq / roofline_s,
        "fraction_of_roofline": roofline_s / elapsed,
        "peak_rss_gb": peak / 1e9, "keys_rss_gb": rss_keys / 1e9, "peak_above_keys_gb": (peak - rss_keys) / 1e9,
        "top1_is_source_key": float(np.mean(idx[:, 0] == truth)), "idx": idx.tolist(), **extra,
    })


def in_child(method: str, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=run_method, args=(method, *args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search.json"))
    args = ap.parse_args(argv)
    n, d, nq, k = args.keys, args.dim, args.queries, args.k
    torch.set_num_threads(os.cpu_count() or 1)
    methods = ["torch_fp32", "torch_bf16"] + (["faiss"] if faiss_available() else [])
    results = {}
    for method in methods:
        print(f"running {method} ...", file=sys.stderr, flush=True)
        results[method] = in_child(method, n, d, nq, k)
    ref = np.array(results["torch_fp32"].pop("idx"))
    for method, res in results.items():
        idx = np.array(res.pop("idx", ref))
        res["top1_equal_to_torch_fp32"] = float(np.mean(idx[:, 0] == ref[:, 0]))
        res["topk_equal_to_torch_fp32"] = float(np.mean(idx == ref))
    fp32, faiss_res = results["torch_fp32"], results.get("faiss")
    report = {
        "benchmark": "exact top-k search (synthetic unit vectors)",
        "command": "python benchmarks/bench_search.py" + ("" if argv is None else " " + " ".join(argv)),
        "machine": f"2-core CPU, shared ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()})",
        "torch": torch.__version__, "n_keys": n, "dim": d, "n_queries": nq, "k": k, "chunk_keys": max(10, 2**25 // nq),
        "roofline": "time of the same chunked matmuls alone, measured in the same process just before the search",
        "results": results,
        "torch_fp32_over_faiss_speed": fp32["queries_per_s"] / faiss_res["queries_per_s"] if faiss_res else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
