"""The real-COI DNA + text recipe against its untrained start and a k-mer baseline, over several splits.

    python training/realcoi_eval.py                       # 5 split seeds, about 9 minutes on 2 CPU cores
    python training/realcoi_eval.py --queries val --split-seeds 1 2 3 4 5 --train-override=--dna_substitution_rate=0

One split of the real COI set has only ~30 seen and ~30 unseen test queries, so one query moves
an accuracy by 2-3 points. For each split seed the TSV is split again by the paper's rules (a
different 20 % of the species are unseen), the recipe is trained (best epoch by the val
protocol), and three models answer that split's test queries through the paper's evaluator
(``evaluate_model``, DNA -> DNA): the trained model, the same architecture untrained (same
initial weights), the 5-mer nearest-neighbour baseline and, for a recipe that starts from a
pre-trained DNA tower (``dna_init``), that start itself (``pretrained``: the tower before
alignment, with the run's fresh projections, as the paper's "no alignment" rows). Two key sets:

- ``paper``: keys ``train`` + ``key_unseen``, the paper's protocol: every query's species is
  among the keys (unseen species only through ``key_unseen``), so a near-identical barcode of the
  same species usually decides.
- ``novel_species``: keys ``train`` only, so the unseen species are absent from the reference
  library, as an undescribed species is; their genus, family and order can only come from other
  species.

The queries of all splits are pooled; trained vs untrained and trained vs k-mer are compared on
the same queries (exact McNemar test, paired bootstrap interval). Queries whose barcode is nearly
identical to a key of another genus (5-mer cosine >= 0.99) are counted: no DNA-similarity method
can place those by sequence.

Writes ``benchmarks/results/training_realcoi.json`` and ``training_realcoi.png`` and prints the
Markdown tables of BENCHMARKS.md (## Training).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import hashlib
import json
import time
from typing import Any

import numpy as np
import torch

from bioscan_clip_hf.atomic import check_writable, write_figure, write_json, write_text
from training.arguments import ConfigError, run_cli

REPO = Path(__file__).resolve().parents[1]
TSV = REPO.parent / "shared" / "data" / "real-coi" / "coi_insecta.tsv"
MODELS = ("trained", "untrained", "kmer5_nn")
PRETRAINED = "pretrained"
"""Also scored when the recipe has ``dna_init``: the pre-trained, not yet aligned, start of the run."""
PROTOCOLS = {
    "paper": {"keys": ("train", "key_unseen"),
              "cells": (("genus", "seen"), ("genus", "unseen"), ("species", "seen"), ("species", "unseen"))},
    "novel_species": {"keys": ("train",), "cells": (("order", "unseen"), ("family", "unseen"), ("genus", "unseen"))},
}
PAIR = "dna->dna"
LABELS = {"trained": "trained", PRETRAINED: "pre-trained, not aligned", "untrained": "untrained", "kmer5_nn": "5-mer NN"}
CONTRADICTED_SIMILARITY = 0.99
RECIPE_FILE = "realcoi_eval_recipe.json"


def prepare_split(tsv: Path, work: Path, seed: int) -> Path:
    """Build (once) the real-COI data set split with ``seed``; return its folder."""
    from bioscan_clip_hf.data import build_realcoi_dataset

    data = work / f"split{seed}" / "data"
    if not (data / "build_report.json").is_file():
        build_realcoi_dataset(tsv, data, seed=seed)
    return data


def recipe_identity(train_argv: list[str]) -> dict[str, Any]:
    """What decides what a split's run learns: the resolved training settings (REPRO's
    ``recipe_settings``: paths and logging left out) and, for ``dna_init``, the SHA-256 of the
    pre-trained tower's weights (a tower pre-trained again under the same path is another recipe)."""
    from training.config import parse_args
    from training.reproduce import recipe_settings

    cfg = parse_args(train_argv)
    identity: dict[str, Any] = {"settings": recipe_settings(cfg.to_dict())}
    if cfg.dna_init:
        weights = Path(cfg.dna_init) / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"dna_init {cfg.dna_init}: no model.safetensors (pre-train it with training/pretrain_dna.py)")
        identity["dna_init_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    return json.loads(json.dumps(identity, default=str))


def train_split(config: Path, data: Path, run: Path, overrides: list[str]) -> Path:
    """Train the recipe on one split, or reuse the split's finished run of the same recipe (a killed
    evaluation continues where it stopped: finished splits are not trained again, a split stopped
    mid-training resumes from its latest checkpoint); return the best model folder.

    Raises:
        ConfigError: ``run`` holds a run of another recipe (or one this script did not record).
    """
    from training.train import main as train_main

    argv = ["--config", str(config), "--dataset", str(data), "--output_dir", str(run), "--disable_tqdm", *overrides]
    identity = recipe_identity(argv)
    marker = run / RECIPE_FILE
    if marker.is_file():
        if json.loads(marker.read_text()) != identity:
            raise ConfigError(f"{run} was trained with another recipe (see {marker}); continuing would mix two "
                              "recipes: choose another --work, or delete that folder")
        summary = run / "train_summary.json"
        if summary.is_file():
            best = Path(json.loads(summary.read_text())["best_model"])
            if (best / "config.json").is_file():
                print(f"{run}: finished earlier with this recipe; reused", file=sys.stderr)
                return best
    elif run.exists() and any(run.iterdir()):
        raise ConfigError(f"{run} holds a run this script did not record ({RECIPE_FILE} missing): choose another "
                          "--work, or delete that folder")
    run.mkdir(parents=True, exist_ok=True)
    write_json(marker, identity)
    summary = train_main([*argv, "--resume_from_checkpoint", "latest"])
    return Path(summary["best_model"])


class MemoisedDna(torch.nn.Module):
    """A model whose DNA embeddings are computed once per distinct input row: the two key sets
    share the ``train`` keys and all the queries, so the second evaluation encodes no barcode again."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.config = model.config
        self._cache: dict[tuple, torch.Tensor] = {}

    def get_dna_features(self, dna_input_ids: torch.Tensor, dna_attention_mask: torch.Tensor | None = None,
                         normalize: bool = True) -> torch.Tensor:
        ids = dna_input_ids.cpu().numpy()
        mask = None if dna_attention_mask is None else dna_attention_mask.cpu().numpy()
        keys = [(ids[i].tobytes(), None if mask is None else mask[i].tobytes(), normalize) for i in range(len(ids))]
        new = [i for i, key in enumerate(keys) if key not in self._cache]
        if new:
            rows = torch.tensor(new, device=dna_input_ids.device)
            features = self.inner.get_dna_features(
                dna_input_ids[rows], None if dna_attention_mask is None else dna_attention_mask[rows], normalize=normalize)
            self._cache.update(zip((keys[i] for i in new), features))
        return torch.stack([self._cache[key] for key in keys])

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.inner.get_text_features(*args, **kwargs)


def score_split(model_dir: Path, data: Path, queries: str = "test", k: int = 5) -> dict[str, Any]:
    """Trained, untrained, k-mer (and pre-trained) models on the split's ``test`` (or ``val``) queries
    under both key sets, with per-query predictions: ``{protocol: {model: evaluate_model result}}``."""
    from accelerate.utils import set_seed

    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
    from bioscan_clip_hf.data import load_bioscan
    from bioscan_clip_hf.evaluation import evaluate_model
    from training.config import TrainConfig
    from training.kmer_baseline import KmerFrequencyModel, KmerProcessor
    from training.model_setup import build_model

    info = json.loads((model_dir / "training_info.json").read_text())
    processor = BioscanClipProcessor.from_pretrained(model_dir)
    trained = BioscanClipModel.from_pretrained(model_dir)
    set_seed(info["train_config"]["seed"])  # train.py seeds the same way before building the model
    models = {"trained": (MemoisedDna(trained), processor), "untrained": (MemoisedDna(BioscanClipModel(trained.config)), processor)}
    if info["train_config"].get("dna_init"):
        set_seed(info["train_config"]["seed"])
        start, start_processor = build_model(TrainConfig(**info["train_config"]))
        models[PRETRAINED] = (MemoisedDna(start), start_processor)
    models["kmer5_nn"] = (KmerFrequencyModel(k), KmerProcessor())
    novel_keys = load_bioscan(str(data), split=list(PROTOCOLS["novel_species"]["keys"]), decode_images=False)
    result: dict[str, Any] = {"best_epoch": info["epoch"], "novel_species_key_genera": sorted({g for g in novel_keys["genus"] if g})}
    for protocol, spec in PROTOCOLS.items():
        result[protocol] = {}
        for name, (model, proc) in models.items():
            pairs = [("dna", "dna"), ("dna", "text")] if protocol == "paper" and name != "kmer5_nn" else [("dna", "dna")]
            result[protocol][name] = evaluate_model(
                model, proc, str(data), query_splits=(queries, f"{queries}_unseen"), key_splits=spec["keys"],
                pairs=pairs, progress=False, per_query=True, identification=())  # top-1 answers only: no calibration
    return result


def _hits(rows: list[dict[str, Any]], rank: str, group: str) -> list[bool]:
    return [r["predicted"][rank] == r["true"][rank] for r in rows if r["group"] == group]


def scored_models(splits: dict[int, dict[str, Any]]) -> list[str]:
    """The models every split scored, in :data:`MODELS` order with ``pretrained`` after ``trained``."""
    present = [set(s["paper"]) for s in splits.values()]
    order = ["trained", PRETRAINED, *MODELS[1:]]
    return [m for m in order if all(m in p for p in present)]


def _pool(splits: dict[int, dict[str, Any]], protocol: str) -> tuple[dict[str, Any], dict[str, list]]:
    """Pooled cells of one protocol (accuracies, paired comparisons) and the pooled query rows."""
    from bioscan_clip_hf.comparison import paired_comparison

    models = scored_models(splits)
    rows = {m: [row for s in splits.values() for row in s[protocol][m]["predictions"][PAIR]] for m in models}
    order = [r["processid"] for r in rows["trained"]]
    if any([r["processid"] for r in rows[m]] != order for m in models):
        raise RuntimeError(f"{protocol}: the models were not scored on the same queries; cannot pair them")
    cells: dict[str, Any] = {}
    for rank, group in PROTOCOLS[protocol]["cells"]:
        hits = {m: _hits(rows[m], rank, group) for m in models}
        cell: dict[str, Any] = {
            m: {"micro": 100.0 * float(np.mean(hits[m])), "correct": int(sum(hits[m])),
                "macro": float(np.mean([s[protocol][m]["pairs"][PAIR][rank][f"{group}_macro_top1"] for s in splits.values()]))}
            for m in models
        }
        cell["n"] = len(hits["trained"])
        for other in models[1:]:
            cell[f"trained_vs_{other}"] = paired_comparison(hits["trained"], hits[other])
        cells[f"{rank}_{group}"] = cell
    return cells, rows


def summarise(splits: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Pool the splits' queries: micro accuracy over all queries, macro averaged over splits,
    paired comparisons, the per-query table, and the queries that the barcodes contradict."""
    first = next(iter(splits.values()))["paper"]["trained"]["protocol"]
    models = scored_models(splits)
    paper, rows = _pool(splits, "paper")
    novel, novel_rows = _pool(splits, "novel_species")
    seeds = [seed for seed, s in splits.items() for _ in s["paper"]["trained"]["predictions"][PAIR]]
    contradicted = [r for r in rows["kmer5_nn"]
                    if r["similarity"] >= CONTRADICTED_SIMILARITY and r["predicted"]["genus"] != r["true"]["genus"]]
    # Both key sets answer the same queries in the same order, so row i is one query in both.
    if [r["processid"] for r in novel_rows["trained"]] != [r["processid"] for r in rows["trained"]]:
        raise RuntimeError("the two key sets were not scored on the same queries")

    def answer(row: dict[str, Any]) -> dict[str, Any]:
        return {"genus": row["predicted"]["genus"], "species": row["predicted"]["species"],
                "similarity": round(row["similarity"], 4)}

    return {
        "pair": PAIR,
        "models": models,
        "query_splits": first["query_splits"],
        "split_seeds": list(splits),
        "n_queries": {g: sum(s["paper"]["trained"]["protocol"][f"n_{g}"] for s in splits.values()) for g in ("seen", "unseen")},
        "paper": paper,
        "novel_species": novel,
        "novel_species_genus_among_keys": sum(
            r["true"]["genus"] in set(s["novel_species_key_genera"]) for s in splits.values()
            for r in s["novel_species"]["trained"]["predictions"][PAIR] if r["group"] == "unseen"),
        "contradicted_by_barcode": {
            "definition": f"paper protocol: 5-mer cosine >= {CONTRADICTED_SIMILARITY} to a key of another genus",
            "seen": sum(r["group"] == "seen" for r in contradicted),
            "unseen": sum(r["group"] == "unseen" for r in contradicted),
            "processids": [r["processid"] for r in contradicted],
        },
        "dna_to_text_genus_macro": {
            m: {g: float(np.mean([s["paper"][m]["pairs"]["dna->text"]["genus"][f"{g}_macro_top1"] for s in splits.values()]))
                for g in ("seen", "unseen")} for m in models if m != "kmer5_nn"},
        "queries": [
            {"split_seed": seeds[i], "processid": r["processid"], "group": r["group"], "genus": r["true"]["genus"],
             "species": r["true"]["species"],
             "paper": {m: answer(rows[m][i]) for m in models},
             "novel_species": {m: answer(novel_rows[m][i]) for m in models} if r["group"] == "unseen" else None}
            for i, r in enumerate(rows["trained"])
        ],
    }


def table(summary: dict[str, Any]) -> str:
    """Markdown: pooled accuracies and the paired comparisons, one table per key set."""
    n = summary["n_queries"]
    queries = " + ".join(summary["query_splits"])
    lines = []
    titles = {
        "paper": f"**Paper protocol** (keys train + key_unseen). DNA -> DNA top-1 (%), {queries} queries pooled over "
                 f"split seeds {summary['split_seeds']} ({n['seen']} seen-species and {n['unseen']} unseen-species "
                 "queries); micro over the pooled queries, macro = mean of the splits' macro.",
        "novel_species": f"**Novel species** (keys train only: the {n['unseen']} unseen-species queries have no record "
                         f"of their species among the keys; {summary['novel_species_genus_among_keys']} of them have "
                         "their genus there). DNA -> DNA top-1 (%).",
    }
    models = summary["models"]
    names = {m: LABELS[m] for m in models}
    for protocol in PROTOCOLS:
        lines += [
            titles[protocol], "",
            "| rank, species | " + " | ".join(f"{names[m]} micro / macro" for m in models) + " | "
            + " | ".join(f"trained − {names[m]} (95 % CI), wins:losses, p" for m in models[1:]) + " |",
            "|---|" + "---|" * (2 * len(models) - 1),
        ]
        for rank, group in PROTOCOLS[protocol]["cells"]:
            c = summary[protocol][f"{rank}_{group}"]
            cmp = [c[f"trained_vs_{m}"] for m in models[1:]]
            lines.append(
                f"| {rank}, {group} | " + " | ".join(f"{c[m]['micro']:.1f} / {c[m]['macro']:.1f}" for m in models) + " | "
                + " | ".join(f"{v['difference']:+.1f} ({v['ci_low']:+.1f}, {v['ci_high']:+.1f}), {v['wins']}:{v['losses']}, "
                             f"p = {v['p_value']:.2g}" for v in cmp) + " |"
            )
        lines.append("")
    dt = summary["dna_to_text_genus_macro"]
    bad = summary["contradicted_by_barcode"]
    lines += [
        "DNA -> text genus macro top-1 (paper keys): " + "; ".join(
            f"{names[m]} {dt[m]['seen']:.1f} % seen / {dt[m]['unseen']:.1f} % unseen" for m in dt) + ".",
        f"Queries whose barcode contradicts their label ({bad['definition']}): {bad['seen']} seen, {bad['unseen']} unseen.",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Grouped bars of pooled micro accuracy per key set, labelled with the trained model's paired
    difference to the 5-mer baseline (the bar to beat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [4, 3]})
    models = summary["models"]
    width = 0.8 / len(models)
    n = summary["n_queries"]
    titles = {"paper": f"paper protocol (keys include every query's species)\n{n['seen']} seen / {n['unseen']} unseen queries",
              "novel_species": f"novel species (query species absent from keys)\n{n['unseen']} unseen-species queries"}
    for ax, (protocol, spec) in zip(axes, PROTOCOLS.items()):
        cells = spec["cells"]
        colours = {"trained": "tab:blue", PRETRAINED: "tab:green", "untrained": "tab:gray", "kmer5_nn": "tab:orange"}
        offsets = (np.arange(len(models)) - (len(models) - 1) / 2) * width
        for offset, m in zip(offsets, models):
            values = [summary[protocol][f"{r}_{g}"][m]["micro"] for r, g in cells]
            ax.bar(np.arange(len(cells)) + offset, values, width, label=LABELS[m], color=colours[m])
        for x, (r, g) in enumerate(cells):
            c = summary[protocol][f"{r}_{g}"]["trained_vs_kmer5_nn"]
            ax.annotate(f"{c['difference']:+.1f}\n[{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]", (x + offsets[0], 101),
                        ha="center", fontsize=7)
        ax.set_xticks(range(len(cells)), [f"{r}\n{g} species" for r, g in cells])
        ax.set_ylim(0, 112)
        ax.set_title(titles[protocol], fontsize=9)
    axes[0].set_ylabel("DNA → DNA top-1 micro (%)")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Real COI barcodes, {'/'.join(summary['query_splits'])} queries pooled over splits "
                 f"{summary['split_seeds']}; labels: trained − 5-mer NN [95 % paired bootstrap CI]", fontsize=9)
    fig.tight_layout()
    return write_figure(path, fig, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "training" / "configs" / "realcoi_dna_text.yaml")
    parser.add_argument("--tsv", type=Path, default=TSV, help="the real COI TSV (see ../shared/data/README.md)")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[6, 7, 8, 9, 10],
                        help="seeds of the species splits (1-5 served to choose the recipe on val queries)")
    parser.add_argument("--queries", choices=("test", "val"), default="test",
                        help="score the test queries (report) or the val queries (choosing a recipe)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "realcoi" / "splits",
                        help="data sets and runs, one sub-folder per split seed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training_realcoi.json")
    parser.add_argument("--train-override", action="append", default=[], metavar="--KEY=VALUE",
                        help="extra training setting, e.g. --train-override=--num_train_epochs=2 (repeatable)")
    args = parser.parse_args(argv)
    if not args.tsv.is_file():
        parser.error(f"real COI TSV not found: {args.tsv} (see ../shared/data/README.md for how to obtain it)")
    try:  # before hours of training, not after
        args.out.parent.mkdir(parents=True, exist_ok=True)
        check_writable(args.out)
    except OSError as err:
        parser.error(str(err))
    import datasets
    import transformers
    from tqdm.auto import tqdm

    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    splits, seconds = {}, {}
    for seed in tqdm(args.split_seeds, desc="split seeds", unit="split"):
        start = time.perf_counter()
        data = prepare_split(args.tsv, args.work, seed)
        best = train_split(args.config, data, args.work / f"split{seed}" / "run", args.train_override)
        splits[seed] = score_split(best, data, args.queries)
        seconds[seed] = round(time.perf_counter() - start, 1)
    summary = summarise(splits)
    summary["seconds_per_split"] = seconds
    summary["config"] = str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config)
    summary["train_overrides"] = args.train_override
    summary["best_epochs"] = {seed: s["best_epoch"] for seed, s in splits.items()}
    for result in splits.values():  # the pooled per-query table is in the summary
        result.pop("novel_species_key_genera")
        for protocol in PROTOCOLS:
            for model in result[protocol]:
                result[protocol][model].pop("predictions")
    write_text(args.out, json.dumps({"summary": summary, "splits": splits}, separators=(",", ":"), default=float) + "\n")
    plot(summary, args.out.with_suffix(".png"))
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="realcoi_eval.py"))
