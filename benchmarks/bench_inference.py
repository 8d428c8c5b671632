"""Inference benchmark: our inference path vs the bare transformers tower vs the matmul roofline, side by side.

Everything is measured in one process, interleaved round by round (roofline, bare, ours, ...), so load
from other jobs on a shared machine hits all of them alike; the reported fractions are medians of
per-round ratios.

1. **Roofline**: a 2048 x 2048 x 2048 matmul in the dtype our path picks on this machine
   (:func:`bioscan_clip_hf.zero_shot.runtime.resolve_dtype` ``"auto"``: bf16 where the CPU computes
   bf16 natively, else fp32), and in bf16 and fp32 for reference. A tower's roofline is the rate it
   would reach if all its FLOPs (``torch.utils.flop_counter``) ran at that matmul speed.
2. **Towers** of ``clibd-base`` (random weights; speed does not depend on them): ``get_*_features``
   through our path (``prepare_model(..., "auto")`` + ``torch.inference_mode``) against the bare
   transformers tower with default settings (fp32, ``torch.no_grad``, transformers' default attention),
   same inputs (224 px images, 133 DNA tokens, 20 text tokens) and batch.
3. **Photos end to end**: ``ZeroShotClassifier.embed(images=paths)`` on real BIOSCAN photos (the 5
   cropped BIOSCAN-1M images of ``../shared/data``, 341 x 256 JPEG like BIOSCAN-5M's ``cropped_256``,
   repeated): decoding, the exact preprocessing, forward, with 0 / 1 / 2 decoding workers; for
   ``clibd-base`` (model-bound) and ``tiny`` (decoding-bound).
4. **Correctness** of the chosen path: cosine to fp32 per tower; and, with ``--demo MODEL_DIR DATA_DIR``,
   the eval table of the demo model (every top-1 cell, every query's nearest key and its labels, all
   query -> key pairs) with bf16 and fp16 weights against fp32.

    python benchmarks/bench_inference.py --demo outputs/demo/model outputs/demo/data
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gpu import forward_flops, random_inputs, tower_calls  # noqa: E402

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor  # noqa: E402
from bioscan_clip_hf.atomic import write_text  # noqa: E402
from bioscan_clip_hf.zero_shot import ZeroShotClassifier  # noqa: E402
from bioscan_clip_hf.zero_shot.runtime import cpu_computes_bf16, prepare_model, resolve_dtype  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "bioscan1m-images" / "cropped"
CPU = torch.device("cpu")


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_rate(dtype: torch.dtype, size: int = 2048) -> float:
    """GFLOP/s of one square matmul in ``dtype`` (best of 2, after a warm-up). 2048 is large enough to
    reach the machine's rate; smaller sizes serve for the slow generic bf16 path of CPUs without it."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    return 2 * size**3 / min(seconds(lambda: a @ b) for _ in range(2)) / 1e9


def bare_calls(model, inputs) -> dict:
    """The plain transformers towers (what a user gets from ViTModel / BertModel with defaults)."""
    return {
        "image": lambda: model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state,
        "dna": lambda: model.dna_model(input_ids=inputs["dna_input_ids"]).last_hidden_state,
        "text": lambda: model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state,
    }


def bench_towers(config, batches: dict[str, int], rounds: int, fast_dtype: torch.dtype) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    bare = BioscanClipModel(config).eval()
    ours = copy.deepcopy(bare)
    plan = prepare_model(ours, CPU, "auto")
    one = random_inputs(config, 1, CPU)
    flops, bare_flops = forward_flops(bare, one), forward_flops(bare, one, bare_calls)
    rows, cosines = [], {}
    for tower in ("image", "dna", "text"):
        inputs = random_inputs(config, batches[tower], CPU)
        ours_call, bare_call = tower_calls(ours, inputs)[tower], bare_calls(bare, inputs)[tower]
        with torch.inference_mode():
            reference = tower_calls(bare, inputs)[tower]()
            cosines[tower] = float(torch.nn.functional.cosine_similarity(ours_call().float(), reference).min())
        with torch.no_grad():
            bare_call()  # warm-up
        samples = []
        for _ in range(rounds):
            roof = matmul_rate(fast_dtype)
            with torch.no_grad():
                t_bare = seconds(bare_call)
            with torch.inference_mode():
                t_ours = seconds(ours_call)
            samples.append((roof, t_bare, t_ours))
        batch = batches[tower]
        frac = lambda t, roof, work=flops: batch * work[tower] / t / (roof * 1e9)  # noqa: E731
        rows.append({
            "tower": tower, "batch": batch, "gflop_per_item": flops[tower] / 1e9, "bare_gflop_per_item": bare_flops[tower] / 1e9,
            "rounds": rounds, **plan.to_dict(),
            "ours_items_per_s": statistics.median(batch / s[2] for s in samples),
            "bare_items_per_s": statistics.median(batch / s[1] for s in samples),
            "roofline_items_per_s": statistics.median(s[0] * 1e9 / flops[tower] for s in samples),
            "ours_fraction_of_roofline": statistics.median(frac(s[2], s[0]) for s in samples),
            "bare_fraction_of_roofline": statistics.median(frac(s[1], s[0], bare_flops) for s in samples),
            "ours_over_bare": statistics.median(s[1] / s[2] for s in samples),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows, cosines


def bench_photos(preset: str, n_photos: int, batch: int, workers: list[int], rounds: int, fast_dtype) -> list[dict]:
    """``ZeroShotClassifier.embed(images=paths)`` on real photos, per number of decoding workers."""
    paths = sorted(PHOTOS.glob("*.jpg"))
    paths = (paths * (n_photos // len(paths) + 1))[:n_photos]
    config = BioscanClipConfig.from_preset(preset)
    torch.manual_seed(0)
    clf = ZeroShotClassifier(BioscanClipModel(config), BioscanClipProcessor.from_preset(preset), None, device="cpu")
    flops = forward_flops(clf.model, random_inputs(config, 1, CPU))["image"]
    clf.embed(images=paths[:batch], batch_size=batch, progress=False)  # warm-up
    samples: dict[int, list[tuple[float, float]]] = {w: [] for w in workers}
    for _ in range(rounds):
        for w in workers:
            clf.num_workers = w
            roof = matmul_rate(fast_dtype)
            t = seconds(lambda: clf.embed(images=paths, batch_size=batch, progress=False))
            samples[w].append((roof, t))
    rows = []
    for w, values in samples.items():
        rows.append({
            "preset": preset, "photos": n_photos, "batch": batch, "workers": w, "rounds": rounds,
            **clf.inference.to_dict(),
            "records_per_s": statistics.median(n_photos / t for _, t in values),
            "fraction_of_roofline": statistics.median(n_photos * flops / t / (roof * 1e9) for roof, t in values),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def demo_eval(model_dir: Path, data_dir: Path) -> dict:
    """The eval table (``bioscan-clip eval --split test``: test / test_unseen queries, every query -> key
    pair) with fp32, bf16 and fp16 weights: the cells and every query's nearest key and labels, against fp32."""
    from bioscan_clip_hf.evaluation import evaluate_model

    runs = {}
    for dtype in ("float32", "bfloat16", "float16"):
        model = BioscanClipModel.from_pretrained(str(model_dir))
        processor = BioscanClipProcessor.from_pretrained(str(model_dir))
        prepare_model(model, CPU, dtype)
        runs[dtype] = evaluate_model(model, processor, str(data_dir), query_splits=("test", "test_unseen"), batch_size=256,
                                     progress=False, per_query=True, identification=())
    reference = runs.pop("float32")
    report = {"model": str(model_dir), "data": str(data_dir), "queries": reference["protocol"]["n_seen"]
              + reference["protocol"]["n_unseen"], "keys": reference["protocol"]["n_keys"]}
    for dtype, run in runs.items():
        cells = [abs(run["pairs"][pair][rank][cell] - value) for pair, ranks in reference["pairs"].items()
                 for rank, values in ranks.items() for cell, value in values.items() if "top1" in cell]
        per_pair = {}
        for pair, rows in reference["predictions"].items():
            got = run["predictions"][pair]
            per_pair[pair] = {
                "same_nearest_key": statistics.fmean(a["nearest_key"] == b["nearest_key"] for a, b in zip(rows, got)),
                "same_species_answer": statistics.fmean(a["predicted"]["species"] == b["predicted"]["species"]
                                                        for a, b in zip(rows, got)),
                "same_genus_answer": statistics.fmean(a["predicted"]["genus"] == b["predicted"]["genus"] for a, b in zip(rows, got)),
            }
        report[dtype] = {"max_top1_cell_change_points": max(cells), "top1_cells_changed": sum(c > 0 for c in cells),
                         "top1_cells": len(cells), "pairs": per_pair}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image-batch", type=int, default=8)
    parser.add_argument("--dna-batch", type=int, default=8)
    parser.add_argument("--text-batch", type=int, default=64)
    parser.add_argument("--photos", type=int, default=32, help="photos per end-to-end run (clibd-base)")
    parser.add_argument("--tiny-photos", type=int, default=512, help="photos per end-to-end run (tiny preset)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demo", type=Path, nargs=2, metavar=("MODEL_DIR", "DATA_DIR"), default=None)
    parser.add_argument("--demo-only", action="store_true", help="only the --demo correctness check (part 4)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args(argv)
    if args.demo_only and not args.demo:
        parser.error("--demo-only needs --demo MODEL_DIR DATA_DIR")
    load_before = os.getloadavg()
    fast_dtype = resolve_dtype("auto", CPU)
    result = {
        "benchmark": "inference",
        "command": "python benchmarks/bench_inference.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()}-core CPU, shared ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cpu_computes_bf16": cpu_computes_bf16(), "fast_path_dtype": str(fast_dtype).removeprefix("torch."),
    }
    if not args.demo_only:
        bench_speed(args, result, fast_dtype)
    if args.demo:
        result["demo_eval"] = demo_eval(*args.demo)
    result["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def bench_speed(args: argparse.Namespace, result: dict, fast_dtype: torch.dtype) -> None:
    """Parts 1-3 (module docstring), added to ``result``."""
    result.update({
        # bf16 without native instructions runs ~0.03 GFLOP/s: a 2048-size matmul would take minutes.
        "matmul_gflops": {name: matmul_rate(dt, 2048 if dt == fast_dtype or cpu_computes_bf16() else 512)
                          for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16))},
        "weights": "random (clibd-base / tiny architecture; speed does not depend on the values)",
    })
    batches = {"image": args.image_batch, "dna": args.dna_batch, "text": args.text_batch}
    result["towers"], result["cosine_to_fp32"] = bench_towers(BioscanClipConfig.from_preset("clibd-base"), batches,
                                                              args.rounds, fast_dtype)
    result["photos_end_to_end"] = (bench_photos("clibd-base", args.photos, args.image_batch, args.workers, max(1, args.rounds // 2),
                                                fast_dtype)
                                   + bench_photos("tiny", args.tiny_photos, 64, args.workers, args.rounds, fast_dtype))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
