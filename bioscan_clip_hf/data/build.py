"""The sharded, resumable, parallel Parquet build shared by every builder.

A builder turns its source into schema records (``image`` may be pending as ``_image_key``, read
from an ``ImageStore`` inside the worker), drops what it can judge from metadata alone into a
``BuildReport``, and hands the records to ``run_build``. ``run_build`` cuts each split into shards,
builds missing shards in ``num_proc`` processes (reading and fully decoding each image once, so
unreadable images are caught), keeps finished shards when re-run after an interruption, and
writes ``build_report.json`` and the dataset card.

Example:
    >>> run_build({"train": records}, "out", report=BuildReport("synthetic"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

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


def _build_shard(job: tuple[_Shard, Path, bool, bool]) -> dict[str, Any]:
    """Worker: resolve and check images, write the shard and its report; return the report."""
    shard, out_dir, require_images, verify_images = job
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
    report.counts[shard.split] += len(kept)
    result = report.to_dict()
    state = out_dir / STATE_DIR / f"{shard.name}.json"
    tmp = state.with_name(state.name + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, state)  # the shard counts as done only once its report is complete
    return result


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
        ValueError: ``out_dir`` holds shards of a build with different parameters.
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
    if plan_path.exists() and json.loads(plan_path.read_text()) != json.loads(json.dumps(plan)):
        raise ValueError(
            f"{out_dir} holds a build with different parameters ({plan_path}); "
            "use a new output folder or delete this one"
        )
    stale = sorted(p.name for files in list_shards(out_dir).values() for p in files
                   if p.name not in set(plan["shards"]))
    if stale:
        raise ValueError(f"{out_dir}/{DATA_DIR} holds shards that are not part of this build: {stale[:5]}")
    plan_path.write_text(json.dumps(plan, indent=1))

    for records in records_by_split.values():
        for record in records:
            barcode = record.get("dna_barcode")
            if barcode is not None and len(barcode) > MAX_BARCODE_LENGTH:
                report.notes[f"barcodes_longer_than_{MAX_BARCODE_LENGTH}_kept_whole"] += 1

    done, todo = [], []
    for shard in shards:
        state = out_dir / STATE_DIR / f"{shard.name}.json"
        finished = state.exists() and (
            (out_dir / DATA_DIR / shard.name).exists() or not json.loads(state.read_text())["total_records"]
        )
        (done if finished else todo).append(shard)
    if done:
        report.notes["shards_reused_from_previous_run"] += len(done)
    for shard in done:
        report.merge(json.loads((out_dir / STATE_DIR / f"{shard.name}.json").read_text()))

    jobs = [(shard, out_dir, require_images, verify_images) for shard in todo]
    if store is not None and jobs:
        store.prepare()
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
