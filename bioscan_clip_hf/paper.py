"""The paper's published accuracies (shipped as ``paper_results.json``) and our results beside them.

``paper_results.json`` holds CLIBD's zero-shot retrieval tables (macro top-1, test split, seen /
unseen / harmonic mean per rank and query -> key pair, for every alignment variant the paper
reports), each with its source. The BIOSCAN-1M table is exact (the project's published table); the
BIOSCAN-5M one was read off plots (``read_off_plot``, about ±1.5 points), and every value taken
from it is marked ``~`` in the comparison.

:func:`compare_with_paper` puts the results of :func:`bioscan_clip_hf.evaluation.evaluate_model`
beside the paper's row for the same aligned modalities; :func:`comparison_markdown` and
:func:`plot_comparison` render it. ``training/reproduce.py`` runs the whole reproduction.

Example:
    >>> paper = paper_table("clibd-bioscan1m")
    >>> row = next(r for r in paper["rows"] if r["aligned"] == "I+D+T" and r["pair"] == "dna->dna"
    ...            and r["rank"] == "species")
    >>> row["seen"], row["unseen"], row["hm"]
    (95.6, 90.4, 92.9)
    >>> comparison = compare_with_paper(results, "clibd-bioscan1m")  # doctest: +SKIP
    >>> print(comparison_markdown(comparison))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .atomic import write_figure
from .metrics.taxonomic_accuracy.topk import harmonic_mean
from .taxonomy import RANKS

__all__ = ["PAPER_FILE", "aligned_for", "compare_with_paper", "comparison_markdown", "paper_names", "paper_table",
           "plot_comparison"]

PAPER_FILE = "paper_results.json"
GROUPS = ("seen", "unseen", "hm")
_ALIGNED = {frozenset({"image", "dna", "text"}): "I+D+T", frozenset({"image", "dna"}): "I+D",
            frozenset({"image", "text"}): "I+T"}


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(PAPER_FILE).read_text(encoding="utf-8"))


def paper_names() -> tuple[str, ...]:
    """The tables shipped with the package, e.g. ``("clibd-bioscan1m", "clibd-bioscan5m")``."""
    return tuple(_document()["papers"])


def paper_table(name: str) -> dict[str, Any]:
    """One published table: ``title, dataset, metric, metric_label, protocol, read_off_plot, source, rows``.

    Raises:
        ValueError: ``name`` is not a shipped table (the message lists them).
    """
    papers = _document()["papers"]
    if name not in papers:
        raise ValueError(f"no published table {name!r}; the package ships {', '.join(papers)}")
    return papers[name]


def aligned_for(modalities: Iterable[str]) -> str:
    """The paper's name for a model aligning ``modalities`` (``I+D+T``, ``I+D`` or ``I+T``).

    Raises:
        ValueError: the paper reports no model with these towers (e.g. DNA + text).
    """
    towers = frozenset(modalities)
    if towers not in _ALIGNED:
        raise ValueError(f"the paper reports no model aligning {sorted(towers)}; it has image+dna+text, image+dna "
                         "and image+text models")
    return _ALIGNED[towers]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def compare_with_paper(
    results: Mapping[str, Any],
    paper: str,
    aligned: str | None = None,
    subject: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Our accuracies beside the paper's, row by row, with the differences (ours - paper).

    Args:
        results: ``evaluate_model``'s output on the paper's query and key splits.
        paper: a name from :func:`paper_names`.
        aligned: the paper's variant to compare with (``I+D+T``, ``I+D``, ``I+T``, ``none``...);
            default: the variant with the towers ``results`` were computed with
            (``subject["modalities"]``, else ``I+D+T``).
        subject: what was evaluated (model, fingerprints, data set, ``synthetic``); copied into the
            comparison so that it names its own inputs.
        notes: known differences from the paper's setup, printed under the table.

    Returns:
        ``{"paper", "title", "aligned", "metric", "metric_label", "read_off_plot", "uncertainty",
        "source", "protocol", "subject", "notes", "missing_pairs", "rows": [{"rank", "pair",
        "ours": {seen, unseen, hm} | None, "paper": {seen, unseen, hm}, "difference": {...} | None,
        "paper_hm_derived": bool}]}``. Our values are rounded to one decimal like the paper's, and
        the difference is taken between the rounded values. A paper H.M. the source does not give is
        derived from its seen and unseen values (``paper_hm_derived``).

    Raises:
        ValueError: unknown paper or variant, or ``results`` were computed on other query / key
            splits than the paper's (a comparison across splits would be meaningless).
    """
    table = paper_table(paper)
    subject = dict(subject or {})
    if aligned is None:
        aligned = aligned_for(subject["modalities"]) if subject.get("modalities") else "I+D+T"
    variants = list(dict.fromkeys(r["aligned"] for r in table["rows"]))
    if aligned not in variants:
        raise ValueError(f"{paper} has no {aligned!r} row; it reports {', '.join(variants)}")
    protocol = results["protocol"]
    for key in ("query_splits", "key_splits"):
        if list(protocol[key]) != list(table["protocol"][key]):
            raise ValueError(f"results have {key} {list(protocol[key])}, the paper's {paper} table "
                             f"{table['protocol'][key]}: evaluate on the paper's splits to compare")
    metric = table["metric"]  # e.g. macro_top1 -> seen_macro_top1, unseen_macro_top1, hm_macro_top1
    wanted = [r for r in table["rows"] if r["aligned"] == aligned]
    pairs = list(dict.fromkeys(r["pair"] for r in wanted))
    rows = []
    for rank in RANKS:
        for pair in pairs:
            published = next((r for r in wanted if r["pair"] == pair and r["rank"] == rank), None)
            if published is None:
                continue
            theirs = {g: published[g] for g in GROUPS}
            derived = theirs["hm"] is None
            if derived:
                theirs["hm"] = round(harmonic_mean(theirs["seen"], theirs["unseen"]), 1)
            measured = results["pairs"].get(pair, {}).get(rank)
            ours = {g: _rounded(measured[f"{g}_{metric}"]) for g in GROUPS} if measured else None
            difference = {g: round(ours[g] - theirs[g], 1) for g in GROUPS} if ours else None
            rows.append({"rank": rank, "pair": pair, "ours": ours, "paper": theirs, "difference": difference,
                         "paper_hm_derived": derived})
    return {
        "paper": paper,
        "title": table["title"],
        "aligned": aligned,
        "metric": metric,
        "metric_label": table["metric_label"],
        "read_off_plot": bool(table["read_off_plot"]),
        "uncertainty": table.get("uncertainty"),
        "source": table["source"],
        "protocol": dict(table["protocol"]),
        "subject": subject,
        "notes": list(notes),
        "missing_pairs": [p for p in pairs if p not in results["pairs"]],
        "rows": rows,
    }


def _cell(value: float | None, approximate: bool = False, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return f"~{text}" if approximate else text


def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """The side-by-side table: per rank and pair, seen / unseen / H.M., ours, the paper's and the difference."""
    approx = comparison["read_off_plot"]
    subject = comparison["subject"]
    title = f"{comparison['title']}: ours vs the paper ({comparison['aligned']}), {comparison['metric_label']}"
    lines = [f"### {title}", ""]
    if subject.get("synthetic"):
        lines += ["**SYNTHETIC data**: this run checks the pipeline; its differences from the paper say nothing "
                  "about the method.", ""]
    described = [f"{k} `{subject[k]}`" for k in ("model", "model_fingerprint", "dataset", "dataset_fingerprint")
                 if subject.get(k)]
    if described:
        lines += ["Ours: " + ", ".join(described) + ".", ""]
    head = " | ".join(f"{g} ours | {g} paper | Δ" for g in ("Seen", "Unseen", "H.M."))
    lines += [f"| Taxon | Query → Key | {head} |", "|---|---|" + "---|" * 9]
    previous_rank = None
    for row in comparison["rows"]:
        cells = []
        for group in GROUPS:
            ours = row["ours"][group] if row["ours"] else None
            diff = row["difference"][group] if row["difference"] else None
            cells += [_cell(ours), _cell(row["paper"][group], approx or (group == "hm" and row["paper_hm_derived"])),
                      _cell(diff, approx, signed=True)]
        label = row["rank"].capitalize() if row["rank"] != previous_rank else ""
        previous_rank = row["rank"]
        query, key = row["pair"].split("->")
        lines.append(f"| {label} | {query} → {key} | " + " | ".join(cells) + " |")
    lines.append("")
    if approx:
        lines.append(f"~ = read off a plot (about ±{comparison['uncertainty']} points), not a published table value; "
                     "the paper's H.M. is derived from those readings.")
    lines.append(f"Paper: {comparison['source']}")
    if comparison["missing_pairs"]:
        lines.append(f"Not evaluated (model or data lack the towers): {', '.join(comparison['missing_pairs'])}.")
    lines += [f"Note: {note}" for note in comparison["notes"]]
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: Mapping[str, Any], path: str | Path) -> Path:
    """PNG, one panel per query -> key pair: ours (solid) and the paper (dashed, with the reading
    uncertainty as error bars where read off a plot), seen and unseen, per rank. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pairs = list(dict.fromkeys(r["pair"] for r in comparison["rows"]))
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs), 3.6), dpi=120, sharey=True, squeeze=False)
    error = comparison["uncertainty"] if comparison["read_off_plot"] else None
    for ax, pair in zip(axes[0], pairs):
        rows = {r["rank"]: r for r in comparison["rows"] if r["pair"] == pair}
        ranks = [rank for rank in RANKS if rank in rows]
        x = np.arange(len(ranks))
        for group, colour, marker in (("seen", "C0", "o"), ("unseen", "C3", "s")):
            paper = [rows[r]["paper"][group] for r in ranks]
            ours = [rows[r]["ours"][group] if rows[r]["ours"] else np.nan for r in ranks]
            ax.errorbar(x, paper, yerr=error, fmt=f"--{marker}", color=colour, mfc="none", capsize=3,
                        label=f"paper {group}")
            ax.plot(x, ours, f"-{marker}", color=colour, label=f"ours {group}")
        ax.set_xticks(x, [r.capitalize() for r in ranks])
        ax.set_title(pair.replace("->", " → "), fontsize=9)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(comparison["metric_label"])
    axes[0][-1].legend(fontsize=7, loc="lower left")
    title = f"{comparison['title']} ({comparison['aligned']})"
    if comparison["read_off_plot"]:
        title += ": paper values read off plots"
    if comparison["subject"].get("synthetic"):
        title += "\nours on SYNTHETIC data"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return write_figure(path, fig)
