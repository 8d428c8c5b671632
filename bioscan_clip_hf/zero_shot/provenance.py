"""Where an answer came from: model id and revision, weight and bank fingerprints, package version, settings.

Every output of ``predict`` and ``embed`` records it, in the form each format reads best with pandas:

* prediction rows (the Python API's dicts, CSV, JSON, Parquet) carry the flat columns
  :data:`PROVENANCE_COLUMNS`: ``model``, ``model_revision``, ``model_fingerprint``,
  ``bank_fingerprint``, ``package_version`` and ``settings`` (compact JSON). Columns rather than a
  sidecar file: a CSV on stdout, mailed on, or concatenated with other runs keeps its provenance
  on every row, and ``pd.read_csv`` needs no options;
* every Parquet file (``predict --format parquet`` and ``embed``) also holds the whole record
  (:func:`build_provenance`) in its schema metadata, as pandas ``DataFrame.attrs["provenance"]``:
  ``pd.read_parquet(path).attrs["provenance"]``;
* ``--format table`` (for people) prints the record above the table instead of six wide columns;
* ``--log FILE`` (:func:`write_log`) adds the command line and the timing, as pybioclip does:
  ``FILE.json`` gets a JSON record (never overwritten), any other name gets a readable block appended.

:func:`read_provenance` reads the record back from any of these files.

Example:
    >>> rows = clf.predict(dna="specimens.fasta")  # doctest: +SKIP
    >>> rows[0]["model_fingerprint"], json.loads(rows[0]["settings"])["method"]  # doctest: +SKIP
    ('4225a57fd9713890', 'nearest')
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..atomic import WriteTargetError, check_writable, write_json, write_text

__all__ = [
    "CONTENT_FINGERPRINT_KEY", "PROVENANCE_COLUMNS", "bank_content_fingerprint", "bank_fingerprint", "build_provenance",
    "check_log_path", "provenance_columns", "read_provenance", "write_log",
]

PROVENANCE_COLUMNS = ("model", "model_revision", "model_fingerprint", "bank_fingerprint", "package_version", "settings")
# bank.json: the digest of the bank's keys, computed once when the bank is saved (KeyBank.save).
CONTENT_FINGERPRINT_KEY = "content_fingerprint"
# A re-saved or rebuilt identical bank keeps its fingerprint.
_VOLATILE_BANK_META = ("created_utc", "build_id", CONTENT_FINGERPRINT_KEY)
_HASH_ROWS = 100_000


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def bank_content_fingerprint(embeddings: torch.Tensor, table: pd.DataFrame) -> str:
    """sha256 (hex) over a bank's key vectors (as float32) and key table: the costly part of
    :func:`bank_fingerprint`, read once per bank build (:meth:`KeyBank.save` stores it)."""
    digest = hashlib.sha256()
    emb = embeddings.detach().to("cpu", torch.float32).contiguous()
    digest.update(f"{tuple(emb.shape)}".encode())
    digest.update(emb.view(-1).view(torch.uint8).numpy().tobytes())
    for name in sorted(table.columns):  # values as text: the same whether dtypes came from Parquet or memory
        digest.update(str(name).encode() + b"\x1e")
        column = table[name]
        for start in range(0, len(column), _HASH_ROWS):
            values = column.iloc[start : start + _HASH_ROWS].astype(object).tolist()
            digest.update("".join("\x00\x1f" if v is None or v != v else f"{v}\x1f" for v in values).encode())
    return digest.hexdigest()


def bank_fingerprint(bank, content: str | None = None) -> str:
    """sha256 (first 16 hex digits) over a key bank's embeddings, key table and metadata (calibrations included).

    Two banks with the same fingerprint give the same answers with the same model. ``content``:
    the bank's :func:`bank_content_fingerprint` when known (a loaded bank reads it from
    ``bank.json``: :attr:`KeyBank.content_fingerprint`); otherwise it is computed here. The
    metadata is hashed every time (it is small), so a recalibrated bank never shows its old value.
    """
    content = content or bank_content_fingerprint(bank.embeddings, bank.table)
    meta = {k: v for k, v in bank.meta.items() if k not in _VOLATILE_BANK_META}
    digest = hashlib.sha256(content.encode() + b"\x1e" + json.dumps(meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def build_provenance(model, model_fingerprint: str, bank=None, bank_fp: str | None = None, settings: dict | None = None) -> dict:
    """The provenance record of one run (see the module docstring); ``settings`` are the call's options."""
    from .. import __version__

    config = getattr(model, "config", None)
    bank_part = None
    if bank is not None:
        bank_part = {
            "fingerprint": bank_fp, "modality": bank.modality, "n_keys": len(bank),
            "source": bank.meta.get("source"), "model_fingerprint": bank.meta.get("model_fingerprint"),
        }
    return {
        "package": "bioscan-clip-hf",
        "package_version": __version__,
        "model": {
            "id": getattr(model, "name_or_path", None) or None,
            # The commit transformers resolved on the Hub (None for a local folder).
            "revision": getattr(config, "_commit_hash", None),
            "fingerprint": model_fingerprint,
        },
        "bank": bank_part,
        "settings": dict(settings or {}),
        "created_utc": utc_now(),
    }


def provenance_columns(record: dict) -> dict[str, Any]:
    """The flat :data:`PROVENANCE_COLUMNS` of a record, as every prediction row carries them."""
    return {
        "model": record["model"]["id"],
        "model_revision": record["model"]["revision"],
        "model_fingerprint": record["model"]["fingerprint"],
        "bank_fingerprint": (record.get("bank") or {}).get("fingerprint"),
        "package_version": record["package_version"],
        "settings": json.dumps(record["settings"], sort_keys=True, separators=(",", ":"), default=str),
    }


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance of an output file: the full record from Parquet, the flat columns from CSV / JSON.

    Raises ValueError when the file carries none (e.g. written by another tool).
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        record = pd.read_parquet(path).attrs.get("provenance")
    else:
        frame = pd.read_json(path, dtype=False) if path.suffix.lower() == ".json" else pd.read_csv(path, dtype=str)
        record = frame.iloc[0][list(PROVENANCE_COLUMNS)].to_dict() if set(PROVENANCE_COLUMNS) <= set(frame.columns) and len(frame) else None
    if not record:
        raise ValueError(f"{path} carries no bioscan-clip provenance")
    return record


def check_log_path(path: str | Path) -> None:
    """Refuse, before any work, a log that cannot be written, or a JSON log that exists (pybioclip's rule:
    a JSON record is never overwritten); ValueError naming the file."""
    path = Path(path)
    if path.suffix.lower() == ".json" and path.exists():
        raise ValueError(f"log file {path} exists; a JSON log is never overwritten: choose a new name (or a .log/.txt file to append to)")
    try:
        check_writable(path)
    except WriteTargetError as err:
        raise ValueError(f"log file: {err}") from None


def _text_block(entry: dict) -> str:
    prov = entry["provenance"]
    model, bank = prov["model"], prov.get("bank")
    lines = [
        f"== bioscan-clip {entry['command']} · {entry['started_utc']} to {entry['finished_utc']} ({entry['duration_s']:.1f} s) ==",
        f"Command line: {entry['command_line']}",
        f"Package: bioscan-clip-hf {prov['package_version']}",
        f"Model: {model['id']} (revision {model['revision'] or '-'}, weights {model['fingerprint']})",
        "Key bank: none" if bank is None else
        f"Key bank: {bank['modality']}, {bank['n_keys']:,} keys, fingerprint {bank['fingerprint']} (source {bank['source']})",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(prov["settings"].items())),
        "Timing: " + ", ".join(f"{k} {v:.2f} s" for k, v in entry["timing_s"].items()),
    ]
    lines += [f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in entry.get("result", {}).items()]
    return "\n".join(lines) + "\n\n"


def write_log(path: str | Path, command: str, command_line: str, provenance: dict, started_utc: str,
              timing_s: dict[str, float], result: dict[str, Any] | None = None) -> None:
    """Write the run record: ``.json`` -> a JSON object; anything else -> a text block appended.

    The entry holds the command and its command line, start / end time and duration, the timing of
    each phase (``timing_s``), the provenance record and a ``result`` summary (rows, failures, output).
    Both forms are written atomically (an appended log is rewritten whole, never left half-written).
    """
    path = Path(path)
    entry = {
        "command": command, "command_line": command_line, "started_utc": started_utc, "finished_utc": utc_now(),
        "duration_s": round(sum(timing_s.values()), 3), "timing_s": {k: round(v, 3) for k, v in timing_s.items()},
        "provenance": provenance, "result": dict(result or {}),
    }
    if path.suffix.lower() == ".json":
        write_json(path, entry)
    else:
        before = path.read_text(encoding="utf-8") if path.is_file() else ""
        write_text(path, before + _text_block(entry))
