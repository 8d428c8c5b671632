"""Build a BIOSCAN Parquet data set (``DIR/data/{split}-*.parquet``, ``build_report.json``, card).

Sources:
    bioscan5m   the BIOSCAN-5M release: metadata CSV + image package (folder or zip(s))
    bioscan1m   the BIOSCAN-1M release: metadata TSV + images + CLIBD partition lists
    realcoi     the real COI barcodes TSV (DNA and text only)
    synthetic   the embedded synthetic set (drawn insects, evolved barcodes)

Re-running the same command after an interruption keeps the finished shards.

Examples::

    python training/build_dataset.py bioscan5m --metadata BIOSCAN_5M_Insect_Dataset_metadata.csv \
        --images BIOSCAN_5M_cropped_256.zip --out data/bioscan5m --num-proc 8
    python training/build_dataset.py bioscan1m --metadata BIOSCAN_Insect_Dataset_metadata.tsv \
        --images cropped_256/ --partition CLIBD_partitioning.zip --out data/bioscan1m
    python training/build_dataset.py realcoi --tsv ../shared/data/real-coi/coi_insecta.tsv --out data/realcoi
    python training/build_dataset.py synthetic --size demo --out data/synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bioscan_clip_hf.data import (
    build_bioscan1m_dataset,
    build_bioscan5m_dataset,
    build_realcoi_dataset,
)
from bioscan_clip_hf.data.schema import BIOSCAN5M_SPLITS
from bioscan_clip_hf.synthetic import LAYOUTS, SIZES, generate_synthetic_dataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)

    def common(p: argparse.ArgumentParser, sharded: bool = True) -> None:
        p.add_argument("--out", required=True, type=Path, help="output folder")
        if sharded:
            p.add_argument("--num-proc", type=int, default=1, help="worker processes (default 1)")
            p.add_argument("--shard-size", type=int, default=5000, help="records per Parquet shard")
            p.add_argument("--keep-missing-images", action="store_true",
                           help="keep records whose image file is absent (image null) instead of dropping them")

    p5 = sub.add_parser("bioscan5m", help="BIOSCAN-5M release -> Parquet")
    p5.add_argument("--metadata", required=True, type=Path, help="BIOSCAN_5M_Insect_Dataset_metadata.csv")
    p5.add_argument("--images", required=True, nargs="+", type=Path, help="image package folder(s) and/or zip(s)")
    p5.add_argument("--image-package", default="cropped_256", help="cropped_256 (default), original_256, cropped...")
    p5.add_argument("--splits", nargs="+", choices=BIOSCAN5M_SPLITS, help="build only these splits")
    common(p5)

    p1 = sub.add_parser("bioscan1m", help="BIOSCAN-1M release + CLIBD partitioning -> Parquet")
    p1.add_argument("--metadata", required=True, type=Path, help="BIOSCAN_Insect_Dataset_metadata.tsv")
    p1.add_argument("--images", required=True, nargs="+", type=Path, help="folder(s)/zip(s) with part<N>/ images")
    p1.add_argument("--partition", required=True, type=Path, help="CLIBD_partitioning.zip or its folder")
    common(p1)

    pc = sub.add_parser("realcoi", help="real COI barcodes TSV -> DNA+text Parquet")
    pc.add_argument("--tsv", required=True, type=Path, help="coi_insecta.tsv")
    pc.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    common(pc, sharded=False)

    ps = sub.add_parser("synthetic", help="the synthetic set")
    ps.add_argument("--size", default="demo", choices=sorted(SIZES))
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--layout", default="bioscan5m", choices=sorted(LAYOUTS),
                    help="bioscan5m (default): seen-species keys in train; bioscan1m: in key_seen, as CLIBD's seen_keys")
    common(ps, sharded=False)
    return parser


def _build(args: argparse.Namespace) -> Path:
    if args.source == "bioscan5m":
        return build_bioscan5m_dataset(
            args.metadata, args.images, args.out, image_package=args.image_package, splits=args.splits,
            shard_size=args.shard_size, num_proc=args.num_proc, keep_missing_images=args.keep_missing_images)
    if args.source == "bioscan1m":
        return build_bioscan1m_dataset(
            args.metadata, args.images, args.partition, args.out, shard_size=args.shard_size,
            num_proc=args.num_proc, keep_missing_images=args.keep_missing_images)
    if args.source == "realcoi":
        return build_realcoi_dataset(args.tsv, args.out, seed=args.seed)
    return generate_synthetic_dataset(args.out, size=args.size, seed=args.seed, layout=args.layout)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build, print the build report summary; return the exit code (2: nothing
    built, one line on stderr naming the bad input)."""
    args = _parser().parse_args(argv)
    try:
        folder = _build(args)
    except (OSError, ValueError) as err:  # missing / empty / truncated inputs, changed build parameters
        print(f"build_dataset.py: error: {err}", file=sys.stderr)
        return 2
    report = json.loads((folder / "build_report.json").read_text())
    dropped = {reason: entry["count"] for reason, entry in report["dropped"].items()}
    print(f"{folder}: {report['total_records']} records {report['counts']}; dropped {dropped or 'none'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
