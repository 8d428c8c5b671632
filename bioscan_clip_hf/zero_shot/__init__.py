"""Zero-shot taxonomic classification: key banks, exact search, classification rules, novelty.

Modules (one responsibility each): :mod:`.search` (exact chunked top-k, faiss-identical),
:mod:`.bank` (key bank on disk, model fingerprint), :mod:`.encode` (batched features with per-item
errors), :mod:`.kmer` (5-mer profiles), :mod:`.lineages` (taxon ids, checklists), :mod:`.evidence`
(similarities -> per-rank probabilities), :mod:`.novelty` ("not in the library", by leaving taxa out),
:mod:`.identify` (the answer), :mod:`.calibration` (fitting both on validation queries), :mod:`.specimens` (the one reader and checker of user photos and barcodes),
:mod:`.sequences` (FASTA), :mod:`.provenance` (model, bank, version and settings of every output),
:mod:`.writers` (atomic CSV/JSON/Parquet/table), :mod:`.classifier` (:class:`ZeroShotClassifier`).

Example:
    >>> from bioscan_clip_hf.zero_shot import KeyBank, ZeroShotClassifier, exact_topk
    >>> clf = ZeroShotClassifier.from_pretrained("my-model", bank="my-bank")  # doctest: +SKIP
    >>> clf.predict(images=["a.jpg"], rank="genus")  # doctest: +SKIP
"""

from .bank import KeyBank, StaleBankError, model_fingerprint
from .classifier import PREDICTION_COLUMNS, ZeroShotClassifier
from .calibration import LibraryCalibration
from .kmer import kmer_profiles
from .lineages import TaxonIndex
from .novelty import NoveltyModel, auroc
from .search import exact_topk, faiss_topk
from .sequences import SequenceRecord, parse_fasta, read_sequences

__all__ = [
    "KeyBank", "LibraryCalibration", "NoveltyModel", "PREDICTION_COLUMNS", "SequenceRecord", "StaleBankError", "TaxonIndex",
    "ZeroShotClassifier", "auroc", "exact_topk", "faiss_topk", "kmer_profiles", "model_fingerprint", "parse_fasta",
    "read_sequences",
]
