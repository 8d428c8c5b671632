"""Training throughput: the Accelerate loop of training/train.py against a bare PyTorch loop, and
samples/s + peak memory of the tiny and clibd-base presets in fp32 and bf16 (CPU).

    .venv/bin/python benchmarks/bench_training.py            # writes benchmarks/results/training.json

Part 1 runs both loops in one process on the same model weights, batches (random inputs of the
real shapes: 224 px images, 133 DNA tokens, 20 text tokens), AdamW and precision, alternating
blocks of steps so that background load hits both alike; the ratio is the meaningful number.
Part 2 runs each preset/precision in its own process (the Accelerator's precision is process-wide
and peak RSS is per process) through the same Accelerate step as train.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel  # noqa: E402
from bioscan_clip_hf.atomic import write_text  # noqa: E402
from bioscan_clip_hf.modeling_bioscan_clip import bioscan_clip_loss  # noqa: E402

MODEL_INPUTS = ("pixel_values", "dna_input_ids", "input_ids", "attention_mask")


def make_batches(n_batches: int, batch: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "pixel_values": torch.rand(batch, 3, 224, 224, generator=g),
            "dna_input_ids": torch.randint(3, 1027, (batch, 133), generator=g),
            "input_ids": torch.randint(1000, 30000, (batch, 20), generator=g),
            "attention_mask": torch.ones(batch, 20, dtype=torch.long),
        }
        for _ in range(n_batches)
    ]


def _embeds(out) -> dict[str, torch.Tensor]:
    return {"image": out.image_embeds, "dna": out.dna_embeds, "text": out.text_embeds}


def build(preset: str) -> tuple[BioscanClipModel, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = BioscanClipModel(BioscanClipConfig.from_preset(preset)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)


def bare_step(model, optimizer, batch) -> float:
    loss = bioscan_clip_loss(_embeds(model(**batch)), model.logit_scale)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def accelerate_step(accelerator, model, optimizer, batch, logit_scale) -> float:
    """The inner step of training/train.py (accumulate, autocast, gathered loss, backward, step)."""
    from training.loss import gathered_clip_loss

    with accelerator.accumulate(model):
        with accelerator.autocast():
            emb = _embeds(model(**batch))
        loss = gathered_clip_loss(emb, logit_scale)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


def compare_loops(batch: int, steps_per_block: int, blocks: int) -> dict:
    """Part 1: Accelerate vs bare PyTorch, tiny preset, fp32, alternating blocks of steps."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, mixed_precision="no")
    bare_model, bare_opt = build("tiny")
    acc_model, acc_opt = build("tiny")
    acc_model, acc_opt = accelerator.prepare(acc_model, acc_opt)
    logit_scale = accelerator.unwrap_model(acc_model).logit_scale
    batches = make_batches(steps_per_block, batch)
    for b in batches[:2]:  # warm-up (first-call allocations)
        bare_step(bare_model, bare_opt, b)
        accelerate_step(accelerator, acc_model, acc_opt, b, logit_scale)
    times = {"bare_pytorch": 0.0, "accelerate": 0.0}
    for _ in range(blocks):
        for name in times:
            tic = time.perf_counter()
            for b in batches:
                if name == "bare_pytorch":
                    bare_step(bare_model, bare_opt, b)
                else:
                    accelerate_step(accelerator, acc_model, acc_opt, b, logit_scale)
            times[name] += time.perf_counter() - tic
    samples = batch * steps_per_block * blocks
    sps = {name: samples / t for name, t in times.items()}
    return {
        "preset": "tiny",
        "precision": "fp32",
        "batch_size": batch,
        "steps_each": steps_per_block * blocks,
        "samples_per_second": sps,
        "accelerate_over_bare": sps["accelerate"] / sps["bare_pytorch"],
    }


def measure_preset(preset: str, precision: str, batch: int, steps: int) -> dict:
    """Part 2 worker (own process): samples/s and peak RSS of Accelerate training steps."""
    from accelerate import Accelerator

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if precision == "bf16" else "no")
    model, opt = build(preset)
    params = sum(p.numel() for p in model.parameters())
    model, opt = accelerator.prepare(model, opt)
    logit_scale = accelerator.unwrap_model(model).logit_scale
    batches = make_batches(2, batch)
    accelerate_step(accelerator, model, opt, batches[0], logit_scale)  # warm-up
    tic = time.perf_counter()
    for i in range(steps):
        accelerate_step(accelerator, model, opt, batches[i % 2], logit_scale)
    elapsed = time.perf_counter() - tic
    return {
        "preset": preset,
        "precision": precision,
        "batch_size": batch,
        "steps": steps,
        "parameters": params,
        "samples_per_second": batch * steps / elapsed,
        "seconds_per_step": elapsed / steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mib": rss_start / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training.json")
    parser.add_argument("--tiny_batch", type=int, default=32)
    parser.add_argument("--base_batch", type=int, default=4)
    parser.add_argument("--steps_per_block", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--worker", nargs=4, metavar=("PRESET", "PRECISION", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        preset, precision, batch, steps = args.worker
        print(json.dumps(measure_preset(preset, precision, int(batch), int(steps))))
        return 0

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print("part 1: accelerate vs bare PyTorch loop (tiny, fp32)", file=sys.stderr)
    loops = compare_loops(args.tiny_batch, args.steps_per_block, args.blocks)
    print(json.dumps(loops, indent=2), file=sys.stderr)
    presets = []
    for preset, batch, steps in (("tiny", args.tiny_batch, 10), ("clibd-base", args.base_batch, 2)):
        for precision in ("fp32", "bf16"):
            print(f"part 2: {preset} {precision} batch {batch}", file=sys.stderr)
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", preset, precision, str(batch), str(steps)],
                capture_output=True, text=True, check=True, cwd=REPO,
            )
            presets.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(presets[-1]), file=sys.stderr)
    result = {
        "benchmark": "training throughput (random inputs of the real shapes; no data loading)",
        "command": "python benchmarks/bench_training.py",
        "machine": f"2-core CPU, shared ({platform.processor() or platform.machine()}), torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "accelerate_vs_bare": loops,
        "presets": presets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
