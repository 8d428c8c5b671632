"""A model folder saved with transformers 5.x loads under transformers 4.57.x (remote code) and gives the
same embeddings; a folder re-saved under 4.57 loads back under 5.x, again with the same embeddings.

transformers 4.57 lives in ``.compat-tf457`` (``make compat``: ``pip install --no-deps --target``), which a
subprocess puts first on ``PYTHONPATH``. Outside CI the test is skipped when that folder is missing; in CI
(``CI=true``) it must run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPAT_DIR = REPO_ROOT / ".compat-tf457"
BARCODES = ["AACATTATATTTTATTTTTGGAATTTGAGCAGGAATAGTAGGAACTTCTTTAAGAATTTTAATTCGAGCTGAATTAGGTCAACC" * 8, "ACGTNNRYAC" * 20]
TEXTS = ["Diptera Cecidomyiidae not_classified not_classified", "Lepidoptera Gelechiidae Tuta Tuta absoluta"]

RUN_457 = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    folder, resave, barcodes, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    images = [Image.new("RGB", (320, 250), (200, 80, 30)), Image.new("RGB", (240, 300), (20, 140, 90))]
    inputs = processor(images=images, dna=barcodes, text=texts)
    with torch.no_grad():
        out = model(**inputs)
    model.save_pretrained(resave)
    processor.save_pretrained(resave)
    print(json.dumps({
        "version": transformers.__version__,
        "package_imported": "bioscan_clip_hf" in sys.modules,
        "inputs": {k: v.tolist() for k, v in inputs.items()},
        "embeds": {m: getattr(out, m + "_embeds").tolist() for m in ("image", "dna", "text")},
    }))
    """
)


def _images():
    from PIL import Image

    return [Image.new("RGB", (320, 250), (200, 80, 30)), Image.new("RGB", (240, 300), (20, 140, 90))]


def _embed_5x(folder: Path):
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor

    model = BioscanClipModel.from_pretrained(folder).eval()
    processor = BioscanClipProcessor.from_pretrained(folder)
    inputs = processor(images=_images(), dna=BARCODES, text=TEXTS)
    with torch.no_grad():
        out = model(**inputs)
    return inputs, {m: getattr(out, m + "_embeds") for m in ("image", "dna", "text")}


@pytest.fixture(scope="module")
def compat_dir() -> Path:
    if not (COMPAT_DIR / "transformers").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{COMPAT_DIR} is missing in CI: run `make compat` before the tests")
        pytest.skip(f"transformers 4.57 not installed in {COMPAT_DIR} (run `make compat`)")
    return COMPAT_DIR


def test_saved_model_gives_identical_embeddings_under_457_and_5x(tmp_path, tiny_model_dir, compat_dir):
    import transformers

    assert transformers.__version__.startswith("5."), "the model folder must be saved by transformers 5.x"
    resaved = tmp_path / "resaved_by_457"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(compat_dir), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"),
               TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(
        [sys.executable, "-c", RUN_457, str(tiny_model_dir), str(resaved), json.dumps(BARCODES), json.dumps(TEXTS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["version"].startswith("4.57"), got["version"]
    assert not got["package_imported"], "4.57 must load the folder's own code, not the installed package"

    inputs, embeds = _embed_5x(tiny_model_dir)
    for key, value in inputs.items():
        assert torch.allclose(torch.tensor(got["inputs"][key], dtype=value.dtype), value, atol=1e-6), key
    for tower, value in embeds.items():
        diff = (torch.tensor(got["embeds"][tower]) - value).abs().max().item()
        assert diff <= 1e-6, f"{tower}: 4.57 vs 5.x max abs diff {diff:.2e}"

    # And back: the folder re-saved by 4.57 loads under 5.x with the same embeddings.
    _, embeds_back = _embed_5x(resaved)
    for tower, value in embeds_back.items():
        assert (value - embeds[tower]).abs().max().item() <= 1e-6, tower
