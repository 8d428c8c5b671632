"""A model folder saved with transformers 5.x loads under transformers 4.57.x (remote code, the package made
unimportable) and gives the same inputs and embeddings, its DNA tokenizer and image processor also load on their
own (AutoTokenizer, AutoImageProcessor) and the zero-shot pipeline gets the model's text format; a folder
re-saved under 4.57 loads back under 5.x, again with the same embeddings.

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
    import json, os, sys
    sys.modules["bioscan_clip_hf"] = None  # any import of the package raises: the folder's own code must do
    import torch, transformers
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer, pipeline

    folder, resave, photos = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    barcodes, texts = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(images=photos, dna=barcodes, text=texts)
    with torch.no_grad():
        out = model(**inputs)
    dna_tokenizer = AutoTokenizer.from_pretrained(os.path.join(folder, "dna_tokenizer"), trust_remote_code=True)
    image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    classify = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    scores = classify(photos[0], candidate_labels=texts)
    model.save_pretrained(resave)
    processor.save_pretrained(resave)
    print(json.dumps({
        "version": transformers.__version__,
        "inputs": {k: v.tolist() for k, v in inputs.items()},
        "embeds": {m: getattr(out, m + "_embeds").tolist() for m in ("image", "dna", "text")},
        "dna_tokenizer_ids": dna_tokenizer(barcodes, return_tensors="pt")["input_ids"].tolist(),
        "image_processor_pixels": image_processor([Image.open(p) for p in photos], return_tensors="pt")["pixel_values"].tolist(),
        "pipeline": {p["label"]: p["score"] for p in scores},
        "pipeline_class": type(classify).__name__,
    }))
    """
)


def _embed_5x(folder: Path, photos: list[Path]):
    from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor

    model = BioscanClipModel.from_pretrained(folder).eval()
    processor = BioscanClipProcessor.from_pretrained(folder)
    inputs = processor(images=[str(p) for p in photos], dna=BARCODES, text=TEXTS)
    with torch.no_grad():
        out = model(**inputs)
    embeds = {m: getattr(out, m + "_embeds") for m in ("image", "dna", "text")}
    return inputs, embeds, out.logits_per_image.softmax(dim=-1)


@pytest.fixture(scope="module")
def compat_dir() -> Path:
    if not (COMPAT_DIR / "transformers").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{COMPAT_DIR} is missing in CI: run `make compat` before the tests")
        pytest.skip(f"transformers 4.57 not installed in {COMPAT_DIR} (run `make compat`)")
    return COMPAT_DIR


def test_saved_model_gives_identical_embeddings_under_457_and_5x(tmp_path, tiny_model_dir, compat_dir,
                                                                 real_photo_paths):
    import transformers

    assert transformers.__version__.startswith("5."), "the model folder must be saved by transformers 5.x"
    resaved = tmp_path / "resaved_by_457"
    photos = [real_photo_paths[0], real_photo_paths[-1]]  # a full-size order photo and a 341x256 crop
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(compat_dir), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"),
               TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(
        [sys.executable, "-c", RUN_457, str(tiny_model_dir), str(resaved), json.dumps([str(p) for p in photos]),
         json.dumps(BARCODES), json.dumps(TEXTS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["version"].startswith("4.57"), got["version"]

    inputs, embeds, image_text = _embed_5x(tiny_model_dir, photos)
    for key, value in inputs.items():
        assert torch.allclose(torch.tensor(got["inputs"][key], dtype=value.dtype), value, atol=1e-6), key
    assert torch.equal(torch.tensor(got["dna_tokenizer_ids"]), inputs["dna_input_ids"])
    assert torch.equal(torch.tensor(got["image_processor_pixels"]), inputs["pixel_values"])
    for tower, value in embeds.items():
        diff = (torch.tensor(got["embeds"][tower]) - value).abs().max().item()
        assert diff <= 1e-6, f"{tower}: 4.57 vs 5.x max abs diff {diff:.2e}"
    # The pipeline of the folder: labels as written, i.e. the model's own image x text probabilities.
    assert got["pipeline_class"] == "BioscanClipZeroShotImageClassificationPipeline"
    for label, probability in zip(TEXTS, image_text[0].tolist()):
        assert got["pipeline"][label] == pytest.approx(probability, abs=1e-5)

    # And back: the folder re-saved by 4.57 loads under 5.x with the same embeddings.
    _, embeds_back, _ = _embed_5x(resaved, photos)
    for tower, value in embeds_back.items():
        assert (value - embeds[tower]).abs().max().item() <= 1e-6, tower
