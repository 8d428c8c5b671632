"""The sharded, resumable, parallel Parquet build shared by every builder.

A builder turns its source into schema records (``image`` may be pending as ``_image_key``, read
from an ``ImageStore`` inside the worker), drops what it can judge from metadata alone into a
``BuildReport``, and hands the records to ``run_build``. ``run_build`` cuts each split into shards,
builds missing shards in ``num_proc`` processes (reading and fully decoding each image once, so
unreadable images are caught), keeps finished shards when re-run after an interruption, and
writes ``build_report.json`` and the dataset card.

Resuming is safe against changed inputs: every shard's state records a fingerprint of its records
(the metadata content, line numbers included) and of its images (file size and modification time,
or a zip member's CRC and size; absent images count too). A re-run rebuilds every shard whose
fingerprint changed, so an edited barcode or a restored image is never hidden behind an old shard.

Example:
    >>> run_build({"train": records}, "out", report=BuildReport("synthetic"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..atomic import write_json
from .card import write_dataset_card
from .images import ImageStore, check_image_bytes
from .parquet import DATA_DIR, list_shards, shard_name, write_shard
from .report import BuildReport
from .schema import MAX_BARCODE_LENGTH, SPLITS

logger = logging.getLogger(__name__)

STATE_DIR = ".build"
"""Per-shard reports and the build plan live here, so a resumed build can rebuild the full report."""


@dataclass
class _Shard:
    split: str
    index: int
    count: int
    records: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index, self.count)


def _plan(records_by_split: Mapping[str, Sequence[dict[str, Any]]], shard_size: int) -> list[_Shard]:
    shards = []
    for split in SPLITS:
        records = list(records_by_split.get(split, []))
        if not records:
            continue
        count = -(-len(records) // shard_size)
        for index in range(count):
            shards.append(_Shard(split, index, count, records[index * shard_size : (index + 1) * shard_size]))
    return shards


_STORE: ImageStore | None = None
"""The image store of this (worker) process, set once by ``_set_store`` rather than sent with
every shard: a zip index of millions of entries is costly to pickle."""


def _set_store(store: ImageStore | None) -> None:
    global _STORE
    _STORE = store


def _digest(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def _fingerprint(shard: _Shard, store: ImageStore | None) -> str:
    """sha256 of the shard's records (inline image bytes by their hash) and of its image files' signatures."""
    digest = hashlib.sha256()
    for record in shard.records:
        digest.update(json.dumps(record, sort_keys=True, default=_digest).encode())
        key = record.get("_image_key")
        if key is not None and store is not None:
            digest.update(json.dumps(store.signature(key)).encode())
    return digest.hexdigest()


def _build_shard(job: tuple[_Shard, Path, bool, bool, str]) -> dict[str, Any]:
    """Worker: resolve and check images, write the shard and its report; return the report."""
    shard, out_dir, require_images, verify_images, fingerprint = job
    store = _STORE
    report = BuildReport(builder="shard")
    kept = []
    for source in shard.records:
        record = dict(source)
        key = record.pop("_image_key", None)
        if record.get("image") is None and key is not None and store is not None:
            data = store.read(key)
            if data is None:
                if require_images:
                    report.drop("missing_image", record["processid"], f"no image file {key}")
                    continue
            else:
                record["image"] = {"bytes": data, "path": key.rsplit("/", 1)[-1]}
        image = record.get("image")
        if image is None and require_images:
            report.drop("missing_image", record["processid"], "no image")
            continue
        if image is not None and verify_images:
            error = check_image_bytes(image["bytes"])
            if error is not None:
                report.drop("unreadable_image", record["processid"], f"{key or image.get('path')}: {error}")
                continue
        kept.append(record)
    if kept:  # an empty Parquet file would break readers; the shard report still marks it done
        write_shard(kept, out_dir / DATA_DIR / shard.name)
    else:  # a rebuilt shard whose records are now all dropped must not keep its old file
        (out_dir / DATA_DIR / shard.name).unlink(missing_ok=True)
    report.counts[shard.split] += len(kept)
    result = report.to_dict()
    # The shard counts as done only once its report (with the inputs' fingerprint) is complete.
    write_json(out_dir / STATE_DIR / f"{shard.name}.json", {**result, "fingerprint": fingerprint}, indent=None)
    return result


def _state(out_dir: Path, name: str) -> dict[str, Any] | None:
    """The finished-shard report of ``name``, or None (never finished, or unreadable)."""
    path = out_dir / STATE_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _remove_outdated(out_dir: Path, previous: Mapping[str, Any] | None, plan: Mapping[str, Any]) -> None:
    """Remove temp files of a killed run and the shards of the previous plan this plan no longer has
    (the inputs changed); refuse shards that no build of ours wrote."""
    for folder in (out_dir / DATA_DIR, out_dir / STATE_DIR):
        for leftover in folder.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)
    ours = set(plan["shards"])
    outdated = set(previous["shards"]) - ours if previous is not None else set()
    found = [p for files in list_shards(out_dir).values() for p in files if p.name not in ours]
    foreign = sorted(p.name for p in found if p.name not in outdated)
    if foreign:
        raise ValueError(f"{out_dir}/{DATA_DIR} holds shards that are not part of this build: {foreign[:5]}")
    for name in outdated:
        (out_dir / DATA_DIR / name).unlink(missing_ok=True)
        (out_dir / STATE_DIR / f"{name}.json").unlink(missing_ok=True)


def run_build(
    records_by_split: Mapping[str, Sequence[dict[str, Any]]],
    out_dir: str | Path,
    report: BuildReport,
    store: ImageStore | None = None,
    require_images: bool = True,
    verify_images: bool = True,
    shard_size: int = 5000,
    num_proc: int = 1,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``records_by_split`` as sharded Parquet under ``out_dir`` and return ``out_dir``.

    Args:
        records_by_split: schema records per split; a record may carry ``_image_key`` (read from
            ``store``) instead of ``image``.
        report: the builder's report so far (metadata-level drops, parameters); completed here.
        store: where ``_image_key`` images are read from.
        require_images: drop (and report) records without a readable image.
        verify_images: fully decode every image to catch corrupt files.
        shard_size: records per shard (before drops).
        num_proc: worker processes building shards in parallel.
        card: keyword arguments for the dataset card (``write_dataset_card``).

    Raises:
        ValueError: ``out_dir`` holds shards of a build with different parameters, or shards this
            build did not write.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    unknown = sorted(set(records_by_split) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; valid splits are: {', '.join(SPLITS)}")
    shards = _plan(records_by_split, shard_size)
    (out_dir / DATA_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    plan = {"builder": report.builder, "parameters": report.parameters, "shard_size": shard_size,
            "shards": [shard.name for shard in shards]}
    plan_path = out_dir / STATE_DIR / "plan.json"
    previous = json.loads(plan_path.read_text()) if plan_path.exists() else None
    if previous is not None and {k: v for k, v in previous.items() if k != "shards"} != json.loads(
            json.dumps({k: v for k, v in plan.items() if k != "shards"})):
        raise ValueError(
            f"{out_dir} holds a build with different parameters ({plan_path}); "
            "use a new output folder or delete this one"
        )
    _remove_outdated(out_dir, previous, plan)
    write_json(plan_path, plan, indent=1)

    for records in records_by_split.values():
        for record in records:
            barcode = record.get("dna_barcode")
            if barcode is not None and len(barcode) > MAX_BARCODE_LENGTH:
                report.notes[f"barcodes_longer_than_{MAX_BARCODE_LENGTH}_kept_whole"] += 1

    if store is not None:
        store.prepare()
    fingerprints = {shard.name: _fingerprint(shard, store) for shard in shards}
    done, todo = [], []
    for shard in shards:
        state = _state(out_dir, shard.name)
        if state is not None and state.get("fingerprint") != fingerprints[shard.name]:
            report.notes["shards_rebuilt_for_changed_inputs"] += 1
            state = None
        finished = state is not None and ((out_dir / DATA_DIR / shard.name).exists() or not state["total_records"])
        (done if finished else todo).append(shard)
        if finished:
            report.merge(state)
    if done:
        report.notes["shards_reused_from_previous_run"] += len(done)

    jobs = [(shard, out_dir, require_images, verify_images, fingerprints[shard.name]) for shard in todo]
    if jobs:  # until every shard is current again, the folder must not look like a finished build
        (out_dir / "build_report.json").unlink(missing_ok=True)
    total = sum(len(shard.records) for shard in todo)
    with tqdm(total=total, unit="rec", desc=f"building {report.builder}", disable=not jobs) as progress:
        if num_proc > 1 and len(jobs) > 1:
            with multiprocessing.get_context().Pool(min(num_proc, len(jobs)), _set_store, (store,)) as pool:
                for shard, result in zip(todo, pool.imap(_build_shard, jobs)):
                    report.merge(result)
                    progress.update(len(shard.records))
        else:
            _set_store(store)
            for shard, job in zip(todo, jobs):
                report.merge(_build_shard(job))
                progress.update(len(shard.records))
    report.seconds = time.perf_counter() - started
    report.write(out_dir / "build_report.json")
    if report.dropped:
        logger.warning("%s; ids and reasons in %s", report.summary(), out_dir / "build_report.json")
    write_dataset_card(out_dir, report=report, **(card or {}))
    return out_dir
