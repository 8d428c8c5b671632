"""Training-time variation of DNA barcodes (our addition: CLIBD trains on the barcodes as read).

Two records of one species differ by a few substitutions, and reads start and stop a few bases
apart. The DNA tokenizer cuts non-overlapping 5-mers from the first base, so a read that starts
one base later has a different token at almost every position. Seeing random substitutions and
trimmed ends during training teaches the DNA tower that such variants are the same taxon; the
real-COI recipe uses it (BENCHMARKS.md, ## Training). Off by default, as in the original.

Draws come from ``rng`` or, when it is ``None``, from the ``random`` module, which the training
loop seeds per batch, so augmented runs stay reproducible and resumable.

Example:
    >>> augment = BarcodeAugmentation(substitution_rate=0.02, max_trim_start=4, rng=random.Random(0))
    >>> variant = augment("ACGT" * 165)
    >>> 656 <= len(variant) <= 660
    True
"""

from __future__ import annotations

import random

_OTHER_BASES = {"A": "CGT", "C": "AGT", "G": "ACT", "T": "ACG"}


class BarcodeAugmentation:
    """Random base substitutions and start/end trimming of a barcode string.

    Args:
        substitution_rate: probability that a position becomes a different base (A, C, G, T
            positions only; ambiguity codes stay as they are).
        max_trim_start: drop 0..max_trim_start bases from the start (shifts the k-mer frame).
        max_trim_end: drop 0..max_trim_end bases from the end.
        rng: a ``random.Random``; ``None`` draws from the ``random`` module.

    Raises:
        ValueError: a rate outside [0, 1) or a negative trim.
    """

    def __init__(self, substitution_rate: float = 0.0, max_trim_start: int = 0, max_trim_end: int = 0,
                 rng: random.Random | None = None) -> None:
        if not 0.0 <= substitution_rate < 1.0:
            raise ValueError(f"substitution_rate must be in [0, 1), got {substitution_rate}")
        if max_trim_start < 0 or max_trim_end < 0:
            raise ValueError(f"trims must be >= 0, got max_trim_start={max_trim_start}, max_trim_end={max_trim_end}")
        self.substitution_rate = substitution_rate
        self.max_trim_start = max_trim_start
        self.max_trim_end = max_trim_end
        self.rng = rng

    @property
    def enabled(self) -> bool:
        """Whether any variation is applied."""
        return self.substitution_rate > 0 or self.max_trim_start > 0 or self.max_trim_end > 0

    def __call__(self, barcode: str) -> str:
        rng = self.rng if self.rng is not None else random
        start = rng.randint(0, self.max_trim_start) if self.max_trim_start else 0
        end = len(barcode) - (rng.randint(0, self.max_trim_end) if self.max_trim_end else 0)
        # Never trim a barcode away entirely: very short reads are kept whole.
        bases = list(barcode[start:end] if end - start >= len(barcode) // 2 else barcode)
        if self.substitution_rate > 0:
            for position, base in enumerate(bases):
                if rng.random() < self.substitution_rate and base.upper() in _OTHER_BASES:
                    bases[position] = rng.choice(_OTHER_BASES[base.upper()])
        return "".join(bases)

    def __repr__(self) -> str:
        return (f"BarcodeAugmentation(substitution_rate={self.substitution_rate}, "
                f"max_trim_start={self.max_trim_start}, max_trim_end={self.max_trim_end})")
