"""The real COI set: real insect barcodes with taxonomy, as a DNA-and-text BIOSCAN data set.

Input: ``coi_insecta.tsv`` (columns ``processid, dna_barcode, dna_bin, phylum, class, order,
family, subfamily, genus, species``; see ``../shared/data/README.md`` for how to obtain it). The
records are screened (``screen.py``) and split by the paper's rules (``splits.py``).

Example:
    >>> build_realcoi_dataset("../shared/data/real-coi/coi_insecta.tsv", "realcoi")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from .build import run_build
from .report import BuildReport
from .schema import LINEAGE_COLUMNS, empty_record, normalise_value
from .screen import screen_records
from .splits import assign_paper_splits
from .tables import read_table

REQUIRED_COLUMNS = ("processid", "dna_barcode", "order", "family", "genus", "species")


def build_realcoi_dataset(tsv_path: str | Path, out_dir: str | Path, seed: int = 42) -> Path:
    """Build the DNA-and-text data set from the real COI TSV; return ``out_dir``.

    Exact duplicate rows and repeated ``processid``s are left out (the first is kept) and logged
    in ``build_report.json`` with their ids, so no barcode is in two splits.

    Raises:
        FileNotFoundError: no such TSV.
        ValueError: an empty or truncated TSV, rows with a wrong field count, missing required columns
            (see :func:`~bioscan_clip_hf.data.tables.read_table`; the message names the file).
    """
    tsv_path = Path(tsv_path)
    table = read_table(tsv_path, REQUIRED_COLUMNS, optional=("dna_bin", *LINEAGE_COLUMNS))
    report = BuildReport("realcoi", parameters={"source": tsv_path.name, "seed": seed})
    records = []
    for row in table.to_dict("records"):
        record = empty_record()
        record["processid"] = normalise_value(row["processid"])
        record["dna_barcode"] = row["dna_barcode"]
        record["dna_bin"] = normalise_value(row.get("dna_bin"))
        for column in LINEAGE_COLUMNS:
            record[column] = normalise_value(row.get(column))
        records.append(record)
    records = screen_records(records, report, row_label=f"{tsv_path.name} line")
    for record, split in zip(records, assign_paper_splits([r["species"] for r in records], seed=seed)):
        record["split"] = split
    by_split: dict[str, list] = {}
    for record in records:
        by_split.setdefault(record["split"], []).append(record)
    return run_build(
        by_split, out_dir, report, require_images=False, shard_size=max(len(records), 1),
        card={"source": "realcoi",
              "provenance": f"`training/build_dataset.py realcoi --tsv {tsv_path.name} --seed {seed}`: "
              "rows screened (barcodes, duplicates), then split by the paper's seen/unseen rules."},
    )
