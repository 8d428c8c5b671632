"""The Space as users meet it: a real server on 127.0.0.1, driven by gradio_client and Chromium.

The server runs ``space/app.py`` in a subprocess with the tiny model (random weights) and a DNA key
bank built here from ``zeroshot_data_dir`` (real COI barcodes), calibrated for novelty. Nothing
reaches the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "space" / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
RANKS = ("order", "family", "genus", "species")
# classify() outputs: photo verdict + 4 labels, barcode verdict + 4 labels, table, gallery, notes, csv.
PHOTO_VERDICT, PHOTO_LABELS = 0, slice(1, 5)
DNA_VERDICT, DNA_LABELS = 5, slice(6, 10)
TABLE, GALLERY, NOTES, CSV = 10, 11, 12, 13


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space_bank_dir(tmp_path_factory, tiny_model_dir, zeroshot_data_dir) -> Path:
    """A calibrated DNA key bank (train + key_unseen) for the tiny model."""
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor
    from bioscan_clip_hf.data import load_bioscan
    from bioscan_clip_hf.zero_shot import KeyBank

    model = BioscanClipModel.from_pretrained(tiny_model_dir).eval()
    processor = BioscanClipProcessor.from_pretrained(tiny_model_dir)
    keys = load_bioscan(zeroshot_data_dir, split=["train", "key_unseen"])
    bank = KeyBank.build(model, processor, keys, modality="dna", progress=False)
    bank.calibrate(
        model, processor, load_bioscan(zeroshot_data_dir, split="val"), load_bioscan(zeroshot_data_dir, split="val_unseen"),
        progress=False,
    )
    return bank.save(tmp_path_factory.mktemp("space_bank"))


@pytest.fixture(scope="module")
def test_records(zeroshot_data_dir) -> list[dict]:
    from bioscan_clip_hf.data import load_bioscan

    return list(load_bioscan(zeroshot_data_dir, split=["test", "test_unseen"]))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, space_bank_dir, zeroshot_data_dir, shared_data_dir):
    """``python space/app.py`` on a free loopback port; yields its URL, stops it afterwards."""
    port = _free_port()
    tmp = tmp_path_factory.mktemp("space_server")
    env = dict(
        os.environ,
        BIOSCAN_CLIP_MODEL=str(tiny_model_dir), BIOSCAN_CLIP_BANK=str(space_bank_dir),
        BIOSCAN_CLIP_REFERENCE_DATA=str(zeroshot_data_dir),
        BIOSCAN_CLIP_PHOTOS=str(shared_data_dir / "bioscan1m-images"), BIOSCAN_CLIP_CONCURRENCY="2",
        GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", NO_PROXY="127.0.0.1,localhost",
    )
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"space/app.py exited with {proc.returncode}:\n{(tmp / 'server.log').read_text()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"space/app.py did not answer within 120 s:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("client_downloads")))


def _predict(client, image=None, dna="", fasta=None, rank="species", k=5, method="nearest"):
    from gradio_client import handle_file

    return client.predict(
        handle_file(str(image)) if image else None, dna, handle_file(str(fasta)) if fasta else None, rank, k, method,
        api_name="/classify",
    )


def _app_error(client, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        _predict(client, **kwargs)
    return str(info.value)


def _assert_alive(client, record) -> None:
    """The server still answers a good request (after a bad one)."""
    out = _predict(client, dna=record["dna_barcode"])
    assert out[DNA_LABELS][0]["label"]


# -- good inputs ----------------------------------------------------------------------------------
def test_space_image_only(client, real_photo_paths):
    photo = next(p for p in real_photo_paths if p.parent.name == "cropped")
    out = _predict(client, image=photo, k=3)
    for rank, label in zip(RANKS, out[PHOTO_LABELS]):
        assert label["label"], rank
        assert 1 <= len(label["confidences"]) <= 3
    assert "Best match" in out[PHOTO_VERDICT] and "Probably a species" in out[PHOTO_VERDICT]
    assert out[DNA_VERDICT] == "No DNA barcode given."
    assert not any(out[DNA_LABELS])  # empty labels arrive as {}
    table = out[TABLE]
    assert table["headers"] == ["query", "#", "similarity", "processid", *RANKS]
    assert len(table["data"]) == 3 and all(row[0] == f"photo: {photo.name}" for row in table["data"])
    assert all(row[4] for row in table["data"])  # every neighbour has its order
    csv_text = Path(out[CSV]).read_text()
    assert csv_text.startswith("id,modality,method,rank,order")


def test_space_dna_only(client, test_records):
    record = next(r for r in test_records if r["split"] == "test")
    out = _predict(client, dna=record["dna_barcode"], k=5)
    assert out[PHOTO_VERDICT] == "No photo given."
    labels = out[DNA_LABELS]
    assert [bool(label and label["label"]) for label in labels] == [True] * 4
    # The DNA query's nearest key at species level is in the bank, and its lineage heads the table.
    table = out[TABLE]["data"]
    assert len(table) == 5 and table[0][0] == "barcode: pasted barcode"
    assert table[0][4:8] == [labels[i]["label"] for i in range(4)]
    verdict = out[DNA_VERDICT]
    assert verdict.startswith("**Probably a species") and "confident" in verdict
    # The bank's records have images in BIOSCAN_CLIP_REFERENCE_DATA: the 5 nearest are shown.
    gallery = out[GALLERY]
    assert len(gallery) == 5 and all(Path(item["image"]).is_file() for item in gallery)
    assert gallery[0]["caption"].startswith(f"barcode → {table[0][7]}")
    assert "Method: nearest" in out[NOTES]


def test_space_image_and_dna_with_rank_and_method(client, real_photo_paths, test_records):
    record = next(r for r in test_records if r["split"] == "test_unseen")
    out = _predict(client, image=real_photo_paths[0], dna=record["dna_barcode"], rank="family", k=4, method="knn")
    for labels in (out[PHOTO_LABELS], out[DNA_LABELS]):
        assert labels[0]["label"] and labels[1]["label"]
        assert not labels[2] and not labels[3]  # below the requested rank
    queries = {row[0] for row in out[TABLE]["data"]}
    assert queries == {f"photo: {real_photo_paths[0].name}", "barcode: pasted barcode"}
    assert "Method: knn" in out[NOTES]
    # k-NN scores are vote shares among the 4 neighbours.
    assert all(c["confidence"] in (0.25, 0.5, 0.75, 1.0) for c in out[DNA_LABELS][0]["confidences"])


def test_space_fasta_file_with_several_records(client, test_records, tmp_path):
    fasta = tmp_path / "three.fasta"
    fasta.write_text("".join(f">rec{i} specimen\n{r['dna_barcode']}\n" for i, r in enumerate(test_records[:3])))
    out = _predict(client, fasta=fasta)
    assert "3 records" in out[NOTES] and "only the first (`rec0`)" in out[NOTES]
    assert out[TABLE]["data"][0][0] == "barcode: three.fasta"


def test_space_page_lists_examples_and_api(server):
    config = httpx.get(server + "config", timeout=10).json()
    assert config["version"].startswith("6.")
    assert any(dep.get("api_name") == "classify" for dep in config["dependencies"])
    text = str(config["components"])
    assert "Synthetic specimens" in text and "synthetic · " in text  # space/examples, labelled synthetic
    assert "Real BIOSCAN-1M photos" in text  # BIOSCAN_CLIP_PHOTOS points at the shared photos
    assert config["max_file_size"] == 10 * 1024 * 1024


# -- bad inputs: a readable message, and the server stays up ---------------------------------------
def test_space_corrupt_image(client, test_records, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(4000))
    msg = _app_error(client, image=bad)
    assert "'broken.jpg' could not be read as a photo" in msg
    _assert_alive(client, test_records[0])


def test_space_non_image_file(client, test_records, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("field notes, not a photo\n")
    msg = _app_error(client, image=notes)
    assert "'notes.txt' could not be read as a photo" in msg and "JPEG" in msg
    _assert_alive(client, test_records[0])


def test_space_20mb_upload_is_refused(client, server, test_records, tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.write(os.urandom(20 * 1024 * 1024))
    # gradio_client refuses before uploading (it reads the limit from the page's config) ...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _predict(client, image=big)
    # ... and the server refuses a direct upload with a readable 413.
    with open(big, "rb") as f:
        response = httpx.post(server + "gradio_api/upload", files={"files": ("huge.jpg", f)}, timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text
    _assert_alive(client, test_records[0])


def test_space_text_that_is_not_dna(client, test_records):
    msg = _app_error(client, dna="hello world, this is not a barcode")
    assert "not a DNA sequence" in msg and "'E'" in msg and "'L'" in msg
    _assert_alive(client, test_records[0])


def test_space_binary_fasta_file(client, test_records, tmp_path):
    blob = tmp_path / "seq.fasta"
    blob.write_bytes(b"\x00\x01\xfe\xff" * 100)
    assert "not a text file" in _app_error(client, fasta=blob)
    _assert_alive(client, test_records[0])


def test_space_empty_submission(client, test_records):
    assert "Nothing to classify" in _app_error(client, dna="   \n ")
    assert "Nothing to classify" in _app_error(client)
    _assert_alive(client, test_records[0])


def test_space_bad_controls(client, test_records):
    dna = test_records[0]["dna_barcode"]
    assert "top-k must be between 1 and 20" in _app_error(client, dna=dna, k=500)
    assert "Unknown rank" in _app_error(client, dna=dna, rank="kingdom")
    assert "Unknown method" in _app_error(client, dna=dna, method="magic")


def test_space_missing_default_model_message(tmp_path, monkeypatch):
    """Without a model setting and without ``make demo`` output, start-up says what to do."""
    spec = importlib.util.spec_from_file_location("space_app_under_test", APP)
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, app)  # dataclasses look their module up there
    spec.loader.exec_module(app)
    monkeypatch.setattr(app, "DEFAULT_LOCAL_MODEL", tmp_path / "outputs" / "demo" / "model")
    for name in ("BIOSCAN_CLIP_MODEL", "BIOSCAN_CLIP_BANK", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="Run `make demo`.*BIOSCAN_CLIP_MODEL"):
        app.main([])


# -- a real browser ----------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (make system-deps)")


@pytest.fixture
def browser_page(server):
    """A headless Chromium page (Debian's browser driven by Playwright) showing the Space."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server, wait_until="networkidle", timeout=60_000)
            yield page
        finally:
            browser.close()


@needs_chromium
def test_space_in_chromium(browser_page, real_photo_paths, tmp_path):
    """Upload a real photo, press Identify, wait for the labels, save a screenshot."""
    photo = next(p for p in real_photo_paths if p.parent.name == "orders")
    page = browser_page
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.locator("#photo img").first.wait_for(timeout=30_000)  # the upload preview
    page.locator("#identify").click()
    page.get_by_text("Best match").first.wait_for(timeout=60_000)
    for rank in RANKS:
        label = page.locator(f"#label-image-{rank}")
        label.locator(".output-class").first.wait_for(timeout=10_000)
        assert label.locator(".output-class").first.inner_text().strip(), rank
    assert page.get_by_text("No DNA barcode given.").count() == 1
    assert page.locator("#neighbours").get_by_text(f"photo: {photo.name}").count() >= 1
    shot = tmp_path / "space.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("SPACE_SCREENSHOT")  # e.g. to look at the page after a run
    if keep:
        shutil.copy(shot, keep)


@needs_chromium
def test_space_in_chromium_bad_input(browser_page, tmp_path):
    """A 20 MB photo and non-DNA text each give a readable message in the page."""
    big = tmp_path / "huge.jpg"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    page = browser_page
    page.locator("#photo input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=30_000)
    page.locator("#dna-text textarea").fill("hello world")
    page.locator("#identify").click()
    page.get_by_text("is not a DNA sequence").first.wait_for(timeout=30_000)


# -- load ---------------------------------------------------------------------------------------
def test_space_load_20_clients(server, test_records):
    """20 concurrent clients x 10 requests on loopback: no errors; p50/p95 latency reported."""
    from gradio_client import Client

    barcodes = [r["dna_barcode"] for r in test_records]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            c = Client(server, verbose=False)
            for i in range(10):
                t0 = time.perf_counter()
                out = c.predict(None, barcodes[(n + i) % len(barcodes)], None, "species", 5, "nearest", api_name="/classify")
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if not out[DNA_LABELS][3]["label"]:
                        errors.append(f"client {n} request {i}: empty answer")
        except Exception as err:  # any failure counts against the server
            with lock:
                errors.append(f"client {n}: {type(err).__name__}: {err}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    wall = time.perf_counter() - t0
    assert not errors, errors[:5]
    assert len(latencies) == 200
    q = statistics.quantiles(latencies, n=100)
    print(f"\nspace load test: 200 requests, 20 clients, {wall:.1f} s wall, p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms")
