"""``ZeroShotClassifier``: photos and/or barcodes in, order -> species with scores and a novelty flag out.

Methods:

* ``nearest`` (default, the original CLIBD rule): all four ranks from the nearest key of the bank;
* ``knn``: per-rank majority vote among the k nearest keys;
* ``text``: similarity to taxonomy prompts ("Order Family Genus Species", the training text) of
  every lineage in the bank (or ``taxa``), softmax over lineages, probabilities summed up to the
  higher ranks.

Which query features meet which keys: a bank of one tower (``dna``, ``image``, ``text``) is
searched with the query's feature of that tower when the query has it, otherwise with the other
tower (image -> DNA keys, DNA -> image keys); a paired image+DNA query against a single-tower bank
uses the matching tower. ``averaged`` / ``concatenated`` banks need both image and barcode, as in
the original evaluation.

Rows are flat dicts (DataFrame-ready, identical to the CLI's CSV columns): ``id, modality, method,
rank, order, family, genus, species, <rank>_score, score, topk_labels, topk_scores, nearest_id,
nearest_distance, is_novel_species, confident_rank, error``. Ranks below the requested ``rank`` are
left empty. A query that failed (unreadable image, invalid barcode) gets a row with only ``id``,
``modality`` and ``error`` filled; the others are classified normally.

Example:
    >>> clf = ZeroShotClassifier.from_pretrained("outputs/demo/model", bank="outputs/demo/bank")  # doctest: +SKIP
    >>> clf.predict(dna="specimens.fasta", rank="genus")[0]["genus"]  # doctest: +SKIP
    'Aedes'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from .bank import KeyBank
from .classify import RANKS, knn_vote, nearest_rule, text_rollup
from .encode import combine_features, encode_dna, encode_images, encode_texts, resolve_device
from .inputs import Query, queries_from_python

__all__ = ["ZeroShotClassifier", "PREDICTION_COLUMNS"]

METHODS = ("nearest", "knn", "text")
PREDICTION_COLUMNS = (
    "id", "modality", "method", "rank", *RANKS, *(f"{r}_score" for r in RANKS), "score", "topk_labels",
    "topk_scores", "nearest_id", "nearest_distance", "is_novel_species", "confident_rank", "error",
)


def _lineages_from(taxa: Any) -> list[tuple]:
    """Lineages from a DataFrame / list of dicts / CSV path with order, family, genus, species columns."""
    frame = pd.read_csv(taxa) if isinstance(taxa, (str, Path)) else pd.DataFrame(taxa)
    missing = [r for r in RANKS if r not in frame.columns]
    if missing:
        raise ValueError(f"taxa lacks columns {missing} (need {', '.join(RANKS)})")
    frame = frame[list(RANKS)].astype(object).where(frame[list(RANKS)].notna(), None).drop_duplicates()
    return [tuple(row) for row in frame.itertuples(index=False)]


def _bundled_bank(model: str | Path, revision: str | None) -> Path | None:
    """The ``key_bank/`` folder shipped with a model folder or Hub repo, if there is one."""
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

    def __init__(self, model, processor, bank: KeyBank | None = None, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.bank = bank
        if bank is not None:  # search where the model runs (GPU matmul for large banks)
            bank.embeddings = bank.embeddings.to(self.device)
        self._prompt_cache: dict[tuple, torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        bank: str | Path | KeyBank | None = None,
        revision: str | None = None,
        device: str = "auto",
        check_bank: bool = True,
    ) -> "ZeroShotClassifier":
        """Load a model folder or Hub id (``revision`` pins a commit), and a bank folder.

        With ``bank=None`` a ``key_bank/`` folder next to the weights (model folder or Hub repo) is
        used when present. A bank
        built from other weights raises :class:`~bioscan_clip_hf.zero_shot.bank.StaleBankError`
        (``check_bank=False`` skips the check).
        """
        from .. import BioscanClipModel, BioscanClipProcessor

        net = BioscanClipModel.from_pretrained(str(model), revision=revision)
        proc = BioscanClipProcessor.from_pretrained(str(model), revision=revision)
        if bank is None:
            bank = _bundled_bank(model, revision)
        if bank is not None and not isinstance(bank, KeyBank):
            bank = KeyBank.load(bank, model=net if check_bank else None)
        return cls(net, proc, bank, device=device)

    # -- features -----------------------------------------------------------------------------
    def _features(
        self, queries: Sequence[Query], batch_size: int, progress: bool, callback: Callable[[int, int], None] | None = None
    ) -> dict[str, tuple[torch.Tensor, list]]:
        """Image and DNA features of the queries that have them, keyed by tower; (features, errors)."""
        out: dict[str, tuple[torch.Tensor, list]] = {}
        towers = {t: [i for i, q in enumerate(queries) if getattr(q, t) is not None and q.error is None] for t in ("image", "dna")}
        total, offset = sum(len(r) for r in towers.values()), 0
        for tower, fn in (("image", encode_images), ("dna", encode_dna)):
            rows = towers[tower]
            if not rows:
                continue
            items = [getattr(queries[i], tower) for i in rows]
            hook = None if callback is None else (lambda done, _n, base=offset: callback(base + done, total))
            feats, errors = fn(self.model, self.processor, items, batch_size=batch_size, progress=progress, callback=hook)
            offset += len(rows)
            full = torch.zeros(len(queries), feats.shape[1])
            full[rows] = feats
            errs: list = [None] * len(queries)
            for i, e in zip(rows, errors):
                errs[i] = e
            out[tower] = (full, errs)
        return out

    def _query_vectors(self, queries: Sequence[Query], feats: dict, key_modality: str) -> tuple[torch.Tensor, list, list]:
        """One query vector per query for ``key_modality`` keys -> (vectors, feature type, errors)."""
        n = len(queries)
        dim = next(iter(feats.values()))[0].shape[1] if feats else 0
        dim = dim * 2 if key_modality == "concatenated" else dim
        vectors = torch.zeros(n, dim)
        kinds: list[str | None] = [None] * n
        errors: list[str | None] = [q.error for q in queries]
        for i, q in enumerate(queries):
            if errors[i] is not None:
                continue
            have = {t: feats[t][0][i] for t in ("image", "dna") if t in feats and getattr(q, t) is not None}
            errs = [feats[t][1][i] for t in have if feats[t][1][i]]
            if errs:
                errors[i] = "; ".join(errs)
                continue
            if key_modality in ("averaged", "concatenated"):
                if len(have) < 2:
                    errors[i] = f"a {key_modality} image+DNA key bank needs both an image and a barcode for each query"
                    continue
                vectors[i] = combine_features(have["image"][None], have["dna"][None], key_modality)[0]
                kinds[i] = key_modality
                continue
            order = [key_modality] if key_modality in have else []
            order += [t for t in ("dna", "image") if t in have and t not in order]
            kinds[i] = order[0]
            vectors[i] = have[order[0]]
        return vectors, kinds, errors

    def _prompt_features(self, lineages: list[tuple], batch_size: int, progress: bool) -> torch.Tensor:
        key = tuple(lineages)
        if key not in self._prompt_cache:
            from ..processing_bioscan_clip import taxonomy_text

            texts = [taxonomy_text(*lineage) for lineage in lineages]
            feats, errors = encode_texts(self.model, self.processor, texts, batch_size=max(batch_size, 64), progress=progress)
            bad = [t for t, e in zip(texts, errors) if e]
            if bad:
                raise ValueError(f"could not encode taxon prompts {bad[:3]}")
            self._prompt_cache = {key: feats}
        return self._prompt_cache[key]

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
    ) -> list[dict[str, Any]]:
        """Classify images and/or barcodes; returns one flat dict per query (see module docstring).

        Args:
            images: path, folder, PIL image or a list of them. dna: barcode string, FASTA path or list.
            ids: names for the queries. rank: deepest rank to report. k: neighbours (nearest/knn) or
            alternatives (text). method: nearest | knn | text. taxa: lineages for ``text`` (DataFrame,
            list of dicts or CSV path; default: the bank's). queries: pre-built
            :class:`~bioscan_clip_hf.zero_shot.inputs.Query` objects instead of images/dna.
            callback: called as ``callback(done, total)`` after every batch of inputs (GUIs).
            details: add a ``details`` dict per classified row (GUIs such as the Space): ``topk``
            (``{rank: {"labels", "scores"}}`` for every rank down to ``rank``), ``neighbors`` (the
            nearest keys, best first: ``index, processid, order, family, genus, species,
            similarity``; one for ``text``, none without a bank) and ``feature`` (query feature used).
        """
        if rank not in RANKS:
            raise ValueError(f"rank must be one of {RANKS}, got {rank!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method in ("nearest", "knn") and self.bank is None:
            raise ValueError(f"method={method!r} needs a key bank (build one with `bioscan-clip build-bank`)")
        queries = list(queries) if queries is not None else queries_from_python(images, dna, ids)
        if not queries:
            return []
        feats = self._features(queries, batch_size, progress, callback)
        key_modality = self.bank.modality if self.bank is not None else "text"
        vectors, kinds, errors = self._query_vectors(queries, feats, key_modality)
        good = [i for i, e in enumerate(errors) if e is None]
        rows: list[dict[str, Any]] = [
            {"id": q.id, "modality": q.modality, "method": method, "rank": rank, "error": errors[i]}
            for i, q in enumerate(queries)
        ]
        if good:
            preds, nearest_scores, nearest_idx = self._predictions(queries, feats, vectors, good, method, k, batch_size, taxa, progress)
            for j, i in enumerate(good):
                nearest = None if nearest_idx is None else str(self.bank.table["processid"].iloc[int(nearest_idx[j, 0])])
                cal = self.bank.calibration(kinds[i]) if self.bank is not None else None
                self._fill_row(rows[i], preds[j], rank, float(nearest_scores[j, 0]), nearest, cal)
                if details:
                    hits = None if nearest_idx is None else (nearest_idx[j], nearest_scores[j])
                    rows[i]["details"] = self._details(preds[j], rank, hits, kinds[i])
        for row in rows:
            for col in PREDICTION_COLUMNS:
                row.setdefault(col, None)
        extra = ("details",) if details else ()
        return [{col: row.get(col) for col in PREDICTION_COLUMNS + extra} for row in rows]

    def _details(self, pred: dict, rank: str, hits, feature: str | None) -> dict[str, Any]:
        """Per-rank top-k and the nearest key records of one query (see ``predict(details=True)``)."""
        topk = {r: {"labels": list(pred[r][2]), "scores": [float(x) for x in pred[r][3]]} for r in RANKS[: RANKS.index(rank) + 1]}
        neighbors = []
        if hits is not None:
            for index, similarity in zip(*hits):
                record = self.bank.table.iloc[int(index)]
                neighbors.append({
                    "index": int(index), "processid": str(record["processid"]),
                    **{r: None if pd.isna(record[r]) or record[r] == "" else record[r] for r in RANKS},
                    "similarity": float(similarity),
                })
        return {"topk": topk, "neighbors": neighbors, "feature": feature}

    def _predictions(self, queries, feats, vectors, good, method, k, batch_size, taxa, progress):
        """Per good query: {rank: (label, score, top labels, top scores)}, nearest similarities, nearest key rows.

        The nearest key (and its similarity) comes from the bank when there is one; for the text
        method without a bank, the most similar prompt stands in (``nearest_idx`` None).
        """
        nearest_scores = nearest_idx = None
        if self.bank is not None:
            nearest_scores, nearest_idx = self.bank.search(vectors[good], k=k if method != "text" else 1)
            nearest_scores, nearest_idx = nearest_scores.cpu().numpy(), nearest_idx.cpu().numpy()
        if method != "text":
            labels = {r: self.bank.labels(r) for r in RANKS}
            rule = nearest_rule if method == "nearest" else knn_vote
            return rule(labels, nearest_idx, nearest_scores, k=k), nearest_scores, nearest_idx
        if taxa is not None:
            lineages = _lineages_from(taxa)
        else:
            lineages = [tuple(v or None for v in row) for row in self.bank.taxa()[list(RANKS)].itertuples(index=False)]
        prompts = self._prompt_features(lineages, batch_size, progress)
        # Text similarity from image and/or DNA: a paired query averages its two features.
        tq = torch.stack([self._text_query(queries[i], feats, i) for i in good])
        similarity = tq @ prompts.T
        probs = torch.softmax(self.model.logit_scale.exp().float().cpu() * similarity, dim=1)
        if nearest_scores is None:
            nearest_scores = similarity.max(dim=1).values.numpy()[:, None]
        return text_rollup(probs.numpy(), lineages, k=k), nearest_scores, nearest_idx

    @staticmethod
    def _fill_row(row: dict, pred: dict, rank: str, similarity: float, nearest_id: str | None, cal) -> None:
        """Write one query's labels (down to ``rank``), scores, top-k and novelty fields into ``row``."""
        depth = RANKS.index(rank)
        for d, r in enumerate(RANKS):
            row[r] = pred[r][0] if d <= depth else None
            row[f"{r}_score"] = pred[r][1] if d <= depth else None
        _, score, tops, top_scores = pred[rank]
        row["score"] = score
        row["topk_labels"] = ";".join("" if t is None else str(t) for t in tops)
        row["topk_scores"] = ";".join(f"{s:.4f}" for s in top_scores)
        distance = max(0.0, 1.0 - similarity)  # cosine distance; clipped at 0 against rounding
        row["nearest_distance"] = distance
        row["nearest_id"] = nearest_id
        if cal is not None:
            row["is_novel_species"] = cal.is_novel(distance)
            row["confident_rank"] = cal.confident_rank(distance)

    @staticmethod
    def _text_query(query: Query, feats: dict, i: int) -> torch.Tensor:
        have = [feats[t][0][i] for t in ("image", "dna") if t in feats and getattr(query, t) is not None]
        return torch.nn.functional.normalize(torch.stack(have).mean(0), dim=0)

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
    ) -> pd.DataFrame:
        """Embeddings as a DataFrame with columns ``id, modality, embedding`` (list of floats), ``error``.

        One row per input and tower: images, barcodes (or pre-built ``queries``; a paired query
        gives two rows), then ``texts``. ``ids`` renames the rows in order.
        """
        if queries is None:
            queries = (queries_from_python(images, None, None) if images is not None else []) + (
                queries_from_python(None, dna, None) if dna is not None else []
            )
        feats = self._features(queries, batch_size, progress) if queries else {}
        rows = []
        for i, q in enumerate(queries):
            towers = [t for t in ("image", "dna") if getattr(q, t) is not None] or ["dna"]
            for tower in towers:
                err = q.error or (feats[tower][1][i] if tower in feats else None)
                vec = None if err else feats[tower][0][i].tolist()
                rows.append({"id": q.id, "modality": tower, "embedding": vec, "error": err})
        if texts:
            tf, terr = encode_texts(self.model, self.processor, list(texts), batch_size=max(batch_size, 64), progress=progress)
            rows += [{"id": t, "modality": "text", "embedding": None if e else tf[j].tolist(), "error": e}
                     for j, (t, e) in enumerate(zip(texts, terr))]
        if ids is not None:
            if len(ids) != len(rows):
                raise ValueError(f"{len(ids)} ids for {len(rows)} embeddings")
            for row, name in zip(rows, ids):
                row["id"] = str(name)
        return pd.DataFrame(rows, columns=["id", "modality", "embedding", "error"])
