"""The paper's zero-shot evaluation protocol (CLIBD, ``scripts/inference_and_eval.py``).

Queries from a seen split (``test`` or ``val``) and an unseen split (``test_unseen`` or
``val_unseen``) are matched against the keys (CLIBD's ``all_keys``: ``train`` + ``key_unseen`` on
BIOSCAN-5M, ``key_seen`` + ``key_unseen`` on BIOSCAN-1M, ``data.dataset_key_splits``) by exact cosine search;
the nearest key's taxonomy is the prediction at every rank, the k nearest keys' labels give top-k.
Every query -> key pair the model and data allow is scored: image->image, dna->dna, image->dna,
dna->image, image->text, dna->text (text keys = the keys' taxonomy strings), averaged->averaged
and concatenated->concatenated (image+DNA features as the original builds them). Accuracies are
micro and macro top-1/3/5 per rank, seen, unseen and their harmonic mean
(:mod:`bioscan_clip_hf.metrics.taxonomic_accuracy`). Beside accuracy, the quality of the answer
users get (:mod:`bioscan_clip_hf.zero_shot.quality`): per pair and method, the ECE of the calibrated
probabilities per rank (15 bins; calibrated on the val splits, or cross-fitted when the queries are
the val splits), accuracy at the confident rank and coverage, and "not in the library" detection
by leaving each query's own species out of the keys (AUROC, operating point, and the AUROC of the
nearest-key distance of the learned and the 5-mer evidence on the same queries). ``results.md``
tabulates both; ``reliability.png`` draws the reliability diagrams.

Example:
    >>> from bioscan_clip_hf.evaluation import evaluate_model
    >>> res = evaluate_model(model, processor, "outputs/demo/data", output_dir="outputs/demo/eval")  # doctest: +SKIP
    >>> res["selection_score"], res["pairs"]["dna->dna"]["species"]["seen_macro_top1"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .atomic import atomic_path, finite_json, write_figure
from .metrics.taxonomic_accuracy.topk import accuracy_report
from .taxonomy import RANKS
from .zero_shot.encode import combine_features, encode_dataset, encode_texts, record_texts, resolve_device
from .zero_shot.evidence import KeySource
from .zero_shot.kmer import kmer_profiles
from .zero_shot.lineages import TaxonIndex
from .zero_shot.calibration import QUERY_MODALITIES
from .zero_shot.quality import QuerySet, identification_quality
from .zero_shot.search import search

__all__ = ["ALL_PAIRS", "accuracy_figure", "evaluate_model", "identification_summary", "identification_table",
           "markdown_table", "plot_accuracy", "plot_reliability", "resolve_splits", "results_json"]

ALL_PAIRS = (
    ("image", "image"), ("dna", "dna"), ("image", "dna"), ("dna", "image"), ("image", "text"), ("dna", "text"),
    ("averaged", "averaged"), ("concatenated", "concatenated"),
)
_NEEDS = {"image": {"image"}, "dna": {"dna"}, "text": {"text"}, "averaged": {"image", "dna"}, "concatenated": {"image", "dna"}}


def resolve_splits(dataset: Any, names: Sequence[str]):
    """One ``datasets.Dataset`` holding the records of ``names`` (with their ``split`` column).

    ``dataset`` may be a data-set folder or Hub id (loaded with ``load_bioscan``, images decoded
    lazily), a ``DatasetDict``, or a ``Dataset`` with a ``split`` column.
    """
    import datasets

    if isinstance(dataset, (str, Path)):
        from .data import load_bioscan

        return load_bioscan(dataset, split=list(names), decode_images=False)
    if isinstance(dataset, datasets.DatasetDict):
        missing = [n for n in names if n not in dataset]
        if missing:
            raise ValueError(f"data set has no split {missing} (it has {sorted(dataset)})")
        parts = [dataset[n] for n in names]
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if isinstance(dataset, datasets.Dataset):
        if "split" not in dataset.column_names:
            raise ValueError("a Dataset passed to evaluate_model needs a 'split' column")
        wanted = set(names)
        rows = [i for i, s in enumerate(dataset["split"]) if s in wanted]
        return dataset.select(rows)
    raise TypeError(f"cannot read splits from {type(dataset).__name__}")


def _available_towers(model, data) -> set[str]:
    """Towers both built in the model and fed by the data (images present in any record)."""
    built = set(getattr(model.config, "modalities", ("image", "dna", "text")))
    towers = set()
    if "dna" in built and "dna_barcode" in data.column_names and any(data["dna_barcode"]):
        towers.add("dna")
    if "text" in built:
        towers.add("text")
    if "image" in built and "image" in data.column_names:
        import datasets

        # Read the column undecoded: only whether any record has an image matters here.
        if isinstance(data.features.get("image"), datasets.Image):
            data = data.cast_column("image", datasets.Image(decode=False))
        if any(img is not None for img in data["image"]):
            towers.add("image")
    return towers


def _labels(data, rank: str) -> list[str | None]:
    return [None if v in (None, "") else str(v) for v in data[rank][:]]  # [:] reads the column at once


def evaluate_model(
    model,
    processor,
    dataset: Any,
    query_splits: Sequence[str] = ("val", "val_unseen"),
    key_splits: Sequence[str] | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    k_values: Sequence[int] = (1, 3, 5),
    batch_size: int = 64,
    output_dir: str | Path | None = None,
    title: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    per_query: bool = False,
    identification: Sequence[str] = ("nearest",),
    calibration_splits: Sequence[str] = ("val", "val_unseen"),
    identification_keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the paper's protocol and return (and optionally write) the results.

    Args:
        model: a ``BioscanClipModel`` (any subset of towers; with Accelerate pass
            ``accelerator.unwrap_model(model)``); it is evaluated in eval mode on ``device``
            (default: where it already is), then its device and train/eval mode are restored.
        processor: the matching ``BioscanClipProcessor``.
        dataset: a data folder / Hub id, a ``DatasetDict``, or a ``Dataset`` with a ``split`` column.
        query_splits: (seen, unseen) query splits, e.g. ("test", "test_unseen").
        key_splits: key splits; default the data set's (``data.dataset_key_splits``: the original's
            ``all_keys``, ``key_seen`` + ``key_unseen`` on BIOSCAN-1M, ``train`` + ``key_unseen`` otherwise).
        pairs: (query, key) feature types to score; default: every one in :data:`ALL_PAIRS` the
            model and data support.
        output_dir: when given, writes ``results.json``, ``results.md`` and ``accuracy.png``.
        title: label for the table and plot (say "synthetic" for synthetic data).
        per_query: also return every query's top-1 prediction (for paired comparisons of models
            on the same queries, or error analysis) under ``"predictions"``.
        identification: methods whose answers are scored for calibration, confident-rank accuracy
            and novelty detection (:mod:`~bioscan_clip_hf.zero_shot.quality`), per key modality as
            a key bank of it answers: one calibration for the DNA and image queries and for
            specimens with both (reported as ``image+dna->KEYS``); ``kmer`` (the 5-mer evidence of
            the keys' barcodes, which also joins the DNA evidence of ``nearest`` / ``knn``) needs
            barcodes; ``()`` skips it.
        calibration_splits: where those answers are calibrated; when they are the query splits
            (or missing from ``dataset``), the figures are 2-fold cross-fitted on the queries.
        identification_keys: the key modalities scored that way (default: those of every
            evaluated pair except text; the training scores only its key bank's).

    Returns:
        A JSON-able dict::

            {"protocol": {query_splits, key_splits, n_seen, n_unseen, n_keys, k_values, pairs, title},
             "pairs": {"image->dna": {rank: {"seen_micro_top1": %, "seen_macro_top1": %,
                                              "unseen_...": %, "hm_micro_top1": %, ...,
                                              "n_seen": int, "n_unseen": int}}},
             "identification": {"dna->dna": identification_quality's report (ECE per rank and method,
                                accuracy at the confident rank, coverage, novelty AUROC beside the
                                nearest-key distance AUROCs of the learned and 5-mer evidence)},
             "selection_score": mean of every top-1 micro and macro accuracy (seen and unseen,
                                all pairs and ranks), for model selection,
             "seconds": wall time,
             "predictions" (only with ``per_query``): {"dna->dna": [{"processid", "group",
                 "nearest_key", "similarity", "true": {rank: label}, "predicted": {rank: label}}]}}

        Accuracies are percentages. Queries or keys whose input is missing or unreadable are
        left out (counted in ``protocol["skipped"]``).
    """
    start = time.perf_counter()
    if len(query_splits) != 2:
        raise ValueError(f"query_splits must be (seen, unseen), got {query_splits}")
    if key_splits is None:
        from .data import dataset_key_splits

        key_splits = dataset_key_splits(dataset)
    keys = resolve_splits(dataset, key_splits)
    seen = resolve_splits(dataset, [query_splits[0]])
    unseen = resolve_splits(dataset, [query_splits[1]])
    if len(keys) == 0 or len(seen) == 0 or len(unseen) == 0:
        raise ValueError(f"empty split: keys={len(keys)}, {query_splits[0]}={len(seen)}, {query_splits[1]}={len(unseen)}")
    towers = _available_towers(model, keys) & _available_towers(model, seen)
    wanted = list(pairs) if pairs is not None else [p for p in ALL_PAIRS if _NEEDS[p[0]] | _NEEDS[p[1]] <= towers]
    wanted = [p for p in wanted if p[0] != "text"]
    if not wanted:
        raise ValueError(f"no query->key pair can be evaluated: towers available in both model and data: {sorted(towers)}")

    was_training = model.training
    old_device = next(model.parameters()).device
    run_device = resolve_device(device) if device is not None else old_device
    model.eval().to(run_device)
    try:
        cache: dict[tuple[str, str], tuple[torch.Tensor, list]] = {}

        def feats(part: str, data, modality: str):
            if (part, modality) not in cache:
                if modality == "text":
                    texts = record_texts(data)
                    uniq = list(dict.fromkeys(texts))
                    f, e = encode_texts(model, processor, uniq, batch_size=max(batch_size, 64), progress=progress)
                    pos = {t: i for i, t in enumerate(uniq)}
                    rows = [pos[t] for t in texts]
                    cache[(part, modality)] = (f[rows], [e[r] for r in rows])
                elif modality in ("averaged", "concatenated"):
                    image, err_i = feats(part, data, "image")
                    dna, err_d = feats(part, data, "dna")
                    cache[(part, modality)] = (combine_features(image, dna, modality), [a or b for a, b in zip(err_i, err_d)])
                else:
                    cache[(part, modality)] = encode_dataset(model, processor, data, modality, batch_size, progress)
            return cache[(part, modality)]

        calibration = None
        if identification and list(calibration_splits) != list(query_splits):
            try:
                calibration = resolve_splits(dataset, list(calibration_splits))
            except (ValueError, FileNotFoundError):
                calibration = None  # no such splits: cross-fit on the queries instead
        key_labels = {r: _labels(keys, r) for r in RANKS}
        key_index = TaxonIndex.from_lineages(list(zip(*(key_labels[r] for r in RANKS))))
        query_labels = {r: _labels(seen, r) + _labels(unseen, r) for r in RANKS}
        groups = ["seen"] * len(seen) + ["unseen"] * len(unseen)
        results: dict[str, Any] = {}
        identity: dict[str, Any] = {}
        predictions: dict[str, list[dict[str, Any]]] = {}
        skipped: dict[str, int] = {}
        kmax = max(k_values)
        for qmod, kmod in wanted:
            name = f"{qmod}->{kmod}"
            kf, kerr = feats("keys", keys, kmod)
            sf, serr = feats("seen", seen, qmod)
            uf, uerr = feats("unseen", unseen, qmod)
            key_rows = [i for i, e in enumerate(kerr) if e is None]
            qf = torch.cat([sf, uf])
            qerr = serr + uerr
            q_rows = [i for i, e in enumerate(qerr) if e is None]
            skipped[name] = (len(kerr) - len(key_rows)) + (len(qerr) - len(q_rows))
            if not key_rows or not q_rows:
                continue
            scores, idx = search(qf[q_rows], kf[key_rows], k=kmax)
            idx = np.asarray(key_rows)[idx.cpu().numpy()]
            scores = scores.cpu().numpy()
            per_rank = {}
            g = [groups[i] for i in q_rows]
            for rank in RANKS:
                preds = [[key_labels[rank][j] for j in row] for row in idx]
                refs = [query_labels[rank][i] for i in q_rows]
                rep = accuracy_report(preds, refs, k_values=k_values, groups=g)
                rep["n_seen"] = g.count("seen")
                rep["n_unseen"] = g.count("unseen")
                per_rank[rank] = rep
            results[name] = per_rank
            if per_query:
                predictions[name] = _query_predictions(
                    list(seen["processid"]) + list(unseen["processid"]), list(keys["processid"]),
                    query_labels, key_labels, q_rows, g, idx[:, 0], scores[:, 0])
        # One calibration per key modality, as a key bank of it answers (text keys are the prompts
        # of the text method, not a bank).
        by_keys: dict[str, list[str]] = {}
        for qmod, kmod in wanted:
            if kmod != "text" and f"{qmod}->{kmod}" in results:
                by_keys.setdefault(kmod, []).append(qmod)
        for kmod, query_feats in by_keys.items():
            if not identification or (identification_keys is not None and kmod not in identification_keys):
                continue
            queries = _query_set({q: _joined(feats("seen", seen, q), feats("unseen", unseen, q)) for q in query_feats},
                                 [seen, unseen])
            cal_set = None if calibration is None else _query_set(
                {q: feats("calibration", calibration, q) for q in query_feats}, [calibration])
            identity.update(_identification(key_index, kmod, feats("keys", keys, kmod), keys, identification, queries,
                                            cal_set, progress))
    finally:
        model.to(old_device).train(was_training)

    top1 = [v for per_rank in results.values() for rep in per_rank.values() for key, v in rep.items()
            if key.endswith("_top1") and not key.startswith("hm_")]
    out = {
        "protocol": {
            "query_splits": list(query_splits), "key_splits": list(key_splits), "n_seen": len(seen),
            "n_unseen": len(unseen), "n_keys": len(keys), "k_values": list(k_values),
            "pairs": list(results), "skipped": skipped, "title": title,
        },
        "pairs": results,
        "identification": identity,
        "selection_score": float(np.mean(top1)) if top1 else 0.0,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if per_query:
        out["predictions"] = predictions
    if output_dir is not None:
        write_results(out, output_dir)
    return out


def _joined(*parts: tuple[torch.Tensor, list]) -> tuple[torch.Tensor, list]:
    """``(features, errors)`` of several record sets, one after the other."""
    return torch.cat([f for f, _ in parts]), [e for _, errors in parts for e in errors]


def _query_set(features: dict[str, tuple[torch.Tensor, list]], data: list) -> QuerySet:
    """Queries with each feature's vectors (where it has no error), the 5-mer profiles of their
    barcodes and their true lineages; ``data``: the records' data sets, in order."""
    vectors = {name: f for name, (f, _) in features.items()}
    available = {name: np.array([e is None for e in errors]) for name, (_, errors) in features.items()}
    if all("dna_barcode" in d.column_names for d in data):
        profiles = kmer_profiles([b or "" for d in data for b in d["dna_barcode"][:]])
        vectors["kmer"], available["kmer"] = profiles, profiles.abs().sum(dim=1).numpy() > 0
    lineages = list(zip(*([label for d in data for label in _labels(d, r)] for r in RANKS)))
    return QuerySet(vectors, available, lineages)


def _identification(index: TaxonIndex, kmod: str, key_feats: tuple[torch.Tensor, list], keys, methods: Sequence[str],
                    queries: QuerySet, cal_set: QuerySet | None, progress: bool) -> dict[str, Any]:
    """:func:`identification_quality` against the ``kmod`` keys, one report per query -> key pair
    (see ``evaluate_model``); a key bank of one tower answers both towers' queries (and both together)."""
    kf, errors = key_feats
    rows = np.flatnonzero([e is None for e in errors])
    learned = KeySource(kmod, kf[rows], torch.from_numpy(index.leaf_of_record[rows]), torch.from_numpy(rows))
    names = [kmod] if kmod in ("averaged", "concatenated") else [n for n in ("dna", "image") if n in queries.vectors]
    sources = {name: learned for name in names}
    barcodes = np.asarray(keys["dna_barcode"][:], dtype=object) if "dna_barcode" in keys.column_names else None
    with_kmer = "kmer" in methods and barcodes is not None and "kmer" in queries.vectors and "dna" in names
    if with_kmer:
        have = np.flatnonzero([bool(b) for b in barcodes])
        sources["kmer"] = KeySource("kmer", kmer_profiles(list(barcodes[have])), torch.from_numpy(index.leaf_of_record[have]),
                                    torch.from_numpy(have))
    else:
        methods = [m for m in methods if m != "kmer"]
        for part in (queries, cal_set):
            if part is not None:
                part.vectors.pop("kmer", None)
                part.available.pop("kmer", None)
    report = identification_quality(index, sources, cal_set, queries, methods, progress=progress)
    out = {}
    for qmod in QUERY_MODALITIES:
        per_method = {m: {qmod: per[qmod]} for m, per in report["methods"].items() if qmod in per}
        if not per_method and qmod not in report["novelty"]:
            continue
        pair = f"{kmod}->{kmod}" if kmod in ("averaged", "concatenated") else f"{qmod}->{kmod}"
        novelty = {qmod: report["novelty"][qmod]} if qmod in report["novelty"] else {}
        out[pair] = {"calibration": report["calibration"], "methods": per_method, "novelty": novelty}
    return out


def _query_predictions(query_ids: list, key_ids: list, query_labels: dict[str, list], key_labels: dict[str, list],
                       q_rows: list[int], groups: list[str], nearest: np.ndarray,
                       similarity: np.ndarray) -> list[dict[str, Any]]:
    """One row per scored query: its id, seen/unseen group, nearest key and labels at every rank."""
    return [
        {"processid": query_ids[q], "group": group, "nearest_key": key_ids[k], "similarity": float(sim),
         "true": {rank: query_labels[rank][q] for rank in RANKS},
         "predicted": {rank: key_labels[rank][k] for rank in RANKS}}
        for q, group, k, sim in zip(q_rows, groups, nearest.tolist(), similarity.tolist())
    ]


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def markdown_table(results: dict[str, Any], k: int = 1) -> str:
    """Paper-style table: rows rank x pair; columns micro and macro top-k seen / unseen / H.M."""
    proto = results["protocol"]
    lines = [
        f"Top-{k} accuracy (%), queries {proto['query_splits'][0]} (seen) / {proto['query_splits'][1]} (unseen), "
        f"keys {' + '.join(proto['key_splits'])}" + (f" — {proto['title']}" if proto.get("title") else ""),
        "",
        "| Taxon | Query → Key | Micro S | Micro U | Micro H.M. | Macro S | Macro U | Macro H.M. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank in RANKS:
        first = True
        for pair, per_rank in results["pairs"].items():
            rep = per_rank[rank]
            cells = [rep[f"seen_micro_top{k}"], rep[f"unseen_micro_top{k}"], rep[f"hm_micro_top{k}"],
                     rep[f"seen_macro_top{k}"], rep[f"unseen_macro_top{k}"], rep[f"hm_macro_top{k}"]]
            label = rank.capitalize() if first else ""
            first = False
            q, key = pair.split("->")
            lines.append(f"| {label} | {q} → {key} | " + " | ".join(_fmt(c) for c in cells) + " |")
    if results.get("identification"):
        lines += ["", identification_table(results)]
    return "\n".join(lines) + "\n"


def identification_table(results: dict[str, Any]) -> str:
    """Markdown: per pair and method, ECE per rank, accuracy at the confident rank, coverage, and
    the novelty AUROC (ours, then the nearest-key distance of each evidence source)."""
    lines = [
        "Identification quality: ECE (15 bins) of the calibrated probabilities per rank, accuracy (%) at the confident "
        "rank (P >= 0.9) and the share (%) of queries confident down to genus / species; novel species = each query's "
        "own species left out of the keys (AUROC of novelty_probability | of the nearest-key distance).",
        "",
        "| Query → Key | method | ECE order / family / genus / species | acc. at confident rank | coverage genus / species "
        "| novelty AUROC (TPR / FPR at 0.5) | distance AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, report in results["identification"].items():
        q, key = pair.split("->")
        for method, per_modality in report["methods"].items():
            for qmod, entry in per_modality.items():
                ece = " / ".join(_fmt3(entry["ranks"][r]["ece"]) for r in RANKS)
                conf = entry["confident"]
                acc = "n/a" if conf["accuracy"] is None else f"{100 * conf['accuracy']:.1f} ({conf['n_confident']})"
                cover = f"{100 * conf['coverage']['genus']:.1f} / {100 * conf['coverage']['species']:.1f}"
                nov = report["novelty"].get(qmod)
                model = "n/a" if nov is None else (f"{nov['model']['auroc']:.3f} ({nov['model']['tpr']:.2f} / "
                                                   f"{nov['model']['fpr']:.2f}; {'+'.join(nov['sources'])})")
                dist = "n/a" if nov is None else ", ".join(f"{n} {v:.3f}" for n, v in nov["nearest_distance_auroc"].items())
                lines.append(f"| {q} → {key} | {method} ({'+'.join(entry['sources'])}) | {ece} | {acc} | {cover} | {model} | {dist} |")
    return "\n".join(lines)


def identification_summary(results: dict[str, Any], method: str = "nearest") -> str:
    """One line for training logs: per pair, the ECE per rank and the novel-species AUROC.

    Example:
        >>> identification_summary(result)  # doctest: +SKIP
        'dna->dna ECE 0.010/0.012/0.031/0.048, novel-species AUROC 0.912 (cross-fitted)'
    """
    parts = []
    for pair, report in results.get("identification", {}).items():
        entry = report["methods"].get(method, {}).get(pair.split("->")[0].replace("averaged", "image+dna")
                                                       .replace("concatenated", "image+dna"))
        if entry is None:
            continue
        ece = "/".join(_fmt3(entry["ranks"][r]["ece"]) for r in RANKS)
        nov = next(iter(report["novelty"].values()), None)
        auroc = "" if nov is None else f", novel-species AUROC {_fmt3(nov['model']['auroc'])}"
        parts.append(f"{pair} ECE {ece}{auroc}" + (" (cross-fitted)" if report["calibration"]["cross_fitted"] else ""))
    return "; ".join(parts)


def _fmt3(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def plot_reliability(results: dict[str, Any], path: str | Path) -> Path:
    """PNG: reliability diagrams (accuracy against confidence, 15 bins) per rank, one line per
    pair and method, the diagonal = perfect calibration; marker area ~ queries in the bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(RANKS), figsize=(3.0 * len(RANKS), 3.6), dpi=120, sharey=True)
    curves = [(f"{pair.replace('->', ' → ')} {method}" + ("" if qmod == pair.split("->")[0] else f" [{qmod}]"), entry)
              for pair, report in results.get("identification", {}).items()
              for method, per_modality in report["methods"].items() for qmod, entry in per_modality.items()]
    for ax, rank in zip(axes, RANKS):
        ax.plot([0, 1], [0, 1], ":", color="0.5")
        for n, (label, entry) in enumerate(curves):
            bins = [b for b in entry["ranks"][rank]["bins"] if b["n"]]
            if not bins:
                continue
            total = sum(b["n"] for b in bins)
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "-", color=f"C{n % 10}", alpha=0.8,
                    label=f"{label} (ECE {entry['ranks'][rank]['ece']:.3f})" if rank == RANKS[0] else label)
            ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=[4 + 200 * b["n"] / total for b in bins],
                       color=f"C{n % 10}", alpha=0.8)
        ax.set_title(rank.capitalize(), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy", fontsize=8)
    proto = results["protocol"]
    fig.suptitle(f"Reliability of the calibrated probabilities, queries {' + '.join(proto['query_splits'])}"
                 + (f" — {proto['title']}" if proto.get("title") else ""), fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(len(labels), 1)), fontsize=7, frameon=False)
    rows_of_legend = math.ceil(len(labels) / 3) if labels else 0
    fig.tight_layout(rect=(0, min(0.45, 0.07 * rows_of_legend + 0.02), 1, 0.93))
    return write_figure(path, fig, format="png")


def plot_accuracy(results: dict[str, Any], path: str | Path, **options: Any) -> Path:
    """Write :func:`accuracy_figure` (same keyword options) as a PNG; returns ``path``.

    Example:
        >>> plot_accuracy(aligned, "accuracy.png", baseline=untrained, chance={"order": 20.0})  # doctest: +SKIP
    """
    return write_figure(path, accuracy_figure(results, **options), format="png")


def accuracy_figure(
    results: dict[str, Any],
    kind: str = "macro",
    k: int = 1,
    baseline: dict[str, Any] | None = None,
    chance: dict[str, float] | None = None,
    baseline_label: str = "untrained",
):
    """Top-k accuracy per rank as small multiples (a matplotlib ``Figure``): one panel per query -> key pair.

    Each panel shows the seen and unseen query species of ``results`` (solid lines), the same for
    ``baseline`` (e.g. the untrained initial weights; dashed, lighter) and the ``chance`` level per
    rank (grey dotted; e.g. 100 / number of key labels). One legend below the panels, none over data.

    Args:
        results: an :func:`evaluate_model` result.
        kind: ``"macro"`` or ``"micro"`` accuracy.
        k: top-k.
        baseline: a second result of the same protocol drawn beside ``results``, pair by pair.
        chance: rank -> accuracy (%) of a random guess.
        baseline_label: legend name of the baseline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(results["pairs"])
    if not pairs:
        raise ValueError("results hold no query -> key pair to plot")
    columns = min(4, len(pairs))
    rows = math.ceil(len(pairs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns + 0.6, 2.3 * rows + 1.2), dpi=120,
                             sharex=True, sharey=True, squeeze=False)
    x = np.arange(len(RANKS))
    colours = {"seen": "C0", "unseen": "C1"}
    curves = [(results, "-", "o", 1.0, "")]
    if baseline is not None:
        curves.append((baseline, "--", "x", 0.45, f" ({baseline_label})"))
    for ax, pair in zip(axes.flat, pairs):
        for source, style, marker, alpha, suffix in curves:
            per_rank = source["pairs"].get(pair)
            if per_rank is None:
                continue
            for group, colour in colours.items():
                ax.plot(x, [per_rank[r][f"{group}_{kind}_top{k}"] for r in RANKS], linestyle=style, marker=marker,
                        color=colour, alpha=alpha, markersize=4, label=f"{group} species{suffix}")
        if chance is not None:
            ax.plot(x, [chance[r] for r in RANKS], linestyle=":", color="0.35", label="chance")
        ax.set_title(pair.replace("->", " → "), fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(pairs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xticks(x, [r.capitalize() for r in RANKS], fontsize=8, rotation=30)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{kind.capitalize()} top-{k} (%)", fontsize=8)
    proto = results["protocol"]
    title = f"Zero-shot accuracy: queries {proto['query_splits'][0]} (seen) / {proto['query_splits'][1]} (unseen) vs keys"
    if proto.get("title"):
        title += f" — {proto['title']}"
    fig.suptitle(title, fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.06, 1, 0.95))
    return fig


def write_results(results: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` (micro + macro top-1 table), ``accuracy.png`` and, when
    identification quality was measured, ``reliability.png``.

    All three are rendered to temporary files first and renamed into place together, so a failure
    or a kill leaves the previous three (or none), never a new table beside an old plot.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png"}
    if results.get("identification"):
        paths["reliability"] = out / "reliability.png"
    with ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_path(path)) for name, path in paths.items()}
        tmp["json"].write_text(results_json(results), encoding="utf-8")
        tmp["markdown"].write_text(markdown_table(results), encoding="utf-8")
        plot_accuracy(results, tmp["plot"])
        if "reliability" in tmp:
            plot_reliability(results, tmp["reliability"])
    return paths


def results_json(results: dict[str, Any]) -> str:
    """``evaluate_model``'s results as strict JSON (inf/NaN, e.g. an undefined AUROC, become null)."""
    return json.dumps(finite_json(results), indent=2, allow_nan=False) + "\n"
