"""Exact top-k search over 1,000,000 keys x 768 dims: chunked torch (fp32, bf16) vs faiss IndexFlatIP.

Each method runs in its own child process (so its peak memory is its own) on the same keys and
queries: keys are random unit vectors (synthetic), queries are noisy copies of random keys (so the
true nearest key is known). Reported: queries/s; the machine's measured matmul rate for the same
chunks (the roofline: queries/s if the search cost only its matmuls, timed in the same process
right before the search, so both see the same machine load); the fraction of the roofline reached; peak resident memory and peak above the keys; agreement with faiss (fp32) and
top-1 recall of bf16 against fp32.

    python benchmarks/bench_search.py            # writes benchmarks/results/search.json
    python benchmarks/bench_search.py --keys 100000 --out /tmp/search.json   # quick check

With ``--ann`` it benchmarks the approximate indexes of ``bioscan_clip_hf.zero_shot.index`` instead,
as a bank of that size is searched: the keys (synthetic random unit vectors, the hardest case for
an index) are written once as a float16 safetensors file and memory-mapped from it (one copy, in the
page cache); exact search (fp32 matmul over the fp16 keys, chunk by chunk) gives the reference
top-5 and the baseline queries/s; each index is built from the mapped keys and searched through
``KeyIndex.search`` (candidates from faiss, exact rescoring from the mapped keys). Reported per index
and search setting: build time, anonymous memory of the process (the index and its temporaries, not
the mapped keys), index file size, queries/s, speed-up over exact, recall@1 and recall@5 against
exact. HNSW is measured on the first ``--hnsw-keys`` keys only (its build time rules it out at
millions of keys on few cores).

    python benchmarks/bench_search.py --ann --keys 1000000 --variants --out benchmarks/results/ann_1m.json
    nice -n 10 python benchmarks/bench_search.py --ann --keys 5000000 --out benchmarks/results/ann_5m.json
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

from bioscan_clip_hf.atomic import write_text  # noqa: E402
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


def _anon_rss() -> int:
    """Anonymous resident memory of this process (bytes): what it holds besides mapped files."""
    return _status("RssAnon")


def write_mapped_keys(path: Path, n: int, d: int, seed: int = 0, cluster: int = 0) -> torch.Tensor:
    """Random unit keys [n, d] written straight into a float16 safetensors file, then memory-mapped.

    ``cluster`` > 0: keys come in runs of ``cluster`` around a random centre (like the records of one
    species; cosine about 0.8 within a run), instead of independent directions.

    The file is laid out by hand (8-byte header length, JSON header, raw data) and filled chunk by
    chunk through a writable memory map, so the keys never exist twice in memory; it is then opened
    the way ``KeyBank.load`` opens a bank (``safetensors.safe_open``: a mapped, not copied, tensor).
    """
    from safetensors import safe_open

    recipe = {"n": n, "d": d, "seed": seed, "cluster": cluster, "dtype": "F16"}
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()) == recipe:
        print(f"reusing {path} (written earlier by the same recipe)", file=sys.stderr, flush=True)
        with safe_open(str(path), "pt") as f:
            return f.get_tensor("embeddings")
    sidecar.unlink(missing_ok=True)
    header = json.dumps({"embeddings": {"dtype": "F16", "shape": [n, d], "data_offsets": [0, n * d * 2]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + n * d * 2)
    data = np.memmap(path, dtype=np.float16, mode="r+", offset=8 + len(header), shape=(n, d))
    gen = torch.Generator().manual_seed(seed)
    step = 65536 - 65536 % cluster if cluster else 65536
    for i in range(0, n, step):
        block = torch.randn(min(step, n - i), d, generator=gen)
        if cluster:
            centres = torch.randn(-(-block.shape[0] // cluster), d, generator=gen)
            block = centres.repeat_interleave(cluster, 0)[: block.shape[0]] + 0.5 * block
        data[i : i + block.shape[0]] = torch.nn.functional.normalize(block, dim=1).half().numpy()
    data.flush()
    del data
    sidecar.write_text(json.dumps(recipe))  # only once the file is complete: a killed write is never reused
    with safe_open(str(path), "pt") as f:
        return f.get_tensor("embeddings")


def _recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact)]))


def _exact(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[np.ndarray, float]:
    """Exact top-k indices and queries/s (after a warm-up on the first chunk)."""
    exact_topk(queries, keys[: 2**25 // queries.shape[0]], k)
    start = time.perf_counter()
    _, idx = exact_topk(queries, keys, k)
    return idx.numpy(), queries.shape[0] / (time.perf_counter() - start)


def run_ann(args, argv) -> int:
    """The ``--ann`` benchmark (module docstring)."""
    from bioscan_clip_hf.zero_shot.index import KeyIndex, ivf_lists

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    n, d, nq, k = args.keys, args.dim, args.queries, args.k
    start = time.perf_counter()
    keys = write_mapped_keys(work / "keys.safetensors", n, d, cluster=args.cluster)
    write_seconds = time.perf_counter() - start
    gen = torch.Generator().manual_seed(1)
    source = torch.randint(0, n, (nq,), generator=gen)
    queries = torch.nn.functional.normalize(keys[source].float() + 0.02 * torch.randn(nq, d, generator=gen), dim=1)
    exact_idx, exact_qps = _exact(queries, keys, k)
    exact_runs = [exact_qps]
    print(f"exact: {exact_qps:.1f} queries/s", file=sys.stderr, flush=True)
    plans = [("ivf", None)]
    if args.variants:
        plans += [("ivf", f"IVF{ivf_lists(n)},PQ{d // 16}x4fs"), ("ivf", f"IVF{ivf_lists(n)},SQ8")]
    if args.hnsw_keys:
        plans.append(("hnsw", None))
    results = []
    for number, (kind, factory) in enumerate(plans):
        subset = min(n, args.hnsw_keys) if kind == "hnsw" else n
        if number:  # exact again before each index: the load of a shared machine moves in the meantime
            exact_runs.append(_exact(queries, keys, k)[1])
        truth, baseline_qps = (exact_idx, exact_runs[-1]) if subset == n else _exact(queries, keys[:subset], k)
        base = _anon_rss()
        start = time.perf_counter()
        index = KeyIndex.build(keys[:subset], kind, factory=factory)
        build_seconds = time.perf_counter() - start
        index_memory = (_anon_rss() - base) / 1e9
        index.save(work, "benchmark")
        file_gb = (work / "index.faiss").stat().st_size / 1e9
        settings = ([{"efSearch": e} for e in (32, 64, 128)] if kind == "hnsw"
                    else [{"nprobe": max(1, round(index.index.nlist * f))} for f in (1 / 64, 1 / 32, 1 / 16, 1 / 8)])
        for setting in settings:
            index.meta["params"] = setting
            index.search(queries[:8], keys[:subset], k)
            start = time.perf_counter()
            _, idx = index.search(queries, keys[:subset], k)
            qps = nq / (time.perf_counter() - start)
            row = {"kind": kind, "factory": index.meta["factory"], "keys": subset, "build_seconds": build_seconds,
                   "index_memory_gb": index_memory, "index_file_gb": file_gb, **setting, "rerank": index.meta["rerank"],
                   "queries_per_s": qps, "exact_queries_per_s": baseline_qps, "speedup_over_exact": qps / baseline_qps,
                   "recall_at_1": _recall(idx.numpy(), truth, 1), "recall_at_5": _recall(idx.numpy(), truth, k)}
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del index
    report = {
        "benchmark": "approximate search (synthetic unit vectors, float16 keys memory-mapped from safetensors)",
        "keys": f"clusters of {args.cluster} (cosine ~0.8 within)" if args.cluster else "independent random directions",
        "command": "python benchmarks/bench_search.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()}-core CPU, shared ({platform.processor() or platform.machine()}, torch threads "
                   f"{torch.get_num_threads()})",
        "torch": torch.__version__, "n_keys": n, "dim": d, "n_queries": nq, "k": k,
        "keys_file_gb": (work / "keys.safetensors").stat().st_size / 1e9, "keys_write_seconds": write_seconds,
        "exact": {"method": "exact_topk, fp32 matmul over the fp16 keys; timed again before each index, whose speed-up "
                            "is against the run just before it", "queries_per_s": exact_runs,
                  "top1_is_source_key": float(np.mean(exact_idx[:, 0] == source.numpy()))},
        "index_memory": "growth of the process's anonymous memory while building (the index; the keys are a mapped file)",
        "peak_rss_gb_including_mapped_keys": _status("VmHWM") / 1e9,
        "indexes": results,
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not args.keep_keys:
        for name in ("keys.safetensors", "keys.json"):
            (work / name).unlink(missing_ok=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search.json"))
    ap.add_argument("--ann", action="store_true", help="benchmark the approximate indexes instead (module docstring)")
    ap.add_argument("--variants", action="store_true", help="--ann: also IVF-PQ with d/16 codes and IVF-SQ8")
    ap.add_argument("--hnsw-keys", type=int, default=0, help="--ann: also HNSW on the first N keys")
    ap.add_argument("--work-dir", default=str(ROOT / "outputs" / "bench_search"), help="--ann: where the keys file goes")
    ap.add_argument("--keep-keys", action="store_true", help="--ann: keep the keys file")
    ap.add_argument("--cluster", type=int, default=0, help="--ann: keys in clusters of this size (0: independent)")
    args = ap.parse_args(argv)
    if args.ann:
        return run_ann(args, argv)
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
    write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
