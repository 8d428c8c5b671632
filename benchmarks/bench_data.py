"""Data benchmark: Parquet build throughput and training-view speed against the training step.

1. **Build**: the synthetic ``demo`` images (drawn insects, JPEG, shorter side 256, like BIOSCAN's
   ``cropped_256``) are written in the BIOSCAN-5M release layout (metadata CSV +
   ``cropped_256/{split}/{chunk}/{processid}.jpg``), then ``build_bioscan5m_dataset`` turns them
   into Parquet with 1 and 2 worker processes (every image read and fully decoded once).
2. **Training view** for the ``clibd-base`` preset (resize 256, RandomResizedCrop 224, flips,
   rotation; DNA and text tokenised per batch): records/s through a ``DataLoader`` over the built
   Parquet (``decode_images=False``, so decoding happens in the workers) with 0, 1 and 2 workers.
3. **Training step** measured in the same run: forward + backward + AdamW step of the
   ``clibd-base`` model (ViT-B/16, BarcodeBERT-base, BERT-small; random weights, fp32, CPU) and of
   the ``tiny`` model, in records/s. The loader must deliver at least twice the step's rate.

All data are synthetic. Usage:
``python benchmarks/bench_data.py [--view-records 1024] [--base-batch 16] [--out benchmarks/results/data.json]``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor
from bioscan_clip_hf.atomic import write_text
from bioscan_clip_hf.data import BioscanCollator, build_bioscan5m_dataset, load_bioscan
from bioscan_clip_hf.synthetic import generate_synthetic_records

ROOT = Path(__file__).resolve().parents[1]


def write_release(records: list[dict], root: Path) -> tuple[Path, Path, int]:
    """Write records in the BIOSCAN-5M release layout; return (metadata, images, image bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    metadata = root / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    images = root / "images"
    total = 0
    columns = ["processid", "sampleid", "phylum", "class", "order", "family", "subfamily", "genus", "species",
               "dna_bin", "dna_barcode", "split", "chunk"]
    with open(metadata, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for record in records:
            digest = hashlib.md5(record["processid"].encode()).hexdigest()
            chunk = {"pretrain": digest[:2], "train": digest[:1], "other_heldout": digest[:1]}.get(record["split"], "")
            writer.writerow({c: record[c] or "" for c in columns if c != "chunk"} | {"chunk": chunk})
            folder = images / "cropped_256" / record["split"] / chunk
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{record['processid']}.jpg").write_bytes(record["image"]["bytes"])
            total += len(record["image"]["bytes"])
    return metadata, images, total


def bench_build(records: list[dict], work: Path) -> dict:
    metadata, images, image_bytes = write_release(records, work / "release")
    results = {"records": len(records), "image_megabytes": round(image_bytes / 1e6, 2), "by_num_proc": {}}
    for num_proc in (1, 2):
        out = work / f"built_{num_proc}"
        start = time.perf_counter()
        build_bioscan5m_dataset(metadata, [images], out, shard_size=500, num_proc=num_proc)
        seconds = time.perf_counter() - start
        results["by_num_proc"][str(num_proc)] = {
            "seconds": round(seconds, 2),
            "records_per_s": round(len(records) / seconds, 1),
            "image_megabytes_per_s": round(image_bytes / 1e6 / seconds, 2),
        }
        parquet_bytes = sum(p.stat().st_size for p in (out / "data").glob("*.parquet"))
        results["parquet_megabytes"] = round(parquet_bytes / 1e6, 2)
    return results


def bench_view(folder: Path, processor, n_records: int, batch_size: int, cache: Path) -> dict:
    dataset = load_bioscan(folder, split=["pretrain", "train"], cache_dir=cache, decode_images=False)
    results = {"batch_size": batch_size, "records": n_records, "by_num_workers": {}}
    for workers in (0, 1, 2):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                            collate_fn=BioscanCollator(processor, train=True),
                            generator=torch.Generator().manual_seed(0), persistent_workers=False)
        iterator = iter(loader)
        next(iterator)  # worker start-up and first batch are not throughput
        done, start = 0, time.perf_counter()
        while done < n_records:
            batch = next(iterator)
            done += len(batch["processid"])
        seconds = time.perf_counter() - start
        del iterator
        results["by_num_workers"][str(workers)] = round(done / seconds, 1)
    return results


def view_breakdown(folder: Path, processor, cache: Path, batch_size: int, n: int = 256) -> dict:
    """Milliseconds per record of each stage of the training view, in this process."""
    from bioscan_clip_hf.data import decode_image, record_taxonomy_text
    from bioscan_clip_hf.data.collator import pixel_values
    from bioscan_clip_hf.data.transforms import TrainImageTransform

    dataset = load_bioscan(folder, split="train", cache_dir=cache, decode_images=False)
    records = [dataset[i] for i in range(min(n, len(dataset)))]
    transform = TrainImageTransform.from_image_processor(processor.image_processor)
    timings = {}
    start = time.perf_counter()
    images = [decode_image(r["image"], transform.resize) for r in records]
    timings["decode_jpeg"] = time.perf_counter() - start
    start = time.perf_counter()
    crops = [transform(image) for image in images]
    timings["augment"] = time.perf_counter() - start
    start = time.perf_counter()
    for first in range(0, len(crops), batch_size):  # one fresh buffer per batch, as in training
        pixel_values(crops[first : first + batch_size], processor.image_processor)
    timings["to_tensor"] = time.perf_counter() - start
    start = time.perf_counter()
    processor(dna=[r["dna_barcode"] for r in records], text=[record_taxonomy_text(r) for r in records])
    timings["tokenise_dna_and_text"] = time.perf_counter() - start
    return {stage: round(1000 * seconds / len(records), 3) for stage, seconds in timings.items()}


def _sig(value: float) -> float:
    """Three significant figures."""
    return float(f"{value:.3g}")


def bench_step(preset: str, processor, records: list[dict], batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = BioscanClipModel(BioscanClipConfig.from_preset(preset)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = BioscanCollator(processor, train=True, seed=0)(records[:batch_size]).model_inputs()
    timings = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = model(**batch, return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    seconds = min(timings[1:])  # the first step allocates; the best step is the least disturbed
    return {"preset": preset, "batch_size": batch_size, "step_seconds": round(seconds, 3),
            "records_per_s": _sig(batch_size / seconds),
            "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view-records", type=int, default=1024)
    parser.add_argument("--view-batch", type=int, default=64)
    parser.add_argument("--base-batch", type=int, default=16)
    parser.add_argument("--base-steps", type=int, default=2)
    parser.add_argument("--tiny-batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        start = time.perf_counter()
        records = generate_synthetic_records("demo", seed=0)
        generate_seconds = time.perf_counter() - start
        build = bench_build(records, work)
        processor = BioscanClipProcessor.from_preset("clibd-base")
        view = bench_view(work / "built_2", processor, args.view_records, args.view_batch, work / "cache")
        view["ms_per_record_by_stage"] = view_breakdown(work / "built_2", processor, work / "cache", args.view_batch)
        train_records = [r for r in records if r["split"] == "train"]
        base = bench_step("clibd-base", processor, train_records, args.base_batch, args.base_steps)
        tiny = bench_step("tiny", BioscanClipProcessor.from_preset("tiny"), train_records, args.tiny_batch, 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best_view = max(view["by_num_workers"].values())
    result = {
        "benchmark": "data",
        "data": "synthetic (bioscan_clip_hf.synthetic demo, seed 0)",
        "machine": f"2-core CPU, shared ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_average_1min": {"start": round(load_start, 1), "end": round(os.getloadavg()[0], 1)},
        "synthetic_generation": {"records": len(records), "seconds": round(generate_seconds, 2),
                                 "records_per_s": round(len(records) / generate_seconds, 1)},
        "build_bioscan5m_parquet": build,
        "training_view_clibd_base": view,
        "training_step": {"clibd-base": base, "tiny": tiny},
        "loader_over_base_step": {w: _sig(r / base["records_per_s"]) for w, r in view["by_num_workers"].items()},
        "loader_over_tiny_step": {w: _sig(r / tiny["records_per_s"]) for w, r in view["by_num_workers"].items()},
        "loader_at_least_2x_base_step": best_view >= 2 * base["records_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
