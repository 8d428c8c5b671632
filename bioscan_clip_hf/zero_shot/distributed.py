"""Embedding many records in shards: spread over processes / GPUs, resumable after a kill.

``accelerate launch -m bioscan_clip_hf.cli build-bank ...`` (or ``embed``) starts one process per
device; :func:`run_sharded` cuts the work into fixed shards of ``shard_size`` records, deals them
out round-robin (process ``r`` of ``P`` takes shards ``r, r + P, ...``), and every process writes each
finished shard into the work folder at once (atomically). After a barrier the main process reads the
shards back in order and merges them; the other processes are done. A plain (one-process) run
goes through the same shards, so a killed run of either kind resumes where it stopped: finished
shards are kept and skipped, and the work folder is removed only once the merged result is written.

The shard boundaries do not depend on the number of processes and are multiples of the batch size,
so every record is embedded in the same batch whatever the number of processes: the merged result
equals the one-process result exactly (tests/test_zeroshot_distributed.py).

A ``manifest.json`` names the job (model fingerprint, inputs, settings). Shards left by another job
(other model, data or settings) are never mixed in: the folder is emptied and the job starts over.

Example::

    accelerate launch --num_processes 2 -m bioscan_clip_hf.cli build-bank --model M --data D --out bank/
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..atomic import atomic_path, write_json

__all__ = [
    "Processes", "SHARD_RECORDS", "digest", "embed_queries", "embed_records", "finish", "processes", "run_sharded",
    "shard_bounds", "work_dir_for",
]

# Records per shard (rounded up to a multiple of the batch size): small enough that a kill loses
# minutes of work, large enough that the per-shard file and manifest cost nothing.
SHARD_RECORDS = 4096
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes of one run (accelerate's ``PartialState``)."""

    index: int
    count: int
    wait: Callable[[], None]
    device: Any  # torch.device of this process

    @property
    def is_main(self) -> bool:
        return self.index == 0


def processes(device: str = "auto") -> Processes:
    """The processes of this run: one unless started by ``accelerate launch`` (or torchrun).

    ``device`` (the CLI's ``--device``): on the CPU every process computes on the CPU and they talk
    over gloo; on GPUs each process takes its own GPU.
    """
    from accelerate import PartialState

    from .encode import resolve_device

    wanted = resolve_device(device)
    state = PartialState(cpu=wanted.type == "cpu")
    own = state.device if state.device.type == wanted.type else wanted
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone, own)


def shard_bounds(n_records: int, batch_size: int, shard_size: int = SHARD_RECORDS) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n_records)`` in shards of a whole number of batches.

    Example:
        >>> shard_bounds(10, 4, shard_size=5)
        [(0, 8), (8, 10)]
    """
    size = max(1, -(-shard_size // batch_size)) * batch_size
    return [(start, min(n_records, start + size)) for start in range(0, n_records, size)]


def work_dir_for(output: str | Path) -> Path:
    """The work folder of a run writing ``output``: a hidden sibling, ``.<name>.partial``."""
    output = Path(output)
    return output.parent / f".{output.name}.partial"


def digest(items: Any) -> str:
    """sha256 (16 hex digits) of a JSON-able value: names a job's inputs in its manifest."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare_work_dir(work_dir: Path, job: dict[str, Any], procs: Processes) -> None:
    """Main process: make the work folder for ``job``, emptying one left by another job; then all wait."""
    if procs.is_main:
        manifest = work_dir / MANIFEST
        job_id = digest(job)
        if manifest.is_file():
            try:
                previous = json.loads(manifest.read_text(encoding="utf-8")).get("job_id")
            except (OSError, ValueError):
                previous = None
            if previous != job_id:
                print(f"bioscan-clip: {work_dir} holds shards of another run; starting over", file=sys.stderr)
                shutil.rmtree(work_dir)
        if not manifest.is_file():
            work_dir.mkdir(parents=True, exist_ok=True)
            write_json(manifest, {"job_id": job_id, "job": job})
    procs.wait()


def run_sharded(
    n_records: int,
    batch_size: int,
    work_dir: Path,
    job: dict[str, Any],
    compute: Callable[[int, int], Any],
    save: Callable[[Any, Path], None],
    load: Callable[[Path], Any],
    procs: Processes,
    suffix: str,
    shard_size: int | None = None,
) -> list[Any] | None:
    """Compute every shard once over all processes; on the main process return the shards' results in order.

    Args:
        n_records, batch_size: what is cut into shards (:func:`shard_bounds`).
        work_dir: folder of the shard files (kept until the caller calls :func:`finish`).
        job: JSON-able description of the work; shards of another job are discarded.
        compute: ``compute(start, end)`` -> result of records ``start:end``.
        save / load: write a result to a path / read it back (``save`` gets a temporary path in the
            work folder, renamed onto the shard's name only once complete).
        procs: :func:`processes`. suffix: file suffix of a shard (``".safetensors"``...).
        shard_size: records per shard (default :data:`SHARD_RECORDS`).

    Returns:
        The list of shard results on the main process, None on the others.
    """
    _prepare_work_dir(work_dir, job, procs)
    bounds = shard_bounds(n_records, batch_size, shard_size or SHARD_RECORDS)
    path = lambda number: work_dir / f"shard-{number:06d}{suffix}"  # noqa: E731
    mine = range(procs.index, len(bounds), procs.count)
    done = sum(path(i).is_file() for i in mine)
    if done:
        print(f"bioscan-clip: resuming: {done} of {len(mine)} shards of process {procs.index} already done", file=sys.stderr)
    for number in mine:
        if not path(number).is_file():
            result = compute(*bounds[number])
            with atomic_path(path(number)) as tmp:
                save(result, tmp)
    procs.wait()
    if not procs.is_main:
        return None
    return [load(path(number)) for number in range(len(bounds))]


def finish(work_dir: Path, procs: Processes) -> None:
    """Remove the work folder once the merged result is safely written (main process)."""
    if procs.is_main:
        shutil.rmtree(work_dir, ignore_errors=True)


def _save_features(result: tuple, path: Path) -> None:
    from safetensors.torch import save_file

    feats, errors = result
    save_file({"features": feats.contiguous()}, str(path), metadata={"errors": json.dumps(errors)})


def _load_features(path: Path) -> tuple:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_tensor("features"), json.loads(f.metadata()["errors"])


def embed_records(
    model,
    processor,
    dataset,
    modality: str,
    work_dir: Path,
    job: dict[str, Any],
    procs: Processes,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    dtype=None,
    shard_size: int | None = None,
):
    """:func:`~.encode.encode_dataset` of a ``datasets.Dataset`` in shards over ``procs``.

    Returns ``(features, errors)`` on the main process (features in ``dtype``, default float32, filled
    shard by shard into one tensor, so memory holds one copy), None on the others.
    """
    import torch

    from .encode import encode_dataset

    def compute(start: int, end: int) -> tuple:
        return encode_dataset(model, processor, dataset.select(range(start, end)), modality, batch_size, progress, num_workers)

    shards = run_sharded(len(dataset), batch_size, work_dir, job, compute, _save_features, _load_features, procs,
                         ".safetensors", shard_size)
    if shards is None:
        return None
    dim = next((f.shape[1] for f, _ in shards if f.shape[1]), 0)
    feats = torch.zeros(len(dataset), dim, dtype=dtype or torch.float32)
    errors: list[str | None] = []
    for part, part_errors in shards:
        if part.shape[1]:
            feats[len(errors) : len(errors) + len(part_errors)] = part
        errors += part_errors
    return feats, errors


def embed_queries(classifier, queries: list, work_dir: Path, job: dict[str, Any], procs: Processes,
                  batch_size: int = 32, shard_size: int | None = None, **embed_options: Any):
    """``classifier.embed(queries=...)`` in shards over ``procs``: the embedding table on the main
    process (rows in the order of ``queries``), None on the others.

    Check the queries first (:func:`~.specimens.check_queries`), so that ids are made unique over all
    of them rather than within each shard. ``embed_options``: passed to ``classifier.embed``.
    """
    import pandas as pd

    def compute(start: int, end: int):
        return classifier.embed(queries=queries[start:end], batch_size=batch_size, **embed_options)

    shards = run_sharded(len(queries), batch_size, work_dir, job, compute, lambda t, p: t.to_parquet(p, index=False),
                         pd.read_parquet, procs, ".parquet", shard_size)
    if shards is None:
        return None
    return pd.concat(shards, ignore_index=True) if shards else compute(0, 0)
