"""``ZeroShotClassifier``: photos and/or barcodes in, order -> species with probabilities and a
"not in the library" verdict out.

Every method yields the same kind of answer (:mod:`.evidence`, :mod:`.identify`): per rank a
probability distribution over the taxa of the key bank, calibrated when the bank was built; the
methods differ only in the evidence gathered:

* ``nearest`` (default): each taxon's evidence is its nearest key among the query's 64 nearest
  (max pooling), so the species reported is the nearest key's species, as in the original CLIBD
  rule; higher ranks sum their species' probabilities;
* ``knn``: the 10 nearest keys vote with weights exp(similarity / T) (log-sum-exp pooling), so a
  taxon with several close keys gains over one with a single close key;
* ``kmer`` (barcodes): 5-mer frequency profiles against the bank's barcodes (:mod:`.kmer`),
  pooled as ``nearest``; the strongest DNA evidence without a trained model;
* ``text``: the prompts "Order Family Genus Species" of the bank's lineages as keys.

Which evidence a specimen uses: a barcode meets a DNA bank's keys directly; a photo meets them
across the aligned towers (image -> DNA keys), and vice versa for an image bank. A specimen with
both gets the fused answer (summed log-evidence of both modalities, :class:`~.evidence.Candidates`)
when the bank's calibration found that the second modality helps on validation queries; otherwise
only the stronger one is used and ``notes`` says which was left out and why. ``modality`` always
names what was used. ``averaged`` / ``concatenated`` banks need both photo and barcode.

``taxa`` (a checklist: lineage CSV, a file of names, names such as ``Diptera`` or
``Diptera/Cecidomyiidae``; :meth:`~.lineages.TaxonIndex.select`) restricts the candidates of every
method to the listed taxa: keys outside it are not searched, and "not in the library" then means
not in the checklist's part of the library. For ``text`` without a bank it is the list of
lineages to prompt.

Rows are flat dicts (DataFrame-ready, identical to the CLI's CSV columns): ``id, modality, method,
rank, order, family, genus, species, <rank>_probability, topk_labels, topk_scores, nearest_id,
nearest_distance, novelty_probability, novel_rank, is_novel_species, confident_rank, notes, error``
and provenance. ``<rank>_probability`` is the probability of the label *if the specimen's taxon at
that rank is in the library*; ``novelty_probability`` the probability that its species is not;
``novel_rank`` the highest rank at which it appears absent (``species`` = a new species of a known
genus); ``is_novel_species`` = ``novel_rank`` is set; ``confident_rank`` the deepest rank whose
label is right with probability >= ``confidence`` counting both (never at or below ``novel_rank``).
Ranks below the requested ``rank`` are left empty. A query that failed (unreadable image,
invalid barcode) gets a row with only ``id``, ``modality``, ``notes`` and ``error`` filled.

Example:
    >>> clf = ZeroShotClassifier.from_pretrained("outputs/demo/model")  # doctest: +SKIP
    >>> row = clf.predict(dna="specimens.fasta", rank="genus", taxa="Diptera")[0]  # doctest: +SKIP
    >>> row["genus"], row["genus_probability"], row["novel_rank"], row["confident_rank"]  # doctest: +SKIP
    ('Aedes', 0.97, None, 'genus')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..taxonomy import RANKS
from .bank import KeyBank, model_fingerprint
from .calibration import candidate_sources
from .encode import combine_features, encode_dna, encode_images, encode_texts, resolve_device
from .evidence import KeySource
from .identify import CONFIDENCE, Identification, Plan, check_confidence, identify
from .kmer import kmer_profiles
from .lineages import TaxonIndex, parse_checklist
from .runtime import prepare_model
from .provenance import PROVENANCE_COLUMNS, bank_fingerprint, build_provenance, provenance_columns
from .specimens import MIN_VALID_KMERS, Query, check_queries, queries_from_python

__all__ = ["ZeroShotClassifier", "PREDICTION_COLUMNS"]

METHODS = ("nearest", "knn", "kmer", "text")
PREDICTION_COLUMNS = (
    "id", "modality", "method", "rank", *RANKS, *(f"{r}_probability" for r in RANKS), "topk_labels", "topk_scores",
    "nearest_id", "nearest_distance", "novelty_probability", "novel_rank", "is_novel_species", "confident_rank", "notes",
    "error", *PROVENANCE_COLUMNS,
)
# Query features each evidence source reads (the photo's and/or the barcode's).
_READS = {"dna": ("dna",), "image": ("image",), "kmer": ("dna",), "text:dna": ("dna",), "text:image": ("image",),
          "averaged": ("image", "dna"), "concatenated": ("image", "dna")}
# Uncalibrated maps (a bank without a calibration, text without a bank): CLIP's own temperature
# for embeddings; for 5-mer cosines, whose gaps are smaller, a sharper one.
_DEFAULT_TEMPERATURE = {"kmer": 0.01}
_UNCALIBRATED = "probabilities are not calibrated and there is no novelty verdict"


def _used(sources: Sequence[str]) -> set[str]:
    """The query modalities (``image``, ``dna``) that evidence sources read."""
    return {m for name in sources for m in _READS[name]}


def _lineage_table(taxa: Any) -> list[tuple] | None:
    """The full lineages of a checklist given as a table with all four rank columns, else None."""
    if isinstance(taxa, pd.DataFrame) or (isinstance(taxa, (list, tuple)) and taxa and all(isinstance(x, dict) for x in taxa)):
        frame = pd.DataFrame(taxa)
    elif isinstance(taxa, (str, Path)) and Path(taxa).is_file() and Path(taxa).suffix.lower() in (".csv", ".tsv"):
        frame = pd.read_csv(taxa, sep="\t" if Path(taxa).suffix.lower() == ".tsv" else ",", dtype=str)
    else:
        return None
    if any(r not in frame.columns for r in RANKS):
        return None
    frame = frame[list(RANKS)].astype(object).where(frame[list(RANKS)].notna(), None).drop_duplicates()
    return [tuple(row) for row in frame.itertuples(index=False)]


def bundled_bank(model: str | Path, revision: str | None = None) -> Path | None:
    """The ``key_bank/`` folder shipped with a model folder or Hub repo (from the Hub cache when
    offline), if there is one; used by :meth:`ZeroShotClassifier.from_pretrained` and the CLI alike.

    Example:
        >>> bundled_bank("outputs/demo/model")  # doctest: +SKIP
        PosixPath('outputs/demo/model/key_bank')
    """
    if Path(model).is_dir():
        folder = Path(model) / "key_bank"
        return folder if (folder / "bank.json").is_file() else None
    from huggingface_hub import snapshot_download

    try:
        root = snapshot_download(str(model), revision=revision, allow_patterns=["key_bank/*"])
    except Exception:  # offline, private or no such files: the model works without a bank (text method)
        return None
    folder = Path(root) / "key_bank"
    return folder if (folder / "bank.json").is_file() else None


class ZeroShotClassifier:
    """Zero-shot taxonomic classifier over a model, its processor and an optional :class:`KeyBank`."""

    def __init__(
        self,
        model,
        processor,
        bank: KeyBank | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attention: str = "auto",
        compile: bool = False,
        num_workers: int | None = None,
    ):
        """``dtype`` / ``attention`` / ``compile``: the inference path (:mod:`~.runtime`; ``auto``
        picks the fastest measured-correct one for the device: bf16 weights on GPUs and on CPUs with
        AVX-512 BF16 / AMX, else fp32). The model is cast in place. ``num_workers``: photo-decoding
        worker processes (default: :func:`~.encode.default_num_workers`)."""
        self.device = resolve_device(device)
        self.inference = prepare_model(model, self.device, dtype, attention, compile)
        self.model = model
        self.num_workers = num_workers
        self.processor = processor
        self.bank = bank
        self._fingerprints: dict[int, str] = {}  # id(model) -> weight fingerprint
        if bank is not None:  # search where the model runs (GPU matmul for large banks)
            bank.to(self.device)
        self._cache: dict[tuple, Any] = {}  # prompt features and checklist-restricted sources

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        bank: str | Path | KeyBank | None = None,
        revision: str | None = None,
        device: str = "auto",
        check_bank: bool = True,
        dtype: str | torch.dtype = "auto",
        attention: str = "auto",
        compile: bool = False,
    ) -> "ZeroShotClassifier":
        """Load a model folder or Hub id (``revision`` pins a commit), and a bank folder.

        With ``bank=None`` a ``key_bank/`` folder next to the weights (model folder or Hub repo) is
        used when present. A bank
        built from other weights raises :class:`~bioscan_clip_hf.zero_shot.bank.StaleBankError`
        (``check_bank=False`` skips the check). ``dtype`` / ``attention`` / ``compile``: see :meth:`__init__`.
        A local-looking path that does not exist, an unknown Hub id or damaged weights raise one-line
        errors (:func:`~bioscan_clip_hf.sources.load_model`).
        """
        from ..sources import load_model, resolve_source

        model = resolve_source(model)
        net, proc = load_model(model, revision=revision)
        if bank is None:
            bank = bundled_bank(model, revision)
        if bank is not None and not isinstance(bank, KeyBank):
            bank = KeyBank.load(bank, model=net if check_bank else None)
        return cls(net, proc, bank, device=device, dtype=dtype, attention=attention, compile=compile)

    def _model_fingerprint(self) -> str:
        """The weights' fingerprint, hashed once per model object (a bank stores its own: ``bank.json``)."""
        if id(self.model) not in self._fingerprints:
            self._fingerprints = {id(self.model): model_fingerprint(self.model)}
        return self._fingerprints[id(self.model)]

    def provenance(self, **settings: Any) -> dict[str, Any]:
        """The provenance record of a call with these ``settings`` (:mod:`~.provenance`): model id,
        revision and weight fingerprint, key bank fingerprint, package version, settings, inference path.

        Example:
            >>> clf.provenance(rank="genus")["model"]["fingerprint"]  # doctest: +SKIP
            '4225a57fd9713890'
        """
        bank_fp = None if self.bank is None else bank_fingerprint(self.bank, self.bank.content_fingerprint)
        settings = {**settings, **self.inference.to_dict()}
        return build_provenance(self.model, self._model_fingerprint(), self.bank, bank_fp, settings)

    # -- features -----------------------------------------------------------------------------
    def _features(
        self, queries: Sequence[Query], batch_size: int, progress: bool, callback: Callable[[int, int], None] | None = None
    ) -> dict[str, tuple[torch.Tensor, list]]:
        """Image and DNA features of the queries that have them, keyed by tower; (features, errors)."""
        out: dict[str, tuple[torch.Tensor, list]] = {}
        towers = {t: [i for i, q in enumerate(queries) if getattr(q, t) is not None and q.error is None] for t in ("image", "dna")}
        # One forward per input object: the Space asks for a specimen's fused, photo-only and barcode-only
        # answers with the same photo and barcode objects.
        unique = {t: list({id(getattr(queries[i], t)): getattr(queries[i], t) for i in rows}.values())
                  for t, rows in towers.items()}
        total, offset = sum(len(u) for u in unique.values()), 0
        for tower, fn in (("image", encode_images), ("dna", encode_dna)):
            rows, items = towers[tower], unique[tower]
            if not rows:
                continue
            slot = {id(item): k for k, item in enumerate(items)}
            order = [slot[id(getattr(queries[i], tower))] for i in rows]
            hook = None if callback is None else (lambda done, _n, base=offset: callback(base + done, total))
            workers = {"num_workers": self.num_workers} if tower == "image" else {}
            feats, errors = fn(self.model, self.processor, items, batch_size=batch_size, progress=progress, callback=hook,
                               **workers)
            offset += len(items)
            full = torch.zeros(len(queries), feats.shape[1])
            full[rows] = feats[order]
            errs: list = [None] * len(queries)
            for i, k in zip(rows, order):
                errs[i] = errors[k]
            out[tower] = (full, errs)
        return out

    def _library(self, method: str, taxa: Any, batch_size: int, progress: bool) -> tuple[TaxonIndex, dict[str, KeySource]]:
        """The taxon index and evidence sources a call searches (restricted to ``taxa``)."""
        if self.bank is None:  # text without a bank: the checklist's lineages are the library
            lineages = _lineage_table(taxa) if taxa is not None else None
            if lineages is None:
                raise ValueError("method='text' without a key bank needs taxa= a table of lineages "
                                 f"(columns {', '.join(RANKS)}), e.g. a CSV path")
            index = TaxonIndex.from_lineages(lineages)
            prompts = self._prompts(index, batch_size, progress)
            text = KeySource("text", prompts, torch.arange(len(index.leaves)))
            return index, {"text:dna": text, "text:image": text}
        index = self.bank.taxon_index
        prompts = self._prompts(index, batch_size, progress) if method == "text" else None
        sources = self.bank.sources(prompts)
        if taxa is None:
            return index, sources
        key = ("checklist", method, repr(parse_checklist(taxa)))
        if key not in self._cache:
            records = index.select(taxa)
            leaves = np.zeros(len(index.leaves), dtype=bool)
            leaves[index.leaf_of_record[records]] = True
            restricted = {}
            for name, src in sources.items():
                rows = leaves if name.startswith("text:") else (records if src.records is None else records[src.records.numpy()])
                restricted[name] = src.subset(rows)
            self._cache[key] = restricted
        return index, self._cache[key]

    def _prompts(self, index: TaxonIndex, batch_size: int, progress: bool) -> torch.Tensor:
        """Text features of the prompt of every leaf of ``index`` (the bank's are cached by the bank)."""
        if self.bank is not None and index is self.bank.taxon_index:
            return self.bank.prompt_features(self.model, self.processor, batch_size, progress)
        key = ("prompts", tuple(index.leaves))
        if key not in self._cache:
            from ..processing_bioscan_clip import taxonomy_text

            texts = [taxonomy_text(*leaf) for leaf in index.leaves]
            feats, errors = encode_texts(self.model, self.processor, texts, batch_size=max(batch_size, 64), progress=progress)
            bad = [t for t, e in zip(texts, errors) if e]
            if bad:
                raise ValueError(f"could not encode taxon prompts {bad[:3]}")
            self._cache[key] = feats
        return self._cache[key]

    def _plan(self, query_modality: str, method: str, sources: dict[str, KeySource]) -> tuple[Plan, str, list[str]]:
        """The calibrated plan for a query modality (or the best stand-in), the modality whose novelty
        model applies, and notes on what is not used or not calibrated."""
        cal = self.bank.calibration if self.bank is not None else None
        singles = [m for m in ("dna", "image") if m in query_modality.split("+")]
        notes: list[str] = []
        plan = cal.plan(query_modality, method) if cal is not None else None
        if plan is None and cal is not None and len(singles) == 2 and self.bank.modality not in ("averaged", "concatenated"):
            plan = cal.plan("dna", method) or cal.plan("image", method)
            if plan is not None:
                left = "photo" if "dna" in _used(plan.sources) else "barcode"
                notes.append(f"{left} not used: the key bank's calibration has no {method} evidence from photo and "
                             "barcode together (its validation records lack one of them)")
        if plan is None:
            options = candidate_sources(query_modality, method, list(sources))
            if not options and len(singles) == 2:
                options = candidate_sources("dna", method, list(sources)) or candidate_sources("image", method, list(sources))
                notes.append(f"{'photo' if method == 'kmer' else 'second modality'} not used: {method} has no evidence for it")
            if not options:
                raise ValueError(f"method={method!r} cannot answer a {query_modality} query with a "
                                 f"{self.bank.modality if self.bank is not None else 'missing'} key bank")
            scale = float(self.model.logit_scale.exp()) if hasattr(self.model, "logit_scale") else 1 / 0.07
            # Uncalibrated, nothing shows that fusing helps: the learned evidence alone (kmer: the 5-mers).
            names = [n for n in options[0] if n != "kmer"] or options[0]
            plan = Plan(names, [_DEFAULT_TEMPERATURE.get(n, 1.0 / scale) for n in names], method, rest=-30.0)
            if self.bank is None:
                notes.append(f"no key bank: {_UNCALIBRATED}")
            elif cal is None:
                problem = self.bank.calibration_problem
                notes.append((f"the key bank's calibration is not used ({problem}); recalibrate it with "
                              "`bioscan-clip build-bank`: " if problem else
                              "the key bank carries no calibration (rebuild it with `bioscan-clip build-bank`): ")
                             + _UNCALIBRATED)
            else:
                notes.append(f"the key bank's calibration has no {method} plan for a {query_modality} query: "
                             "its probabilities are not calibrated")
        used = _used(plan.sources)
        for modality in singles:
            reasons = [why for name, why in plan.dropped.items() if modality in _READS[name]]
            if modality not in used and reasons:
                notes.append(f"{'photo' if modality == 'image' else 'barcode'} not used: {'; '.join(reasons)}")
        return plan, "+".join(m for m in ("image", "dna") if m in used), notes

    def _vectors(self, names: Sequence[str], members: list[int], queries: Sequence[Query], feats: dict) -> dict[str, torch.Tensor]:
        """Query vectors of ``members`` for each named source."""
        out = {}
        for name in names:
            if name == "kmer":
                out[name] = kmer_profiles([queries[i].dna for i in members])
            elif name in ("averaged", "concatenated"):
                out[name] = combine_features(feats["image"][0][members], feats["dna"][0][members], name)
            else:
                out[name] = feats[_READS[name][0]][0][members]
        return out

    # -- public API -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        images: Any = None,
        dna: Any = None,
        ids: Sequence[str] | None = None,
        rank: str = "species",
        k: int = 5,
        method: str = "nearest",
        batch_size: int = 32,
        taxa: Any = None,
        progress: bool = True,
        queries: Sequence[Query] | None = None,
        callback: Callable[[int, int], None] | None = None,
        details: bool = False,
        min_valid_kmers: float = MIN_VALID_KMERS,
        confidence: float = CONFIDENCE,
    ) -> list[dict[str, Any]]:
        """Classify images and/or barcodes; returns one flat dict per query (see module docstring).

        Args:
            images: path, folder, PIL image or a list of them. dna: barcode string, FASTA path or list.
            ids: names for the queries. rank: deepest rank to report. k: alternatives listed in
            ``topk_labels`` / ``topk_scores``. method: nearest | knn | kmer | text. taxa: a checklist
            restricting every method (see module docstring); unknown names raise ValueError naming
            them. confidence: the level of ``confident_rank``. queries: pre-built
            :class:`~bioscan_clip_hf.zero_shot.specimens.Query` objects instead of images/dna.
            callback: called as ``callback(done, total)`` after every batch of inputs (GUIs).
            min_valid_kmers: a barcode with a smaller share of readable k-mers is an error row
            (:func:`~bioscan_clip_hf.zero_shot.specimens.check_queries`, which checks every query).
            details: add a ``details`` dict per classified row (GUIs such as the Space): ``topk``
            (``{rank: {"labels", "scores"}}``, scores = probabilities, for every rank down to
            ``rank``), ``neighbors`` (the nearest keys, best first: ``index, processid, order,
            family, genus, species, similarity``; none without a bank), ``absence`` (``{rank:
            P(absent from the library)}``) and ``evidence`` (the sources used, e.g. ``["dna", "image"]``).
        """
        if rank not in RANKS:
            raise ValueError(f"rank must be one of {RANKS}, got {rank!r}")
        confidence = check_confidence(confidence)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method != "text" and self.bank is None:
            raise ValueError(f"method={method!r} needs a key bank (build one with `bioscan-clip build-bank`)")
        if method == "kmer" and not self.bank.has_barcodes:
            raise ValueError("method='kmer' needs a key bank that stores its barcodes; rebuild it with "
                             "`bioscan-clip build-bank` from records with dna_barcode")
        queries = list(queries) if queries is not None else queries_from_python(images, dna, ids)
        if not queries:
            return []
        queries = check_queries(queries, getattr(self.processor, "dna_tokenizer", None), min_valid_kmers)
        provenance = provenance_columns(self.provenance(
            rank=rank, k=k, method=method, taxa=taxa if taxa is None or isinstance(taxa, (str, Path)) else "given in Python",
            min_valid_kmers=min_valid_kmers, confidence=confidence))
        index, sources = self._library(method, taxa, batch_size, progress)
        feats = self._features(queries, batch_size, progress, callback)
        rows: list[dict[str, Any]] = [
            {"id": q.id, "modality": q.modality, "method": method, "rank": rank, "error": q.error,
             "notes": list(q.notes), **provenance}
            for q in queries
        ]
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            if q.error is not None:
                continue
            have = [t for t in ("image", "dna") if getattr(q, t) is not None]
            errs = [feats[t][1][i] for t in have if feats[t][1][i]]
            if errs:
                rows[i]["error"] = "; ".join(errs)
            elif method == "kmer" and "dna" not in have:
                rows[i]["error"] = "method 'kmer' needs a barcode; this specimen has only a photo"
            elif self.bank is not None and self.bank.modality in ("averaged", "concatenated") and len(have) < 2:
                rows[i]["error"] = f"a {self.bank.modality} image+DNA key bank needs both an image and a barcode for each query"
            else:
                groups.setdefault("+".join(have), []).append(i)
        for query_modality, members in groups.items():
            plan, used, plan_notes = self._plan(query_modality, method, sources)
            cal = self.bank.calibration if self.bank is not None else None
            novelty = cal.novelty_model(used) if cal is not None else None
            if novelty is not None and any(n not in sources for n in novelty.sources):
                novelty = None
            names = list(dict.fromkeys(plan.sources + (novelty.sources if novelty is not None else [])))
            vectors = self._vectors(names, members, queries, feats)
            result = identify(index, sources, vectors, plan, k=k, novelty=novelty, confidence=confidence)
            for j, i in enumerate(members):
                rows[i]["notes"] += plan_notes
                self._fill_row(rows[i], result, j, index, rank, used, novelty is not None)
                if details:
                    rows[i]["details"] = self._details(result, j, index, rank, plan.sources)
        for row in rows:
            row["notes"] = "; ".join(dict.fromkeys(row["notes"])) or None
            for col in PREDICTION_COLUMNS:
                row.setdefault(col, None)
        extra = ("details",) if details else ()
        return [{col: row.get(col) for col in PREDICTION_COLUMNS + extra} for row in rows]

    def _nearest(self, result: Identification) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(bank rows, similarities)`` of the nearest keys: from the first shortlist over bank keys."""
        for name, short in result.shortlists.items():
            if not name.startswith("text:") and self.bank is not None:
                return short.keys, short.scores
        return None

    def _fill_row(self, row: dict, result: Identification, j: int, index: TaxonIndex, rank: str, used: str,
                  has_novelty: bool) -> None:
        """Write query ``j``'s labels (down to ``rank``), probabilities, top-k and novelty into ``row``."""
        depth = RANKS.index(rank)
        row["modality"] = used
        for d, r in enumerate(RANKS):
            ids, probs = result.ranks[r]
            row[r] = index.label(r, int(ids[j, 0])) if d <= depth and ids[j, 0] >= 0 else None
            row[f"{r}_probability"] = float(probs[j, 0]) if d <= depth else None
        ids, probs = result.ranks[rank]
        shown = [(int(t), float(p)) for t, p in zip(ids[j], probs[j]) if t >= 0]
        row["topk_labels"] = ";".join(index.label(rank, t) or "" for t, _ in shown)
        row["topk_scores"] = ";".join(f"{p:.4f}" for _, p in shown)
        nearest = self._nearest(result)
        if nearest is not None and nearest[0][j, 0] >= 0:
            row["nearest_id"] = str(self.bank.table["processid"].iloc[int(nearest[0][j, 0])])
            # cosine distance; clipped at 0 against rounding
            row["nearest_distance"] = max(0.0, 1.0 - float(nearest[1][j, 0]))
        if has_novelty:
            row["novelty_probability"] = float(result.absence[j, RANKS.index("species")])
            row["novel_rank"] = result.novel_rank[j]
            row["is_novel_species"] = result.novel_rank[j] is not None
        row["confident_rank"] = result.confident_rank[j]
        if row["confident_rank"] is not None and RANKS.index(row["confident_rank"]) > depth:
            row["confident_rank"] = rank  # confident deeper than asked: as deep as reported

    def _details(self, result: Identification, j: int, index: TaxonIndex, rank: str, evidence: list[str]) -> dict[str, Any]:
        """Per-rank top-k, the nearest key records and the absence probabilities of query ``j``."""
        topk = {}
        for r in RANKS[: RANKS.index(rank) + 1]:
            ids, probs = result.ranks[r]
            kept = [(int(t), float(p)) for t, p in zip(ids[j], probs[j]) if t >= 0]
            topk[r] = {"labels": [index.label(r, t) for t, _ in kept], "scores": [p for _, p in kept]}
        neighbors = []
        nearest = self._nearest(result)
        if nearest is not None:
            for row_id, similarity in zip(nearest[0][j, :5].tolist(), nearest[1][j, :5].tolist()):
                if row_id < 0:
                    continue
                record = self.bank.table.iloc[row_id]
                neighbors.append({
                    "index": row_id, "processid": str(record["processid"]),
                    **{r: None if pd.isna(record[r]) or record[r] == "" else record[r] for r in RANKS},
                    "similarity": similarity,
                })
        absence = None if result.absence is None else {r: float(result.absence[j, d]) for d, r in enumerate(RANKS)}
        return {"topk": topk, "neighbors": neighbors, "absence": absence, "evidence": list(evidence)}

    @torch.no_grad()
    def embed(
        self,
        images: Any = None,
        dna: Any = None,
        texts: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        batch_size: int = 32,
        progress: bool = True,
        queries: Sequence[Query] | None = None,
        min_valid_kmers: float = MIN_VALID_KMERS,
    ) -> pd.DataFrame:
        """Embeddings as a DataFrame with columns ``id, modality, embedding`` (list of floats), ``notes``, ``error``.

        One row per input and tower: images, barcodes (or pre-built ``queries``; a paired query
        gives two rows), then ``texts``. ``ids`` renames the rows in order. Inputs are checked as
        :meth:`predict` checks them; ``attrs["provenance"]`` holds the provenance record (written
        into Parquet schema metadata by ``to_parquet``).
        """
        if queries is None:
            queries = (queries_from_python(images, None, None) if images is not None else []) + (
                queries_from_python(None, dna, None) if dna is not None else []
            )
        queries = check_queries(queries, getattr(self.processor, "dna_tokenizer", None), min_valid_kmers)
        feats = self._features(queries, batch_size, progress) if queries else {}
        rows = []
        for i, q in enumerate(queries):
            towers = [t for t in ("image", "dna") if getattr(q, t) is not None] or ["dna"]
            for tower in towers:
                err = q.error or (feats[tower][1][i] if tower in feats else None)
                vec = None if err else feats[tower][0][i].tolist()
                rows.append({"id": q.id, "modality": tower, "embedding": vec, "notes": "; ".join(q.notes) or None, "error": err})
        if texts:
            tf, terr = encode_texts(self.model, self.processor, list(texts), batch_size=max(batch_size, 64), progress=progress)
            rows += [{"id": t, "modality": "text", "embedding": None if e else tf[j].tolist(), "error": e}
                     for j, (t, e) in enumerate(zip(texts, terr))]
        if ids is not None:
            if len(ids) != len(rows):
                raise ValueError(f"{len(ids)} ids for {len(rows)} embeddings")
            for row, name in zip(rows, ids):
                row["id"] = str(name)
        table = pd.DataFrame(rows, columns=["id", "modality", "embedding", "notes", "error"])
        table.attrs["provenance"] = self.provenance(min_valid_kmers=min_valid_kmers)
        return table
