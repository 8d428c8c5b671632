"""The taxa a reference library can name, as integer ids per rank, grouped by full lineage path.

A :class:`TaxonIndex` numbers the distinct lineages (order, family, genus, species) of a set of
records (the *leaves*) and, per rank, the distinct paths down to that rank. Grouping by the full
path keeps a genus name used in two families apart (two taxa), as a homonym must be. A missing
label (``None`` or ``""``) is a taxon of its own under its parent ("not classified at this rank").

Every probability in :mod:`.evidence` is over these ids; :meth:`TaxonIndex.select` turns a user's
checklist (lineage CSV, names such as ``Diptera`` or ``Diptera/Cecidomyiidae``) into a mask over
the records.

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({"order": ["D", "D", "H"], "family": ["a", "b", "c"],
    ...                       "genus": ["G", "G", "X"], "species": ["G 1", "G 2", None]})
    >>> index = TaxonIndex.from_table(table)
    >>> index.n_taxa("genus"), index.label("genus", index.record_taxa("genus")[1])  # "G" of two families
    (3, 'G')
    >>> index.select(["D/b"]).tolist()
    [False, True, False]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..taxonomy import RANKS

__all__ = ["TaxonIndex", "parse_checklist"]

# First element of a rank-aligned checklist entry (a table row), to tell it from a name path.
_LINEAGE = "\x00lineage"


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


@dataclass
class TaxonIndex:
    """Integer taxon ids per rank for a list of records (see module docstring).

    Attributes:
        leaf_of_record: ``[n_records]`` leaf (full lineage) id of every record.
        leaves: the distinct lineages, tuples ``(order, family, genus, species)``.
        taxon_of_leaf: per rank, ``[n_leaves]`` id of the leaf's taxon at that rank.
        paths: per rank, the path of every taxon id (a tuple down to that rank).
    """

    leaf_of_record: np.ndarray
    leaves: list[tuple]
    taxon_of_leaf: dict[str, np.ndarray]
    paths: dict[str, list[tuple]]

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> "TaxonIndex":
        """Index the lineages of a table with ``order, family, genus, species`` columns."""
        missing = [r for r in RANKS if r not in table.columns]
        if missing:
            raise ValueError(f"the taxa table lacks columns {missing} (need {', '.join(RANKS)})")
        return cls.from_lineages([tuple(_clean(v) for v in row) for row in table[list(RANKS)].itertuples(index=False)])

    @classmethod
    def from_lineages(cls, lineages: Sequence[Sequence[Any]]) -> "TaxonIndex":
        """Index records given as ``(order, family, genus, species)`` tuples."""
        lineages = [tuple(_clean(v) for v in lineage) for lineage in lineages]
        leaf_ids: dict[tuple, int] = {}
        leaf_of_record = np.fromiter((leaf_ids.setdefault(lin, len(leaf_ids)) for lin in lineages), dtype=np.int64,
                                     count=len(lineages))
        leaves = list(leaf_ids)
        taxon_of_leaf, paths = {}, {}
        for depth, rank in enumerate(RANKS):
            ids: dict[tuple, int] = {}
            taxon_of_leaf[rank] = np.fromiter((ids.setdefault(leaf[: depth + 1], len(ids)) for leaf in leaves),
                                              dtype=np.int64, count=len(leaves))
            paths[rank] = list(ids)
        return cls(leaf_of_record, leaves, taxon_of_leaf, paths)

    def __len__(self) -> int:
        return len(self.leaf_of_record)

    def n_taxa(self, rank: str) -> int:
        return len(self.paths[rank])

    def label(self, rank: str, taxon: int) -> str | None:
        """The name of taxon id ``taxon`` at ``rank`` (the last element of its path)."""
        return self.paths[rank][int(taxon)][-1]

    def record_taxa(self, rank: str) -> np.ndarray:
        """``[n_records]`` taxon id at ``rank`` of every record."""
        return self.taxon_of_leaf[rank][self.leaf_of_record]

    def leaf_table(self, rank: str) -> torch.Tensor:
        """``taxon_of_leaf[rank]`` as a tensor, with an extra last entry -1 for the padding leaf -1."""
        return torch.from_numpy(np.append(self.taxon_of_leaf[rank], -1))

    def counts(self, rank: str) -> np.ndarray:
        """Records per taxon id at ``rank``."""
        return np.bincount(self.record_taxa(rank), minlength=self.n_taxa(rank))

    def taxa_of(self, lineages: Iterable[Sequence[Any]], rank: str) -> np.ndarray:
        """Taxon id at ``rank`` of each lineage (-1 where the index has no such path)."""
        depth = RANKS.index(rank) + 1
        lookup = {path: i for i, path in enumerate(self.paths[rank])}
        return np.array([lookup.get(tuple(_clean(v) for v in lin)[:depth], -1) for lin in lineages], dtype=np.int64)

    def select(self, checklist: Any) -> np.ndarray:
        """Boolean mask of the records whose lineage is in a checklist (see :func:`parse_checklist`).

        Raises ValueError naming every checklist entry that matches no record.
        """
        entries = parse_checklist(checklist)
        keep_leaf = np.zeros(len(self.leaves), dtype=bool)
        unknown = []
        folded = [tuple((v or "").casefold() for v in leaf) for leaf in self.leaves]
        for entry in entries:
            want = tuple(v.casefold() if v else v for v in entry)
            hit = np.fromiter((_matches(leaf, want) for leaf in folded), dtype=bool, count=len(folded))
            if not hit.any():
                unknown.append("/".join(v for v in entry if v and v != _LINEAGE))
            keep_leaf |= hit
        if unknown:
            raise ValueError(
                f"{len(unknown)} checklist taxa are not in the reference library: {', '.join(unknown[:20])}"
                + (" ..." if len(unknown) > 20 else "") + " (`bioscan-clip list-taxa` lists the library's taxa)"
            )
        return keep_leaf[self.leaf_of_record]


def _matches(leaf: tuple, entry: tuple) -> bool:
    """A lineage entry (rank-aligned, None = any) or a name path (consecutive ranks) matches ``leaf``."""
    if len(entry) == len(RANKS) + 1 and entry[0] == _LINEAGE:
        return all(want is None or want == have for want, have in zip(entry[1:], leaf))
    n = len(entry)
    return any(leaf[start : start + n] == entry for start in range(len(RANKS) - n + 1))


def parse_checklist(checklist: Any) -> list[tuple]:
    """Checklist entries from a lineage table, a file, or names.

    Accepted: a DataFrame / list of dicts / CSV or TSV path with any of the columns ``order, family,
    genus, species`` (each row one lineage; empty cells match anything); a text file of names (one
    per line, ``#`` comments); a name or list of names, where a name is a taxon (``Diptera``,
    ``Aedes aegypti``) or a path of consecutive ranks (``Diptera/Cecidomyiidae``). A string
    holding several names separates them by commas. Matching ignores case.
    """
    if isinstance(checklist, (str, Path)) and Path(checklist).is_file():
        path = Path(checklist)
        text = path.read_text(encoding="utf-8-sig")
        first = text.splitlines()[0].casefold() if text.strip() else ""
        sep = "\t" if "\t" in first else ","
        if any(rank in [c.strip() for c in first.split(sep)] for rank in RANKS):
            return _lineage_entries(pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False))
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        return [_name_entry(n) for n in names if n]
    if isinstance(checklist, pd.DataFrame) or (isinstance(checklist, (list, tuple)) and checklist
                                                and all(isinstance(x, dict) for x in checklist)):
        return _lineage_entries(pd.DataFrame(checklist))
    if isinstance(checklist, str):
        names = checklist.split(",")
    elif isinstance(checklist, (list, tuple, set)):
        names = [str(x) for x in checklist]
    else:
        raise TypeError(f"cannot read a checklist from {type(checklist).__name__}")
    entries = [_name_entry(n) for n in names if n.strip()]
    if not entries:
        raise ValueError("the checklist names no taxa")
    return entries


def _name_entry(name: str) -> tuple:
    parts = tuple(p.strip() for p in name.split("/"))
    if not all(parts) or len(parts) > len(RANKS):
        raise ValueError(f"checklist name {name!r} is not a taxon or a path such as Diptera/Cecidomyiidae")
    return parts


def _lineage_entries(frame: pd.DataFrame) -> list[tuple]:
    columns = [r for r in RANKS if r in frame.columns]
    if not columns:
        raise ValueError(f"the checklist table has none of the columns {', '.join(RANKS)}")
    entries = []
    for row in frame.itertuples(index=False):
        values = {r: _clean(getattr(row, r)) for r in columns}
        if any(values.values()):
            entries.append((_LINEAGE, *(values.get(r) for r in RANKS)))
    if not entries:
        raise ValueError("the checklist table has no taxa")
    return entries
