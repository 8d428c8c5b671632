"""The paper's zero-shot evaluation protocol (CLIBD, ``scripts/inference_and_eval.py``).

Queries from a seen split (``test`` or ``val``) and an unseen split (``test_unseen`` or
``val_unseen``) are matched against the keys (``train`` + ``key_unseen``) by exact cosine search;
the nearest key's taxonomy is the prediction at every rank, the k nearest keys' labels give top-k.
Every query -> key pair the model and data allow is scored: image->image, dna->dna, image->dna,
dna->image, image->text, dna->text (text keys = the keys' taxonomy strings), averaged->averaged
and concatenated->concatenated (image+DNA features as the original builds them). Accuracies are
micro and macro top-1/3/5 per rank, seen, unseen and their harmonic mean
(:mod:`bioscan_clip_hf.metrics.taxonomic_accuracy`); novelty detection quality (AUROC of the
nearest-key distance, seen vs unseen) is reported per pair.

Example:
    >>> from bioscan_clip_hf.evaluation import evaluate_model
    >>> res = evaluate_model(model, processor, "outputs/demo/data", output_dir="outputs/demo/eval")  # doctest: +SKIP
    >>> res["selection_score"], res["pairs"]["dna->dna"]["species"]["seen_macro_top1"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .metrics.taxonomic_accuracy.topk import accuracy_report
from .taxonomy import RANKS
from .zero_shot.encode import combine_features, encode_dataset, encode_texts, record_texts, resolve_device
from .zero_shot.novelty import calibrate_novelty
from .zero_shot.search import search

__all__ = ["ALL_PAIRS", "evaluate_model", "markdown_table", "plot_accuracy", "resolve_splits", "results_json"]

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
    return [None if v in (None, "") else str(v) for v in data[rank]]


def evaluate_model(
    model,
    processor,
    dataset: Any,
    query_splits: Sequence[str] = ("val", "val_unseen"),
    key_splits: Sequence[str] = ("train", "key_unseen"),
    pairs: Iterable[tuple[str, str]] | None = None,
    k_values: Sequence[int] = (1, 3, 5),
    batch_size: int = 64,
    output_dir: str | Path | None = None,
    title: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    per_query: bool = False,
) -> dict[str, Any]:
    """Run the paper's protocol and return (and optionally write) the results.

    Args:
        model: a ``BioscanClipModel`` (any subset of towers; with Accelerate pass
            ``accelerator.unwrap_model(model)``); it is evaluated in eval mode on ``device``
            (default: where it already is), then its device and train/eval mode are restored.
        processor: the matching ``BioscanClipProcessor``.
        dataset: a data folder / Hub id, a ``DatasetDict``, or a ``Dataset`` with a ``split`` column.
        query_splits: (seen, unseen) query splits, e.g. ("test", "test_unseen").
        key_splits: key splits (the original: "train" + "key_unseen").
        pairs: (query, key) feature types to score; default: every one in :data:`ALL_PAIRS` the
            model and data support.
        output_dir: when given, writes ``results.json``, ``results.md`` and ``accuracy.png``.
        title: label for the table and plot (say "synthetic" for synthetic data).
        per_query: also return every query's top-1 prediction (for paired comparisons of models
            on the same queries, or error analysis) under ``"predictions"``.

    Returns:
        A JSON-able dict::

            {"protocol": {query_splits, key_splits, n_seen, n_unseen, n_keys, k_values, pairs, title},
             "pairs": {"image->dna": {rank: {"seen_micro_top1": %, "seen_macro_top1": %,
                                              "unseen_...": %, "hm_micro_top1": %, ...,
                                              "n_seen": int, "n_unseen": int}}},
             "novelty": {"image->dna": {"auroc", "threshold", "tpr", "fpr", "n_seen", "n_unseen",
                                        "rank_thresholds"}},
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

        key_labels = {r: _labels(keys, r) for r in RANKS}
        query_labels = {r: _labels(seen, r) + _labels(unseen, r) for r in RANKS}
        groups = ["seen"] * len(seen) + ["unseen"] * len(unseen)
        results: dict[str, Any] = {}
        novelty: dict[str, Any] = {}
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
            correct: dict[str, list[bool]] = {}
            g = [groups[i] for i in q_rows]
            for rank in RANKS:
                preds = [[key_labels[rank][j] for j in row] for row in idx]
                refs = [query_labels[rank][i] for i in q_rows]
                rep = accuracy_report(preds, refs, k_values=k_values, groups=g)
                rep["n_seen"] = g.count("seen")
                rep["n_unseen"] = g.count("unseen")
                per_rank[rank] = rep
                correct[rank] = [p[0] == r for p, r in zip(preds, refs)]
            results[name] = per_rank
            if per_query:
                predictions[name] = _query_predictions(
                    list(seen["processid"]) + list(unseen["processid"]), list(keys["processid"]),
                    query_labels, key_labels, q_rows, g, idx[:, 0], scores[:, 0])
            dist = 1.0 - scores[:, 0]
            is_seen = np.array([x == "seen" for x in g])
            if is_seen.any() and (~is_seen).any():
                order = np.concatenate([np.flatnonzero(is_seen), np.flatnonzero(~is_seen)])
                cal = calibrate_novelty(
                    dist[is_seen].tolist(), dist[~is_seen].tolist(),
                    {r: [correct[r][i] for i in order] for r in RANKS},
                )
                novelty[name] = cal.to_dict()
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
        "novelty": novelty,
        "selection_score": float(np.mean(top1)) if top1 else 0.0,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if per_query:
        out["predictions"] = predictions
    if output_dir is not None:
        write_results(out, output_dir)
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
    if results.get("novelty"):
        lines += ["", "Novel-species detection (nearest-key distance, seen vs unseen queries):", "",
                  "| Query → Key | AUROC | threshold | TPR | FPR |", "|---|---|---|---|---|"]
        for pair, cal in results["novelty"].items():
            q, key = pair.split("->")
            lines.append(f"| {q} → {key} | {cal['auroc']:.3f} | {cal['threshold']:.4f} | {cal['tpr']:.3f} | {cal['fpr']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_accuracy(results: dict[str, Any], path: str | Path, kind: str = "macro", k: int = 1) -> Path:
    """PNG: top-k accuracy per rank, one colour per pair, solid = seen, dashed = unseen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    x = np.arange(len(RANKS))
    for n, (pair, per_rank) in enumerate(results["pairs"].items()):
        colour = f"C{n % 10}"
        label = pair.replace("->", " → ")
        ax.plot(x, [per_rank[r][f"seen_{kind}_top{k}"] for r in RANKS], "-o", color=colour, label=f"{label} seen")
        ax.plot(x, [per_rank[r][f"unseen_{kind}_top{k}"] for r in RANKS], "--s", color=colour, label=f"{label} unseen")
    ax.set_xticks(x, [r.capitalize() for r in RANKS])
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"{kind.capitalize()} top-{k} accuracy (%)")
    proto = results["protocol"]
    title = f"Zero-shot retrieval accuracy ({proto['query_splits'][0]} / {proto['query_splits'][1]} vs keys)"
    if proto.get("title"):
        title += f"\n{proto['title']}"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_results(results: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` (micro + macro top-1 table) and ``accuracy.png``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png"}
    paths["json"].write_text(results_json(results), encoding="utf-8")
    paths["markdown"].write_text(markdown_table(results), encoding="utf-8")
    plot_accuracy(results, paths["plot"])
    return paths


def results_json(results: dict[str, Any]) -> str:
    """``evaluate_model``'s results as strict JSON (inf/NaN, e.g. an undefined AUROC, become null)."""
    return json.dumps(_finite(results), indent=2, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    """Replace inf/NaN (e.g. an always-right rank threshold) with None so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
