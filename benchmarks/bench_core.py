"""Core benchmark: DNA tokenizer throughput and tower embedding overhead.

1. ``BarcodeKmerTokenizer`` on 100,000 real COI barcodes (drawn with repetition, seed 0, from
   ``../shared/data/real-coi/coi_insecta.tsv``) against a straightforward per-sequence Python
   implementation of the same rules and, with ``--baseline-tokenizer FILE``, against another version of
   ``tokenization_barcode.py`` (e.g. the previous commit's, from ``git show``), timed alternately in the
   same run; all outputs are checked to be identical.
2. Embedding throughput of each tower of the ``clibd-base`` preset (random weights: speed does not
   depend on the values), fp32 and bf16: ``model.get_*_features`` against the bare transformers tower
   (``ViTModel`` / ``BertModel``, the very same module and weights) on the same inputs. The timings
   alternate between the two so load from other processes hits both alike (at least
   ``--tower-repeats`` pairs, more for fast towers). The overhead is the median over pairs of
   ours/bare - 1 (robust to load that changes between pairs); best times are reported too, and
   the operations our path adds (pooling, head, projection, L2 norm) are also timed alone on the
   bare tower's output, which is the least noisy measure of the overhead on a shared machine.

Usage: ``python benchmarks/bench_core.py [--n-barcodes 100000] [--repeats 5] [--tower-repeats 7]
[--image-batch 4] [--dna-batch 4] [--text-batch 32] [--baseline-tokenizer FILE] [--tokenizer-only]
[--out benchmarks/results/core.json]``
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bioscan_clip_hf import BarcodeKmerTokenizer, BioscanClipConfig, BioscanClipModel
from bioscan_clip_hf.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
COI_TSV = ROOT.parent / "shared" / "data" / "real-coi" / "coi_insecta.tsv"
VOCAB = {t: i for i, t in enumerate(["<MASK>", "<CLS>", "<UNK>"] + ["".join(p) for p in itertools.product("ACGT", repeat=5)])}


def per_sequence_tokenize(sequences: list[str], max_len: int = 660, k: int = 5) -> list[list[int]]:
    """The obvious implementation: pad each barcode, slice k-mers, look each one up in a dict."""
    out = []
    for sequence in sequences:
        padded = sequence[:max_len] + "N" * max(0, max_len - len(sequence))
        out.append([0] + [VOCAB.get(padded[i : i + k], 2) for i in range(0, max_len - k + 1, k)])
    return out


def best_time(fn, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return min(timings)


def load_tokenizer_class(path: Path) -> type:
    """``BarcodeKmerTokenizer`` from another copy of ``tokenization_barcode.py`` (a file outside the package)."""
    spec = importlib.util.spec_from_file_location("baseline_tokenization_barcode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BarcodeKmerTokenizer


def alternate_best_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best of ``repeats`` timings of each function, run in alternating order so load hits all alike."""
    timings: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for index in range(repeats):
        for name in names if index % 2 == 0 else names[::-1]:
            timings[name].append(best_time(functions[name], 1))
    return {name: min(values) for name, values in timings.items()}


def bench_tokenizer(n_barcodes: int, repeats: int, baseline: Path | None = None) -> dict:
    with open(COI_TSV, newline="") as handle:
        barcodes = [row["dna_barcode"] for row in csv.DictReader(handle, delimiter="\t")]
    rng = random.Random(0)
    sample = [rng.choice(barcodes) for _ in range(n_barcodes)]
    tokenizer = BarcodeKmerTokenizer()
    vectorised = tokenizer(sample, return_tensors="np")
    reference = np.array(per_sequence_tokenize(sample), dtype=np.int64)
    if not np.array_equal(vectorised["input_ids"], reference):
        raise SystemExit("vectorised and per-sequence tokenizers disagree")
    functions = {"current": lambda: tokenizer(sample, return_tensors="np")}
    if baseline is not None:
        other = load_tokenizer_class(baseline)()
        theirs = other(sample, return_tensors="np")
        if any(not np.array_equal(theirs[key], vectorised[key]) for key in ("input_ids", "attention_mask")):
            raise SystemExit(f"{baseline} and the current tokenizer disagree")
        functions["baseline"] = lambda: other(sample, return_tensors="np")
    best = alternate_best_times(functions, repeats)
    t_vec = best["current"]
    t_ref = best_time(lambda: per_sequence_tokenize(sample), max(1, repeats // 2))
    comparison = {}
    if baseline is not None:
        comparison = {"baseline_file": str(baseline), "baseline_seconds": best["baseline"],
                      "baseline_barcodes_per_s": n_barcodes / best["baseline"],
                      "speed_vs_baseline": best["baseline"] / t_vec}
    return {
        "n_barcodes": n_barcodes,
        "source": str(COI_TSV.relative_to(ROOT.parent)),
        "distinct_barcodes_in_source": len(barcodes),
        "vectorised_seconds": t_vec,
        "vectorised_barcodes_per_s": n_barcodes / t_vec,
        "per_sequence_seconds": t_ref,
        "per_sequence_barcodes_per_s": n_barcodes / t_ref,
        "speedup": t_ref / t_vec,
        "outputs_identical": True,
        **comparison,
    }


def bench_towers(repeats: int, batches: dict[str, int]) -> list[dict]:
    torch.manual_seed(0)
    model = BioscanClipModel(BioscanClipConfig.from_preset("clibd-base")).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "image": torch.rand(batches["image"], 3, 224, 224, generator=generator),
        "dna": torch.randint(3, 1027, (batches["dna"], 133), generator=generator),
        "text": torch.randint(1000, 30000, (batches["text"], 20), generator=generator),
    }
    text_mask = torch.ones_like(inputs["text"])
    rows = []
    cases = [(m, d) for d in (torch.float32, torch.bfloat16) for m in ("image", "dna", "text")]
    for modality, dtype in tqdm(cases, desc="towers", file=sys.stderr):
        model.to(dtype)
        x = inputs[modality]
        normalize = torch.nn.functional.normalize
        if modality == "image":
            x = x.to(dtype)
            ours = lambda: model.get_image_features(x)  # noqa: E731
            bare = lambda: model.vision_model(pixel_values=x).last_hidden_state  # noqa: E731
            extra = lambda h: normalize(model.image_projection(h[:, 0]), dim=-1)  # noqa: E731
        elif modality == "dna":
            ours = lambda: model.get_dna_features(x)  # noqa: E731
            bare = lambda: model.dna_model(input_ids=x).last_hidden_state  # noqa: E731
            extra = lambda h: normalize(model.dna_projection(model.dna_head(h)).softmax(-1).mean(1), dim=-1)  # noqa: E731
        else:
            ours = lambda: model.get_text_features(x, text_mask)  # noqa: E731
            bare = lambda: model.text_model(input_ids=x, attention_mask=text_mask).last_hidden_state  # noqa: E731
            extra = lambda h: normalize(model.text_projection(h.mean(1)), dim=-1)  # noqa: E731
        with torch.inference_mode():
            hidden = bare()
            # what our path adds to the bare tower, timed alone (many repeats: it is small)
            t_extra = best_time(lambda: extra(hidden), 50)
            ours()  # warm-up
            # at least `repeats` pairs, more for fast towers: about 8 s of timing per case
            n_pairs = min(50, max(repeats, int(8 / max(best_time(bare, 1), 1e-3) / 2)))
            t_ours, t_bare = [], []
            for index in range(n_pairs):  # back to back, order alternating: load hits both alike
                if index % 2:
                    t_ours.append(best_time(ours, 1))
                    t_bare.append(best_time(bare, 1))
                else:
                    t_bare.append(best_time(bare, 1))
                    t_ours.append(best_time(ours, 1))
        best_ours, best_bare = min(t_ours), min(t_bare)
        pair_ratios = np.array(t_ours) / np.array(t_bare)
        rows.append({
            "tower": modality,
            "dtype": str(dtype).replace("torch.", ""),
            "batch": x.shape[0],
            "timed_pairs": n_pairs,
            "ours_seconds": best_ours,
            "bare_seconds": best_bare,
            "ours_items_per_s": x.shape[0] / best_ours,
            "bare_items_per_s": x.shape[0] / best_bare,
            "extra_ops_seconds": t_extra,
            "overhead_percent_extra_ops": 100 * t_extra / best_bare,
            "overhead_percent_median_of_pairs": 100 * (float(np.median(pair_ratios)) - 1),
            "overhead_percent_best_times": 100 * (best_ours - best_bare) / best_bare,
        })
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-barcodes", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="tokenizer timing repeats (best is kept)")
    parser.add_argument("--tower-repeats", type=int, default=7, help="alternating tower timing repeats")
    parser.add_argument("--image-batch", type=int, default=4)
    parser.add_argument("--dna-batch", type=int, default=4)
    parser.add_argument("--text-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--baseline-tokenizer", type=Path, default=None,
                        help="another tokenization_barcode.py to time against the current one (same run, alternating)")
    parser.add_argument("--tokenizer-only", action="store_true", help="skip the tower benchmark")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "core.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"DNA tokenizer on {args.n_barcodes} barcodes...", file=sys.stderr)
    tokenizer = bench_tokenizer(args.n_barcodes, args.repeats, args.baseline_tokenizer)
    batches = {"image": args.image_batch, "dna": args.dna_batch, "text": args.text_batch}
    towers = None if args.tokenizer_only else bench_towers(args.tower_repeats, batches)
    result = {
        "benchmark": "core",
        "command": "python benchmarks/bench_core.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": "2-core CPU, shared",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "tokenizer_threads": "numpy, single thread",
        "weights": "random (clibd-base architecture); throughput does not depend on the values",
        "tokenizer": tokenizer,
        "towers": towers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
