"""Space benchmark: latency of one prediction through the page's handler, and over HTTP.

1. In process: ``BioscanSpace.classify`` (``space/app.py``: read the upload, ``predict``, draw the
   labels, table and CSV) for a photo, a barcode, and both, with the ``tiny`` and ``clibd-base``
   presets in fp32 and bf16 on the CPU. Weights are random (latency does not depend on them); the
   key bank holds the DNA barcodes of the synthetic ``tiny`` set's ``train`` + ``key_unseen`` splits
   (calibrated on ``val`` / ``val_unseen``). The photo is a real 2880x2160 BIOSCAN-1M JPEG (decoding
   it is part of the latency) when ``../shared/data`` is present, else a synthetic image.
2. Over HTTP: ``space/app.py`` served on 127.0.0.1 with the tiny preset, one ``gradio_client``
   sending requests one after another, to show what the server and queue add.

Writes ``benchmarks/results/space.json`` and the ``## Space`` section of ``BENCHMARKS.md``.

Usage: ``python benchmarks/bench_space.py [--repeats 10] [--presets tiny clibd-base]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor  # noqa: E402
from bioscan_clip_hf.atomic import write_text  # noqa: E402
from bioscan_clip_hf.data import load_bioscan  # noqa: E402
from bioscan_clip_hf.synthetic import generate_synthetic_dataset  # noqa: E402
from bioscan_clip_hf.zero_shot import KeyBank, ZeroShotClassifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "space" / "app.py"
PHOTO = ROOT.parent / "shared" / "data" / "bioscan1m-images" / "orders" / "Coleoptera.jpg"
COMMAND = "python benchmarks/bench_space.py"


def load_app():
    """``space/app.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("space_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1), "n": len(samples)}


def build_model_dir(preset: str, data_dir: Path, out: Path) -> Path:
    """A random-weight model of ``preset`` with a calibrated DNA key bank in ``out/key_bank``."""
    torch.manual_seed(0)
    model = BioscanClipModel(BioscanClipConfig.from_preset(preset)).eval()
    processor = BioscanClipProcessor.from_preset(preset)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    bank = KeyBank.build(model, processor, load_bioscan(data_dir, split=["train", "key_unseen"]), modality="dna", progress=False)
    bank.calibrate(model, processor, load_bioscan(data_dir, split="val"), load_bioscan(data_dir, split="val_unseen"), progress=False)
    bank.save(out / "key_bank")
    return out


def time_handler(app, model_dir: Path, dtypes: list[str], photo: Path, barcode: str, repeats: int) -> dict:
    """p50/p95 of ``BioscanSpace.classify`` per dtype for photo, barcode, and both.

    The calls are interleaved (each repeat runs every case in every dtype) so that load from other
    processes on a shared machine hits all of them alike. bf16 runs the handler under
    ``torch.autocast("cpu", torch.bfloat16)``: weights stay fp32 and matrix products run in bf16,
    the usual way to use bf16 for CPU inference.
    """
    settings = app.SpaceSettings(model=str(model_dir), bank=None, revision=None, photos=None)
    space = app.BioscanSpace(app.load_classifier(settings), settings)
    upload = {"path": str(photo), "orig_name": photo.name}
    cases = {"photo": (upload, ""), "barcode": (None, barcode), "photo+barcode": (upload, barcode)}
    samples: dict[tuple[str, str], list[float]] = {(d, c): [] for d in dtypes for c in cases}
    for i in range(repeats + 1):  # the first round warms up
        for name, (image, dna) in cases.items():
            for dtype in dtypes:
                precision = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()
                t0 = time.perf_counter()
                with precision:
                    space.classify(image, dna, None, "species", 5, "nearest")
                if i:
                    samples[(dtype, name)].append(time.perf_counter() - t0)
    return {d: {c: percentiles(samples[(d, c)]) for c in cases} for d in dtypes}


def time_http(model_dir: Path, barcode: str, photo: Path, repeats: int) -> dict:
    """p50/p95 of one request through a real server (tiny preset), one client, sequential."""
    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, BIOSCAN_CLIP_MODEL=str(model_dir), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(Exception):
                client = Client(url, verbose=False)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("space/app.py did not start")
            time.sleep(0.5)
        out = {}
        for name, args in {"barcode": (None, barcode), "photo": (handle_file(str(photo)), "")}.items():
            samples = []
            for i in range(repeats + 2):
                t0 = time.perf_counter()
                client.predict(args[0], args[1], None, "species", 5, "nearest", api_name="/classify")
                if i >= 2:
                    samples.append(time.perf_counter() - t0)
            out[name] = percentiles(samples)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def markdown(results: dict) -> str:
    lines = [
        "## Space",
        "",
        f"Command: `{COMMAND}` (machine: 2-core CPU, shared). Latency of one prediction through the page's "
        "handler (`BioscanSpace.classify` in `space/app.py`: read the upload, `ZeroShotClassifier.predict`, "
        "labels, nearest-records table, CSV), median and 95th percentile of "
        f"{results['repeats']} calls after a warm-up round; all cases and dtypes of a preset interleaved, so load from "
        "other jobs on the shared machine hits them alike. **Random weights** (latency does not depend on "
        "them); bf16 = `torch.autocast('cpu', torch.bfloat16)` around the handler (fp32 weights). DNA key bank of the **synthetic** `tiny` set "
        f"({results['bank_keys']} keys). Photo: {results['photo']}.",
        "",
        "| preset | dtype | photo p50 / p95 (ms) | barcode p50 / p95 (ms) | photo + barcode p50 / p95 (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["handler"]:
        cells = [f"{row[c]['p50_ms']:.0f} / {row[c]['p95_ms']:.0f}" for c in ("photo", "barcode", "photo+barcode")]
        lines.append(f"| {row['preset']} | {row['dtype']} | " + " | ".join(cells) + " |")
    http = results.get("http")
    if http:
        lines += [
            "",
            f"Over HTTP (`space/app.py` on 127.0.0.1, tiny preset, fp32, one `gradio_client` sending "
            f"{results['repeats']} requests in a row): barcode p50 {http['barcode']['p50_ms']:.0f} ms / "
            f"p95 {http['barcode']['p95_ms']:.0f} ms; photo (upload included) p50 {http['photo']['p50_ms']:.0f} ms / "
            f"p95 {http['photo']['p95_ms']:.0f} ms. The difference to the in-process figures is gradio's queue, "
            "event stream and the CSV download the client makes. Under load (20 clients x 10 requests) see "
            "`tests/test_space_app.py::test_space_load_20_clients`, which prints p50/p95.",
        ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the ``## Space`` section of BENCHMARKS.md (up to the next ``## ``), or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find("\n## Space\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end >= 0 else "")
    write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--presets", nargs="+", default=["tiny", "clibd-base"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "space.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    app = load_app()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = generate_synthetic_dataset(tmp / "data", size="tiny", seed=0)
        barcode = load_bioscan(data_dir, split="test")[0]["dna_barcode"]
        if PHOTO.is_file():
            photo, photo_desc = PHOTO, "real BIOSCAN-1M photo `orders/Coleoptera.jpg`, 2880x2160 JPEG"
        else:
            photo = tmp / "synthetic.jpg"
            photo.write_bytes(load_bioscan(data_dir, split="test", decode_images=False)[0]["image"]["bytes"])
            photo_desc = "synthetic"
        results = {"command": COMMAND, "machine": "2-core CPU, shared", "platform": platform.platform(),
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
                   "photo": photo_desc, "weights": "random", "data": "synthetic tiny", "handler": []}
        tiny_dir = None
        for preset in args.presets:
            model_dir = build_model_dir(preset, data_dir, tmp / preset)
            tiny_dir = model_dir if preset == "tiny" else tiny_dir
            results["bank_keys"] = len(KeyBank.load(model_dir / "key_bank"))
            timings = time_handler(app, model_dir, args.dtypes, photo, barcode, args.repeats)
            for dtype in args.dtypes:
                row = {"preset": preset, "dtype": dtype, **timings[dtype]}
                print(json.dumps(row), file=sys.stderr, flush=True)
                results["handler"].append(row)
        if tiny_dir is not None:
            results["http"] = time_http(tiny_dir, barcode, photo, args.repeats)
            print(json.dumps(results["http"]), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=2) + "\n")
    write_section(args.markdown, markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
