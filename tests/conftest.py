"""Shared fixtures: the real data folder, a seeded tiny model and processor, and a saved copy of both.

Other areas may append fixtures at the end of this file; the ones here are owned by core.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread (export OMP_NUM_THREADS to change it, also for subprocesses): the tiny models
# gain nothing from more, and on a busy machine torch's spinning thread pool made a tiny
# forward+backward take 10 s with 2 threads instead of 0.2 s with 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

import torch  # noqa: E402  (after the thread settings above)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (real COI barcodes and BIOSCAN-1M photos)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def real_photo_paths(shared_data_dir: Path) -> list[Path]:
    """The 23 real BIOSCAN-1M photographs (18 full-size order photos, 5 cropped), sorted."""
    paths = sorted((shared_data_dir / "bioscan1m-images").glob("*/*.jpg"))
    if not paths:
        pytest.skip("no real photographs in the shared data folder")
    return paths


@pytest.fixture(scope="session")
def tiny_config():
    """``BioscanClipConfig.from_preset("tiny")`` (a fresh object per session; do not mutate)."""
    from bioscan_clip_hf import BioscanClipConfig

    return BioscanClipConfig.from_preset("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A tiny three-tower model with weights seeded by ``torch.manual_seed(0)``, in eval mode."""
    import torch

    from bioscan_clip_hf import BioscanClipModel

    torch.manual_seed(0)
    return BioscanClipModel(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_processor():
    """``BioscanClipProcessor.from_preset("tiny")`` (offline BERT uncased vocabulary)."""
    from bioscan_clip_hf import BioscanClipProcessor

    return BioscanClipProcessor.from_preset("tiny")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_processor) -> Path:
    """A folder with ``tiny_model`` and ``tiny_processor`` saved together (weights, config, Hub code)."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_model.save_pretrained(path)
    tiny_processor.save_pretrained(path)
    return path


# --- appended by zeroshot -------------------------------------------------------------------


@pytest.fixture(scope="session")
def zeroshot_data_dir(tmp_path_factory, shared_data_dir) -> Path:
    """A small labelled data set in the package's Parquet layout, split like the paper.

    Real COI barcodes (``../shared/data/real-coi``) of 6 seen and 3 unseen species, each record
    with a drawn 48x48 image whose colour depends on its genus. Seen species: 3 ``train``, 1
    ``val``, 1 ``test`` record; unseen species: 2 ``key_unseen``, 1 ``val_unseen``, 1
    ``test_unseen`` record. 42 records, built in well under a second.
    """
    import csv
    import io
    import zlib

    import numpy as np
    from PIL import Image

    from bioscan_clip_hf.data.parquet import shard_name, write_shard
    from bioscan_clip_hf.data.schema import SCHEMA_COLUMNS

    by_species: dict[str, list[dict]] = {}
    with open(shared_data_dir / "real-coi" / "coi_insecta.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            by_species.setdefault(row["species"], []).append(row)
    species = sorted(s for s, rows in by_species.items() if len({r["processid"] for r in rows}) >= 5)[:9]
    rng = np.random.default_rng(0)
    splits: dict[str, list[dict]] = {}
    plan_seen = ["train"] * 3 + ["val", "test"]
    plan_unseen = ["key_unseen"] * 2 + ["val_unseen", "test_unseen"]
    for n, name in enumerate(species):
        rows = list({r["processid"]: r for r in by_species[name]}.values())
        plan = plan_seen if n < 6 else plan_unseen
        for split, row in zip(plan, rows):
            colour = np.array([zlib.crc32(row["genus"].encode()) % 200, (7 * n) % 255, 40 + 20 * (n % 5)], dtype=np.uint8)
            pixels = np.clip(colour + rng.integers(0, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            record = {c: row.get(c) or None for c in SCHEMA_COLUMNS if c not in ("image", "split", "sampleid")}
            record.update(image={"bytes": buf.getvalue(), "path": None}, split=split, sampleid=row["processid"])
            splits.setdefault(split, []).append(record)
    out = tmp_path_factory.mktemp("zeroshot_data")
    for split, records in splits.items():
        write_shard(records, out / "data" / shard_name(split, 0, 1))
    return out


# --- appended by data -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_tiny_dir(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic set (seed 0, ~225 records, all eight splits) written as a Parquet folder.

    Load it with ``bioscan_clip_hf.data.load_bioscan(synthetic_tiny_dir, split=...)``; pass a
    ``cache_dir`` under ``tmp_path`` to keep the datasets cache out of the home folder.
    """
    from bioscan_clip_hf.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic_tiny"), size="tiny", seed=0)


# --- appended by training -------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_tiny_model_dir(tmp_path_factory, synthetic_tiny_dir) -> Path:
    """The tiny preset trained briefly (10-60 s on 2 cores, 72 steps) on ``synthetic_tiny_dir`` with
    ``training/train.py`` (image + DNA + text, all records of pretrain + train).

    Returns the model folder written by training: ``save_pretrained`` weights + processor +
    ``key_bank/`` (DNA keys of train + key_unseen) + ``training_info.json``. It beats chance on
    the synthetic set but is far from converged; use it for "trained beats untrained" checks.
    """
    from training.train import main

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("trained_tiny")
    main([
        "--config", str(repo / "training" / "configs" / "demo_synthetic.yaml"),
        "--dataset", str(synthetic_tiny_dir), "--output_dir", str(out / "run"),
        "--per_device_train_batch_size", "16", "--num_train_epochs", "8", "--learning_rate", "2e-3",
        "--eval_every", "0", "--disable_tqdm",
    ])
    return out / "run" / "best_model"


# --- appended by specimen -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_dna_bank_dir(tmp_path_factory, tiny_model_dir, zeroshot_data_dir) -> Path:
    """A calibrated DNA key bank of ``zeroshot_data_dir`` (train + key_unseen) for the tiny model, built as
    a user builds one (``bioscan-clip build-bank``); shared by the CLI and Space tests, which only read it."""
    from bioscan_clip_hf.cli import main

    out = tmp_path_factory.mktemp("tiny_dna_bank") / "bank"
    assert main(["build-bank", "--model", str(tiny_model_dir), "--data", str(zeroshot_data_dir), "--modality", "dna",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    return out
