"""The ``bioscan-clip`` command line: predict, embed, build-bank, eval, list-taxa, push, convert-clibd
and push-dataset.

Exit codes: 0 = success; 1 = finished, but some rows failed (each has an ``error`` column);
2 = nothing done: bad arguments, a missing model / bank / input path, a stale bank, a model that
cannot be loaded (one line on stderr, no traceback).

Examples::

    bioscan-clip build-bank --model outputs/demo/model --data outputs/demo/data --modality dna --out bank/
    bioscan-clip predict photos/ specimens.fasta --recursive --model outputs/demo/model --bank bank/ --rank genus
    bioscan-clip eval --model outputs/demo/model --data outputs/demo/data --split test --out eval/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .convert_clibd import add_convert_parser
from .data.push_command import add_push_dataset_parser
from .hub import add_push_parser
from .taxonomy import RANKS

__all__ = ["build_parser", "main"]


class CliError(Exception):
    """A user-facing problem reported as one line on stderr with exit code 2."""


def _common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, help="model folder or Hub id (save_pretrained of model + processor)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit hash) of --model")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default 32)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default auto: cuda, mps, else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bioscan-clip",
        description="Zero-shot insect classification from photos and DNA barcodes (BIOSCAN-CLIP / CLIBD).",
        epilog="Exit codes: 0 ok, 1 some rows failed (see the error column), 2 nothing done (bad arguments or paths).",
    )
    parser.add_argument("--version", action="version", version=f"bioscan-clip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="classify photos and/or barcodes (order -> species, novelty flag)",
                       description="Classify image files, folders, FASTA / plain sequence files. An image and a FASTA "
                       "record with the same id (file stem = record id) are classified together.")
    p.add_argument("inputs", nargs="+", help="image files, folders, .fasta/.fa/.fas or plain sequence files")
    _common(p)
    p.add_argument("--bank", default=None, help="key bank folder (default: MODEL/key_bank if present)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--rank", default="species", choices=RANKS, help="deepest rank to report (default species)")
    p.add_argument("--k", type=int, default=5, help="neighbours (nearest/knn) or alternatives (text); default 5")
    p.add_argument("--method", default="nearest", choices=("nearest", "knn", "text"),
                   help="nearest: all ranks from the nearest key (the original rule); knn: vote per rank; "
                   "text: taxon-name prompts with probabilities summed up the ranks")
    p.add_argument("--taxa", default=None, help="CSV of lineages (order,family,genus,species) for --method text")
    p.add_argument("--format", default="csv", choices=("csv", "json", "parquet", "table"), help="default csv")
    p.add_argument("--output", default=None, help="output file (default stdout; parquet needs a file)")
    p.set_defaults(func=_run_predict)

    p = sub.add_parser("embed", help="write embeddings of photos / barcodes / texts to Parquet (id, modality, embedding)")
    p.add_argument("inputs", nargs="*", help="image files, folders, FASTA or plain sequence files")
    _common(p)
    p.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--output", required=True, help="Parquet file to write")
    p.set_defaults(func=_run_embed)

    p = sub.add_parser("build-bank", help="embed labelled records into a key bank (safetensors + Parquet + JSON)")
    _common(p)
    p.add_argument("--data", required=True, help="data set folder or Hub dataset id (package Parquet layout)")
    p.add_argument("--splits", default="train,key_unseen", help="key splits, comma-separated (default train,key_unseen)")
    p.add_argument("--modality", default="dna", choices=("dna", "image", "text", "averaged", "concatenated"),
                   help="key features (default dna)")
    p.add_argument("--calibrate", default="val,val_unseen",
                   help="seen,unseen splits to calibrate the novelty flag on ('' to skip; default val,val_unseen)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_build_bank)

    p = sub.add_parser("eval", help="the paper's protocol: seen/unseen queries vs keys, every modality pair")
    _common(p)
    p.add_argument("--data", required=True, help="data set folder or Hub dataset id")
    p.add_argument("--split", default="val", choices=("val", "test"), help="queries: val+val_unseen or test+test_unseen")
    p.add_argument("--key-splits", default="train,key_unseen", help="comma-separated (default train,key_unseen)")
    p.add_argument("--title", default=None, help="label for the table and plot (e.g. 'synthetic data')")
    p.add_argument("--out", required=True, help="folder for results.json, results.md, accuracy.png")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser("list-taxa", help="list the lineages a key bank can predict, with key counts")
    p.add_argument("--bank", default=None, help="key bank folder")
    p.add_argument("--model", default=None, help="model folder with a key_bank/ sub-folder (instead of --bank)")
    p.add_argument("--rank", default="species", choices=RANKS, help="list distinct taxa down to this rank")
    p.add_argument("--format", default="table", choices=("csv", "json", "parquet", "table"))
    p.add_argument("--output", default=None)
    p.set_defaults(func=_run_list_taxa)

    add_push_parser(sub)
    add_convert_parser(sub)
    add_push_dataset_parser(sub)
    return parser


# -- helpers -----------------------------------------------------------------------------------
def _load_model(args):
    """Model and processor, with one-line errors for missing paths or unloadable models."""
    import torch

    from . import BioscanClipModel, BioscanClipProcessor

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: CUDA is not available on this machine")
    if args.device == "mps" and not torch.backends.mps.is_available():
        raise CliError("--device mps: MPS is not available on this machine")
    path = Path(args.model).expanduser()
    looks_local = path.exists() or args.model.startswith((".", "/", "~")) or args.model.count("/") != 1
    if looks_local and not path.exists():
        raise CliError(f"model path does not exist: {args.model}")
    try:
        model = BioscanClipModel.from_pretrained(str(path) if path.exists() else args.model, revision=args.revision)
        proc = BioscanClipProcessor.from_pretrained(str(path) if path.exists() else args.model, revision=args.revision)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot load model {args.model}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return model, proc


def _load_bank(bank_arg, model, model_arg):
    from .zero_shot import KeyBank

    if bank_arg is None:
        default = Path(model_arg) / "key_bank"
        return KeyBank.load(default, model=model) if (default / "bank.json").is_file() else None
    path = Path(bank_arg)
    if not path.exists():
        raise CliError(f"key bank path does not exist: {bank_arg}")
    try:
        return KeyBank.load(path, model=model)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc


def _splits(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


# -- subcommands -------------------------------------------------------------------------------
def _run_predict(args) -> int:
    from .zero_shot import ZeroShotClassifier
    from .zero_shot.inputs import gather_queries
    from .zero_shot.writers import write_rows

    if args.format == "parquet" and args.output in (None, "-"):
        raise CliError("--format parquet needs --output FILE")
    try:
        queries = gather_queries(args.inputs, recursive=args.recursive)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if not queries:
        raise CliError("no images or sequences found in the inputs")
    if args.bank is not None and not Path(args.bank).exists():
        raise CliError(f"key bank path does not exist: {args.bank}")
    model, proc = _load_model(args)
    bank = _load_bank(args.bank, model, args.model)
    if bank is None and args.method != "text":
        raise CliError(f"--method {args.method} needs a key bank: pass --bank (build one with `bioscan-clip build-bank`)")
    if args.taxa is not None and not Path(args.taxa).is_file():
        raise CliError(f"taxa file does not exist: {args.taxa}")
    clf = ZeroShotClassifier(model, proc, bank, device=args.device)
    rows = clf.predict(queries=queries, rank=args.rank, k=args.k, method=args.method, batch_size=args.batch_size,
                       taxa=args.taxa, progress=_progress(args))
    write_rows(rows, args.format, args.output)
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        print(f"bioscan-clip: {failed} of {len(rows)} rows failed (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def _run_embed(args) -> int:
    from .zero_shot import ZeroShotClassifier
    from .zero_shot.inputs import gather_queries

    try:
        queries = gather_queries(args.inputs, recursive=args.recursive) if args.inputs else []
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if not queries and not args.text:
        raise CliError("nothing to embed: give image/sequence paths or --text")
    model, proc = _load_model(args)
    clf = ZeroShotClassifier(model, proc, None, device=args.device)
    table = clf.embed(queries=queries, texts=args.text, batch_size=args.batch_size, progress=_progress(args))
    table.to_parquet(args.output, index=False)
    failed = int(table["error"].notna().sum())
    print(f"bioscan-clip: wrote {len(table)} embeddings to {args.output}" + (f" ({failed} failed)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _run_build_bank(args) -> int:
    from .evaluation import resolve_splits
    from .zero_shot import KeyBank
    from .zero_shot.encode import resolve_device

    if not Path(args.data).exists() and args.data.count("/") != 1:
        raise CliError(f"data path does not exist: {args.data}")
    model, proc = _load_model(args)
    model.to(resolve_device(args.device))
    keys = resolve_splits(args.data, _splits(args.splits))
    bank = KeyBank.build(model, proc, keys, modality=args.modality, batch_size=args.batch_size,
                         progress=_progress(args), source=f"{args.data}:{args.splits}")
    cal_splits = _splits(args.calibrate)
    if cal_splits:
        if len(cal_splits) != 2:
            raise CliError(f"--calibrate needs two splits (seen,unseen), got {args.calibrate!r}")
        seen, unseen = (resolve_splits(args.data, [s]) for s in cal_splits)
        cals = bank.calibrate(model, proc, seen, unseen, batch_size=args.batch_size, progress=_progress(args))
        for qmod, cal in cals.items():
            print(f"bioscan-clip: novelty {qmod}->{bank.modality}: AUROC {cal.auroc:.3f}, threshold {cal.threshold:.4f}", file=sys.stderr)
    bank.save(args.out)
    print(f"bioscan-clip: wrote a {bank.modality} key bank of {len(bank)} keys to {args.out}", file=sys.stderr)
    return 0


def _run_eval(args) -> int:
    from .evaluation import evaluate_model, markdown_table

    if not Path(args.data).exists() and args.data.count("/") != 1:
        raise CliError(f"data path does not exist: {args.data}")
    model, proc = _load_model(args)
    queries = ("val", "val_unseen") if args.split == "val" else ("test", "test_unseen")
    results = evaluate_model(model, proc, args.data, query_splits=queries, key_splits=_splits(args.key_splits),
                             batch_size=args.batch_size, output_dir=args.out, title=args.title,
                             device=args.device, progress=_progress(args))
    sys.stdout.write(markdown_table(results))
    return 0


def _run_list_taxa(args) -> int:
    from .zero_shot import KeyBank
    from .zero_shot.writers import write_rows

    if args.bank is None and args.model is None:
        raise CliError("give --bank BANK_DIR or --model MODEL_DIR (with a key_bank/ folder)")
    path = Path(args.bank) if args.bank else Path(args.model) / "key_bank"
    if not path.exists():
        raise CliError(f"key bank path does not exist: {path}")
    try:
        bank = KeyBank.load(path)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    depth = RANKS.index(args.rank) + 1
    taxa = bank.taxa()
    taxa = taxa.groupby(list(RANKS[:depth]), dropna=False)["n_keys"].sum().reset_index()
    write_rows(taxa.to_dict("records"), args.format, args.output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .zero_shot.bank import StaleBankError

    try:
        return int(args.func(args) or 0)
    except (CliError, StaleBankError) as exc:
        print(f"bioscan-clip: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
