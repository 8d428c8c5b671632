"""The build report: records written per split and every record left out, with its id and why.

Example:
    >>> report = BuildReport(builder="synthetic")
    >>> report.drop("missing_image", "ABC-1", "no file cropped_256/train/0/ABC-1.jpg")
    >>> report.to_dict()["dropped"]["missing_image"]["count"]
    1
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_json

DROP_REASONS: tuple[str, ...] = (
    "missing_image",
    "unreadable_image",
    "missing_barcode",
    "invalid_barcode",
    "duplicate_record",
    "duplicate_processid",
    "not_in_partition",
)
"""Why a record can be left out; every drop is logged with the record's id in ``build_report.json``."""


@dataclass
class BuildReport:
    """Counts per split, dropped records per reason (with ids and details) and free-form notes."""

    builder: str
    parameters: dict[str, Any] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    dropped: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def drop(self, reason: str, record_id: str, detail: str = "") -> None:
        """Record that ``record_id`` was left out for ``reason`` (one of ``DROP_REASONS``)."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of {DROP_REASONS}")
        self.dropped.setdefault(reason, []).append({"processid": record_id, "detail": detail})

    def merge(self, other: BuildReport | Mapping[str, Any]) -> None:
        """Add another (shard) report's counts, drops and notes to this one."""
        data = other.to_dict() if isinstance(other, BuildReport) else other
        self.counts.update(data.get("counts", {}))
        self.notes.update(data.get("notes", {}))
        for reason, entry in data.get("dropped", {}).items():
            self.dropped.setdefault(reason, []).extend(entry["records"])

    @property
    def total(self) -> int:
        """Records written, all splits together."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``dropped`` maps reason -> {count, records: [{processid, detail}]}."""
        return {
            "builder": self.builder,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "parameters": self.parameters,
            "counts": dict(sorted(self.counts.items())),
            "total_records": self.total,
            "dropped_total": sum(len(v) for v in self.dropped.values()),
            "dropped": {
                reason: {"count": len(records), "records": records}
                for reason, records in sorted(self.dropped.items())
            },
            "notes": dict(sorted(self.notes.items())),
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.total / self.seconds, 1) if self.seconds > 0 else None,
        }

    def write(self, path: str | Path) -> Path:
        """Write the report as indented, strict JSON (atomically) and return its path."""
        return write_json(path, self.to_dict())

    def summary(self) -> str:
        """One line for logs: written per split and dropped per reason."""
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        dropped = ", ".join(f"{k}={len(v)}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.builder}: wrote {self.total} records ({counts}); dropped: {dropped}"
