"""Reproduce the paper's zero-shot tables in one command: data -> training -> evaluation -> ours beside the paper's.

    # train with the paper's recipe (BIOSCAN-1M, 4 GPUs), evaluate on the test splits, compare
    python training/reproduce.py --paper clibd-bioscan1m --data data/bioscan1m --raw /datasets/BIOSCAN-1M \\
        --accelerate-args="--config_file training/accelerate/multi_gpu.yaml --num_processes 4" \\
        -- --dna_tower barcodebert-5mer/
    # check released weights instead of training (an original best.pth, or one of our model folders / Hub ids)
    python training/reproduce.py --paper clibd-bioscan1m --data data/bioscan1m --checkpoint best.pth
    python training/reproduce.py --paper clibd-bioscan5m --data data/bioscan5m --model ORG/NAME
    # every stage in a minute on the CPU: synthetic data, tiny model, 2 training steps
    python training/reproduce.py --paper clibd-bioscan1m --data outputs/synthetic-tiny --smoke

Stages, each recorded in ``OUT/manifest.json`` with the fingerprints of its inputs:

1. ``data``: a complete Parquet data set in ``--data`` is used as it is; otherwise it is built from
   the release folder ``--raw`` with the package's builders (resumable shard by shard), or, with
   ``--smoke``, the synthetic ``tiny`` set is generated in the paper's split layout. Fingerprint:
   every shard's name and Parquet footer (row counts, byte sizes, column statistics).
2. ``train`` (without ``--checkpoint`` / ``--model``): ``accelerate launch training/train.py`` with
   the paper's recipe (``training/configs/clibd_bioscan{1m,5m}.yaml``), training settings given after
   ``--`` on top, always ``--resume_from_checkpoint latest``: a killed run continues from its latest
   checkpoint. ``--accelerate-args`` go to the launcher (GPUs, nodes, mixed precision).
   ``--print-train-command`` prints the launch command instead (run it on every node of a cluster,
   then rerun this command to evaluate). A folder trained with other settings or data is refused.
   ``convert`` (with ``--checkpoint``): ``bioscan_clip_hf.convert_clibd`` into ``OUT/model``.
3. ``evaluate``: the paper's protocol (``bioscan_clip_hf.evaluation.evaluate_model``): queries
   ``test`` / ``test_unseen`` against the original's ``all_keys`` (BIOSCAN-1M: ``key_seen`` +
   ``key_unseen``, CLIBD's ``seen_keys`` + ``*_unseen_keys``; BIOSCAN-5M: ``train`` + ``key_unseen``;
   shipped with the paper's numbers), every query -> key pair; skipped
   when ``OUT/eval`` already holds the results of the same weights on the same data, re-run (with a
   message) when either changed.
4. ``compare``: ``OUT/comparison.{md,json,png}``: our table beside the paper's (shipped in
   ``bioscan_clip_hf/paper_results.json``), with the differences; values read off plots are marked ``~``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import `training.*` from the repo root, and take training/ itself off the
    # path so that training/evaluate.py cannot shadow the `evaluate` library.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bioscan_clip_hf.atomic import atomic_dir, write_json, write_text
from bioscan_clip_hf.paper import compare_with_paper, comparison_markdown, paper_names, paper_table, plot_comparison
from training.arguments import ConfigError, one_line, run_cli

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "training" / "train.py"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """How one published table is reproduced: the training config and what our setup does differently."""

    config: Path
    release: str  # "bioscan1m" | "bioscan5m": which builder reads the release folder
    notes: tuple[str, ...] = ()


RECIPES = {
    "clibd-bioscan1m": Recipe(REPO / "training/configs/clibd_bioscan1m.yaml", "bioscan1m", (
        "Training includes CLIBD's single_species records (species with one record, in `pretrain` beside "
        "no_split); whether the original trains on them is not confirmed by its code or docs.",
    )),
    "clibd-bioscan5m": Recipe(REPO / "training/configs/clibd_bioscan5m.yaml", "bioscan5m"),
}
K_VALUES = [1, 3, 5]
# Settings that change how a run is carried out, not what it learns; left out of the recipe hash.
NOT_RECIPE = ("dataset", "output_dir", "resume_from_checkpoint", "disable_tqdm", "report_to", "logging_steps",
              "dataloader_num_workers", "checkpointing_steps", "checkpoints_total_limit", "eval_batch_size",
              "push_to_hub", "hub_model_id", "hub_private")
# --smoke: the paper's recipe shrunk to a tiny model and 2 steps on the CPU (tests, CI).
SMOKE_SETTINGS = ("--model_preset", "tiny", "--image_tower", "none", "--dna_tower", "none", "--text_tower", "none",
                  "--per_device_train_batch_size", "8", "--max_train_steps", "2", "--streaming", "false",
                  "--mixed_precision", "no", "--image_augmentation", "false", "--eval_every", "0",
                  "--dataloader_num_workers", "0", "--checkpointing_steps", "none", "--report_to", "none",
                  "--eval_batch_size", "64")
SMOKE_ACCELERATE_CONFIG = REPO / "training/accelerate/cpu.yaml"
PAPER_IMAGE_TOWER = "google/vit-base-patch16-224"


class TrainingFailed(RuntimeError):
    """The training launch exited with an error; rerunning the same command resumes it."""


def protocol(paper: str) -> dict[str, Any]:
    """The evaluation protocol of ``paper``'s table: its query and key splits (shipped with its numbers,
    ``bioscan_clip_hf/paper_results.json``) and the k of top-k."""
    table = paper_table(paper)["protocol"]
    return {"query_splits": list(table["query_splits"]), "key_splits": list(table["key_splits"]), "k_values": K_VALUES}


def log(message: str) -> None:
    print(f"reproduce: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# the manifest and fingerprints


class Manifest:
    """``OUT/manifest.json``: per stage, the fingerprints of its inputs and whether it finished.

    Example:
        >>> manifest = Manifest(Path("outputs/reproduce/x"), "clibd-bioscan1m")  # doctest: +SKIP
        >>> manifest.set("data", fingerprint="ab12...")  # doctest: +SKIP
    """

    def __init__(self, out: Path, paper: str):
        self.path = out / MANIFEST
        self.content: dict[str, Any] = {"format": MANIFEST_FORMAT, "paper": paper, "stages": {}}
        if self.path.is_file():
            self.content = json.loads(self.path.read_text(encoding="utf-8"))
            if self.content.get("paper") != paper:
                raise ConfigError(f"{out} holds a reproduction of {self.content.get('paper')}, not {paper}: "
                                  "choose another --out")

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.content["stages"].get(stage)

    def set(self, stage: str, **entry: Any) -> None:
        self.content["stages"][stage] = {**entry, "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(self.path, self.content)

    def drop(self, stage: str) -> None:
        if self.content["stages"].pop(stage, None) is not None:
            write_json(self.path, self.content)


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``OUT/.lock`` for the whole run: two runs writing one folder would mix their results."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    # A lock file is never read, so it needs no atomic write; flock releases it when the process dies.
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another reproduce.py run is using {out}; wait for it or choose another --out") from None
        yield


def dataset_fingerprint(folder: Path) -> str:
    """sha256 (16 hex digits) over every shard's name and Parquet footer (row counts, byte sizes and
    column statistics per row group): it changes with any shard's content, without reading the
    80-190 GB of images a content hash would."""
    import pyarrow.parquet as pq

    from bioscan_clip_hf.data import list_shards

    digest = hashlib.sha256()
    for files in list_shards(folder).values():
        for path in files:
            digest.update(path.name.encode())
            digest.update(json.dumps(pq.read_metadata(path).to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """sha256 (16 hex digits) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def recipe_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The training settings that decide what a run learns (``NOT_RECIPE`` left out)."""
    return {k: v for k, v in sorted(settings.items()) if k not in NOT_RECIPE}


def recipe_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe_settings(settings), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _short(path: Path) -> str:
    """``path`` relative to the working folder when inside it (commands people read and rerun), else absolute."""
    relative = os.path.relpath(Path(path).resolve())
    return str(Path(path).resolve()) if relative.startswith("..") else relative


def _changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys[:6]) + (" ..." if len(keys) > 6 else "")


# ----------------------------------------------------------------------------------------------
# stage 1: data


@dataclass
class DataSet:
    """The Parquet data set the run uses, and what identifies its content."""

    path: Path
    fingerprint: str
    synthetic: bool
    counts: dict[str, int] = field(default_factory=dict)


def build_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished build (its report written and, when the build plan is
    there, every planned shard done)."""
    from bioscan_clip_hf.data.build import STATE_DIR

    if not (folder / "build_report.json").is_file():
        return False
    plan = folder / STATE_DIR / "plan.json"
    if not plan.is_file():
        return True  # copied or downloaded without the build's bookkeeping
    shards = json.loads(plan.read_text(encoding="utf-8"))["shards"]
    return all((folder / STATE_DIR / f"{name}.json").is_file() for name in shards)


def _near(root: Path, pattern: str, depth: int) -> list[Path]:
    """Matches of ``pattern`` at most ``depth`` folders below ``root`` (image folders hold millions of
    files: no recursive walk)."""
    return sorted({p for level in range(depth + 1) for p in root.glob("/".join(["*"] * level + [pattern]))})


def release_inputs(release: str, raw: Path) -> dict[str, Any]:
    """The builder's inputs found in a release folder: metadata table, cropped_256 images (zips or a
    folder, the package CLIBD trains on) and, for BIOSCAN-1M, the CLIBD partition lists.

    Raises:
        ConfigError: a file is missing (the message names what is expected where).
    """
    if not raw.is_dir():
        raise ConfigError(f"--raw {raw}: not a folder")
    name = "BIOSCAN_5M_Insect_Dataset_metadata.csv" if release == "bioscan5m" else "BIOSCAN_Insect_Dataset_metadata.tsv"
    metadata = _near(raw, name, 2)
    if not metadata:
        raise ConfigError(f"--raw {raw}: no {name} (searched two folders down); for another layout build the data "
                          "set with training/build_dataset.py and pass it as --data")
    images = _near(raw, "*cropped_256*.zip", 2) or [p for p in _near(raw, "cropped_256", 3) if p.is_dir()]
    if not images:
        raise ConfigError(f"--raw {raw}: no cropped_256 image package (zip files named *cropped_256*.zip, or a "
                          "folder named cropped_256, up to three folders down)")
    inputs: dict[str, Any] = {"metadata": metadata[0], "images": images}
    if release == "bioscan1m":
        partition = _near(raw, "CLIBD_partitioning.zip", 2) or [p for p in _near(raw, "CLIBD_partitioning", 2) if p.is_dir()]
        if not partition:
            raise ConfigError(f"--raw {raw}: no CLIBD partition lists (CLIBD_partitioning.zip or its folder, from "
                              "the Hub dataset bioscan-ml/clibd, data/BIOSCAN_1M/)")
        inputs["partition"] = partition[0]
    return inputs


def prepare_data(args: argparse.Namespace, recipe: Recipe, manifest: Manifest, needed: Sequence[str]) -> DataSet:
    """Stage 1: use, finish or build the data set in ``--data``; check it has the ``needed`` splits."""
    from bioscan_clip_hf.data import build_bioscan1m_dataset, build_bioscan5m_dataset, dataset_key_splits, list_shards

    folder: Path = args.data
    started = time.perf_counter()
    if build_complete(folder):
        log(f"[data] {folder}: complete")
    elif args.smoke:
        from bioscan_clip_hf.synthetic import generate_synthetic_dataset

        log(f"[data] generating the synthetic tiny set in {folder} ({recipe.release} layout)")
        generate_synthetic_dataset(folder, size="tiny", seed=0, layout=recipe.release)
    elif args.raw is not None:
        inputs = release_inputs(recipe.release, args.raw)
        log(f"[data] building {folder} from {args.raw} ({', '.join(f'{k} {v}' for k, v in inputs.items())}); "
            "an interrupted build resumes from its finished shards")
        try:
            if recipe.release == "bioscan1m":
                build_bioscan1m_dataset(inputs["metadata"], inputs["images"], inputs["partition"], folder,
                                        num_proc=args.num_proc)
            else:
                build_bioscan5m_dataset(inputs["metadata"], inputs["images"], folder, num_proc=args.num_proc)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"building {folder} from {args.raw}: {one_line(err)}") from None
    elif folder.exists():
        raise ConfigError(f"--data {folder} holds no finished data set (no build_report.json, or shards still to "
                          "build): pass --raw RELEASE_DIR to build or finish it")
    else:
        raise ConfigError(f"--data {folder} does not exist: pass --raw RELEASE_DIR (the {recipe.release} release) to "
                          "build it, or build it with training/build_dataset.py")
    shards = list_shards(folder)
    try:
        dataset_key_splits(folder)  # refuses a BIOSCAN-1M build from before key_seen
    except ValueError as err:
        raise ConfigError(f"--data {one_line(err)}") from None
    missing = [s for s in needed if s not in shards]
    if missing:
        raise ConfigError(f"--data {folder} has no split(s) {', '.join(missing)} (it has {', '.join(shards) or 'none'})")
    report = json.loads((folder / "build_report.json").read_text(encoding="utf-8"))
    data = DataSet(folder, dataset_fingerprint(folder), report.get("builder") == "synthetic", report.get("counts", {}))
    previous = manifest.get("data")
    if previous and previous["fingerprint"] != data.fingerprint:
        log(f"[data] {folder} changed since the last run (fingerprint {previous['fingerprint']} -> {data.fingerprint})")
    if not previous or (previous["path"], previous["fingerprint"]) != (str(folder.resolve()), data.fingerprint):
        manifest.set("data", path=str(folder.resolve()), fingerprint=data.fingerprint, synthetic=data.synthetic,
                     counts=data.counts, seconds=round(time.perf_counter() - started, 1))
    log(f"[data] {sum(data.counts.values())} records, fingerprint {data.fingerprint}"
        + (" (SYNTHETIC)" if data.synthetic else ""))
    return data


# ----------------------------------------------------------------------------------------------
# stage 2: training, or converting a released checkpoint


@dataclass
class TrainPlan:
    """The resolved training run: its settings, their hash and the launch command."""

    settings: dict[str, Any]
    hash: str
    command: list[str]
    display: str
    notes: list[str]


def plan_training(args: argparse.Namespace, recipe: Recipe, train_settings: Sequence[str]) -> TrainPlan:
    """Resolve the recipe + overrides with train.py's own parser (mistakes are one line before
    anything starts) and build the ``accelerate launch`` command."""
    from training.config import parse_args

    train_argv = ["--config", _short(recipe.config), "--dataset", _short(args.data), "--output_dir",
                  _short(args.out / "train"), *(SMOKE_SETTINGS if args.smoke else ()),
                  *(["--disable_tqdm"] if args.no_progress else []), *train_settings,
                  "--resume_from_checkpoint", "latest"]
    cfg = parse_args(train_argv)
    settings = cfg.to_dict()
    accelerate_args = shlex.split(args.accelerate_args)
    if args.smoke and not accelerate_args:
        accelerate_args = ["--config_file", _short(SMOKE_ACCELERATE_CONFIG)]
    command = [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args, str(TRAIN_SCRIPT), *train_argv]
    display = shlex.join(["accelerate", "launch", *accelerate_args, _short(TRAIN_SCRIPT), *train_argv])
    notes = []
    if args.smoke:
        notes.append("Smoke run: tiny model, 2 training steps, synthetic data; it checks the pipeline only.")
    else:
        if "dna" in cfg.modalities and not (cfg.dna_tower or cfg.dna_init or cfg.model_name_or_path):
            notes.append("The DNA tower was trained from random weights; the paper starts it from BarcodeBERT (5-mer, "
                         "pre-trained on CANADA-1.5M): pass `-- --dna_tower DIR` with it converted to a BertForMaskedLM.")
        if cfg.image_tower == PAPER_IMAGE_TOWER:
            notes.append(f"The image tower starts from {PAPER_IMAGE_TOWER}, the closest transformers checkpoint to the "
                         "paper's timm vit_base_patch16_224.augreg2_in21k_ft_in1k.")
    return TrainPlan(settings, recipe_hash(settings), command, display, notes)


def check_same_recipe(args: argparse.Namespace, plan: TrainPlan, manifest: Manifest) -> None:
    """Refuse to continue ``OUT/train`` with other settings than it was started with (before any
    other stage runs), as recorded in the manifest and in train.py's own ``train_config.yaml``.

    Raises:
        ConfigError: naming the settings that differ.
    """
    import yaml

    run = args.out / "train"
    previous = manifest.get("train")
    recorded = [("the manifest", previous["settings"])] if previous else []
    if (run / "train_config.yaml").is_file():  # what train.py itself saved last time it started
        recorded.append((str(run / "train_config.yaml"), yaml.safe_load((run / "train_config.yaml").read_text())))
    elif run.exists() and any(run.iterdir()) and not previous:
        raise ConfigError(f"{run} holds files of a run this command did not start: choose another --out")
    for source, settings in recorded:
        if recipe_hash(settings) != plan.hash:
            raise ConfigError(f"{run} was trained with other settings ({source}: "
                              f"{_changed(recipe_settings(settings), recipe_settings(plan.settings))}); continuing would "
                              f"mix two runs: choose another --out, or delete {run} to start over")


def train(args: argparse.Namespace, plan: TrainPlan, data: DataSet, manifest: Manifest) -> Path | None:
    """Stage 2: launch (or resume) training unless a finished run of the same recipe and data is there
    (:func:`check_same_recipe` ran first).

    Returns the best model folder, or ``None`` with ``--print-train-command``.

    Raises:
        ConfigError: ``OUT/train`` was trained on other data (continuing would mix two data sets).
        TrainingFailed: the launch exited with an error.
    """
    run = args.out / "train"
    best = run / "best_model"
    previous = manifest.get("train")
    if previous and previous["dataset_fingerprint"] != data.fingerprint:
        raise ConfigError(f"{run} was trained on other data (fingerprint {previous['dataset_fingerprint']}, now "
                          f"{data.fingerprint}); choose another --out, or delete {run} to start over")
    entry = {"settings": plan.settings, "recipe_hash": plan.hash, "dataset_fingerprint": data.fingerprint,
             "command": plan.display}
    if (run / "train_summary.json").is_file() and (best / "config.json").is_file():
        log(f"[train] {run}: finished earlier with this recipe ({plan.hash}); skipped")
        if not previous or previous.get("status") != "done":
            manifest.set("train", status="done", **entry)
        return best
    manifest.set("train", status="running", **entry)
    if args.print_train_command:
        log("[train] run this on every node (accelerate options per node), then rerun this command to evaluate:")
        print(plan.display)
        return None
    resumed = " (resuming its latest checkpoint)" if any((run / "checkpoints").glob("*")) else ""
    log(f"[train] {plan.display}{resumed}")
    started = time.perf_counter()
    code = subprocess.run(plan.command).returncode
    if code != 0:
        raise TrainingFailed(f"training exited with code {code}; rerun the same command to resume from the latest "
                             f"checkpoint in {run / 'checkpoints'}")
    if not (best / "config.json").is_file():
        raise TrainingFailed(f"training ended without writing {best}")
    manifest.set("train", status="done", **entry, seconds=round(time.perf_counter() - started, 1))
    return best


def check_weights_source(args: argparse.Namespace) -> None:
    """Fail on a mistyped ``--checkpoint`` / ``--model`` before the data stage, which may take an hour."""
    from bioscan_clip_hf.sources import SourceError, resolve_source

    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise ConfigError(f"--checkpoint {args.checkpoint}: no such file")
    if args.model is not None:
        try:
            resolve_source(args.model)
        except SourceError as err:
            raise ConfigError(one_line(err)) from None


def convert(args: argparse.Namespace, manifest: Manifest) -> Path:
    """Stage 2 for ``--checkpoint``: convert an original ``best.pth`` into ``OUT/model`` (again if it changed)."""
    from bioscan_clip_hf.convert_clibd import CheckpointError, convert_checkpoint

    checkpoint: Path = args.checkpoint
    target = args.out / "model"
    fingerprint = file_fingerprint(checkpoint)
    previous = manifest.get("convert")
    if previous and previous["checkpoint_fingerprint"] == fingerprint and (target / "config.json").is_file():
        log(f"[convert] {target}: converted earlier from this checkpoint ({fingerprint}); skipped")
        return target
    if previous:
        log(f"[convert] {target} came from checkpoint {previous['checkpoint_fingerprint']}; converting {checkpoint} "
            f"({fingerprint}) in its place")
    manifest.drop("convert")
    log(f"[convert] {checkpoint} -> {target}")
    try:
        with atomic_dir(target) as tmp:
            convert_checkpoint(checkpoint, tmp, text_tokenizer=args.text_tokenizer, overwrite=True)
    except CheckpointError as err:
        raise ConfigError(one_line(err)) from None
    except OSError as err:
        raise ConfigError(f"converting {checkpoint}: {one_line(err)} (the text tokenizer is --text-tokenizer "
                          f"{args.text_tokenizer}: give a local folder when offline)") from None
    manifest.set("convert", checkpoint=str(checkpoint.resolve()), checkpoint_fingerprint=fingerprint)
    return target


# ----------------------------------------------------------------------------------------------
# stage 3: evaluation


def load_model(source: str | Path):
    """Model and processor from a folder or Hub id (``bioscan_clip_hf.sources``), one-line errors naming ``source``."""
    from bioscan_clip_hf.sources import ModelLoadError, SourceError
    from bioscan_clip_hf.sources import load_model as load

    try:
        return load(source)
    except (SourceError, ModelLoadError) as err:
        raise ConfigError(one_line(err)) from None


def evaluate(args: argparse.Namespace, model_source: str | Path, data: DataSet, manifest: Manifest,
             title: str) -> dict[str, Any]:
    """Stage 3: the paper's protocol on the test splits; skipped when ``OUT/eval`` holds the results of
    the same weights on the same data. Returns ``evaluate_model``'s results plus their ``subject``."""
    from bioscan_clip_hf.evaluation import evaluate_model, write_results
    from bioscan_clip_hf.zero_shot import model_fingerprint

    model, processor = load_model(model_source)
    subject = {"model": str(model_source), "model_fingerprint": model_fingerprint(model),
               "modalities": list(model.config.modalities), "dataset": str(data.path),
               "dataset_fingerprint": data.fingerprint, "synthetic": data.synthetic}
    out = args.out / "eval"
    results_path = out / "results.json"
    previous = manifest.get("evaluate")
    inputs = {k: subject[k] for k in ("model_fingerprint", "dataset_fingerprint")}
    splits = protocol(args.paper)
    if previous and {k: previous.get(k) for k in inputs} == inputs and previous.get("protocol") == splits \
            and results_path.is_file():
        results = json.loads(results_path.read_text(encoding="utf-8"))
        if {k: results.get("subject", {}).get(k) for k in inputs} == inputs:
            log(f"[evaluate] {results_path}: results of these weights on this data; skipped")
            return results
    if previous:
        log(f"[evaluate] {out} held results of model {previous.get('model_fingerprint')} on data "
            f"{previous.get('dataset_fingerprint')}; evaluating model {subject['model_fingerprint']} on data "
            f"{data.fingerprint} in their place")
    manifest.drop("evaluate")
    log(f"[evaluate] {model_source} on {data.path}: queries {' + '.join(splits['query_splits'])}, keys "
        f"{' + '.join(splits['key_splits'])}")
    started = time.perf_counter()
    try:
        results = evaluate_model(
            model, processor, data.path, query_splits=splits["query_splits"], key_splits=splits["key_splits"],
            k_values=splits["k_values"], batch_size=args.eval_batch_size, device=args.device,
            title=title, progress=not args.no_progress,
        )
    except ValueError as err:
        raise ConfigError(f"evaluating {model_source} on {data.path}: {one_line(err)}") from None
    results["subject"] = subject
    write_results(results, out)  # results.json, results.md, accuracy.png, renamed into place together
    manifest.set("evaluate", **inputs, model=str(model_source), protocol=splits,
                 seconds=round(time.perf_counter() - started, 1))
    return results


# ----------------------------------------------------------------------------------------------
# stage 4: the side-by-side table


def compare(args: argparse.Namespace, results: dict[str, Any], notes: Sequence[str]) -> dict[str, Any]:
    """Stage 4: ``OUT/comparison.{json,md,png}`` from the results and the shipped paper table."""
    try:
        comparison = compare_with_paper(results, args.paper, aligned=args.aligned, subject=results["subject"],
                                        notes=notes)
    except ValueError as err:
        raise ConfigError(one_line(err)) from None
    write_json(args.out / "comparison.json", comparison)
    write_text(args.out / "comparison.md", comparison_markdown(comparison))
    plot_comparison(comparison, args.out / "comparison.png")
    log(f"[compare] {args.out / 'comparison.md'}, comparison.json, comparison.png")
    return comparison


# ----------------------------------------------------------------------------------------------
# the command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reproduce.py",
        usage="python training/reproduce.py --paper NAME --data DIR [options] [-- TRAIN_SETTINGS ...]",
        description="Reproduce the paper's zero-shot tables: build the data set, train with the paper's recipe "
        "(or convert / load released weights), evaluate with the paper's protocol, print ours beside the paper's. "
        "Settings after `--` go to training/train.py (e.g. -- --dna_tower DIR --per_device_train_batch_size 250).",
        epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--paper", required=True, choices=paper_names(), help="the published table to reproduce")
    parser.add_argument("--data", required=True, type=Path, help="Parquet data set folder (built here when missing)")
    parser.add_argument("--raw", type=Path, help="release folder to build --data from (BIOSCAN-1M: metadata TSV, "
                        "cropped_256 images, CLIBD_partitioning.zip; BIOSCAN-5M: metadata CSV, cropped_256 images)")
    parser.add_argument("--out", type=Path, help="run folder (default outputs/reproduce/PAPER-MODE)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="an original release's best.pth: convert and evaluate, no training")
    source.add_argument("--model", help="a model folder or Hub id of ours: evaluate, no training")
    parser.add_argument("--text-tokenizer", default="prajjwal1/bert-small",
                        help="text tokenizer for --checkpoint (folder or Hub id; default prajjwal1/bert-small)")
    parser.add_argument("--accelerate-args", default="", metavar="'ARGS'",
                        help="options for accelerate launch, one quoted string: "
                        "--accelerate-args='--config_file training/accelerate/multi_gpu.yaml --num_processes 8'")
    parser.add_argument("--print-train-command", action="store_true",
                        help="print the launch command instead of training (clusters: run it on every node)")
    parser.add_argument("--aligned", help="the paper's row to compare with (I+D+T, I+D, I+T, none, ...; "
                        "default: the one with the model's towers)")
    parser.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1), help="data-set build workers")
    parser.add_argument("--eval-batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="evaluation device")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, 2 CPU training steps, synthetic data when --data is missing (checks the pipeline)")
    parser.add_argument("--format", default="markdown", choices=("markdown", "json"), help="what stdout gets")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` at ``--`` into our arguments and train.py settings."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:cut])
    train_settings = argv[cut + 1:]
    mode = "checkpoint" if args.checkpoint else "model" if args.model else "smoke" if args.smoke else "train"
    if mode in ("checkpoint", "model") and (train_settings or args.smoke or args.print_train_command):
        raise ConfigError(f"--{mode} evaluates given weights: training settings, --smoke and --print-train-command "
                          "apply to training only")
    args.out = args.out or REPO / "outputs" / "reproduce" / f"{args.paper}-{mode}"
    return args, train_settings


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run every stage not yet done; returns the comparison (``None`` with ``--print-train-command``)."""
    args, train_settings = parse(sys.argv[1:] if argv is None else argv)
    recipe = RECIPES[args.paper]
    table = paper_table(args.paper)
    with exclusive(args.out):
        manifest = Manifest(args.out, args.paper)
        splits = protocol(args.paper)
        protocol_splits = [*splits["query_splits"], *splits["key_splits"]]
        notes = list(recipe.notes)
        if args.checkpoint or args.model:
            check_weights_source(args)
            data = prepare_data(args, recipe, manifest, protocol_splits)
            model = convert(args, manifest) if args.checkpoint else args.model
        else:
            from training.config import OPTIONAL_TRAIN_SPLITS

            plan = plan_training(args, recipe, train_settings)
            check_same_recipe(args, plan, manifest)
            for note in plan.notes:
                log(f"note: {note}")
            s = plan.settings
            needed = [x for x in s["train_splits"] if x not in OPTIONAL_TRAIN_SPLITS]
            needed += [*s["eval_query_splits"], *(s["eval_key_splits"] or []), *protocol_splits]
            data = prepare_data(args, recipe, manifest, list(dict.fromkeys(needed)))
            notes += plan.notes
            model = train(args, plan, data, manifest)
            if model is None:
                return None
        title = table["title"] + (" (SYNTHETIC data)" if data.synthetic else "")
        results = evaluate(args, model, data, manifest, title)
        comparison = compare(args, results, notes)
    if args.format == "json":
        sys.stdout.write(json.dumps(comparison, indent=2) + "\n")
    else:
        sys.stdout.write(comparison_markdown(comparison))
    return comparison


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="reproduce.py", expected=(TrainingFailed,)))
