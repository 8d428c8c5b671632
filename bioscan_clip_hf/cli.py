"""The ``bioscan-clip`` command line: predict, embed, build-bank, eval, list-taxa, push, convert-clibd
and push-dataset.

Exit codes: 0 = success; 1 = finished, but some rows failed (each has an ``error`` column);
2 = nothing done: bad arguments, a missing model / bank / input path, a stale or damaged bank, a model
that cannot be loaded, an output that cannot be written (checked before any work), or every row failed
(one line on stderr, no traceback; see README "Bad inputs"). Inputs may follow flags.

Examples::

    bioscan-clip build-bank --model outputs/demo/model --data outputs/demo/data --modality dna --out bank/
    bioscan-clip predict photos/ specimens.fasta --recursive --model outputs/demo/model --bank bank/ --rank genus
    bioscan-clip eval --model outputs/demo/model --data outputs/demo/data --split test --out eval/
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from .convert_clibd import add_convert_parser
from .data.push_command import add_push_dataset_parser
from .hub import add_push_parser
from .taxonomy import RANKS

__all__ = ["build_parser", "main"]


class CliError(Exception):
    """A user-facing problem reported as one line on stderr with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with inputs after flags (``predict photos --recursive file.fasta``) and usage errors as
    one line on stderr with exit code 2, like every other refusal of the CLI."""

    def parse_known_args(self, args=None, namespace=None):
        # parse_known_intermixed_args calls parse_known_args itself and cannot handle sub-commands.
        if self._subparsers is not None or getattr(self, "_intermixing", False):
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The help of every option that picks key splits (bioscan_clip_hf.data.parquet.dataset_key_splits decides).
_DEFAULT_KEY_SPLITS = ("(default: the data set's evaluation keys, key_seen,key_unseen for a BIOSCAN-1M build, "
                       "else train,key_unseen)")


def _whole_number(minimum: int):
    """An argparse ``type`` accepting whole numbers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int, _non_negative_int = _whole_number(1), _whole_number(0)


def _shard_option(p: argparse.ArgumentParser) -> None:
    """The option of the commands that embed in resumable shards (embed, build-bank)."""
    p.add_argument("--shard-records", type=_positive_int, default=None, metavar="N",
                   help="records per shard (default 4096): finished shards survive a kill and are skipped when the same "
                   "command runs again; under `accelerate launch` the processes share the shards out")


def _common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, help="model folder or Hub id (save_pretrained of model + processor)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit hash) of --model")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="inputs per forward pass (default 32)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default auto: cuda, mps, else cpu")
    # The names of zero_shot.runtime.DTYPE_CHOICES: the parser stays torch-free (tests check they agree).
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="precision of the weights (default auto: bfloat16 on GPUs and on CPUs with AVX-512 BF16 or AMX, "
                   "else float32)")
    p.add_argument("--num-workers", type=_non_negative_int, default=None, metavar="N",
                   help="worker processes decoding photos while the model runs (default: one per spare core, at most 2; "
                   "0: decode in the main process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _probability(text: str) -> float:
    from .zero_shot.identify import check_confidence

    try:
        return check_confidence(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}") from None


def _specimen_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that read specimens (predict, embed)."""
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--min-valid-kmers", type=_fraction, default=None, metavar="FRACTION",
                   help="a barcode is refused (error row) when fewer than this share of its 5-mers are made of "
                   "A, C, G, T only (default: one half)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="record the command line, timing, model, key bank, package version and settings: "
                   "FILE.json gets a JSON record (never overwritten), any other name gets a text block appended")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from . import __version__

    parser = _Parser(
        prog="bioscan-clip",
        description="Zero-shot insect classification from photos and DNA barcodes (BIOSCAN-CLIP / CLIBD).",
        epilog="Exit codes: 0 ok, 1 some rows failed (see the error column), 2 nothing done (bad arguments or paths).",
    )
    parser.add_argument("--version", action="version", version=f"bioscan-clip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="classify photos and/or barcodes (order -> species, novelty flag)",
                       description="Classify image files, folders, FASTA / plain sequence files. An image and a FASTA "
                       "record with the same id (file stem = record id) are classified together.")
    p.add_argument("inputs", nargs="+",
                   help="image files, folders, .fasta/.fa/.fas or plain sequence files; - reads barcodes from stdin")
    _common(p)
    p.add_argument("--bank", default=None, help="key bank folder (default: MODEL/key_bank if present)")
    _specimen_options(p)
    p.add_argument("--rank", default="species", choices=RANKS, help="deepest rank to report (default species)")
    p.add_argument("--k", type=_positive_int, default=5, help="alternatives listed per specimen (topk_labels); default 5")
    p.add_argument("--method", default="nearest", choices=("nearest", "knn", "kmer", "text"),
                   help="the evidence; every method gives calibrated probabilities per rank. nearest: each taxon's "
                   "nearest key (the species of the nearest key, as the original rule); knn: a similarity-weighted "
                   "vote of the 10 nearest keys; kmer: 5-mer profiles of the barcode against the bank's barcodes; "
                   "text: taxon-name prompts")
    p.add_argument("--taxa", default=None,
                   help="checklist restricting the candidates of every method: a CSV/TSV of lineages (columns among "
                   "order,family,genus,species), a text file of names (one per line), or comma-separated names such "
                   "as 'Diptera' or 'Diptera/Cecidomyiidae'; for --method text without a bank, the lineages to prompt")
    p.add_argument("--confidence", type=_probability, default=0.9,
                   help="confident_rank is the deepest rank whose label is right with at least this probability, "
                   "counting the chance that the taxon is not in the library (default 0.9)")
    p.add_argument("--format", default="csv", choices=("csv", "json", "parquet", "table"), help="default csv")
    p.add_argument("--output", default=None, help="output file (default stdout; parquet needs a file)")
    p.set_defaults(func=_run_predict)

    p = sub.add_parser("embed", help="write embeddings of photos / barcodes / texts to Parquet (id, modality, embedding)")
    p.add_argument("inputs", nargs="*", help="image files, folders, FASTA or plain sequence files; - reads barcodes from stdin")
    _common(p)
    p.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    _specimen_options(p)
    p.add_argument("--output", required=True, help="Parquet file to write")
    _shard_option(p)
    p.set_defaults(func=_run_embed)

    p = sub.add_parser("build-bank", help="embed labelled records into a key bank (safetensors + Parquet + JSON)")
    _common(p)
    p.add_argument("--data", required=True, help="data set folder or Hub dataset id (package Parquet layout)")
    p.add_argument("--splits", default=None, help=f"key splits, comma-separated {_DEFAULT_KEY_SPLITS}")
    p.add_argument("--modality", default="dna", choices=("dna", "image", "text", "averaged", "concatenated"),
                   help="key features (default dna)")
    p.add_argument("--calibrate", default="val,val_unseen",
                   help="validation splits, comma-separated, whose records (all of species in the bank) calibrate the "
                   "probabilities of every method and the novelty model, by leaving their own taxa out of the keys "
                   "('' to skip; default val,val_unseen)")
    # The names of zero_shot.index.INDEX_KINDS (tests/test_zeroshot_index.py checks they agree).
    p.add_argument("--index", default="auto", choices=("auto", "flat", "ivf", "hnsw"),
                   help="search index saved with the bank: flat = exact search; ivf = faiss IVF-PQ fast-scan, hnsw = faiss "
                   "HNSW (approximate candidates, exact scores); default auto: flat below 1,000,000 keys, else ivf")
    p.add_argument("--key-dtype", default="float32", choices=("float32", "float16"),
                   help="storage of the key embeddings (float16 halves disk and memory for banks of millions)")
    p.add_argument("--out", required=True, help="output folder")
    _shard_option(p)
    p.set_defaults(func=_run_build_bank)

    p = sub.add_parser("eval", help="the paper's protocol: seen/unseen queries vs keys, every modality pair")
    _common(p)
    p.add_argument("--data", required=True, help="data set folder or Hub dataset id")
    p.add_argument("--split", default="val", choices=("val", "test"), help="queries: val+val_unseen or test+test_unseen")
    p.add_argument("--key-splits", default=None, help=f"comma-separated {_DEFAULT_KEY_SPLITS}")
    p.add_argument("--title", default=None, help="label for the table and plot (e.g. 'synthetic data')")
    p.add_argument("--identification", default="nearest,knn,kmer",
                   help="methods whose calibrated answers are scored beside accuracy (ECE per rank, accuracy at the "
                   "confident rank, coverage, novelty AUROC by leaving species out; kmer = the 5-mer baseline on DNA "
                   "queries), comma-separated; calibrated on val (cross-fitted for --split val); '' to skip; "
                   "default nearest,knn,kmer")
    p.add_argument("--out", required=True, help="folder for results.json, results.md, accuracy.png, reliability.png")
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
    """Model and processor (:func:`~bioscan_clip_hf.sources.load_model`: a missing local path or an
    unknown Hub id, damaged weights, a folder without our model all raise one-line errors)."""
    import torch

    from .sources import is_hub_id, load_model, resolve_source

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: CUDA is not available on this machine")
    if args.device == "mps" and not torch.backends.mps.is_available():
        raise CliError("--device mps: MPS is not available on this machine")
    if not _progress(args):  # also transformers' "Loading weights" bar: stderr keeps to our lines
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    source = resolve_source(args.model)
    if is_hub_id(source):
        print(f"bioscan-clip: loading {source} from the Hub", file=sys.stderr)
    return load_model(source, revision=args.revision)


def _load_bank(bank_arg, model, model_arg, revision=None):
    """The key bank of ``--bank``, else the ``key_bank/`` shipped with the model folder or Hub repo
    (:func:`~bioscan_clip_hf.zero_shot.classifier.bundled_bank`, as ``ZeroShotClassifier.from_pretrained``);
    a damaged bank raises :class:`~bioscan_clip_hf.zero_shot.bank.DamagedBankError`, a stale one StaleBankError."""
    from .sources import resolve_source
    from .zero_shot import KeyBank
    from .zero_shot.classifier import bundled_bank

    if bank_arg is None:
        default = bundled_bank(resolve_source(model_arg), revision)
        return None if default is None else KeyBank.load(default, model=model)
    path = Path(bank_arg)
    if not path.exists():
        raise CliError(f"key bank path does not exist: {bank_arg}")
    try:
        return KeyBank.load(path, model=model)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc


def _check_outputs(args) -> None:
    """Refuse an output location that cannot be written before any work, so no encoding is lost."""
    from .atomic import check_writable
    from .zero_shot.bank import check_bank_target

    output = getattr(args, "output", None)
    if output not in (None, "-"):
        check_writable(output)
    if args.command == "build-bank":
        check_bank_target(args.out)
    elif args.command in ("eval", "convert-clibd"):
        check_writable(args.out, folder=True)


def _check_data(args) -> None:
    """``--data``: an existing folder, or a data set repo the Hub (or offline, its cache) knows."""
    from .sources import resolve_source

    resolve_source(args.data, what="data set", repo_type="dataset")


def _rows_exit(failed: int, total: int, first_error: str | None) -> int:
    """0: every row done; 1: some rows failed; 2: every row failed (nothing classified or embedded;
    the output is still written, its error column says why for each row)."""
    if failed and failed == total:
        print(f"bioscan-clip: error: all {total} rows failed (see the error column), e.g. {first_error}", file=sys.stderr)
        return 2
    if failed:
        print(f"bioscan-clip: {failed} of {total} rows failed (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def _splits(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _key_splits(data: str, given: str | None) -> list[str]:
    """``--splits`` / ``--key-splits`` as given, else the data set's evaluation keys (one rule:
    :func:`~bioscan_clip_hf.data.dataset_key_splits`)."""
    if given is not None:
        return _splits(given)
    from .data import dataset_key_splits

    try:
        return dataset_key_splits(data)
    except ValueError as exc:  # a BIOSCAN-1M build from before key_seen: its message says to rebuild
        raise CliError(str(exc)) from exc


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def _min_valid_kmers(args) -> float:
    from .zero_shot.specimens import MIN_VALID_KMERS

    return MIN_VALID_KMERS if args.min_valid_kmers is None else args.min_valid_kmers


def _check_log(args) -> None:
    if args.log:
        from .zero_shot.provenance import check_log_path

        try:
            check_log_path(args.log)
        except ValueError as exc:
            raise CliError(str(exc)) from exc


class _Phases:
    """Wall time of each phase of a command (for ``--log``)."""

    def __init__(self) -> None:
        from .zero_shot.provenance import utc_now

        self.started_utc, self.seconds, self._last = utc_now(), {}, time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now

    def log(self, args, provenance: dict, result: dict) -> None:
        """Write the ``--log`` record of this run, when one was asked for."""
        if args.log:
            from .zero_shot.provenance import write_log

            write_log(args.log, args.command, args.command_line, provenance, self.started_utc, self.seconds, result)


# -- subcommands -------------------------------------------------------------------------------
def _run_predict(args) -> int:
    from .zero_shot import ZeroShotClassifier
    from .zero_shot.specimens import gather_queries
    from .zero_shot.writers import write_rows

    phases = _Phases()
    if args.format == "parquet" and args.output in (None, "-"):
        raise CliError("--format parquet needs --output FILE")
    _check_log(args)
    try:
        queries = gather_queries(args.inputs, recursive=args.recursive)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if not queries:
        raise CliError("no images or sequences found in the inputs")
    phases.mark("read_inputs")
    if args.bank is not None and not Path(args.bank).exists():
        raise CliError(f"key bank path does not exist: {args.bank}")
    model, proc = _load_model(args)
    bank = _load_bank(args.bank, model, args.model, args.revision)
    if bank is None and args.method != "text":
        raise CliError(f"--method {args.method} needs a key bank: pass --bank (build one with `bioscan-clip build-bank`)")
    if args.taxa is not None and Path(args.taxa).suffix.lower() in (".csv", ".tsv", ".txt") and not Path(args.taxa).is_file():
        raise CliError(f"taxa file does not exist: {args.taxa}")
    clf = ZeroShotClassifier(model, proc, bank, device=args.device, dtype=args.dtype, num_workers=args.num_workers)
    phases.mark("load_model")
    settings = dict(rank=args.rank, k=args.k, method=args.method, taxa=args.taxa, min_valid_kmers=_min_valid_kmers(args),
                    confidence=args.confidence)
    try:  # a checklist naming taxa the bank lacks, kmer without barcodes in the bank, text without lineages
        rows = clf.predict(queries=queries, batch_size=args.batch_size, progress=_progress(args), **settings)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    phases.mark("classify")
    provenance = clf.provenance(**settings)
    write_rows(rows, args.format, args.output, provenance=provenance)
    phases.mark("write")
    failed = sum(r["error"] is not None for r in rows)
    noted = sum(bool(r.get("notes")) for r in rows)
    if noted:
        print(f"bioscan-clip: {noted} of {len(rows)} rows have notes (see the notes column)", file=sys.stderr)
    phases.log(args, provenance, {"rows": len(rows), "failed": failed, "with_notes": noted,
                                  "output": args.output or "stdout", "format": args.format})
    return _rows_exit(failed, len(rows), next((r["error"] for r in rows if r["error"] is not None), None))


def _run_embed(args) -> int:
    import pandas as pd

    from .zero_shot import ZeroShotClassifier
    from .zero_shot.bank import model_fingerprint
    from .zero_shot.distributed import digest, embed_queries, finish, processes, work_dir_for
    from .zero_shot.specimens import check_queries, gather_queries
    from .zero_shot.writers import write_frame_parquet

    phases = _Phases()
    _check_log(args)
    try:
        queries = gather_queries(args.inputs, recursive=args.recursive) if args.inputs else []
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if not queries and not args.text:
        raise CliError("nothing to embed: give image/sequence paths or --text")
    phases.mark("read_inputs")
    model, proc = _load_model(args)
    procs = processes(args.device)
    clf = ZeroShotClassifier(model, proc, None, device=procs.device, dtype=args.dtype, num_workers=args.num_workers)
    phases.mark("load_model")
    options = dict(progress=_progress(args), min_valid_kmers=_min_valid_kmers(args))
    # Checked over all inputs first, so ids are made unique across the shards of a distributed run.
    queries = check_queries(queries, proc.dna_tokenizer, options["min_valid_kmers"])
    work_dir = work_dir_for(args.output)
    job = {"command": "embed", "model": model_fingerprint(model), "inference": clf.inference.to_dict(),
           "batch_size": args.batch_size, "shard_records": args.shard_records, "min_valid_kmers": options["min_valid_kmers"],
           "inputs": digest([(q.id, str(q.image) if q.image is not None else None, q.dna) for q in queries])}
    table = embed_queries(clf, queries, work_dir, job, procs, args.batch_size, args.shard_records, **options)
    if table is None:  # another process of `accelerate launch`: its shards are written, the main one merges
        return 0
    if args.text:
        texts = clf.embed(texts=args.text, queries=[], batch_size=args.batch_size, **options)
        table = pd.concat([table, texts], ignore_index=True)
    table.attrs["provenance"] = clf.provenance(min_valid_kmers=options["min_valid_kmers"])
    phases.mark("embed")
    provenance = table.attrs["provenance"]
    write_frame_parquet(table, args.output, provenance)
    finish(work_dir, procs)
    phases.mark("write")
    failed = int(table["error"].notna().sum())
    print(f"bioscan-clip: wrote {len(table)} embeddings to {args.output}" + (f" ({failed} failed)" if failed else ""), file=sys.stderr)
    phases.log(args, provenance, {"rows": len(table), "failed": failed, "output": args.output, "format": "parquet"})
    return _rows_exit(failed, len(table), table["error"].dropna().iloc[0] if failed else None)


def _run_build_bank(args) -> int:
    import torch

    from .evaluation import resolve_splits
    from .zero_shot import KeyBank
    from .zero_shot.bank import model_fingerprint
    from .zero_shot.distributed import digest, embed_records, finish, processes, work_dir_for
    from .zero_shot.index import KeyIndex, choose_kind
    from .zero_shot.runtime import prepare_model

    _check_data(args)
    model, proc = _load_model(args)
    procs = processes(args.device)
    inference = prepare_model(model, procs.device, args.dtype)
    splits = _key_splits(args.data, args.splits)
    keys = resolve_splits(args.data, splits)
    ids = keys["processid"] if "processid" in keys.column_names else []
    work_dir = work_dir_for(args.out)
    job = {"command": "build-bank", "model": model_fingerprint(model), "inference": inference.to_dict(),
           "data": args.data, "splits": splits, "modality": args.modality, "batch_size": args.batch_size,
           "shard_records": args.shard_records, "key_dtype": args.key_dtype,
           "records": len(keys), "processids": digest(list(map(str, ids)))}
    features = embed_records(model, proc, keys, args.modality, work_dir, job, procs, args.batch_size, args.num_workers,
                             _progress(args), dtype=getattr(torch, args.key_dtype), shard_size=args.shard_records)
    if features is None:  # another process of `accelerate launch`: its shards are written, the main one merges
        return 0
    bank = KeyBank.build(model, proc, keys, modality=args.modality, batch_size=args.batch_size,
                         progress=_progress(args), source=f"{args.data}:{','.join(splits)}", features=features)
    bank.meta["inference"] = inference.to_dict()
    kind = choose_kind(args.index, len(bank))
    if kind != "flat":
        bank.index = KeyIndex.build(bank.embeddings, kind, progress=_progress(args))
    cal_splits = _splits(args.calibrate)
    if cal_splits:
        from .zero_shot.calibration import summary_lines

        cal = bank.calibrate(model, proc, *(resolve_splits(args.data, [s]) for s in cal_splits),
                             batch_size=args.batch_size, progress=_progress(args))
        for line in summary_lines(cal):
            print(f"bioscan-clip: {line}", file=sys.stderr)
    bank.save(args.out)
    finish(work_dir, procs)
    print(f"bioscan-clip: wrote a {bank.modality} key bank of {len(bank)} keys to {args.out}"
          + ("" if bank.index is None else f" with an {kind} index"), file=sys.stderr)
    return 0


def _run_eval(args) -> int:
    from .evaluation import evaluate_model, markdown_table
    from .zero_shot.encode import resolve_device
    from .zero_shot.runtime import prepare_model

    _check_data(args)
    model, proc = _load_model(args)
    prepare_model(model, resolve_device(args.device), args.dtype)
    queries = ("val", "val_unseen") if args.split == "val" else ("test", "test_unseen")
    results = evaluate_model(model, proc, args.data, query_splits=queries, key_splits=_key_splits(args.data, args.key_splits),
                             batch_size=args.batch_size, output_dir=args.out, title=args.title,
                             device=args.device, progress=_progress(args), identification=_splits(args.identification))
    sys.stdout.write(markdown_table(results))
    return 0


def _run_list_taxa(args) -> int:
    from .sources import resolve_source
    from .zero_shot import KeyBank
    from .zero_shot.classifier import bundled_bank
    from .zero_shot.writers import write_rows

    if args.bank is None and args.model is None:
        raise CliError("give --bank BANK_DIR or --model MODEL (a folder or Hub id with a key_bank/ folder)")
    path = Path(args.bank) if args.bank else bundled_bank(resolve_source(args.model))
    if path is None:
        raise CliError(f"{args.model} has no key_bank/ folder: give --bank BANK_DIR")
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
    args.command_line = shlex.join(["bioscan-clip", *(sys.argv[1:] if argv is None else argv)])  # for --log
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .sources import ModelLoadError
    from .zero_shot.bank import DamagedBankError, StaleBankError

    try:
        _check_outputs(args)
        return int(args.func(args) or 0)
    except (CliError, StaleBankError, DamagedBankError, ModelLoadError, OSError) as exc:
        # OSError: a missing path, an unwritable target, a full disk; each message names the path.
        print(f"bioscan-clip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioscan-clip: interrupted; nothing half-written is left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
