"""Identification quality pooled over data splits: calibration (ECE), confident-rank accuracy and
coverage, and novel-species detection, ours beside the 5-mer nearest-neighbour baseline.

    python benchmarks/bench_identification.py --run MODEL DATA [--run MODEL2 DATA2 ...] --title "real COI" \\
        --out benchmarks/results/identification_realcoi.json
    python benchmarks/bench_identification.py --run none DATA ...      # the 5-mer baseline alone (no model)

For every run (a model and the data split it was trained on): the keys are ``train`` +
``key_unseen``, the calibration is fitted on ``val`` + ``val_unseen`` (every method, novelty by
leaving the queries' own taxa out), and the queries scored are ``test`` + ``test_unseen`` (all of
species in the library); each run's queries are scored by its own calibration, then all queries
are pooled (:func:`~bioscan_clip_hf.zero_shot.quality.pool_scores`), because one real split has
too few test queries for a 15-bin ECE. Writes the JSON, a Markdown table (printed) and the
reliability diagrams (``.png`` beside the JSON). Same code as ``predict`` and ``eval``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import json
import os
import time

import numpy as np
import torch

from bioscan_clip_hf.taxonomy import RANKS


def _query_set(model, processor, data, towers):
    from bioscan_clip_hf.zero_shot.encode import encode_dataset
    from bioscan_clip_hf.zero_shot.kmer import kmer_profiles
    from bioscan_clip_hf.zero_shot.quality import QuerySet

    vectors, available = {}, {}
    if model is not None:
        for tower in towers:
            feats, errors = encode_dataset(model, processor, data, tower, 256, False)
            vectors[tower], available[tower] = feats, np.array([e is None for e in errors])
    profiles = kmer_profiles([b or "" for b in data["dna_barcode"]])
    vectors["kmer"], available["kmer"] = profiles, profiles.abs().sum(dim=1).numpy() > 0
    lineages = list(zip(*([None if v in (None, "") else v for v in data[r]] for r in RANKS)))
    return QuerySet(vectors, available, lineages)


def score_run(model_dir: str, data_dir: str, methods: list[str]) -> tuple[dict, dict]:
    """Calibrate on one split's val queries and score its test queries -> (outcomes, counts)."""
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
    from bioscan_clip_hf.data import load_bioscan
    from bioscan_clip_hf.zero_shot.calibration import calibrate_library
    from bioscan_clip_hf.zero_shot.evidence import KeySource
    from bioscan_clip_hf.zero_shot.kmer import kmer_profiles
    from bioscan_clip_hf.zero_shot.lineages import TaxonIndex
    from bioscan_clip_hf.zero_shot.quality import score_queries

    model = processor = None
    towers: list[str] = []
    if model_dir != "none":
        model = BioscanClipModel.from_pretrained(model_dir).eval()
        processor = BioscanClipProcessor.from_pretrained(model_dir)
        towers = [t for t in ("dna", "image") if t in model.config.modalities]
    else:
        methods = [m for m in methods if m == "kmer"]
    keys = load_bioscan(data_dir, split=["train", "key_unseen"], decode_images=False)
    index = TaxonIndex.from_table(keys.select_columns(list(RANKS)).to_pandas())
    leaf = torch.from_numpy(index.leaf_of_record)
    sources = {"kmer": KeySource("kmer", kmer_profiles([b or "" for b in keys["dna_barcode"]]), leaf)}
    if model is not None:
        key_set = _query_set(model, processor, keys, ["dna"])
        sources["dna"] = KeySource("dna", key_set.vectors["dna"], leaf)
    cal_set = _query_set(model, processor, load_bioscan(data_dir, split=["val", "val_unseen"], decode_images=False), towers)
    test_set = _query_set(model, processor, load_bioscan(data_dir, split=["test", "test_unseen"], decode_images=False), towers)
    cal = calibrate_library(index, sources, cal_set.vectors, cal_set.available, cal_set.lineages, methods, progress=False)
    outcome = score_queries(index, sources, cal, test_set, methods, 0.9)
    return outcome, {"keys": len(keys), "calibration_queries": len(cal_set), "test_queries": len(test_set),
                     "plans": {k: v["sources"] for k, v in cal.probability.items()},
                     "novelty_sources": {k: v["sources"] for k, v in cal.novelty.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs=2, action="append", required=True, metavar=("MODEL", "DATA"),
                        help="a model folder (or 'none': the 5-mer baseline only) and its data split folder (repeatable)")
    parser.add_argument("--methods", default="nearest,knn,kmer", help="comma-separated (default nearest,knn,kmer)")
    parser.add_argument("--title", required=True, help="what the data are (say 'synthetic' for synthetic data)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (a .png and .md beside it)")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    from bioscan_clip_hf.atomic import write_json, write_text
    from bioscan_clip_hf.evaluation import identification_table, plot_reliability
    from bioscan_clip_hf.zero_shot.quality import pool_scores

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    parts, runs = [], []
    for model_dir, data_dir in tqdm(args.run, desc="runs", unit="split"):
        outcome, counts = score_run(model_dir, data_dir, args.methods.split(","))
        parts.append(outcome)
        runs.append({"model": model_dir, "data": data_dir, **counts})
    report = pool_scores(parts, 0.9)
    report["calibration"] = {"fitted_on": "each run's val + val_unseen", "cross_fitted": False}
    results = {"protocol": {"query_splits": ["test", "test_unseen"], "title": args.title, "runs": runs,
                            "seconds": round(time.perf_counter() - start, 1), "load_average": os.getloadavg()},
               "identification": {"dna->dna": report}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    table = f"{args.title}: {sum(r['test_queries'] for r in runs)} test queries pooled over {len(runs)} runs\n\n"
    table += identification_table(results) + "\n"
    write_text(args.out.with_suffix(".md"), table)
    plot_reliability(results, args.out.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
