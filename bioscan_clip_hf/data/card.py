"""Dataset card (``hub_cards/dataset_card_template.md``) and the ``push-dataset`` command.

The card's YAML declares ``configs``/``data_files`` per split and ``dataset_info.features``, so
``datasets.load_dataset(<repo>)`` needs no loading script.

Example:
    >>> push_dataset("demo_data", "me/bioscan-synthetic", dry_run=True)["files"][:1]  # doctest: +SKIP
    ['README.md']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..atomic import atomic_path
from ..hub_cards import DATASET_CARD_TEMPLATE as TEMPLATE_PATH
from .parquet import DATA_DIR, list_shards
from .schema import FEATURES, KEY_SEEN, SPLITS, key_splits

if TYPE_CHECKING:
    from .report import BuildReport

REPO_PLACEHOLDER = "<user>/<dataset>"
"""Stands for the Hub id in a built folder's card; ``push_dataset`` fills in the real one."""

SPLIT_ROLES = {
    "pretrain": "training only (no species label, or a species too rare to split)",
    "train": "training, and keys for seen species",
    "val": "validation queries, seen species",
    "test": "test queries, seen species",
    KEY_SEEN: "keys for seen species (never trained on)",
    "key_unseen": "keys for unseen species",
    "val_unseen": "validation queries, unseen species",
    "test_unseen": "test queries, unseen species",
    "other_heldout": "not used",
}
TRAIN_ROLE_BESIDE_KEY_SEEN = "training only, seen species (their keys are `key_seen`)"
KEY_SEEN_NOTE = ("The seen-species keys are a split of their own (`key_seen`, CLIBD's `seen_keys`): the "
                 "original trains on `pretrain` + `train` and never on the keys.")

CITATION_CLIBD = """@inproceedings{gong2025clibd,
  title     = {{CLIBD}: Bridging Vision and Genomics for Biodiversity Monitoring at Scale},
  author    = {Gong, ZeMing and Wang, Austin T. and Huo, Xiaoliang and Haurum, Joakim Bruslund and
               Lowe, Scott C. and Taylor, Graham W. and Chang, Angel X.},
  booktitle = {International Conference on Learning Representations},
  year      = {2025}
}"""
CITATION_5M = """@inproceedings{gharaee2024bioscan5m,
  title     = {{BIOSCAN-5M}: A Multimodal Dataset for Insect Biodiversity},
  author    = {Gharaee, Zahra and Lowe, Scott C. and Gong, ZeMing and others},
  booktitle = {Advances in Neural Information Processing Systems, Datasets and Benchmarks Track},
  year      = {2024}
}"""
CITATION_1M = """@inproceedings{gharaee2023bioscan1m,
  title     = {A Step Towards Worldwide Biodiversity Assessment: The {BIOSCAN-1M} Insect Dataset},
  author    = {Gharaee, Zahra and Gong, ZeMing and Pellegrino, Nicholas and others},
  booktitle = {Advances in Neural Information Processing Systems, Datasets and Benchmarks Track},
  year      = {2023}
}"""
CITATION_BOLD = """@article{ratnasingham2007bold,
  title   = {{BOLD}: The Barcode of Life Data System},
  author  = {Ratnasingham, Sujeevan and Hebert, Paul D. N.},
  journal = {Molecular Ecology Notes},
  volume  = {7},
  number  = {3},
  pages   = {355--364},
  year    = {2007}
}"""

SOURCES: dict[str, dict[str, Any]] = {
    "synthetic": {
        "pretty_name": "BIOSCAN-CLIP synthetic insects",
        "license": "mit",
        "tags": ["synthetic", "biology", "insects", "dna-barcoding", "taxonomy", "clip"],
        "task_categories": ["zero-shot-image-classification", "feature-extraction"],
        "description": "Drawn insects and DNA barcodes evolved along a generated taxonomy tree: body plan "
        "by order, palette by family, marking pattern by genus, finer variation by species; per-specimen "
        "pose, scale, lighting and background noise. Barcodes: a COI-like root mutated per rank "
        "(third codon positions fastest), 500-700 nt, occasional `N`.",
        "image_note": "drawn insect, JPEG, shorter side 256 px (like BIOSCAN `cropped_256`)",
        "license_note": "Generated data, MIT like the code that generates it.",
        "citations": [CITATION_CLIBD, CITATION_5M],
    },
    "bioscan5m": {
        "pretty_name": "BIOSCAN-5M (Parquet)",
        "license": "cc-by-3.0",
        "tags": ["biology", "insects", "dna-barcoding", "taxonomy", "bioscan", "clip"],
        "task_categories": ["zero-shot-image-classification", "image-classification", "feature-extraction"],
        "description": "The BIOSCAN-5M insect data set (images, DNA barcodes, taxonomy) converted to Parquet "
        "with the images embedded, keeping the release's official splits.",
        "image_note": "the release's image package (e.g. `cropped_256`), original JPEG bytes",
        "license_note": "BIOSCAN-5M images and metadata: CC BY 3.0 (see the BIOSCAN-5M release). "
        "Cite BIOSCAN-5M when using this data.",
        "citations": [CITATION_5M, CITATION_CLIBD],
    },
    "bioscan1m": {
        "pretty_name": "BIOSCAN-1M, CLIBD partitioning (Parquet)",
        "license": "cc-by-nc-sa-4.0",
        "tags": ["biology", "insects", "dna-barcoding", "taxonomy", "bioscan", "clip"],
        "task_categories": ["zero-shot-image-classification", "image-classification", "feature-extraction"],
        "description": "The BIOSCAN-1M insect data set with the CLIBD partition lists mapped onto BIOSCAN-5M "
        "split names (`no_split`/`single_species` -> `pretrain`, `train_seen` -> `train`, `seen_keys` -> "
        "`key_seen`, `val_seen` -> `val`, `test_seen` -> `test`, `*_unseen_keys` -> `key_unseen`).",
        "image_note": "the release's image package (e.g. `cropped_256`), original JPEG bytes",
        "license_note": "BIOSCAN-1M images (c) CBG Photography Group, Centre for Biodiversity Genomics, "
        "CC BY-NC-SA 4.0. Cite BIOSCAN-1M when using this data.",
        "citations": [CITATION_1M, CITATION_CLIBD],
    },
    "realcoi": {
        "pretty_name": "Real insect COI barcodes with taxonomy (DNA and text)",
        "license": "apache-2.0",
        "tags": ["biology", "insects", "dna-barcoding", "taxonomy"],
        "task_categories": ["feature-extraction", "zero-shot-classification"],
        "description": "Real insect COI-5P barcodes with their lineage (BOLD records shipped in the "
        "`nbitk==0.7.2` wheel), split by the paper's seen/unseen rules. No images.",
        "image_note": "always null (DNA and text only)",
        "license_note": "Records from the `nbitk` package (Apache-2.0, Naturalis Biodiversity Center); "
        "sequences originate from BOLD (boldsystems.org). Cite BOLD and nbitk.",
        "citations": [CITATION_BOLD, CITATION_CLIBD],
    },
}


def _size_category(total: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if total < limit:
            return label
    return "10M<n<100M"


def _split_sizes(shards: list[Path]) -> dict[str, int]:
    """``num_bytes`` (uncompressed column data, as ``datasets`` counts the Arrow table: from the Parquet row-group
    metadata, no data read) and ``download_size`` (the files) of one split's shards."""
    import pyarrow.parquet as pq

    num_bytes = 0
    for path in shards:
        metadata = pq.ParquetFile(path).metadata
        num_bytes += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return {"num_bytes": num_bytes, "download_size": sum(path.stat().st_size for path in shards)}


def _feature_yaml() -> list[dict[str, str]]:
    return [
        {"name": name, "dtype": "image" if name == "image" else "string"}
        for name in FEATURES
    ]


def write_dataset_card(
    folder: str | Path,
    report: BuildReport,
    source: str | None = None,
    repo_id: str = REPO_PLACEHOLDER,
    seed: int | None = None,
    provenance: str = "",
    **overrides: Any,
) -> Path:
    """Render the dataset card for a built folder into ``folder/README.md``.

    Args:
        folder: the built Parquet folder (its ``data/`` shards give the splits).
        report: the finished build report (counts, drops).
        source: a key of ``SOURCES`` (defaults to ``report.builder``).
        repo_id: Hub id shown in the usage snippet.
        seed: shown in the synthetic notice.
        provenance: how the data were built (command, inputs).
        overrides: replace any ``SOURCES`` field (``license``, ``pretty_name``...).

    Example:
        >>> write_dataset_card("demo_data", report, source="synthetic")  # doctest: +SKIP
    """
    folder = Path(folder)
    info = {**SOURCES[source or report.builder], **overrides}
    shards = list_shards(folder)
    splits = [split for split in SPLITS if split in shards]
    counts = {split: int(report.counts.get(split, 0)) for split in splits}
    keys = key_splits(splits)
    roles = {**SPLIT_ROLES, **({"train": TRAIN_ROLE_BESIDE_KEY_SEEN} if KEY_SEEN in splits else {})}
    sizes = {split: _split_sizes(shards[split]) for split in splits}
    card_data = DatasetCardData(
        license=info["license"],
        pretty_name=info["pretty_name"],
        task_categories=info["task_categories"],
        tags=info["tags"],
        size_categories=[_size_category(report.total)],
        configs=[{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*.parquet"} for s in splits],
        }],
        dataset_info={
            "features": _feature_yaml(),
            "splits": [{"name": s, "num_bytes": sizes[s]["num_bytes"], "num_examples": counts[s]} for s in splits],
            "download_size": sum(size["download_size"] for size in sizes.values()),
            "dataset_size": sum(size["num_bytes"] for size in sizes.values()),
        },
    )
    dropped = {reason: len(records) for reason, records in report.dropped.items()}
    dropped_summary = (
        "dropped " + ", ".join(f"{n} ({reason.replace('_', ' ')})" for reason, n in sorted(dropped.items()))
        if dropped else "no record dropped"
    )
    if not TEMPLATE_PATH.is_file():
        raise FileNotFoundError(f"dataset card template not found: {TEMPLATE_PATH}")
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        pretty_name=info["pretty_name"],
        synthetic=(source or report.builder) == "synthetic",
        seed=seed,
        description=info["description"],
        builder=report.builder,
        split_rows=[{"name": s, "count": counts[s], "role": roles[s]} for s in splits],
        key_splits=" + ".join(f"`{s}`" for s in keys),
        key_split_list=json.dumps(keys),
        key_note=KEY_SEEN_NOTE if KEY_SEEN in splits else "",
        all_splits=", ".join(splits),
        image_note=info["image_note"],
        repo_id=repo_id,
        provenance=provenance or f"Parameters: `{json.dumps(report.parameters)}`.",
        total=report.total,
        dropped_summary=dropped_summary,
        license_note=info["license_note"],
        citations="\n\n".join(info["citations"]),
    )
    path = folder / "README.md"
    with atomic_path(path) as tmp:
        card.save(tmp)
    return path


def push_dataset(
    folder: str | Path, repo_id: str, private: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Upload a built Parquet folder (shards, card, build report) to a Hub dataset repo.

    Args:
        folder: output of a builder (``data/*.parquet``, ``README.md``, ``build_report.json``).
        repo_id: target dataset repo, created if absent.
        private: create the repo private.
        dry_run: check and list what would be uploaded, without any network access.

    Returns:
        ``{"repo_id", "files", "readme", "url"}``: ``readme`` is the card as uploaded (with
        ``repo_id`` in its usage snippet); ``url`` is ``None`` for a dry run.

    Raises:
        FileNotFoundError: the folder has no shards or no card.

    Example:
        >>> push_dataset("demo_data", "me/bioscan-synthetic", dry_run=True)  # doctest: +SKIP
    """
    folder = Path(folder)
    shards = list_shards(folder)
    if not shards:
        raise FileNotFoundError(f"{folder}: no {DATA_DIR}/<split>-XXXXX-of-YYYYY.parquet shards to upload")
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise FileNotFoundError(f"{folder}: no README.md dataset card (the builders write one)")
    card = DatasetCard.load(card_path)
    declared = {entry["split"] for config in card.data.configs or [] for entry in config["data_files"]}
    if declared != set(shards):
        raise ValueError(f"{card_path} declares splits {sorted(declared)} but {folder} has {list(shards)}")
    files = ["README.md"] + [f"{DATA_DIR}/{p.name}" for paths in shards.values() for p in paths]
    if (folder / "build_report.json").is_file():
        files.append("build_report.json")
    readme = card_path.read_text().replace(REPO_PLACEHOLDER, repo_id)
    if dry_run:
        return {"repo_id": repo_id, "files": files, "readme": readme, "url": None}
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme.encode())]
    operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                   for name in files if name != "README.md"]
    commit = api.create_commit(repo_id, operations, repo_type="dataset",
                               commit_message="Upload BIOSCAN Parquet data set (bioscan-clip-hf)")
    return {"repo_id": repo_id, "files": files, "readme": readme, "url": getattr(commit, "repo_url", None)}
