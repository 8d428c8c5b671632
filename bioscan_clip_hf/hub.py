"""Publish a model folder on the Hugging Face Hub with a model card and its evaluation results.

Two jobs:

* :func:`render_model_card` builds ``README.md`` from ``hub_cards/model_card_template.md`` with
  ``huggingface_hub.ModelCard``/``ModelCardData``: lowercase YAML (license, ``library_name: transformers``,
  ``pipeline_tag: zero-shot-image-classification``, tags incl. ``custom_code``, datasets, base_model,
  metrics) and a ``model-index`` filled from the evaluation JSON (``eval_results.json`` written next to the
  weights, the output of :func:`bioscan_clip_hf.evaluation.evaluate_model`): one entry per query split and
  task, one top-1 metric per query→key pair, rank and micro/macro average.
* :func:`push_model_folder` stages exactly the files to upload (weights, config with ``auto_map``, Hub code
  files, processor files, key bank, card; never optimizer states or pickles) in a folder, then calls
  ``create_repo`` + ``upload_folder``. An existing card on the Hub is never overwritten unless
  ``overwrite_card=True``. A generated card pins the commit that holds the weights (second commit).

Example:
    >>> from bioscan_clip_hf.hub import push_model_folder
    >>> push_model_folder("outputs/demo/model", "my-org/bioscan-clip-demo", dry_run=True)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_dir
from .hub_cards import MODEL_CARD_TEMPLATE as DEFAULT_TEMPLATE
from .taxonomy import RANKS

EVALUATION_FILENAME = "eval_results.json"
CONVERSION_REPORT_FILENAME = "conversion_report.json"
CARD_FILENAME = "README.md"
# Files a model folder may hold that must not be published: training state, pickles (unsafe to load),
# caches and logs. Everything else (weights, code, processor files, key bank, card...) is uploaded.
EXCLUDE_PATTERNS = (
    ".*", "__pycache__", "*.pyc", "*.pt", "*.pth", "*.bin", "*.ckpt", "*.pkl", "*.pickle",
    "optimizer*", "scheduler*", "rng_state*", "checkpoint-*", "checkpoints", "runs", "logs", "wandb",
)
MODALITY_NAMES = {"image": "Image", "dna": "DNA", "text": "Text"}


class ModelFolderError(ValueError):
    """The folder is not a complete model folder (the message lists what is missing)."""


# ----------------------------------------------------------------------------------------------------
# Evaluation JSON -> flat records
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRecord:
    """One accuracy figure (percent): ``query`` features of ``query_split`` searched among ``key`` features."""

    query_split: str  # the seen or unseen query split, or "<seen>+<unseen>" for their harmonic mean
    group: str  # "seen", "unseen" or "hm" (harmonic mean of seen and unseen)
    query: str
    key: str
    rank: str
    k: int
    average: str  # "micro" or "macro"
    value: float


_METRIC_KEY = re.compile(r"^(seen|unseen|hm)_(micro|macro)_top(\d+)$")


def evaluation_records(evaluation: dict[str, Any]) -> list[EvalRecord]:
    """Flatten the JSON of :func:`bioscan_clip_hf.evaluation.evaluate_model` into :class:`EvalRecord` s.

    Reads ``protocol.query_splits`` (seen, unseen) and ``pairs["<query>-><key>"][rank]["<group>_<average>_top<k>"]``
    (percentages); ``None`` values (not computable) are skipped.

    Example:
        >>> evaluation_records({"protocol": {"query_splits": ["val", "val_unseen"]},
        ...     "pairs": {"dna->dna": {"order": {"seen_micro_top1": 100.0, "n_seen": 3}}}})[0].query_split
        'val'
    """
    try:
        seen_split, unseen_split = evaluation["protocol"]["query_splits"]
        pairs = evaluation["pairs"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError("not an evaluate_model result: needs protocol.query_splits (seen, unseen) and pairs") from err
    split_of = {"seen": seen_split, "unseen": unseen_split, "hm": f"{seen_split}+{unseen_split}"}
    records = []
    for pair, per_rank in pairs.items():
        if "->" not in pair:
            raise ValueError(f"evaluation pair {pair!r} is not '<query>-><key>'")
        query, key = pair.split("->", 1)
        for rank, metrics in per_rank.items():
            for name, value in metrics.items():
                match = _METRIC_KEY.match(name)
                if match and value is not None:
                    group, average, k = match.groups()
                    records.append(EvalRecord(split_of[group], group, query, key, rank, int(k), average, float(value)))
    return records


def _pair_name(query: str, key: str) -> str:
    return f"{MODALITY_NAMES.get(query, query)}→{MODALITY_NAMES.get(key, key)}"


def _eval_results(records: list[EvalRecord], dataset_id: str, dataset_name: str) -> list:
    """``EvalResult`` s for the card's ``model-index``: one entry per (task, query split), one metric per
    query→key pair, rank, k and micro/macro average."""
    from huggingface_hub import EvalResult

    group_text = {"seen": "seen species", "unseen": "unseen species", "hm": "harmonic mean of seen and unseen"}
    results = []
    for r in records:
        photo = r.query in ("image", "averaged", "concatenated")
        results.append(EvalResult(
            task_type="zero-shot-image-classification" if photo else "zero-shot-classification",
            task_name="Zero-shot taxonomic classification" + (" of photos" if photo else f" ({r.query} queries)"),
            dataset_type=dataset_id,
            dataset_name=f"{dataset_name} ({r.query_split}, {group_text[r.group]})",
            dataset_split=r.query_split,
            metric_type="accuracy",
            metric_value=r.value,
            metric_name=f"{_pair_name(r.query, r.key)} {r.rank} top-{r.k} {r.average} accuracy (%)",
            metric_config=f"{r.query}->{r.key}/{r.rank}/top{r.k}/{r.average}",
        ))
    return results


# ----------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------


def _tower_text(config: Any) -> str:
    parts = []
    if "image" in config.modalities:
        v = config.vision_config
        parts.append(f"image = ViT ({v.num_hidden_layers} layers, hidden {v.hidden_size}, "
                     f"patch {v.patch_size}, {v.image_size} px)")
    if "dna" in config.modalities:
        d = config.dna_config
        parts.append(f"DNA = BERT ({d.num_hidden_layers} layers, hidden {d.hidden_size}, "
                     f"{config.dna_kmer_size}-mer vocabulary {d.vocab_size})")
    if "text" in config.modalities:
        t = config.text_config
        parts.append(f"taxonomic text = BERT ({t.num_hidden_layers} layers, hidden {t.hidden_size}, "
                     f"vocabulary {t.vocab_size})")
    return "; ".join(parts) + "."


def _image_text(model_dir: Path) -> str:
    """The image preprocessing of the folder's saved image processor, in words (the card's "Images" line)."""
    from .image_processing_bioscan_clip import BioscanClipImageProcessor

    if not (model_dir / "preprocessor_config.json").is_file():
        return "no image processor is saved in this folder."
    p = BioscanClipImageProcessor.from_pretrained(model_dir)
    steps = []
    if p.do_resize:
        steps.append(f"shorter side resized to {p.size['shortest_edge']} px (bilinear with antialiasing, on the float "
                     "image, as the original's torchvision transform)")
    if p.do_center_crop:
        steps.append(f"centre crop {p.crop_size['height']}x{p.crop_size['width']} px")
    steps.append(f"scaled by {p.rescale_factor:.6g}" + (" to [0, 1]" if p.rescale_factor == 1 / 255 else "")
                 if p.do_rescale else "not rescaled")
    if p.do_normalize:
        steps.append(f"normalised per channel with mean {p.image_mean} and std {p.image_std}")
    else:
        steps.append("no mean/std normalisation")
    return ", ".join(steps) + "."


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def render_model_card(
    model_dir: str | Path,
    repo_id: str,
    revision: str = "main",
    evaluation: dict[str, Any] | str | Path | None = None,
    datasets: list[str] | None = None,
    base_model: list[str] | None = None,
    license: str = "mit",
    synthetic: bool | None = None,
    training: dict[str, Any] | None = None,
    training_text: str | None = None,
    template_path: str | Path | None = None,
):
    """Render the model card of ``model_dir`` (returns a ``huggingface_hub.ModelCard``).

    Args:
        model_dir: saved model folder (``config.json`` is read for the towers and tokenisation).
        repo_id: Hub id used in the usage snippet and as ``model-index`` name.
        revision: the revision the usage snippet pins (a commit hash once known).
        evaluation: the output of ``evaluate_model`` (dict or JSON path); defaults to ``model_dir/eval_results.json``.
        datasets: Hub dataset ids the model was trained on (YAML ``datasets``).
        base_model: Hub ids of the pretrained towers (YAML ``base_model``).
        license: Hub license id.
        synthetic: trained/evaluated on the synthetic demo data (adds a prominent notice); by default true
            when the evaluation's ``protocol.title`` mentions "synthetic".
        training: settings shown as a table (epochs, batch size, learning rate, hardware, wall-clock...).
        training_text: a paragraph on the training data and recipe.
        template_path: Jinja template; defaults to ``hub_cards/model_card_template.md``.

    Example:
        >>> card = render_model_card("outputs/demo/model", "my-org/bioscan-clip-demo")  # doctest: +SKIP
        >>> card.data.pipeline_tag  # doctest: +SKIP
        'zero-shot-image-classification'
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .configuration_bioscan_clip import BioscanClipConfig

    model_dir = Path(model_dir)
    config = BioscanClipConfig.from_pretrained(model_dir)
    if evaluation is None:
        evaluation = _read_json(model_dir / EVALUATION_FILENAME)
    elif not isinstance(evaluation, dict):
        evaluation = json.loads(Path(evaluation).read_text())
    conversion = _read_json(model_dir / CONVERSION_REPORT_FILENAME)
    protocol = (evaluation or {}).get("protocol") or {}
    eval_title = str(protocol.get("title") or "")
    if synthetic is None:
        synthetic = "synthetic" in eval_title.lower()

    # The model-index lists top-1 accuracy of the seen and unseen query splits (the paper's headline
    # figures); top-3/5 and harmonic means stay in the evaluation JSON and the body table.
    records = [r for r in (evaluation_records(evaluation) if evaluation else []) if r.k == 1 and r.group != "hm"]
    dataset_name = eval_title or (datasets[0] if datasets else "evaluation data")
    dataset_id = datasets[0] if datasets else ("synthetic" if synthetic else dataset_name)
    name = repo_id.split("/")[-1]
    tags = ["biology", "insects", "dna-barcoding", "taxonomy", "biodiversity", "clip", "zero-shot-image-classification",
            "custom_code", "bioscan"]
    if synthetic:
        tags.append("synthetic-data")
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=tags,
        datasets=datasets,
        base_model=base_model,
        metrics=["accuracy"],
        model_name=name,
        eval_results=_eval_results(records, dataset_id, dataset_name) if records else None,
    )

    if records:
        from .evaluation import markdown_table

        key_splits = " + ".join(protocol.get("key_splits") or []) or "the labelled reference records"
        intro = (f"The paper's protocol ({dataset_name}): each query (a photo or barcode of the query splits) takes "
                 f"the taxonomy of its nearest key by cosine similarity among {key_splits}, at every rank; micro "
                 f"accuracy is over queries, macro accuracy is the mean over the true classes present in the query "
                 f"split; H.M. is the harmonic mean of seen and unseen. Species of the unseen split were never seen in "
                 f"training (they are only in the keys). The `model-index` holds the top-1 figures in percent.")
        if synthetic:
            intro += " Measured on **synthetic** data: these numbers say nothing about real insects."
        table = markdown_table(evaluation, k=1)
    else:
        intro = "No evaluation results were attached to this model folder."
        table = ""
    if training_text is None:
        training_text = (
            "Converted from an original BIOSCAN-CLIP/CLIBD checkpoint; see the original paper and code for the "
            "training data (BIOSCAN-1M/5M) and recipe." if conversion else
            "Contrastive training of all tower pairs (symmetric InfoNCE, learnable temperature) with "
            "`training/train.py` of bioscan-clip-hf (Accelerate)."
        )
    provenance = None
    if conversion:
        provenance = (f"converted with `bioscan-clip convert-clibd` from `{Path(conversion['source']).name}` "
                      f"({conversion['layout']} layout; LoRA adapters merged: {conversion['merged_lora'] or 'none'}).")
    dna_pooling = {
        "softmax_mean": "softmax over features, mean over all tokens (the original)",
        "masked_softmax_mean": "softmax over features, mean over non-padding tokens",
        "masked_mean": "mean over non-padding tokens",
    }[config.dna_pooling]
    text_pooling = {"mean": "mean over all 20 positions (the original)",
                    "masked_mean": "mean over non-padding tokens"}[config.text_pooling]
    template = Path(template_path) if template_path else DEFAULT_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"Model card template not found: {template}; pass template_path")
    title = f"BIOSCAN-CLIP (CLIBD) — {name}"
    summary = (f"Insect photographs, DNA barcodes and taxonomic names in one embedding space "
               f"({' + '.join(MODALITY_NAMES[m] for m in config.modalities)}) for zero-shot taxonomic classification "
               f"of known and previously unseen species.")
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=title,
        summary=summary,
        synthetic=synthetic,
        repo_id=repo_id,
        revision=revision,
        towers=_tower_text(config),
        projection_dim=config.projection_dim,
        dna_pooling_text=dna_pooling,
        text_pooling_text=text_pooling,
        dna_max_length=config.dna_max_length,
        dna_kmer_size=config.dna_kmer_size,
        dna_stride=config.dna_stride,
        image_text=_image_text(model_dir) if "image" in config.modalities else None,
        package_version=__version__,
        provenance=provenance,
        has_text="text" in config.modalities,
        training_text=training_text,
        training_rows=[(str(k), str(v)) for k, v in (training or {}).items()],
        evaluation_intro=intro,
        evaluation_table=table,
    )


# ----------------------------------------------------------------------------------------------------
# Staging and pushing
# ----------------------------------------------------------------------------------------------------


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDE_PATTERNS)


def model_folder_files(folder: str | Path) -> list[Path]:
    """Relative paths of the files of ``folder`` that would be published (see ``EXCLUDE_PATTERNS``)."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(_excluded(part) for part in rel.parts):
            files.append(rel)
    return files


def check_model_folder(folder: str | Path) -> None:
    """Raise :class:`ModelFolderError` unless ``folder`` has a config with ``auto_map``, the code files it
    names, safetensors weights and processor files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a folder")
    problems = []
    config = _read_json(folder / "config.json")
    if config is None:
        problems.append("config.json")
    else:
        auto_map = config.get("auto_map") or {}
        if "AutoModel" not in auto_map:
            problems.append("config.json: auto_map.AutoModel (save the model with save_pretrained)")
        for ref in auto_map.values():
            module = str(ref).split("--")[-1].rsplit(".", 1)[0]
            if not (folder / f"{module}.py").is_file():
                problems.append(f"{module}.py (named in config.json auto_map)")
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        problems.append("model.safetensors")
    if not (folder / "processor_config.json").is_file():
        problems.append("processor_config.json (save the processor with save_pretrained)")
    if problems:
        raise ModelFolderError(f"{folder} is not a complete model folder; missing: " + ", ".join(dict.fromkeys(problems)))


@dataclass
class PushResult:
    """What :func:`push_model_folder` uploaded (or would upload, for a dry run)."""

    repo_id: str
    revision: str | None
    staging_dir: Path
    files: list[str]
    card: str  # how README.md was handled
    dry_run: bool
    commit_url: str | None = None
    card_commit_url: str | None = None
    notes: list[str] = field(default_factory=list)


def stage_model_folder(
    folder: str | Path,
    staging_dir: str | Path,
    repo_id: str,
    revision: str | None = None,
    card_options: dict[str, Any] | None = None,
    include_card: bool = True,
) -> str:
    """Copy the publishable files of ``folder`` into ``staging_dir`` and add the card.

    The card is the folder's own ``README.md`` when it has one, otherwise a card rendered with
    :func:`render_model_card` (``card_options`` are its keyword arguments). With ``include_card=False``
    no README.md is staged. Returns how the card was handled: ``"folder"``, ``"generated"`` or ``"none"``.
    The staging folder appears complete or not at all (:func:`~bioscan_clip_hf.atomic.atomic_dir`): a
    failure or a kill half-way leaves no partial folder that a later upload could take for a model.
    """
    folder, staging = Path(folder), Path(staging_dir)
    check_model_folder(folder)
    if staging.exists() and any(staging.iterdir()):
        raise FileExistsError(f"Staging folder {staging} is not empty")
    staging.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(staging) as tmp:
        for rel in model_folder_files(folder):
            if rel.as_posix() == CARD_FILENAME:
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / rel, tmp / rel)
        if not include_card:
            how = "none"
        elif (folder / CARD_FILENAME).is_file():
            shutil.copy2(folder / CARD_FILENAME, tmp / CARD_FILENAME)
            how = "folder"
        else:
            render_model_card(folder, repo_id, revision=revision or "main", **(card_options or {})).save(tmp / CARD_FILENAME)
            how = "generated"
    return how


def push_model_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    overwrite_card: bool = False,
    dry_run: bool = False,
    staging_dir: str | Path | None = None,
    commit_message: str | None = None,
    card_options: dict[str, Any] | None = None,
    token: str | None = None,
    api: Any = None,
) -> PushResult:
    """Upload a saved model folder (model + processor, optional key bank and evaluation JSON) to the Hub.

    Steps: check the folder; ``create_repo`` (``exist_ok``) and, for a ``revision`` other than main,
    ``create_branch``; stage the publishable files (see :func:`stage_model_folder`) without ``README.md`` if
    the repo already has one and ``overwrite_card`` is false; ``upload_folder`` the staging folder; if the card
    was generated, upload it again with the usage snippet pinned to the new commit. ``dry_run`` contacts
    nothing and keeps the staging folder, i.e. exactly the files the first commit would hold.

    Used by ``training/train.py`` when ``push_to_hub: true``.

    Example:
        >>> result = push_model_folder("outputs/demo/model", "my-org/bioscan-clip-demo", private=True)  # doctest: +SKIP
        >>> result.commit_url  # doctest: +SKIP
    """
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    check_model_folder(folder)  # before any network call
    own_staging = staging_dir is None
    staging = Path(tempfile.mkdtemp(prefix="bioscan-clip-push-")) if own_staging else Path(staging_dir)
    notes: list[str] = []
    try:
        if dry_run:
            card = stage_model_folder(folder, staging, repo_id, revision, card_options)
            notes.append("dry run: nothing was sent; if the repo already has a README.md it is kept unless "
                         "--overwrite-card (not checked in a dry run)")
            return PushResult(repo_id, revision, staging, [p.as_posix() for p in model_folder_files(staging)],
                              card, True, notes=notes)

        from huggingface_hub import HfApi

        api = api or HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        has_card = api.file_exists(repo_id, CARD_FILENAME, revision=revision, repo_type="model")
        keep_remote_card = has_card and not overwrite_card
        card = stage_model_folder(folder, staging, repo_id, revision, card_options, include_card=not keep_remote_card)
        files = [p.as_posix() for p in model_folder_files(staging)]
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(staging), revision=revision, repo_type="model",
            commit_message=commit_message or f"Upload BIOSCAN-CLIP model (bioscan-clip-hf {__version__})",
        )
        result = PushResult(repo_id, revision, staging, files,
                            "kept existing card on the Hub" if keep_remote_card else card, False,
                            commit_url=getattr(commit, "commit_url", None), notes=notes)
        oid = getattr(commit, "oid", None)
        if card == "generated" and oid:
            # The snippet in the card pins the commit that holds these weights and this code.
            pinned = render_model_card(folder, repo_id, revision=oid, **(card_options or {}))
            card_commit = api.upload_file(
                path_or_fileobj=str(pinned).encode("utf-8"), path_in_repo=CARD_FILENAME, repo_id=repo_id,
                revision=revision, repo_type="model", commit_message=f"Model card: pin revision {oid[:10]}",
            )
            result.card_commit_url = getattr(card_commit, "commit_url", None)
        return result
    finally:
        if own_staging and not dry_run:
            shutil.rmtree(staging, ignore_errors=True)


def _human_size(n: int) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    i = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    return f"{n / 1024**i:.1f} {units[i]}"


def add_push_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``push`` on the ``bioscan-clip`` command line."""
    p = subparsers.add_parser(
        "push",
        help="upload a model folder (weights, code, processor, key bank, card) to the Hugging Face Hub",
        description="Upload a saved model folder to the Hugging Face Hub with create_repo + upload_folder. "
        "A model card is generated from the folder (and its eval_results.json) unless the folder has a README.md; "
        "an existing card on the Hub is kept unless --overwrite-card. Log in first (`hf auth login` or HF_TOKEN).",
    )
    p.add_argument("model_dir", type=Path, help="saved model folder (save_pretrained of model and processor)")
    p.add_argument("--repo-id", required=True, help="target repository, ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    p.add_argument("--dry-run", action="store_true", help="stage and list the files, upload nothing")
    p.add_argument("--staging-dir", type=Path, default=None,
                   help="where to stage the upload (kept after a dry run; default: a temporary folder)")
    p.add_argument("--overwrite-card", action="store_true", help="replace an existing README.md on the Hub")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--dataset", action="append", default=None, dest="datasets",
                   help="Hub dataset id the model was trained on (repeatable; card YAML `datasets`)")
    p.add_argument("--base-model", action="append", default=None, dest="base_model",
                   help="Hub id of a pretrained tower (repeatable; card YAML `base_model`)")
    p.add_argument("--license", default="mit", help="Hub license id for the card (default mit)")
    p.set_defaults(func=_run_push)
    return p


def _run_push(args: argparse.Namespace) -> int:
    card_options = {"datasets": args.datasets, "base_model": args.base_model, "license": args.license}
    try:
        result = push_model_folder(
            args.model_dir, args.repo_id, private=args.private, revision=args.revision,
            overwrite_card=args.overwrite_card, dry_run=args.dry_run, staging_dir=args.staging_dir,
            commit_message=args.commit_message, card_options=card_options,
        )
    except (ModelFolderError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = f"{result.repo_id}@{result.revision or 'main'}"
    print(f"{'Would upload' if result.dry_run else 'Uploaded'} {len(result.files)} files to {target}:")
    for rel in result.files:
        print(f"  {rel}  ({_human_size((result.staging_dir / rel).stat().st_size)})" if result.dry_run else f"  {rel}")
    print(f"Model card: {result.card}")
    if result.dry_run:
        print(f"Staged in {result.staging_dir}")
    for url in (result.commit_url, result.card_commit_url):
        if url:
            print(url)
    for note in result.notes:
        print(f"Note: {note}")
    return 0
