"""The end-to-end demo (`make demo`, README command 1), on SYNTHETIC data, on a CPU.

    python training/demo.py --out outputs/demo

1. generates the synthetic ``demo`` set (drawn insects, barcodes evolved along a taxonomy tree);
2. trains the tiny preset with ``accelerate launch training/train.py`` on the CPU
   (``training/configs/demo_synthetic.yaml``; the best epoch on the val splits is kept);
3. evaluates with the paper's protocol on the test splits both the aligned model and the same
   architecture before alignment (its untrained initial weights) and prints the table;
4. saves ``model/`` (weights + processor + key bank), ``results.json`` / ``results.md`` /
   ``accuracy.png`` under the output folder;
5. classifies a few held-out specimens with ``bioscan-clip predict``;
6. prints how to open the Space on this model.

Every number it prints is measured on synthetic data and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import `training.*` from the repo root; keep training/ itself off the path
    # (training/evaluate.py would shadow the `evaluate` library).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import json
import os
import shutil
import subprocess
import time
from typing import Any

from bioscan_clip_hf.atomic import atomic_dir, write_bytes, write_text
from bioscan_clip_hf.taxonomy import RANKS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "demo_synthetic.yaml"
ACCELERATE_CONFIG = REPO / "training" / "accelerate" / "cpu.yaml"
BANNER = "SYNTHETIC DATA: generated insects and barcodes, not BIOSCAN; the numbers only show the method works."


def _say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def make_data(out: Path, seed: int) -> Path:
    """The synthetic ``demo`` set in ``out``; reused when a complete one with the same seed is there."""
    from bioscan_clip_hf.synthetic import generate_synthetic_dataset

    report = out / "build_report.json"
    if report.is_file():
        params = json.loads(report.read_text()).get("parameters", {})
        if params == {"size": "demo", "seed": seed}:
            print(f"reusing {out} (synthetic demo set, seed {seed})")
            return out
    shutil.rmtree(out, ignore_errors=True)
    return generate_synthetic_dataset(out, size="demo", seed=seed)


def train(data: Path, run_dir: Path, extra: list[str]) -> Path:
    """``accelerate launch`` the training script on the CPU; returns the best model folder."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
        str(REPO / "training" / "train.py"), "--config", str(CONFIG),
        "--dataset", str(data), "--output_dir", str(run_dir), *extra,
    ]
    print(" ".join(["accelerate launch", *cmd[4:]]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return run_dir / "best_model"


def evaluate_both(model_dir: Path, data: Path, seed: int) -> dict[str, Any]:
    """Paper protocol on test / test_unseen vs train + key_unseen: aligned model and its untrained init."""
    from accelerate.utils import set_seed

    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
    from bioscan_clip_hf.evaluation import evaluate_model

    processor = BioscanClipProcessor.from_pretrained(model_dir)
    aligned = BioscanClipModel.from_pretrained(model_dir)
    set_seed(seed)  # train.py seeds the same way before building, so these are its initial weights
    untrained = BioscanClipModel(aligned.config)
    kwargs = {"query_splits": ("test", "test_unseen"), "key_splits": ("train", "key_unseen"), "batch_size": 128}
    return {
        "aligned": evaluate_model(aligned, processor, str(data), title="aligned, SYNTHETIC data", **kwargs),
        "untrained": evaluate_model(untrained, processor, str(data), title="untrained, SYNTHETIC data", **kwargs),
    }


def chance_levels(data: Path) -> dict[str, float]:
    """Macro top-1 accuracy (%) of a random guess among the key labels, per rank."""
    from bioscan_clip_hf.data import load_bioscan

    keys = load_bioscan(data, split=["train", "key_unseen"], decode_images=False)
    return {r: 100.0 / len({v for v in keys[r] if v}) for r in RANKS}


HEADLINE = (
    ("image->dna", "genus", "unseen_macro_top1", "image -> DNA, genus, unseen species (macro top-1)"),
    ("image->dna", "species", "seen_macro_top1", "image -> DNA, species, seen species (macro top-1)"),
    ("image->image", "genus", "unseen_macro_top1", "image -> image, genus, unseen species (macro top-1)"),
    ("image->image", "species", "seen_macro_top1", "image -> image, species, seen species (macro top-1)"),
    ("dna->dna", "genus", "unseen_macro_top1", "DNA -> DNA, genus, unseen species (macro top-1)"),
    ("dna->dna", "species", "seen_macro_top1", "DNA -> DNA, species, seen species (macro top-1)"),
)


def headline_table(results: dict[str, Any], chance: dict[str, float]) -> str:
    """Aligned vs untrained vs chance on the numbers that show the paper's effect."""
    lines = [
        f"**{BANNER}**",
        "",
        "Queries test (seen) / test_unseen (unseen) vs keys train + key_unseen; accuracy in %.",
        "",
        "| Query -> key, rank, species set | untrained | aligned | chance |",
        "|---|---|---|---|",
    ]
    for pair, rank, key, label in HEADLINE:
        before = results["untrained"]["pairs"][pair][rank][key]
        after = results["aligned"]["pairs"][pair][rank][key]
        lines.append(f"| {label} | {before:.1f} | {after:.1f} | {chance[rank]:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict[str, Any], chance: dict[str, float], seconds: dict[str, float]) -> str:
    """``results.json``, ``results.md`` (headline + both paper-style tables), ``accuracy.png``."""
    from bioscan_clip_hf.evaluation import markdown_table, plot_accuracy

    payload = {"synthetic": True, "note": BANNER, "chance_macro_top1": chance, "seconds": seconds, **results}
    write_text(out / "results.json", json.dumps(payload, indent=2, default=float, allow_nan=False) + "\n")
    text = "\n".join([
        "# BIOSCAN-CLIP demo results (SYNTHETIC data)", "", headline_table(results, chance),
        "## Aligned model (trained by the demo)", "", markdown_table(results["aligned"]),
        "## Same architecture before alignment (untrained initial weights)", "", markdown_table(results["untrained"]),
    ])
    write_text(out / "results.md", text)
    plot_accuracy(results["aligned"], out / "accuracy.png", baseline=results["untrained"], chance=chance)
    return text


def classify_examples(out: Path, data: Path, model_dir: Path, n_unseen: int = 3, n_seen: int = 2) -> None:
    """Write a few held-out test specimens as files and classify them with the CLI."""
    from bioscan_clip_hf.data import load_bioscan

    folder = out / "examples"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    truth = []
    fasta = []
    for split, n in (("test_unseen", n_unseen), ("test", n_seen)):
        ds = load_bioscan(data, split=split, decode_images=False)
        step = max(1, len(ds) // n)
        for record in ds.select(range(0, min(len(ds), step * n), step)):
            pid = record["processid"]
            write_bytes(folder / f"{pid}.jpg", record["image"]["bytes"])
            fasta.append(f">{pid}\n{record['dna_barcode']}\n")
            truth.append(f"  {pid} ({split}): {record['order']} / {record['family']} / {record['genus']} / {record['species']}")
    write_text(folder / "barcodes.fasta", "".join(fasta))
    cmd = [str(Path(sys.executable).parent / "bioscan-clip"), "predict", str(folder), "--model", str(model_dir),
           "--format", "table", "--no-progress"]
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "bioscan_clip_hf.cli"]
    print("$ bioscan-clip predict " + " ".join(str(c) for c in cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    print("true labels (test_unseen species are absent from training; their keys come from key_unseen):")
    print("\n".join(truth))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "demo", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data set")
    parser.add_argument("--train-args", default="", help="extra train.py settings, e.g. '--num_train_epochs 3'")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    print(BANNER)

    _say("1/5 generating the synthetic demo set")
    tic = time.perf_counter()
    data = make_data(out / "data", args.seed)
    seconds["data"] = time.perf_counter() - tic

    _say("2/5 training the tiny preset on the CPU with accelerate launch")
    tic = time.perf_counter()
    best = train(data, out / "run", args.train_args.split())
    model_dir = out / "model"
    with atomic_dir(model_dir) as tmp:
        shutil.copytree(best, tmp, dirs_exist_ok=True)
    seconds["train"] = time.perf_counter() - tic

    _say("3/5 evaluating with the paper's protocol: aligned model vs the same model before training")
    tic = time.perf_counter()
    results = evaluate_both(model_dir, data, seed=json.loads((model_dir / "training_info.json").read_text())["train_config"]["seed"])
    chance = chance_levels(data)
    seconds["evaluate"] = time.perf_counter() - tic
    text = write_results(out, results, chance, seconds)
    print(text)

    _say("4/5 classifying held-out specimens with the CLI")
    classify_examples(out, data, model_dir)

    seconds["total"] = time.perf_counter() - start
    _say(f"5/5 done in {seconds['total'] / 60:.1f} min")
    print(f"model + processor + key bank: {model_dir}")
    print(f"results (SYNTHETIC): {out / 'results.md'}, {out / 'results.json'}, {out / 'accuracy.png'}")
    print("open the Space on this model:  make space   (or: .venv/bin/python space/app.py --model "
          f"{model_dir}), then browse http://127.0.0.1:7860")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
