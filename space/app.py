"""BIOSCAN-CLIP zero-shot insect identification in the browser (a Gradio Blocks page).

A thin page over :class:`bioscan_clip_hf.zero_shot.ZeroShotClassifier`: it reads the user's photo
and/or DNA barcode, calls ``predict`` and draws the answer. All model, search, classification and
novelty logic lives in the package.

Settings (environment variables; command-line flags override them):

* ``BIOSCAN_CLIP_MODEL``: model folder or Hub id. Default: ``outputs/demo/model`` (what
  ``make demo`` writes) when run from a checkout, ``bioscan-ml/bioscan-clip-demo`` on a Space.
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
from PIL import Image, ImageOps  # noqa: E402

from bioscan_clip_hf.data import load_bioscan  # noqa: E402
from bioscan_clip_hf.taxonomy import RANKS  # noqa: E402
from bioscan_clip_hf.zero_shot import ZeroShotClassifier, parse_fasta  # noqa: E402
from bioscan_clip_hf.zero_shot.inputs import Query  # noqa: E402
from bioscan_clip_hf.zero_shot.sequences import IUPAC_DNA, clean_sequence  # noqa: E402
from bioscan_clip_hf.zero_shot.writers import write_rows  # noqa: E402

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
DEFAULT_LOCAL_MODEL = REPO_ROOT / "outputs" / "demo" / "model"
DEFAULT_LOCAL_DATA = REPO_ROOT / "outputs" / "demo" / "data"
DEFAULT_HUB_MODEL = "bioscan-ml/bioscan-clip-demo"
DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "bioscan1m-images"
EXAMPLES_DIR = APP_DIR / "examples"

MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # ~6x a 2880x2160 BIOSCAN photo; larger is a decompression bomb risk
MAX_DNA_CHARS = 100_000  # a COI barcode is ~658 bases; this leaves room for FASTA headers and wrapping
SHORT_BARCODE = 200
MAX_K = 20
KEEP_CSV_FILES = 256
METHOD_HELP = {
    "nearest": "the nearest reference record gives every rank (the original BIOSCAN-CLIP rule); "
    "scores are cosine similarities to the nearest reference with that label",
    "knn": "majority vote of the k nearest reference records per rank; scores are vote shares",
    "text": "similarity to the taxon names of the library; scores are probabilities",
}
NOT_CLASSIFIED = "not classified"


class InputProblem(gr.Error):
    """A user input the page cannot use; its message is shown in the page, without a server traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, title="Please check your input", print_exception=False)


@dataclass
class Specimen:
    """What the user submitted, read and checked: an RGB photo and/or a cleaned barcode, plus notes."""

    image: Image.Image | None = None
    image_name: str = ""
    dna: str | None = None
    dna_name: str = ""
    notes: list[str] = field(default_factory=list)


# -- reading the inputs -------------------------------------------------------------------------
def _upload_path(payload: Any) -> Path | None:
    """The server-side path of an uploaded file (gradio FileData dict or plain path), or None."""
    if not payload:
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    return Path(path) if path else None


def _upload_name(payload: Any, path: Path) -> str:
    """The file's name as the user knows it, HTML-escaped (error messages are rendered as HTML)."""
    name = (payload.get("orig_name") if isinstance(payload, dict) else None) or path.name
    return html.escape(name, quote=False)


def _check_size(path: Path, name: str) -> None:
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise InputProblem(f"'{name}' is {size / 2**20:.1f} MB; files up to {MAX_UPLOAD_MB} MB are accepted.")
    if size == 0:
        raise InputProblem(f"'{name}' is an empty file.")


def read_photo(payload: Any) -> tuple[Image.Image, str] | None:
    """Open an uploaded photo as RGB (EXIF orientation applied); a readable error if it is not one."""
    path = _upload_path(payload)
    if path is None:
        return None
    name = _upload_name(payload, path)
    _check_size(path, name)
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InputProblem(
                    f"'{name}' is {img.width}x{img.height} pixels; photos up to {MAX_IMAGE_PIXELS // 10**6} megapixels are accepted."
                )
            photo = ImageOps.exif_transpose(img).convert("RGB")
    except InputProblem:
        raise
    except Exception as err:  # PIL raises many types for damaged or foreign files
        reason = html.escape(str(err).replace(str(path), name), quote=False)  # no server paths in the page
        raise InputProblem(
            f"'{name}' could not be read as a photo ({type(err).__name__}: {reason}). "
            "Please upload a JPEG, PNG, TIFF or WebP image."
        ) from None
    return photo, name


def _dna_from_text(text: str, source: str, notes: list[str]) -> str:
    """One cleaned barcode from pasted text or file content: FASTA (first record) or a bare sequence."""
    if len(text) > MAX_DNA_CHARS:
        raise InputProblem(f"The DNA input from {source} has {len(text):,} characters; up to {MAX_DNA_CHARS:,} are accepted.")
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(">"):
        records = parse_fasta(stripped, source=source)
        first = records[0]
        if len(records) > 1:
            notes.append(
                f"The FASTA from {source} has {len(records)} records; only the first (`{first.id}`) was classified. "
                "Use `bioscan-clip predict` to classify many specimens."
            )
        seq, error, label = first.sequence, first.error, f"record '{html.escape(first.id, quote=False)}' of {source}"
    else:
        seq, error = clean_sequence(stripped)
        label = source
    if error is not None:
        if error.startswith("invalid characters"):
            bad = sorted(set(seq) - IUPAC_DNA)
            shown = html.escape(", ".join(repr(c) for c in bad[:12]), quote=False) + (" ..." if len(bad) > 12 else "")
            raise InputProblem(
                f"The text in {label} is not a DNA sequence: it contains {shown}. "
                "Expected the letters A, C, G, T (IUPAC codes such as N are allowed), as plain text or FASTA."
            )
        raise InputProblem(f"The DNA barcode in {label} is empty.")
    if len(seq) < SHORT_BARCODE:
        notes.append(f"The barcode has only {len(seq)} bases (COI barcodes are about 658), so the answer is less reliable.")
    return seq


def read_barcode(text: str | None, fasta_payload: Any, notes: list[str]) -> tuple[str, str] | None:
    """The barcode from the text box, else from the uploaded FASTA file; None when neither has one."""
    text = text or ""
    path = _upload_path(fasta_payload)
    if text.strip():
        if path is not None:
            notes.append("Both a pasted barcode and a FASTA file were given; the pasted barcode was used.")
        return _dna_from_text(text, "the text box", notes), "pasted barcode"
    if path is None:
        return None
    name = _upload_name(fasta_payload, path)
    _check_size(path, name)
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputProblem(f"'{name}' is not a text file; please upload a FASTA file (plain text).") from None
    if "\x00" in content:
        raise InputProblem(f"'{name}' is not a text file; please upload a FASTA file (plain text).")
    return _dna_from_text(content, f"'{name}'", notes), name


def read_specimen(image: Any, dna_text: str | None, dna_file: Any) -> Specimen:
    """Read and check the submission; raises :class:`InputProblem` with a message for the page."""
    spec = Specimen()
    photo = read_photo(image)
    if photo is not None:
        spec.image, spec.image_name = photo
    barcode = read_barcode(dna_text, dna_file, spec.notes)
    if barcode is not None:
        spec.dna, spec.dna_name = barcode
    if spec.image is None and spec.dna is None:
        raise InputProblem("Nothing to classify: upload a photo, paste a DNA barcode (or upload a FASTA file), or both.")
    return spec


# -- drawing the answer ---------------------------------------------------------------------------
def _label_scores(result: dict[str, Any], rank: str) -> dict[str, float] | None:
    """``{label: score}`` for gr.Label from the per-rank top-k (first = best occurrence of a label)."""
    topk = (result.get("details") or {}).get("topk", {}).get(rank)
    if not topk:
        return None
    scores: dict[str, float] = {}
    for label, score in zip(topk["labels"], topk["scores"]):
        scores.setdefault(NOT_CLASSIFIED if label in (None, "") else str(label), float(score))
    return scores


def _lineage(result: dict[str, Any]) -> str:
    """The lineage as "Order › Family › *Genus* › *Genus species*", down to the deepest rank predicted."""
    named = [(r, result[r]) for r in RANKS if result.get(r)]
    return " › ".join(f"*{n}*" if r in ("genus", "species") else str(n) for r, n in named)


def verdict(result: dict[str, Any], bank_name: str) -> str:
    """The novelty verdict and the best guess in plain words (Markdown)."""
    if result.get("error"):
        return f"Could not classify this input: {result['error']}."
    similarity = 1.0 - float(result["nearest_distance"])
    nearest = result.get("nearest_id")
    best = f"Best match: {_lineage(result)}"
    best += f" (nearest reference `{nearest}`, cosine similarity {similarity:.2f})." if nearest else f" (cosine similarity {similarity:.2f})."
    novel, confident = result.get("is_novel_species"), result.get("confident_rank")
    if novel is None:
        return f"**No novelty verdict**: the key bank {bank_name} carries no novelty calibration.\n\n{best}"
    trust = f"confident down to {confident}" if confident else "not confident even at the order"
    if novel:
        head = f"**Probably a species missing from the reference library**; {trust}."
    else:
        head = f"**Probably a species in the reference library**; {trust}."
    return f"{head}\n\n{best}"


def neighbour_rows(query: str, result: dict[str, Any]) -> list[list[Any]]:
    """Table rows for the nearest reference records of one query."""
    rows = []
    for pos, nb in enumerate((result.get("details") or {}).get("neighbors", []), start=1):
        rows.append([query, pos, round(float(nb["similarity"]), 3), nb["processid"], *(nb.get(r) or "" for r in RANKS)])
    return rows


TABLE_HEADERS = ["query", "#", "similarity", "processid", *RANKS]


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
        target = self._cache / f"{stem}.{suffix}"
        partial = self._cache / f".{stem}.{uuid.uuid4().hex}"
        partial.write_bytes(data)
        os.replace(partial, target)  # atomic: a concurrent request never sees half a file
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


class BioscanSpace:
    """The page: loads the classifier once, builds the Blocks, answers submissions."""

    def __init__(self, classifier: ZeroShotClassifier, settings: SpaceSettings) -> None:
        self.clf = classifier
        self.settings = settings
        bank = classifier.bank
        self.bank_modality = bank.modality if bank is not None else None
        self.bank_name = f"({len(bank):,} {self.bank_modality} keys)" if bank is not None else "(none)"
        has_text = "text" in classifier.model.config.modalities
        self.methods = [m for m in ("nearest", "knn") if bank is not None] + (["text"] if has_text else [])
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
    def classify(self, image: Any, dna_text: str | None, dna_file: Any, rank: str, k: Any, method: str) -> tuple:
        """Gradio handler (``/classify``): raw inputs as the page or a client sends them; returns the photo
        verdict and 4 rank labels, the barcode verdict and 4 labels, the neighbour table, the gallery,
        the notes and the CSV path."""
        if rank not in RANKS:
            raise InputProblem(f"Unknown rank {html.escape(repr(rank), quote=False)}; choose one of {', '.join(RANKS)}.")
        if method not in self.methods:
            raise InputProblem(f"Unknown method {html.escape(repr(method), quote=False)}; this model offers {', '.join(self.methods)}.")
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise InputProblem(f"top-k must be a whole number, got {html.escape(repr(k), quote=False)}.") from None
        if not 1 <= k <= MAX_K:
            raise InputProblem(f"top-k must be between 1 and {MAX_K}, got {k}.")
        spec = read_specimen(image, dna_text, dna_file)
        queries = []
        if spec.image is not None:
            queries.append(Query(f"photo: {spec.image_name}", image=spec.image))
        if spec.dna is not None:
            queries.append(Query(f"barcode: {spec.dna_name}", dna=spec.dna))
        if self.bank_modality in ("averaged", "concatenated"):
            if spec.image is None or spec.dna is None:
                raise InputProblem(
                    f"This key bank holds {self.bank_modality} image+DNA embeddings: give both a photo and a barcode."
                )
            queries = [Query("photo + barcode", image=spec.image, dna=spec.dna)]
        results = self.clf.predict(queries=queries, rank=rank, k=k, method=method, progress=False, details=True)
        by_kind = {("image" if q.modality == "image" else "dna"): r for q, r in zip(queries, results)}
        if self.bank_modality in ("averaged", "concatenated"):
            by_kind = {"image": results[0], "dna": results[0]}
        panels: list[Any] = []
        for kind, missing in (("image", "No photo given."), ("dna", "No DNA barcode given.")):
            result = by_kind.get(kind)
            panels.append(verdict(result, self.bank_name) if result else missing)
            depth = RANKS.index(rank)
            panels += [_label_scores(result, r) if result and d <= depth else None for d, r in enumerate(RANKS)]
        table = pd.DataFrame([row for q, r in zip(queries, results) for row in neighbour_rows(q.id, r)], columns=TABLE_HEADERS)
        gallery = self._gallery(queries, results) if self.references is not None else []
        notes = spec.notes + [f"Method: {method}, {METHOD_HELP[method]}."]
        csv_path = self._csv(results)
        return (*panels, table, gallery, "\n\n".join(f"- {n}" for n in notes), csv_path)

    def _gallery(self, queries: list[Query], results: list[dict[str, Any]]) -> list[tuple[str, str]]:
        items = []
        for q, r in zip(queries, results):
            for nb in (r.get("details") or {}).get("neighbors", []):
                img = self.references.path(nb["processid"])
                if img is not None:
                    name = nb.get("species") or nb.get("genus") or nb.get("family") or nb.get("order") or NOT_CLASSIFIED
                    items.append((img, f"{q.id.split(':')[0]} → {name} ({float(nb['similarity']):.2f})"))
        return items

    def _csv(self, results: list[dict[str, Any]]) -> str:
        """The package's flat prediction rows (the CLI's CSV columns) as a downloadable file."""
        flat = [{k: v for k, v in r.items() if k != "details"} for r in results]
        path = Path(self._files.name) / f"prediction-{uuid.uuid4().hex[:12]}.csv"
        write_rows(flat, fmt="csv", output=path)
        # Gradio has copied older results into its own cache by now; keep the folder small.
        self._csv_paths.append(path)
        while len(self._csv_paths) > KEEP_CSV_FILES:
            self._csv_paths.popleft().unlink(missing_ok=True)
        return str(path)

    # the page ---------------------------------------------------------------------------------
    def examples(self) -> tuple[list[list[Any]], list[str], list[list[Any]], list[str]]:
        """Synthetic examples from ``space/examples`` and real photos from the photos folder, if any."""
        synthetic, synthetic_labels = [], []
        manifest = EXAMPLES_DIR / "examples.json"
        if manifest.is_file():
            for item in json.loads(manifest.read_text(encoding="utf-8")):
                image = str(EXAMPLES_DIR / item["image"]) if item.get("image") else None
                dna = (EXAMPLES_DIR / item["fasta"]).read_text(encoding="utf-8") if item.get("fasta") else ""
                synthetic.append([image, dna])
                synthetic_labels.append(f"synthetic · {item['label']}")
        real, real_labels = [], []
        photos = self.settings.photos
        if photos is not None and photos.is_dir():
            for path in sorted(photos.glob("cropped/*.jpg")) + sorted(photos.glob("orders/*.jpg")):
                real.append([str(path)])
                real_labels.append(f"real photo · {path.stem}" + (" (order)" if path.parent.name == "orders" else ""))
        return synthetic, synthetic_labels, real, real_labels

    def build(self) -> gr.Blocks:
        """The Blocks page. The API endpoint is ``/classify``."""
        source = html.escape(self.settings.model)
        # delete_cache: uploads and results older than an hour are removed every hour.
        with gr.Blocks(title="BIOSCAN-CLIP: zero-shot insect identification", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(
                "# BIOSCAN-CLIP: zero-shot insect identification\n"
                "Give a photo of an insect, its DNA barcode (COI), or both. The model places them in one "
                "embedding space with a reference library of identified specimens and names the order, "
                "family, genus and species, and says whether the specimen is probably a species the "
                f"library lacks.\n\nModel: `{source}` · key bank {html.escape(self.bank_name)}"
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
                    top_k = gr.Slider(1, MAX_K, value=5, step=1, label="Top-k: nearest reference records used (labels show the best 5)")
                    with gr.Row():
                        submit = gr.Button("Identify", variant="primary", elem_id="identify")
                        clear = gr.ClearButton(value="Clear")
                    notes = gr.Markdown(elem_id="notes")
                    csv_file = gr.File(label="Result (CSV)", interactive=False, elem_id="csv")
                with gr.Column(scale=2):
                    with gr.Row(equal_height=False):
                        panels: list[gr.Component] = []
                        for kind, title in (("image", "From the photo"), ("dna", "From the DNA barcode")):
                            with gr.Column(min_width=280):
                                gr.Markdown(f"### {title}")
                                panels.append(gr.Markdown(elem_id=f"verdict-{kind}"))
                                panels += [
                                    gr.Label(num_top_classes=5, label=r.capitalize(), elem_id=f"label-{kind}-{r}")
                                    for r in RANKS
                                ]
                    table = gr.Dataframe(
                        headers=TABLE_HEADERS, label="Nearest reference records", interactive=False,
                        wrap=True, elem_id="neighbours",
                        column_widths=["17%", "4%", "9%", "12%", "12%", "14%", "14%", "18%"],
                    )
                    gallery = gr.Gallery(
                        label="Nearest reference images", columns=5, height=220, visible=self.references is not None,
                        elem_id="gallery",
                    )
            synthetic, synthetic_labels, real, real_labels = self.examples()
            if synthetic:
                gr.Examples(
                    synthetic, [image, dna_text], label="Synthetic specimens (drawn insects and simulated barcodes, not real data)",
                    example_labels=synthetic_labels,
                )
            if real:
                gr.Examples(
                    real, [image], label="Real BIOSCAN-1M photos (© CBG Photography Group, CC BY-NC-SA 4.0)",
                    example_labels=real_labels, examples_per_page=8,
                )
            with gr.Accordion("Limitations", open=False):
                gr.Markdown(
                    "- The answer is only as good as the reference library (key bank): a species it lacks can "
                    "only be recognised as *missing*, never named.\n"
                    "- The novelty verdict uses a distance threshold calibrated on held-out species; it is a "
                    "probability, not a proof.\n"
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


# -- start-up -------------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}") from None


def resolve_settings(args: argparse.Namespace) -> SpaceSettings:
    """Model and bank from flags, else the environment, else the demo folder (the Hub repo on a Space)."""
    model = args.model or os.environ.get("BIOSCAN_CLIP_MODEL")
    if not model:
        if os.environ.get("SPACE_ID"):  # set by Hugging Face Spaces
            model = DEFAULT_HUB_MODEL
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
    """A local folder for ``spec``: itself when it is one, else a snapshot of the Hub repo."""
    if Path(spec).is_dir():
        return spec
    if Path(spec).suffix or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise SystemExit(f"The {what} {spec!r} is neither a folder nor a Hub id (owner/name).")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(spec, revision=revision)
    except Exception as err:  # offline without a cached copy, unknown repo, no permission
        raise SystemExit(f"Could not get the {what} {spec!r} from the Hugging Face Hub: {err}") from None


def load_classifier(settings: SpaceSettings) -> ZeroShotClassifier:
    """The package's classifier for the configured model and bank (Hub ids are fetched once)."""
    model_dir = _local(settings.model, settings.revision, "model")
    bank_dir = _local(settings.bank, settings.revision, "key bank") if settings.bank else None
    try:
        return ZeroShotClassifier.from_pretrained(model_dir, bank=bank_dir)
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
