"""BIOSCAN-CLIP zero-shot insect identification in the browser (a Gradio Blocks page).

A thin page over :class:`bioscan_clip_hf.zero_shot.ZeroShotClassifier`: the user's photo and/or
barcode are read and checked by :mod:`bioscan_clip_hf.zero_shot.specimens` (the reader the CLI and
the Python API use), ``predict`` answers, and the page draws the answer: per rank the calibrated
probabilities, and in plain words whether the specimen is in the reference library or probably a
taxon the library lacks. All model, search, probability and novelty logic lives in the package.

Settings (environment variables; command-line flags override them):

* ``BIOSCAN_CLIP_MODEL``: model folder or Hub id. Default: ``outputs/demo/model`` (what
  ``make demo`` writes) when run from a checkout; on a Space, the model repo the Space's README names
  (``models:``, the repo ``preload_from_hub`` fetches).
* ``BIOSCAN_CLIP_BANK``: key-bank folder or Hub id. Default: the ``key_bank/`` inside the model.
* ``BIOSCAN_CLIP_REVISION``: Hub revision (commit) of the model and bank repos.
* ``BIOSCAN_CLIP_REFERENCE_DATA``: the data set (folder or Hub id) the key bank was built from;
  when its records have images, the page shows the nearest reference images. Default:
  ``outputs/demo/data`` with the default demo model, else none.
* ``BIOSCAN_CLIP_PHOTOS``: folder of real BIOSCAN-1M photos offered as examples. Default:
  ``../shared/data/bioscan1m-images`` next to the checkout (skipped when absent).
* ``BIOSCAN_CLIP_CONCURRENCY`` (default 2) predictions at once; ``BIOSCAN_CLIP_QUEUE`` (default 64)
  requests waiting; uploads are limited to 10 MB.

Example:
    $ make demo && make space                         # then open http://127.0.0.1:7860
    $ BIOSCAN_CLIP_MODEL=my/model python space/app.py --port 7861
"""

from __future__ import annotations

import argparse
import html
import io
import json
import os
import sys
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Never phone home: the Space must work offline and privately.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from bioscan_clip_hf.atomic import write_bytes  # noqa: E402
from bioscan_clip_hf.data import load_bioscan  # noqa: E402
from bioscan_clip_hf.sources import SourceError, is_hub_id, resolve_source  # noqa: E402
from bioscan_clip_hf.taxonomy import RANKS  # noqa: E402
from bioscan_clip_hf.zero_shot import ZeroShotClassifier  # noqa: E402
from bioscan_clip_hf.zero_shot.specimens import ImageError, Query, check_queries, load_image, queries_from_text  # noqa: E402
from bioscan_clip_hf.zero_shot.writers import write_rows  # noqa: E402

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
DEFAULT_LOCAL_MODEL = REPO_ROOT / "outputs" / "demo" / "model"
DEFAULT_LOCAL_DATA = REPO_ROOT / "outputs" / "demo" / "data"
DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "bioscan1m-images"
EXAMPLES_DIR = APP_DIR / "examples"
PLACEHOLDER_ORG = "YOUR-ORG/"  # README.md's model repo until the deployer names theirs (README, "Deploy")

MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # ~6x a 2880x2160 BIOSCAN photo; larger is a decompression bomb risk
MAX_DNA_CHARS = 100_000  # a COI barcode is ~658 bases; this leaves room for FASTA headers and wrapping
MAX_K = 20
KEEP_CSV_FILES = 256
COMBINED_BANKS = ("averaged", "concatenated")
METHOD_HELP = {
    "nearest": "evidence from the nearest reference records (the original BIOSCAN-CLIP rule)",
    "knn": "evidence pooled over the k nearest reference records of each taxon",
    "text": "similarity to the taxon names of the library",
    "kmer": "5-mer profiles of the barcode against the library's barcodes (no neural network)",
}
NOT_CLASSIFIED = "not classified"


class InputProblem(gr.Error):
    """A user input the page cannot use; its message is shown in the page, without a server traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, title="Please check your input", print_exception=False)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)  # messages are rendered as HTML


@dataclass
class Specimen:
    """What the user submitted, read and checked: an RGB photo and/or a checked barcode, plus notes."""

    image: Image.Image | None = None
    image_name: str = ""
    barcode: Query | None = None
    barcode_name: str = ""
    notes: list[str] = field(default_factory=list)


# -- reading the inputs (the package's specimen reader; the page adds only upload limits) ---------
def _upload_path(payload: Any) -> Path | None:
    """The server-side path of an uploaded file (gradio FileData dict or plain path), or None."""
    if not payload:
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    return Path(path) if path else None


def _upload_name(payload: Any, path: Path) -> str:
    """The file's name as the user knows it (never the server's path)."""
    return (payload.get("orig_name") if isinstance(payload, dict) else None) or path.name


def _check_size(path: Path, name: str) -> None:
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise InputProblem(f"'{_escape(name)}' is {size / 2**20:.1f} MB; files up to {MAX_UPLOAD_MB} MB are accepted.")
    if size == 0:
        raise InputProblem(f"'{_escape(name)}' is an empty file.")


def read_photo(payload: Any) -> tuple[Image.Image, str] | None:
    """The uploaded photo as RGB (EXIF orientation applied, 16-bit and float images rescaled)."""
    path = _upload_path(payload)
    if path is None:
        return None
    name = _upload_name(payload, path)
    _check_size(path, name)
    try:
        return load_image(path, name=name, max_pixels=MAX_IMAGE_PIXELS), name
    except ImageError as err:
        raise InputProblem(_escape(str(err)) + ".") from None


def _barcode_text(text: str | None, fasta_payload: Any, notes: list[str]) -> tuple[str, str] | None:
    """``(text, where it came from)`` of the barcode: the text box, else the uploaded FASTA file."""
    path = _upload_path(fasta_payload)
    if text and text.strip():
        if path is not None:
            notes.append("Both a pasted barcode and a FASTA file were given; the pasted barcode was used.")
        content, where = text, "the text box"
    elif path is not None:
        name = _upload_name(fasta_payload, path)
        _check_size(path, name)
        where = f"'{name}'"
        try:
            content = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            content = "\x00"
        if "\x00" in content:
            raise InputProblem(f"{_escape(where)} is not a text file; please upload a FASTA file (plain text).")
    else:
        return None
    if len(content) > MAX_DNA_CHARS:
        raise InputProblem(f"The DNA input in {_escape(where)} has {len(content):,} characters; up to {MAX_DNA_CHARS:,} are accepted.")
    return content, where


def read_barcode(text: str | None, fasta_payload: Any, dna_tokenizer, notes: list[str]) -> tuple[Query, str] | None:
    """The first barcode of the text box or FASTA file, read and checked as ``predict`` checks it.

    The check runs here too (``predict`` repeats it, which changes nothing) so that an unusable
    barcode is a message about the input rather than an empty answer.
    """
    found = _barcode_text(text, fasta_payload, notes)
    if found is None:
        return None
    content, where = found
    queries = queries_from_text(content, name=where)
    if len(queries) > 1:
        notes.append(
            f"The FASTA in {where} has {len(queries)} records; only the first (`{queries[0].id}`) was classified. "
            "Use `bioscan-clip predict` to classify many specimens."
        )
    query = check_queries(queries[:1], dna_tokenizer)[0]
    if query.error is not None:
        label = where if query.id == where else f"record '{query.id}' of {where}"
        raise InputProblem(f"The DNA barcode in {_escape(label)} cannot be used: {_escape(query.error)}.")
    return query, ("pasted barcode" if where == "the text box" else where.strip("'"))


def read_specimen(image: Any, dna_text: str | None, dna_file: Any, dna_tokenizer) -> Specimen:
    """Read and check the submission; raises :class:`InputProblem` with a message for the page."""
    spec = Specimen()
    photo = read_photo(image)
    if photo is not None:
        spec.image, spec.image_name = photo
    barcode = read_barcode(dna_text, dna_file, dna_tokenizer, spec.notes)
    if barcode is not None:
        spec.barcode, spec.barcode_name = barcode
    if spec.image is None and spec.barcode is None:
        raise InputProblem("Nothing to classify: upload a photo, paste a DNA barcode (or upload a FASTA file), or both.")
    return spec


# -- drawing the answer ---------------------------------------------------------------------------
def _name(rank: str, label: Any) -> str:
    return f"*{label}*" if rank in ("genus", "species") else str(label)


def _probability(result: dict[str, Any], rank: str) -> float | None:
    value = result.get(f"{rank}_probability")
    return None if value is None or value != value else float(value)


def _labelled(result: dict[str, Any], rank: str) -> str:
    p = _probability(result, rank)
    return _name(rank, result[rank]) + ("" if p is None else f", {p:.2f}")


def label_scores(result: dict[str, Any] | None, rank: str) -> dict[str, float] | None:
    """``{label: probability}`` for gr.Label: the rank's alternatives, best first (``predict(details=True)``)."""
    topk = ((result or {}).get("details") or {}).get("topk", {}).get(rank)
    if not topk:
        return None
    out: dict[str, float] = {}
    for label, score in zip(topk["labels"], topk["scores"]):
        out.setdefault(NOT_CLASSIFIED if label in (None, "") else str(label), float(score))
    return out


def verdict(result: dict[str, Any], rank: str) -> str:
    """The answer in plain words (Markdown): in the library or probably missing, how sure, the lineage.

    Examples of the first line: "**In the library: *Aedes aegypti*, 0.97**", "**Probably an
    undescribed species of the genus *Aedes*** ...".
    """
    if result.get("error"):
        return f"**Could not classify this input**: {_escape(result['error'])}"
    depth = RANKS.index(rank)
    named = [r for r in RANKS[: depth + 1] if result.get(r)]
    if not named:
        return "**No answer**: the library gives no label for this input."
    deepest = named[-1]
    absent = result.get("novelty_probability")
    novel = result.get("novel_rank") or None
    if absent is None or absent != absent:
        head = f"**Best match: {_labelled(result, deepest)}** (no novelty verdict: this key bank carries no calibration)."
    elif novel is not None and RANKS.index(novel) <= depth:
        parent = RANKS[RANKS.index(novel) - 1] if novel != "order" else None
        if novel == "species":
            head = f"**Probably an undescribed species of the genus {_name('genus', result['genus'])}**, or a species this library lacks"
        elif parent is not None and result.get(parent):
            head = f"**Probably a {novel} missing from the library, in the {parent} {_name(parent, result[parent])}**"
        else:
            head = f"**Probably a {novel} missing from the library**"
        head += f" (probability {absent:.2f} that its species is not in the library)."
    else:
        head = f"**In the library: {_labelled(result, deepest)}**"
        head += f" (probability {absent:.2f} that its species is not in the library)."
        if novel is not None:
            head += f" Below the {rank}, it is probably a {novel} missing from the library."
    confident = result.get("confident_rank") or None
    if confident is None:
        trust = "Not confident even at the order."
    elif result.get(confident):
        trust = f"Confident down to the {confident}: {_labelled(result, confident)}."
    else:
        trust = f"Confident down to the {confident}."
    probabilities = {r: _probability(result, r) for r in named}
    lineage = " › ".join(_name(r, result[r]) + ("" if p is None else f" ({p:.2f})") for r, p in probabilities.items())
    nearest = f" Nearest reference record: `{result['nearest_id']}`." if result.get("nearest_id") else ""
    return f"{head}\n\n{trust} Lineage with probabilities: {lineage}.{nearest}"


def neighbour_rows(query: str, result: dict[str, Any]) -> list[list[Any]]:
    """Table rows for the nearest reference records of one query."""
    rows = []
    for pos, nb in enumerate((result.get("details") or {}).get("neighbors", []), start=1):
        rows.append([query, pos, round(float(nb["similarity"]), 3), nb["processid"], *(nb.get(r) or "" for r in RANKS)])
    return rows


def provenance_line(record: dict[str, Any]) -> str:
    """Model, weights, key bank and package version in one Markdown line."""
    model, bank = record["model"], record.get("bank")
    line = f"Model `{model['id']}` (weights `{model['fingerprint']}`"
    line += f", revision `{model['revision']}`)" if model.get("revision") else ")"
    line += " · no key bank" if bank is None else f" · key bank `{bank['fingerprint']}` ({bank['n_keys']:,} {bank['modality']} keys)"
    return line + f" · bioscan-clip-hf {record['package_version']}"


TABLE_HEADERS = ["query", "#", "similarity", "processid", *RANKS]
PANELS = (("answer", "The answer"), ("image", "From the photo alone"), ("dna", "From the barcode alone"))


class ReferenceImages:
    """Photos of the key bank's records, looked up by ``processid`` in the data set the bank came from.

    Only the index (processid -> split and row) is held in memory. A photo is written to
    ``cache_dir`` the first time it is shown, as its original bytes, and the page returns that
    path: gradio copies files into its cache atomically, whereas PIL images returned to a
    gr.Gallery are re-encoded into a shared path that concurrent requests overwrite while it is
    being served (seen as truncated downloads under load with gradio 6.31).
    """

    def __init__(self, source: str, processids: set[str], cache_dir: Path) -> None:
        data = load_bioscan(source, decode_images=False)
        self._data = data
        self._cache = cache_dir
        self._written: dict[str, str] = {}
        self._where: dict[str, tuple[str, int]] = {}
        for split, ds in data.items():
            if "image" not in ds.column_names:
                continue
            for row, pid in enumerate(ds["processid"]):
                if pid in processids:
                    self._where.setdefault(pid, (split, row))

    def __len__(self) -> int:
        return len(self._where)

    def path(self, processid: str) -> str | None:
        """A file holding the record's photo, or None when it has none."""
        where = self._where.get(processid)
        if where is None:
            return None
        if processid in self._written:
            return self._written[processid]
        image = self._data[where[0]][where[1]]["image"]
        data = (image or {}).get("bytes") or (Path(image["path"]).read_bytes() if (image or {}).get("path") else None)
        if not data:
            return None
        with Image.open(io.BytesIO(data)) as img:
            suffix = (img.format or "png").lower()
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in processid)
        target = write_bytes(self._cache / f"{stem}.{suffix}", data)  # atomic: no request sees half a file
        self._written[processid] = str(target)
        return str(target)


@dataclass
class SpaceSettings:
    """Where the model and key bank come from, and the page's limits."""

    model: str
    bank: str | None
    revision: str | None
    photos: Path | None
    reference_data: str | None = None
    concurrency: int = 2
    queue_size: int = 64


def read_examples(folder: Path = EXAMPLES_DIR) -> tuple[list[dict[str, Any]], tuple[str, str | None] | None]:
    """The synthetic examples written by ``space/make_examples.py`` and the (model weights, key bank)
    fingerprints their answers were checked with; ``([], None)`` when there are none."""
    manifest = folder / "examples.json"
    if not manifest.is_file():
        return [], None
    content = json.loads(manifest.read_text(encoding="utf-8"))
    return content["examples"], fingerprints(content["generated_with"]["provenance"])


def fingerprints(record: dict[str, Any]) -> tuple[str, str | None]:
    """(weights, key bank) fingerprints of a provenance record: what an answer depends on."""
    return record["model"]["fingerprint"], (record.get("bank") or {}).get("fingerprint")


def example_inputs(item: dict[str, Any], folder: Path = EXAMPLES_DIR) -> list[Any]:
    """The page inputs ``[photo path, barcode text]`` of one example."""
    image = str(folder / item["image"]) if item.get("image") else None
    return [image, (folder / item["fasta"]).read_text(encoding="utf-8") if item.get("fasta") else ""]


class BioscanSpace:
    """The page: loads the classifier once, builds the Blocks, answers submissions."""

    def __init__(self, classifier: ZeroShotClassifier, settings: SpaceSettings) -> None:
        self.clf = classifier
        self.settings = settings
        bank = classifier.bank
        self.bank_modality = bank.modality if bank is not None else None
        self.bank_name = f"({len(bank):,} {self.bank_modality} keys)" if bank is not None else "(none)"
        self.record = classifier.provenance()
        self.calibrated = bank is not None and bank.calibration is not None
        has_text = "text" in classifier.model.config.modalities
        self.methods = [m for m in ("nearest", "knn") if bank is not None] + (["text"] if has_text else [])
        if bank is not None and getattr(bank, "has_barcodes", False):
            self.methods.append("kmer")
        if not self.methods:
            raise ValueError(f"{settings.model}: no key bank and no text tower, so nothing can be classified")
        # Gradio copies returned files into its cache; these originals go when the process ends.
        self._files = tempfile.TemporaryDirectory(prefix="bioscan-clip-space-")
        self._csv_paths: deque[Path] = deque()
        self.references = None
        if bank is not None and settings.reference_data:
            (Path(self._files.name) / "references").mkdir()
            try:
                refs = ReferenceImages(
                    settings.reference_data, set(bank.table["processid"].astype(str)), Path(self._files.name) / "references"
                )
            except (OSError, ValueError) as err:
                raise SystemExit(f"Could not read the reference data set {settings.reference_data!r}: {err}") from None
            self.references = refs if len(refs) else None

    # one submission -------------------------------------------------------------------------
    def _controls(self, rank: str, k: Any, method: str) -> int:
        if rank not in RANKS:
            raise InputProblem(f"Unknown rank {_escape(repr(rank))}; choose one of {', '.join(RANKS)}.")
        if method not in self.methods:
            raise InputProblem(f"Unknown method {_escape(repr(method))}; this model offers {', '.join(self.methods)}.")
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise InputProblem(f"top-k must be a whole number, got {_escape(repr(k))}.") from None
        if not 1 <= k <= MAX_K:
            raise InputProblem(f"top-k must be between 1 and {MAX_K}, got {k}.")
        return k

    def _queries(self, spec: Specimen) -> dict[str, Query]:
        """The specimen as given (both inputs count), plus each input alone when both are given."""
        photo = f"photo: {spec.image_name}"
        barcode = f"barcode: {spec.barcode_name}"
        dna = spec.barcode.dna if spec.barcode is not None else None
        if self.bank_modality in COMBINED_BANKS and (spec.image is None or dna is None):
            raise InputProblem(f"This key bank holds {self.bank_modality} image+DNA embeddings: give both a photo and a barcode.")
        name = "photo + barcode" if spec.image is not None and dna is not None else (photo if spec.image is not None else barcode)
        queries = {"answer": Query(name, image=spec.image, dna=dna, notes=list(spec.barcode.notes) if spec.barcode else [])}
        if spec.image is not None and dna is not None and self.bank_modality not in COMBINED_BANKS:
            queries["image"] = Query(photo, image=spec.image)
            queries["dna"] = Query(barcode, dna=dna)
        return queries

    def classify(self, image: Any, dna_text: str | None, dna_file: Any, rank: str, k: Any, method: str) -> tuple:
        """Gradio handler (``/classify``): raw inputs as the page or a client sends them; returns for the
        answer, the photo alone and the barcode alone a verdict and 4 rank labels each, then the
        neighbour table, the gallery, the notes and the CSV path."""
        k = self._controls(rank, k, method)
        spec = read_specimen(image, dna_text, dna_file, self.clf.processor.dna_tokenizer)
        queries = self._queries(spec)
        rows = self.clf.predict(queries=list(queries.values()), rank=rank, k=k, method=method, progress=False, details=True)
        results = dict(zip(queries, rows))
        given = "a photo" if spec.image is not None else "a barcode"
        panels: list[Any] = []
        for kind, _ in PANELS:
            result = results.get(kind)
            if result is not None:
                panels.append(verdict(result, rank))
            elif self.bank_modality in COMBINED_BANKS:
                panels.append("Both inputs are combined in one key bank feature: see the answer above.")
            else:
                panels.append(f"Only {given} was given: the answer above is from it alone.")
            depth = RANKS.index(rank)
            panels += [label_scores(result, r) if d <= depth else None for d, r in enumerate(RANKS)]
        table = pd.DataFrame([row for q, r in zip(queries.values(), rows) for row in neighbour_rows(q.id, r)], columns=TABLE_HEADERS)
        gallery = self._gallery(results["answer"]) if self.references is not None else []
        notes, seen = list(spec.notes), set()
        for kind, result in results.items():  # a note shared by several queries is shown once
            for note in _notes(result):
                if note not in seen:
                    seen.add(note)
                    notes.append(f"{queries[kind].id}: {note}")
        notes.append(f"Method: {method}, {METHOD_HELP.get(method, method)}"
                     + ("; probabilities calibrated on held-out specimens when the library was built." if self.calibrated else "."))
        return (*panels, table, gallery, "\n\n".join(f"- {_escape(n)}" for n in notes), self._csv(rows))

    def _gallery(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        items = []
        for nb in (result.get("details") or {}).get("neighbors", []):
            img = self.references.path(nb["processid"])
            if img is not None:
                name = nb.get("species") or nb.get("genus") or nb.get("family") or nb.get("order") or NOT_CLASSIFIED
                items.append((img, f"{name} ({float(nb['similarity']):.2f})"))
        return items

    def _csv(self, results: list[dict[str, Any]]) -> str:
        """The package's flat prediction rows (the CLI's CSV columns, provenance included) as a file."""
        flat = [{k: v for k, v in r.items() if k != "details"} for r in results]
        path = Path(self._files.name) / f"prediction-{uuid.uuid4().hex[:12]}.csv"
        write_rows(flat, fmt="csv", output=path)
        # Gradio has copied older results into its own cache by now; keep the folder small.
        self._csv_paths.append(path)
        while len(self._csv_paths) > KEEP_CSV_FILES:
            self._csv_paths.popleft().unlink(missing_ok=True)
        return str(path)

    # the page ---------------------------------------------------------------------------------
    def examples(self) -> tuple[list[list[Any]], list[str], str, list[list[Any]], list[str]]:
        """Synthetic examples from ``space/examples`` (inputs, labels, title) and real photos from the
        photos folder (inputs, labels), if any."""
        items, checked_with = read_examples()
        synthetic = [example_inputs(item) for item in items]
        # A label states the page's answer only when it was checked with these weights and this bank.
        checked = checked_with == fingerprints(self.record)
        synthetic_labels = [f"synthetic · {item['label'] if checked else item['plain_label']}" for item in items]
        title = "Synthetic specimens (drawn insects and simulated barcodes, not real data; " + (
            "each label is the answer this model gives, checked by a test)" if checked
            else "made with another model or key bank, so no answers are stated)")
        real, real_labels = [], []
        photos = self.settings.photos
        if photos is not None and photos.is_dir():
            for path in sorted(photos.glob("cropped/*.jpg")) + sorted(photos.glob("orders/*.jpg")):
                real.append([str(path)])
                real_labels.append(f"real photo · {path.stem}" + (" (order)" if path.parent.name == "orders" else ""))
        return synthetic, synthetic_labels, title, real, real_labels

    def build(self) -> gr.Blocks:
        """The Blocks page. The API endpoint is ``/classify``."""
        # delete_cache: uploads and results older than an hour are removed every hour.
        with gr.Blocks(title="BIOSCAN-CLIP: zero-shot insect identification", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(
                "# BIOSCAN-CLIP: zero-shot insect identification\n"
                "Give a photo of an insect, its DNA barcode (COI), or both. The model places them in one "
                "embedding space with a reference library of identified specimens, gives the probability of "
                "each order, family, genus and species, and says whether the specimen is probably a taxon the "
                f"library lacks.\n\n{_escape(provenance_line(self.record))}"
            )
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    image = gr.Image(
                        label="Insect photo (upload or drag and drop)", type="filepath",
                        sources=["upload", "clipboard"], height=280, elem_id="photo",
                    )
                    dna_text = gr.Textbox(
                        label="DNA barcode", lines=4, max_lines=8, elem_id="dna-text",
                        placeholder="Paste a COI barcode (ACGT...) or FASTA text",
                    )
                    dna_file = gr.File(
                        label="...or a FASTA file", file_types=[".fasta", ".fa", ".fas", ".fna", ".txt"],
                        height=110, elem_id="dna-file",
                    )
                    with gr.Row():
                        rank = gr.Dropdown(list(RANKS), value="species", label="Deepest rank")
                        method = gr.Dropdown(self.methods, value=self.methods[0], label="Method")
                    top_k = gr.Slider(1, MAX_K, value=5, step=1, label="Top-k: alternatives shown per rank")
                    with gr.Row():
                        submit = gr.Button("Identify", variant="primary", elem_id="identify")
                        clear = gr.ClearButton(value="Clear")
                    notes = gr.Markdown(elem_id="notes")
                    csv_file = gr.File(label="Result (CSV, with the model and key bank that made it)", interactive=False, elem_id="csv")
                with gr.Column(scale=2):
                    panels = _panel(*PANELS[0])
                    with gr.Row(equal_height=False):
                        for kind, title in PANELS[1:]:
                            panels += _panel(kind, title)
                    table = gr.Dataframe(
                        headers=TABLE_HEADERS, label="Nearest reference records", interactive=False,
                        wrap=True, elem_id="neighbours",
                        column_widths=["17%", "4%", "9%", "12%", "12%", "14%", "14%", "18%"],
                    )
                    gallery = gr.Gallery(
                        label="Nearest reference images", columns=5, height=220, visible=self.references is not None,
                        elem_id="gallery",
                    )
            synthetic, synthetic_labels, synthetic_title, real, real_labels = self.examples()
            if synthetic:
                gr.Examples(synthetic, [image, dna_text], label=synthetic_title, example_labels=synthetic_labels)
            if real:
                gr.Examples(
                    real, [image], label="Real BIOSCAN-1M photos (© CBG Photography Group, CC BY-NC-SA 4.0)",
                    example_labels=real_labels, examples_per_page=8,
                )
            with gr.Accordion("Limitations", open=False):
                gr.Markdown(
                    "- The answer is only as good as the reference library (key bank): a species it lacks can "
                    "only be recognised as *missing*, never named. \"Undescribed\" means \"absent from this "
                    "library\": check a larger library (BOLD) before describing a species.\n"
                    "- Probabilities are calibrated on held-out specimens of the library's own data; on other "
                    "data they are estimates, not guarantees.\n"
                    "- Photos should show one specimen, like BIOSCAN's cropped images; other photos are out of "
                    "distribution.\n"
                    "- The demo model is trained on a small **synthetic** data set and identifies synthetic taxa; "
                    "its answers on real insects are meaningless. Use a released model for real specimens.\n"
                    "- This tool assists identification by experts; it does not replace them."
                )
            outputs = [*panels, table, gallery, notes, csv_file]
            clear.add([image, dna_text, dna_file, *outputs])
            submit.click(
                self.classify, [image, dna_text, dna_file, rank, top_k, method], outputs,
                api_name="classify", concurrency_limit=self.settings.concurrency,
                # The handler reads the uploads itself so that damaged files get a readable message.
                preprocess=False,
            )
        demo.queue(max_size=self.settings.queue_size, default_concurrency_limit=self.settings.concurrency)
        return demo

    def launch(self, host: str | None, port: int | None) -> None:
        allowed = [str(EXAMPLES_DIR)] + ([str(self.settings.photos)] if self.settings.photos else [])
        self.build().launch(
            server_name=host, server_port=port, max_file_size=f"{MAX_UPLOAD_MB}mb",
            allowed_paths=allowed, footer_links=["api"], show_error=False,
        )


def _panel(kind: str, title: str) -> list[gr.Component]:
    """One answer panel: its verdict and a probability label per rank."""
    with gr.Column(min_width=280):
        gr.Markdown(f"### {title}")
        parts: list[gr.Component] = [gr.Markdown(elem_id=f"verdict-{kind}")]
        with gr.Row():
            parts += [gr.Label(num_top_classes=MAX_K, label=f"{r.capitalize()} (probability)", elem_id=f"label-{kind}-{r}") for r in RANKS]
    return parts


def _notes(result: dict[str, Any]) -> list[str]:
    """A row's ``notes`` column as a list."""
    notes = result.get("notes")
    if not notes:
        return []
    return list(notes) if isinstance(notes, (list, tuple)) else [n for n in str(notes).split("; ") if n]


# -- start-up -------------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}") from None


def readme_model() -> str:
    """The model repo this Space's README names (``models:``): one place for the pusher to set it, the
    one ``preload_from_hub`` fetches at build time."""
    from huggingface_hub import metadata_load

    readme = APP_DIR / "README.md"
    models = (metadata_load(readme) or {}).get("models") or []
    if not models:
        raise SystemExit(f"{readme} names no model (`models:`); set BIOSCAN_CLIP_MODEL")
    model = str(models[0])
    if model.startswith(PLACEHOLDER_ORG):  # a Space copied without its deploy step: say so, not "repo not found"
        raise SystemExit(f"{readme} still names the placeholder model {model} under `models:`: push your model "
                         "(bioscan-clip push) and put its id there and under `preload_from_hub:`, or set BIOSCAN_CLIP_MODEL")
    return model


def resolve_settings(args: argparse.Namespace) -> SpaceSettings:
    """Model and bank from flags, else the environment, else the demo folder (the Hub repo on a Space)."""
    model = args.model or os.environ.get("BIOSCAN_CLIP_MODEL")
    if not model:
        if os.environ.get("SPACE_ID"):  # set by Hugging Face Spaces
            model = readme_model()
        elif DEFAULT_LOCAL_MODEL.is_dir():
            model = str(DEFAULT_LOCAL_MODEL)
        else:
            raise SystemExit(
                f"No model found at {DEFAULT_LOCAL_MODEL}.\n"
                "Run `make demo` to train the demo model there (a few minutes on a CPU), or set "
                "BIOSCAN_CLIP_MODEL to a model folder or Hub id (and BIOSCAN_CLIP_BANK to its key bank "
                "if it has no key_bank/ folder inside)."
            )
    photos = os.environ.get("BIOSCAN_CLIP_PHOTOS")
    reference_data = os.environ.get("BIOSCAN_CLIP_REFERENCE_DATA") or None
    if reference_data is None and model == str(DEFAULT_LOCAL_MODEL) and DEFAULT_LOCAL_DATA.is_dir():
        reference_data = str(DEFAULT_LOCAL_DATA)
    return SpaceSettings(
        model=model,
        bank=args.bank or os.environ.get("BIOSCAN_CLIP_BANK") or None,
        revision=os.environ.get("BIOSCAN_CLIP_REVISION") or None,
        reference_data=reference_data,
        photos=Path(photos).resolve() if photos else (DEFAULT_PHOTOS.resolve() if DEFAULT_PHOTOS.is_dir() else None),
        concurrency=_env_int("BIOSCAN_CLIP_CONCURRENCY", 2),
        queue_size=_env_int("BIOSCAN_CLIP_QUEUE", 64),
    )


def _local(spec: str, revision: str | None, what: str) -> str:
    """A local folder for ``spec``: itself when it is one, else a snapshot of the Hub repo it names."""
    try:
        source = resolve_source(spec, what=what)
    except SourceError as err:
        raise SystemExit(str(err)) from None
    if not is_hub_id(source):
        return str(source)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, revision=revision)
    except Exception as err:  # offline without a cached copy, unknown repo, no permission
        raise SystemExit(f"Could not get the {what} {spec!r} from the Hugging Face Hub: {err}") from None


def load_classifier(settings: SpaceSettings) -> ZeroShotClassifier:
    """The package's classifier for the configured model and bank (Hub ids are fetched once).

    A Hub model is loaded by its id, so the answers' provenance names the repo and the commit.
    """
    try:
        model = str(resolve_source(settings.model))
    except SourceError as err:
        raise SystemExit(str(err)) from None
    bank_dir = _local(settings.bank, settings.revision, "key bank") if settings.bank else None
    try:
        return ZeroShotClassifier.from_pretrained(model, bank=bank_dir, revision=settings.revision)
    except (OSError, ValueError) as err:
        raise SystemExit(f"Could not load the model {settings.model!r} (key bank {settings.bank or 'inside the model'}): {err}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder or Hub id (default: $BIOSCAN_CLIP_MODEL or outputs/demo/model)")
    parser.add_argument("--bank", help="key-bank folder or Hub id (default: $BIOSCAN_CLIP_BANK or the model's key_bank/)")
    parser.add_argument("--host", default=None, help="address to listen on (default: gradio's, 127.0.0.1 locally)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860)")
    args = parser.parse_args(argv)
    settings = resolve_settings(args)
    space = BioscanSpace(load_classifier(settings), settings)
    print(f"BIOSCAN-CLIP Space: model {settings.model}, key bank {space.bank_name}", file=sys.stderr, flush=True)
    space.launch(args.host, args.port)


if __name__ == "__main__":
    main()
