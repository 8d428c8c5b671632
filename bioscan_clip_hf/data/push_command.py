"""The ``bioscan-clip push-dataset`` sub-command (argument parsing only; the upload is in ``card``).

Kept free of heavy imports so that building the CLI parser stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_push_dataset_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``push-dataset FOLDER REPO_ID [--private] [--dry-run]`` on a CLI's subparsers.

    Example:
        >>> parser = argparse.ArgumentParser(); sub = parser.add_subparsers()
        >>> _ = add_push_dataset_parser(sub)
        >>> parser.parse_args(["push-dataset", "out", "me/data", "--dry-run"]).dry_run
        True
    """
    parser = subparsers.add_parser(
        "push-dataset", help="upload a built BIOSCAN Parquet folder (shards + card) to the Hub",
        description="Upload a folder written by training/build_dataset.py or bioscan_clip_hf.synthetic "
        "to a Hub dataset repo (created if absent).",
    )
    parser.add_argument("folder", type=Path, help="built folder with data/*.parquet and README.md")
    parser.add_argument("repo_id", help="target dataset repo, e.g. user/bioscan-5m-parquet")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no network")
    parser.set_defaults(func=_run_push_dataset)
    return parser


def _run_push_dataset(args: argparse.Namespace) -> int:
    from .card import push_dataset

    result = push_dataset(args.folder, args.repo_id, private=args.private, dry_run=args.dry_run)
    print(json.dumps({key: value for key, value in result.items() if key != "readme"}, indent=2))
    return 0
