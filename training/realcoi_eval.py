"""Score the real-COI DNA + text run against its untrained initial weights and a k-mer baseline.

    python training/realcoi_eval.py --model outputs/realcoi/run/best_model --data outputs/realcoi/data

All three go through the paper's evaluator (``evaluate_model``) on the test splits (test = seen
species, test_unseen = species never trained on, keys = train + key_unseen), DNA -> DNA. Writes
``benchmarks/results/training_realcoi.json`` and prints a Markdown table for BENCHMARKS.md.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROWS = (("genus", "seen"), ("genus", "unseen"), ("species", "seen"), ("species", "unseen"))


def evaluate_all(model_dir: Path, data: Path, k: int) -> dict[str, Any]:
    from accelerate.utils import set_seed

    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
    from bioscan_clip_hf.evaluation import evaluate_model
    from training.kmer_baseline import KmerFrequencyModel, KmerProcessor

    info = json.loads((model_dir / "training_info.json").read_text())
    processor = BioscanClipProcessor.from_pretrained(model_dir)
    trained = BioscanClipModel.from_pretrained(model_dir)
    set_seed(info["train_config"]["seed"])  # train.py seeds the same way before building the model
    untrained = BioscanClipModel(trained.config)
    kwargs = {"query_splits": ("test", "test_unseen"), "key_splits": ("train", "key_unseen"), "progress": False}
    both = [("dna", "dna"), ("dna", "text")]
    return {
        "trained": evaluate_model(trained, processor, str(data), pairs=both, **kwargs),
        "untrained": evaluate_model(untrained, processor, str(data), pairs=both, **kwargs),
        f"kmer{k}_nn": evaluate_model(KmerFrequencyModel(k), KmerProcessor(), str(data), pairs=[("dna", "dna")], **kwargs),
        "training_info": {key: info[key] for key in ("epoch", "global_step", "val_selection_score", "selection")},
    }


def table(results: dict[str, Any], pair: str = "dna->dna") -> str:
    names = [n for n in results if n != "training_info" and pair in results[n]["pairs"]]
    proto = results[names[0]]["protocol"]
    q, key = pair.split("->")
    lines = [
        f"{q.upper() if q == 'dna' else q} -> {key.upper() if key == 'dna' else key} top-1 accuracy (%), queries test "
        f"({proto['n_seen']} seen-species records) / test_unseen ({proto['n_unseen']} unseen-species records), "
        f"keys train + key_unseen ({proto['n_keys']}).",
        "",
        "| Rank, species set | " + " | ".join(f"{n} micro | {n} macro" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for rank, group in ROWS:
        cells = []
        for n in names:
            rep = results[n]["pairs"][pair][rank]
            cells += [f"{rep[f'{group}_micro_top1']:.1f}", f"{rep[f'{group}_macro_top1']:.1f}"]
        lines.append(f"| {rank}, {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "outputs" / "realcoi" / "run" / "best_model")
    parser.add_argument("--data", type=Path, default=REPO / "outputs" / "realcoi" / "data")
    parser.add_argument("--k", type=int, default=5, help="k-mer length of the baseline")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training_realcoi.json")
    args = parser.parse_args(argv)
    results = evaluate_all(args.model, args.data, args.k)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(table(results, "dna->dna"))
    print(table(results, "dna->text"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
