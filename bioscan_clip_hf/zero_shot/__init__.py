"""Zero-shot taxonomic classification: key banks, exact search, classification rules, novelty.

Modules (one responsibility each): :mod:`.search` (exact chunked top-k, faiss-identical),
:mod:`.bank` (key bank on disk, model fingerprint), :mod:`.encode` (batched features with per-item
errors), :mod:`.classify` (nearest / k-NN / text roll-up rules), :mod:`.novelty` (calibrated
novel-species flag), :mod:`.inputs`, :mod:`.sequences` (FASTA), :mod:`.writers` (CSV/JSON/Parquet/table),
:mod:`.classifier` (:class:`ZeroShotClassifier`).

Example:
    >>> from bioscan_clip_hf.zero_shot import KeyBank, ZeroShotClassifier, exact_topk
    >>> clf = ZeroShotClassifier.from_pretrained("my-model", bank="my-bank")  # doctest: +SKIP
    >>> clf.predict(images=["a.jpg"], rank="genus")  # doctest: +SKIP
"""

from .bank import KeyBank, StaleBankError, model_fingerprint
from .classifier import PREDICTION_COLUMNS, ZeroShotClassifier
from .novelty import NoveltyCalibration, auroc, calibrate_novelty
from .search import exact_topk, faiss_topk
from .sequences import SequenceRecord, parse_fasta, read_sequences

__all__ = [
    "KeyBank", "NoveltyCalibration", "PREDICTION_COLUMNS", "SequenceRecord", "StaleBankError", "ZeroShotClassifier",
    "auroc", "calibrate_novelty", "exact_topk", "faiss_topk", "model_fingerprint", "parse_fasta", "read_sequences",
]
