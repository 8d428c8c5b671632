"""GPU benchmark of ``clibd-base``: training-step throughput and MFU, inference per tower, exact search.

Prepared to run unchanged on a CUDA machine (one GPU); writes JSON. Measured, in one process:

1. **Roofline**: a bf16 matmul (8192 x 8192 x 8192) of the same GPU, the achievable peak the other
   figures are compared with (besides the vendor's dense bf16 peak, ``--peak-tflops`` or a table).
2. **Training step** (the recipe of ``training/configs/clibd_bioscan*.yaml``): full fine-tuning of all
   three towers, bf16 autocast (``mixed_precision: bf16``), AdamW, the three-way CLIP loss, at the
   paper's 500 records per device, halved until it fits. Model FLOPs per record = 3 x the forward
   FLOPs counted by ``torch.utils.flop_counter`` (forward + backward); MFU = model FLOP/s / peak.
3. **Inference**: each tower's ``get_*_features`` with bf16 weights, SDPA, ``torch.inference_mode``
   (the path :func:`bioscan_clip_hf.zero_shot.runtime.prepare_model` picks on a GPU), items/s and
   the fraction of the measured roofline, per batch size.
4. **Exact search**: :func:`bioscan_clip_hf.zero_shot.search.exact_topk`, top-5 of 1024 queries over
   5,000,000 synthetic unit keys of 768 dims, fp32 and bf16 matmul (keys stored in bf16 for both).

Weights are random (speed does not depend on them); inputs are random tensors of the real shapes
(224 px images, 133 DNA tokens, 20 text tokens).

    python benchmarks/bench_gpu.py                      # on a CUDA machine -> benchmarks/results/gpu.json
    python benchmarks/bench_gpu.py --dry-run            # any machine: tiny sizes on the CPU, checks the code path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel  # noqa: E402
from bioscan_clip_hf.atomic import write_text  # noqa: E402
from bioscan_clip_hf.zero_shot.runtime import prepare_model  # noqa: E402
from bioscan_clip_hf.zero_shot.search import exact_topk  # noqa: E402

# Dense bf16 peak (TFLOP/s, no sparsity) by device name fragment; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "V100": 125.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_roofline(device: torch.device, size: int, repeats: int) -> float:
    """Measured bf16 matmul TFLOP/s (the achievable peak of this device)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    return 2 * size**3 / timed(lambda: a @ b, device, repeats) / 1e12


def random_inputs(config: BioscanClipConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    size = config.image_size
    return {
        "pixel_values": torch.rand(batch, 3, size, size, generator=gen).to(device),
        "dna_input_ids": torch.randint(3, config.dna_config.vocab_size, (batch, config.dna_num_tokens), generator=gen).to(device),
        "input_ids": torch.randint(1000, min(30000, config.text_config.vocab_size), (batch, config.text_max_length),
                                   generator=gen).to(device),
        "attention_mask": torch.ones(batch, config.text_max_length, dtype=torch.long).to(device),
    }


def tower_calls(model: BioscanClipModel, inputs: dict[str, torch.Tensor]) -> dict[str, Callable[[], torch.Tensor]]:
    """Each tower's features of ``inputs`` (:func:`random_inputs`) as a call without arguments."""
    return {
        "image": lambda: model.get_image_features(inputs["pixel_values"]),
        "dna": lambda: model.get_dna_features(inputs["dna_input_ids"]),
        "text": lambda: model.get_text_features(inputs["input_ids"], inputs["attention_mask"]),
    }


def forward_flops(model: BioscanClipModel, inputs: dict[str, torch.Tensor], calls=tower_calls) -> dict[str, float]:
    """Forward FLOPs per record of each tower's features and of the whole model, counted on one record.

    ``calls``: ``calls(model, inputs)`` -> the calls to count (default :func:`tower_calls`)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    with torch.no_grad():
        for name, call in calls(model, {k: v[:1] for k, v in inputs.items()}).items():
            counter = FlopCounterMode(display=False)
            with counter:
                call()
            out[name] = float(counter.get_total_flops())
    out["model"] = out["image"] + out["dna"] + out["text"]
    return out


def bench_training(config, device, batch: int, steps: int, compile_model: bool) -> dict:
    """Full fine-tuning steps at ``batch`` (halved on out-of-memory) -> records/s and step time."""
    while batch >= 1:
        torch.manual_seed(0)
        model = BioscanClipModel(config).to(device).train()
        if compile_model:
            model.compile()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.type == "cuda")
        inputs = random_inputs(config, batch, device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16)

        def step():
            with autocast:
                loss = model(**inputs, return_loss=True).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        try:
            seconds = timed(step, device, steps)
        except torch.OutOfMemoryError:
            del model, optimizer, inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2
            continue
        peak_memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return {"batch": batch, "step_seconds": seconds, "records_per_s": batch / seconds, "peak_memory_gib": peak_memory,
                "compiled": compile_model}
    raise RuntimeError("not even one record fits")


def bench_inference(config, device, batches: list[int], repeats: int, roofline_tflops: float, flops: dict) -> list[dict]:
    """Each tower's features with the inference path of ``prepare_model`` (bf16 weights on a GPU)."""
    torch.manual_seed(0)
    model = BioscanClipModel(config)
    plan = prepare_model(model, device, "auto")
    rows = []
    for batch in batches:
        with torch.inference_mode():
            for tower, call in tower_calls(model, random_inputs(config, batch, device)).items():
                try:
                    seconds = timed(call, device, repeats)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    continue
                rate = batch / seconds
                rows.append({"tower": tower, "batch": batch, "items_per_s": rate, **plan.to_dict(),
                             "fraction_of_roofline": rate * flops[tower] / (roofline_tflops * 1e12)})
    return rows


def bench_search(device, n_keys: int, n_queries: int, dim: int, repeats: int) -> list[dict]:
    """Exact top-5 over ``n_keys`` synthetic unit keys (bf16 storage), fp32 and bf16 matmul."""
    gen = torch.Generator(device=device).manual_seed(0)
    keys = torch.empty(n_keys, dim, dtype=torch.bfloat16, device=device)
    for start in range(0, n_keys, 1 << 20):
        block = torch.randn(min(1 << 20, n_keys - start), dim, generator=gen, device=device)
        keys[start : start + block.shape[0]] = torch.nn.functional.normalize(block, dim=1).to(torch.bfloat16)
    queries = torch.nn.functional.normalize(keys[:n_queries].float() + 0.02 * torch.randn(n_queries, dim, device=device,
                                                                                           generator=gen), dim=1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        seconds = timed(lambda: exact_topk(queries, keys, 5, dtype=dtype), device, repeats)
        _, idx = exact_topk(queries, keys, 5, dtype=dtype)
        rows.append({"matmul_dtype": str(dtype).removeprefix("torch."), "n_keys": n_keys, "n_queries": n_queries,
                     "queries_per_s": n_queries / seconds,
                     "top1_is_source_key": float((idx[:, 0].cpu() == torch.arange(n_queries)).float().mean())})
    return rows


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny preset and sizes on the CPU: checks the code path only")
    parser.add_argument("--preset", default="clibd-base")
    parser.add_argument("--train-batch", type=int, default=500, help="records per device (the paper's 500; halved on OOM)")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time the training step under torch.compile")
    parser.add_argument("--infer-batches", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--search-keys", type=int, default=5_000_000)
    parser.add_argument("--search-queries", type=int, default=1024)
    parser.add_argument("--search-dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device (default: table)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/gpu.json)")
    args = parser.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        args.preset, args.train_batch, args.train_steps, args.repeats = "tiny", 8, 1, 1
        args.infer_batches, args.search_keys, args.search_queries = [4], 20_000, 16
        out = args.out or Path(os.environ.get("TMPDIR", "/tmp")) / "bench_gpu_dry_run.json"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to check the code path here")
        device = torch.device("cuda")
        out = args.out or ROOT / "benchmarks" / "results" / "gpu.json"
    config = BioscanClipConfig.from_preset(args.preset)
    roofline = matmul_roofline(device, 512 if args.dry_run else 8192, args.repeats)
    flops = forward_flops(BioscanClipModel(config).eval().to(device), random_inputs(config, 1, device))
    peak = peak_tflops(device, args.peak_tflops)
    result = {
        "benchmark": "gpu",
        "command": "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "preset": args.preset,
        "weights": "random (speed does not depend on them)",
        "roofline_bf16_matmul_tflops": roofline,
        "peak_bf16_tflops": peak,
        "forward_flops_per_record": flops,
    }
    train_runs = [bench_training(config, device, args.train_batch, args.train_steps, False)]
    if args.compile:
        train_runs.append(bench_training(config, device, train_runs[0]["batch"], args.train_steps, True))
    for run in train_runs:
        model_tflops = 3 * flops["model"] * run["records_per_s"] / 1e12
        run.update(model_tflops_per_s=model_tflops, mfu_vs_roofline=model_tflops / roofline,
                   mfu_vs_peak=model_tflops / peak if peak else None)
    result["training"] = train_runs
    result["inference"] = bench_inference(config, device, args.infer_batches, args.repeats, roofline, flops)
    result["search"] = bench_search(device, args.search_keys, args.search_queries, args.search_dim, args.repeats)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
