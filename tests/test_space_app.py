"""The Space as users meet it: a real server on 127.0.0.1, driven by gradio_client and Chromium.

The server runs ``space/app.py`` in a subprocess with the tiny model (random weights) and a DNA key
bank built here by ``bioscan-clip build-bank`` from ``zeroshot_data_dir`` (real COI barcodes),
calibrated. The examples test runs ``space/make_examples.py`` on the briefly trained tiny model and
asserts each example's claim through the page's handler. Nothing reaches the network.
"""

from __future__ import annotations

import importlib.util
import json
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
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "space" / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
RANKS = ("order", "family", "genus", "species")
# classify() outputs: verdict + 4 labels for the answer, the photo alone and the barcode alone;
# then the table, gallery, notes and csv.
ANSWER_VERDICT, ANSWER_LABELS = 0, slice(1, 5)
PHOTO_VERDICT, PHOTO_LABELS = 5, slice(6, 10)
DNA_VERDICT, DNA_LABELS = 10, slice(11, 15)
TABLE, GALLERY, NOTES, CSV = 15, 16, 17, 18


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_app(name: str = "space_app_under_test"):
    """``space/app.py`` imported in this process (dataclasses look their module up in sys.modules)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, APP)
    app = importlib.util.module_from_spec(spec)
    sys.modules[name] = app
    spec.loader.exec_module(app)
    return app


@pytest.fixture(scope="module")
def space_bank_dir(tiny_dna_bank_dir) -> Path:
    """A calibrated DNA key bank (train + key_unseen) for the tiny model, built by `bioscan-clip build-bank`."""
    return tiny_dna_bank_dir


@pytest.fixture(scope="module")
def test_records(zeroshot_data_dir) -> list[dict]:
    from bioscan_clip_hf.data import load_bioscan

    return list(load_bioscan(zeroshot_data_dir, split=["test", "test_unseen"]))


@pytest.fixture(scope="module")
def space_process(tmp_path_factory, tiny_model_dir, space_bank_dir, zeroshot_data_dir, shared_data_dir):
    """``python space/app.py`` on a free loopback port; yields ``(url, process)``, stops it afterwards."""
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
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(space_process) -> str:
    return space_process[0]


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
    assert out[ANSWER_LABELS][0]["label"]


def _probabilities(label: dict) -> list[float]:
    return [c["confidence"] for c in label["confidences"]]


def _assert_probability_labels(labels: list, depth: int = 4) -> None:
    """Each rank's label lists probabilities (best first, summing to at most 1); ranks below ``depth`` are empty."""
    for d, label in enumerate(labels):
        if d >= depth:
            assert not label, d  # empty labels arrive as {}
            continue
        probs = _probabilities(label)
        assert label["label"] and probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
        assert sum(probs) <= 1.0 + 1e-6


# -- good inputs ----------------------------------------------------------------------------------
def test_space_image_only(client, real_photo_paths):
    photo = next(p for p in real_photo_paths if p.parent.name == "cropped")
    out = _predict(client, image=photo, k=3)
    _assert_probability_labels(out[ANSWER_LABELS])
    assert all(1 <= len(label["confidences"]) <= 3 for label in out[ANSWER_LABELS])  # k alternatives
    verdict = out[ANSWER_VERDICT]
    assert verdict.startswith(("**In the library: ", "**Probably ")) and "that its species is not in the library" in verdict
    assert "Lineage with probabilities: " in verdict
    assert out[PHOTO_VERDICT] == out[DNA_VERDICT] == "Only a photo was given: the answer above is from it alone."
    assert not any(out[PHOTO_LABELS]) and not any(out[DNA_LABELS])
    table = out[TABLE]
    assert table["headers"] == ["query", "#", "similarity", "processid", *RANKS]
    assert 1 <= len(table["data"]) <= 5 and all(row[0] == f"photo: {photo.name}" for row in table["data"])
    assert all(row[4] for row in table["data"])  # every neighbour has its order


def test_space_dna_only_and_its_csv_records_provenance(client, server, test_records):
    import pandas as pd

    record = next(r for r in test_records if r["split"] == "test")
    out = _predict(client, dna=record["dna_barcode"], k=5)
    assert out[PHOTO_VERDICT].startswith("Only a barcode was given")
    labels = out[ANSWER_LABELS]
    _assert_probability_labels(labels)
    table = out[TABLE]["data"]
    assert len(table) == 5 and table[0][0] == "barcode: pasted barcode"
    # The bank's records have images in BIOSCAN_CLIP_REFERENCE_DATA: the 5 nearest are shown.
    gallery = out[GALLERY]
    assert len(gallery) == 5 and all(Path(item["image"]).is_file() for item in gallery)
    assert "Method: nearest" in out[NOTES]
    row = pd.read_csv(out[CSV]).iloc[0]
    assert row["id"] == "barcode: pasted barcode" and row["species"] == labels[3]["label"]
    assert row["species_probability"] == pytest.approx(_probabilities(labels[3])[0], abs=1e-4)
    page = str(httpx.get(server + "config", timeout=10).json()["components"])
    assert f"weights `{row['model_fingerprint']}`" in page and f"key bank `{row['bank_fingerprint']}`" in page
    assert json.loads(row["settings"])["k"] == 5


def test_space_photo_and_barcode_are_combined(client, real_photo_paths, test_records):
    record = next(r for r in test_records if r["split"] == "test_unseen")
    out = _predict(client, image=real_photo_paths[0], dna=record["dna_barcode"], rank="family", k=4, method="knn")
    for labels in (out[ANSWER_LABELS], out[PHOTO_LABELS], out[DNA_LABELS]):
        _assert_probability_labels(labels, depth=2)
    assert not out[PHOTO_VERDICT].startswith("Only") and not out[DNA_VERDICT].startswith("Only")
    queries = {row[0] for row in out[TABLE]["data"]}
    assert queries == {"photo + barcode", f"photo: {real_photo_paths[0].name}", "barcode: pasted barcode"}
    assert "Method: knn" in out[NOTES]


def test_space_fasta_file_with_several_records(client, test_records, tmp_path):
    fasta = tmp_path / "three.fasta"
    fasta.write_text("".join(f">rec{i} specimen\n{r['dna_barcode']}\n" for i, r in enumerate(test_records[:3])))
    out = _predict(client, fasta=fasta)
    assert "3 records" in out[NOTES] and "only the first (`rec0`)" in out[NOTES]
    assert out[TABLE]["data"][0][0] == "barcode: three.fasta"


def test_space_16_bit_tiff_answers_like_its_8_bit_photo(client, real_photo_paths, tmp_path):
    gray = np.asarray(Image.open(real_photo_paths[0]).convert("L").resize((120, 80)))
    Image.fromarray(gray).save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.tif")
    eight, sixteen = (_predict(client, image=tmp_path / name) for name in ("eight.png", "sixteen.tif"))
    assert sixteen[ANSWER_LABELS] == eight[ANSWER_LABELS]
    assert [row[2:] for row in sixteen[TABLE]["data"]] == [row[2:] for row in eight[TABLE]["data"]]


def test_space_long_barcode_is_cut_with_a_note(client, test_records):
    out = _predict(client, dna=(test_records[0]["dna_barcode"] * 80)[:50_000])
    assert out[ANSWER_LABELS][0]["label"] and "barcode has 50,000 nt, classified on its first 660 nt" in out[NOTES]


def test_space_page_lists_examples_and_api(server):
    config = httpx.get(server + "config", timeout=10).json()
    assert config["version"].startswith("6.")
    assert any(dep.get("api_name") == "classify" for dep in config["dependencies"])
    text = str(config["components"])
    # space/examples were checked with another model: their inputs are offered, their answers not stated.
    assert "Synthetic specimens" in text and "so no answers are stated" in text and "synthetic · " in text
    assert "In the library: " not in text and "undescribed" not in text
    assert "Real BIOSCAN-1M photos" in text  # BIOSCAN_CLIP_PHOTOS points at the shared photos
    assert config["max_file_size"] == 10 * 1024 * 1024


# -- bad inputs: a readable message, and the server stays up ---------------------------------------
def test_space_corrupt_image(client, test_records, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(4000))
    msg = _app_error(client, image=bad)
    assert "'broken.jpg' could not be read as an image" in msg and str(tmp_path) not in msg
    _assert_alive(client, test_records[0])


def test_space_non_image_file(client, test_records, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("field notes, not a photo\n")
    msg = _app_error(client, image=notes)
    assert "'notes.txt' could not be read as an image" in msg and "JPEG" in msg
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


def test_space_unusable_barcodes(client, test_records):
    msg = _app_error(client, dna="hello world, this is not a barcode")
    assert "The DNA barcode in the text box cannot be used: invalid characters ',EILO'" in msg
    for text, readable in (("N" * 658, "0 of 132"), ("KHAGRWSYNDBTCMV" * 40, "0 of 120"), ("N" * 20 + "ACGTACGT", "1 of 6")):
        assert f"cannot be used: too few valid 5-mers: {readable}" in _app_error(client, dna=text)
    assert "The DNA barcode in record 'x' of the text box cannot be used: too few" in _app_error(client, dna=">x\nNNNNNNNNNN\n")
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


# -- the examples ---------------------------------------------------------------------------------
def _make_examples_module():
    spec = importlib.util.spec_from_file_location("space_make_examples_under_test", REPO / "space" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_examples_state_what_the_page_answers(trained_tiny_model_dir, synthetic_tiny_dir, tmp_path):
    """make_examples.py on a trained model and its data: every example's claim is true of the data and
    is what the page (the /classify handler) answers."""
    from bioscan_clip_hf.zero_shot import ZeroShotClassifier

    make = _make_examples_module()
    out = tmp_path / "examples"
    assert make.main(["--model", str(trained_tiny_model_dir), "--data", str(synthetic_tiny_dir), "--out", str(out)]) == 0
    manifest = json.loads((out / "examples.json").read_text())
    items = manifest["examples"]
    assert [item["claim"]["kind"] for item in items] == ["in_library", "in_library", "new_species", "new_species"]
    clf = ZeroShotClassifier.from_pretrained(trained_tiny_model_dir)
    app = _load_app()
    assert app.read_examples(out)[1] == app.fingerprints(clf.provenance())  # the page will state the claims
    bank = clf.bank.table
    space = app.BioscanSpace(clf, app.SpaceSettings(model=str(trained_tiny_model_dir), bank=None, revision=None, photos=None))
    for item in items:
        claim = item["claim"]
        if claim["kind"] == "in_library":
            assert claim["species"] == item["species"] and (bank["species"] == claim["species"]).any()
        else:
            assert not (bank["species"] == item["species"]).any() and (bank["genus"] == claim["genus"]).any()
        assert make.claim_text(claim) in make.page_answer(space, out, item), item["label"]
        assert ("image" in item) == (item["label"].endswith("photo + barcode)"))


def test_committed_examples_match_the_demo_model():
    """space/examples was written by make_examples.py; its claims hold for the model and bank it names."""
    app = _load_app()
    items, checked_with = app.read_examples()
    assert len(items) == 4 and all((app.EXAMPLES_DIR / item[key]).is_file() for item in items for key in ("image", "fasta") if key in item)
    made = json.loads((app.EXAMPLES_DIR / "examples.json").read_text())["generated_with"]
    model, bank = REPO / made["model"], made["bank"] and REPO / made["bank"]
    if not model.is_dir() or (bank and not bank.is_dir()):
        missing = made["model"] if not model.is_dir() else made["bank"]
        pytest.skip(f"{missing} is not here (`make demo`) to check the committed examples against")
    from bioscan_clip_hf.zero_shot import ZeroShotClassifier

    clf = ZeroShotClassifier.from_pretrained(model, bank=bank or None)
    if app.fingerprints(clf.provenance()) != checked_with:
        pytest.skip(f"{made['model']} has other weights or key bank than the examples were checked with; "
                    "rerun space/make_examples.py after `make demo`")
    make = _make_examples_module()
    space = app.BioscanSpace(clf, app.SpaceSettings(model=str(model), bank=None, revision=None, photos=None))
    for item in items:
        assert make.claim_text(item["claim"]) in make.page_answer(space, app.EXAMPLES_DIR, item), item["label"]


def test_space_missing_default_model_message(tmp_path, monkeypatch):
    """Without a model setting and without ``make demo`` output, start-up says what to do."""
    app = _load_app()
    monkeypatch.setattr(app, "DEFAULT_LOCAL_MODEL", tmp_path / "outputs" / "demo" / "model")
    for name in ("BIOSCAN_CLIP_MODEL", "BIOSCAN_CLIP_BANK", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="Run `make demo`.*BIOSCAN_CLIP_MODEL"):
        app.main([])


def test_space_installs_this_project_and_names_no_one_elses_repo(monkeypatch, tmp_path):
    """requirements.txt lists the package's dependencies as pyproject.toml gives them (the package itself
    ships as source beside app.py: the Space builder installs requirements before copying the repo) and
    installs nothing from another organisation's URL; on a Space the page loads the model the README names."""
    import tomllib
    from argparse import Namespace

    from huggingface_hub import metadata_load

    lines = [line.strip() for line in (REPO / "space" / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith(("#", "--"))]
    assert not any("@" in line or "git+" in line or "bioscan-clip-hf" in line for line in requirements)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {d for d in dependencies if not d.startswith("torch")} <= set(requirements)
    assert "torch==2.13.0" in requirements and any(line.startswith("gradio==") for line in requirements)

    app = _load_app()
    readme = metadata_load(REPO / "space" / "README.md")
    assert readme["models"] == ["YOUR-ORG/bioscan-clip-demo"] == readme["preload_from_hub"]  # the pusher's to fill in
    monkeypatch.delenv("BIOSCAN_CLIP_MODEL", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/some-space")
    with pytest.raises(SystemExit, match="still names the placeholder model YOUR-ORG/bioscan-clip-demo under `models:`"):
        app.resolve_settings(Namespace(model=None, bank=None))
    monkeypatch.setattr(app, "APP_DIR", tmp_path)  # the README as the deployer fills it in
    (tmp_path / "README.md").write_text((REPO / "space" / "README.md").read_text().replace("YOUR-ORG/", "my-lab/"))
    assert app.resolve_settings(Namespace(model=None, bank=None)).model == "my-lab/bioscan-clip-demo"
    assert "bioscan-ml" not in (REPO / "space" / "README.md").read_text() + (REPO / "space" / "app.py").read_text()


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
    page.get_by_text("that its species is not in the library").first.wait_for(timeout=60_000)
    for rank in RANKS:
        label = page.locator(f"#label-answer-{rank}")
        label.locator(".output-class").first.wait_for(timeout=10_000)
        assert label.locator(".output-class").first.inner_text().strip(), rank
    assert page.get_by_text("Only a photo was given").count() == 2
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
    page.get_by_text("cannot be used: invalid characters").first.wait_for(timeout=30_000)


# -- load ---------------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_space_concurrent_clients_without_errors_or_memory_growth(space_process, test_records):
    """6 clients at once (3x the page's concurrency, so requests queue), two rounds of 12 requests:
    every answer complete, and the server's memory flat from the first round to the second (a leak
    of 1.5 MB a request would show; the first round also warms the caches)."""
    from gradio_client import Client

    url, proc = space_process
    barcodes = [r["dna_barcode"] for r in test_records]
    clients = [Client(url, verbose=False) for _ in range(6)]
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(n: int, c) -> None:
        try:
            for i in range(2):
                t0 = time.perf_counter()
                out = c.predict(None, barcodes[(n + i) % len(barcodes)], None, "species", 5, "nearest", api_name="/classify")
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if not out[ANSWER_LABELS][3]["label"]:
                        errors.append(f"client {n} request {i}: empty answer")
        except Exception as err:  # any failure counts against the server
            with lock:
                errors.append(f"client {n}: {type(err).__name__}: {err}")

    def round_of_requests() -> float:
        threads = [threading.Thread(target=worker, args=(n, c)) for n, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:5]
        return _rss_mb(proc.pid)

    after_first = round_of_requests()
    t0 = time.perf_counter()
    after_second = round_of_requests()
    wall = time.perf_counter() - t0
    assert len(latencies) == 24
    assert after_second - after_first < 16, f"server memory grew {after_second - after_first:.1f} MB over 12 requests"
    q = statistics.quantiles(latencies, n=20)
    print(f"\nspace load test: 2 x 12 requests, 6 clients, round 2 {wall:.1f} s wall, p50 {q[9] * 1000:.0f} ms, "
          f"p95 {q[18] * 1000:.0f} ms, RSS {after_first:.0f} -> {after_second:.0f} MB")
