"""Embedding in shards (bioscan_clip_hf/zero_shot/distributed.py): a killed run resumes from its
finished shards, and `accelerate launch` over 2 CPU processes builds exactly the 1-process bank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bioscan_clip_hf.zero_shot.distributed import Processes, run_sharded, shard_bounds

REPO = Path(__file__).resolve().parents[1]
ONE = Processes(0, 1, lambda: None, torch.device("cpu"))


class _Killed(Exception):
    pass


def _save(value, path: Path) -> None:
    path.write_text(json.dumps(value))


def _load(path: Path):
    return json.loads(path.read_text())


def test_shards_are_whole_batches_whatever_the_number_of_processes():
    assert shard_bounds(10, 4, shard_size=5) == [(0, 8), (8, 10)]
    assert shard_bounds(0, 4) == []
    assert shard_bounds(9, 3, shard_size=3) == [(0, 3), (3, 6), (6, 9)]


def test_a_killed_run_resumes_from_its_finished_shards(tmp_path):
    work, job = tmp_path / "work", {"what": "squares", "n": 10}
    calls: list[tuple[int, int]] = []

    def compute(start, end):
        if len(calls) == 2:
            raise _Killed  # the run dies while embedding the third shard
        calls.append((start, end))
        return [i * i for i in range(start, end)]

    with pytest.raises(_Killed):
        run_sharded(10, 2, work, job, compute, _save, _load, ONE, ".txt", shard_size=2)
    assert sorted(p.name for p in work.glob("shard-*")) == ["shard-000000.txt", "shard-000001.txt"]

    calls.clear()
    resumed = run_sharded(10, 2, work, job, lambda s, e: (calls.append((s, e)), [i * i for i in range(s, e)])[1],
                          _save, _load, ONE, ".txt", shard_size=2)
    assert calls == [(4, 6), (6, 8), (8, 10)]  # finished shards are not embedded again
    assert sum(resumed, []) == [i * i for i in range(10)]

    # shards of another job (other model, data or settings) are never mixed in
    calls.clear()
    other = run_sharded(10, 2, work, {**job, "n": 11}, lambda s, e: (calls.append((s, e)), [-1] * (e - s))[1],
                        _save, _load, ONE, ".txt", shard_size=2)
    assert len(calls) == 5 and sum(other, []) == [-1] * 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_bank_equals_the_one_process_bank(tmp_path, tiny_model_dir, zeroshot_data_dir):
    from bioscan_clip_hf.cli import main
    from bioscan_clip_hf.zero_shot import KeyBank

    common = ["build-bank", "--model", str(tiny_model_dir), "--data", str(zeroshot_data_dir), "--modality", "image",
              "--calibrate", "", "--batch-size", "4", "--shard-records", "8", "--num-workers", "0", "--no-progress",
              "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
              "-m", "bioscan_clip_hf.cli", *common, "--out", str(tmp_path / "two")]
    proc = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    one, two = KeyBank.load(tmp_path / "one"), KeyBank.load(tmp_path / "two")
    assert len(one) == 24 and one.fingerprint == two.fingerprint
    assert one.table.equals(two.table)  # same keys, same order
    assert torch.equal(one.embeddings, two.embeddings)
    assert not (tmp_path / ".two.partial").exists()  # the shards are removed once the bank is written
