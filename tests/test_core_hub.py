"""Hub round trip: a saved folder, staged for upload as ``bioscan-clip push`` stages it, loads with plain
transformers (model, processor, DNA tokenizer, image processor, zero-shot pipeline) in a process that cannot
import the package."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import bioscan_clip_hf
from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel, BioscanClipProcessor

HUB_FILES = (
    "configuration_bioscan_clip.py",
    "modeling_bioscan_clip.py",
    "processing_bioscan_clip.py",
    "image_processing_bioscan_clip.py",
    "tokenization_barcode.py",
    "pipeline_bioscan_clip.py",
)
DNA = ["ACGT" * 165, "TTGAC" * 90 + "N", "AACTTTATATTTTATTTTTGGAATTTGATCAGGAATAGTAGGAAC"]
TEXT = ["Diptera Culicidae Aedes Aedes aegypti", "Lepidoptera not_classified not_classified not_classified", "x"]

# Runs in a fresh interpreter: bioscan_clip_hf is made unimportable, cwd and HF_HOME are temporary.
FRESH_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["bioscan_clip_hf"] = None  # any import of the package now raises ImportError
    try:
        import bioscan_clip_hf  # noqa: F401
        raise SystemExit("bioscan_clip_hf is importable")
    except ImportError:
        pass
    import numpy as np, torch
    from PIL import Image
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForZeroShotImageClassification,
                              AutoProcessor, AutoTokenizer)
    folder, photos, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    dna, text = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    zs = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    dna_tokenizer = AutoTokenizer.from_pretrained(os.path.join(folder, "dna_tokenizer"), trust_remote_code=True)
    image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__name__ == type(zs).__name__ == "BioscanClipModel", (type(model), type(zs))
    for obj in (model, dna_tokenizer, image_processor):
        assert "transformers_modules" in type(obj).__module__, type(obj).__module__
    inputs = processor(images=photos, text=text, dna=dna, return_tensors="pt")
    assert torch.equal(dna_tokenizer(dna, return_tensors="pt")["input_ids"], inputs["dna_input_ids"])
    assert dna_tokenizer.batch_decode(inputs["dna_input_ids"], skip_special_tokens=True)[0] == dna[0]
    pixels = image_processor([Image.open(p) for p in photos], return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, inputs["pixel_values"])
    from transformers import pipeline
    classify = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    assert type(classify).__name__ == "BioscanClipZeroShotImageClassificationPipeline"
    scores = {p["label"]: p["score"] for p in classify(photos[0], candidate_labels=text)}
    with torch.no_grad():
        output = model(**inputs)
    arrays = {k: v.numpy() for k, v in inputs.items()}
    arrays.update(image=output.image_embeds.numpy(), dna=output.dna_embeds.numpy(), text=output.text_embeds.numpy())
    arrays["logit_scale"] = model.logit_scale.detach().numpy()
    arrays["pipeline"] = np.array([scores[t] for t in text])
    np.savez(out, **arrays)
    print(config.model_type, type(processor).__name__)
    """
)


def _run_fresh(folder: Path, photos: list[Path], workdir: Path) -> dict[str, np.ndarray]:
    script = workdir / "load_fresh.py"
    script.write_text(FRESH_SCRIPT)
    out = workdir / "out.npz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(workdir / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(folder), json.dumps([str(p) for p in photos]), str(out),
         json.dumps(DNA), json.dumps(TEXT)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr  # no interactive prompt
    assert "bioscan_clip BioscanClipProcessor" in result.stdout
    return dict(np.load(out))


def test_round_trip_in_fresh_process_without_package(tiny_model, tiny_model_dir, real_photo_paths, tmp_path):
    """Only the files ``push`` would upload; model, processor, DNA tokenizer, image processor and pipeline load
    as remote code (transformers 4.57: tests/test_compat_transformers457.py runs the same in its 4.57 process)."""
    from bioscan_clip_hf.hub import stage_model_folder

    folder = tmp_path / "staged"
    stage_model_folder(tiny_model_dir, folder, "org/name")
    photos = real_photo_paths[:2] + real_photo_paths[-1:]
    fresh = _run_fresh(folder, photos, tmp_path)

    processor = BioscanClipProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(images=photos, text=TEXT, dna=DNA, return_tensors="pt")
    for key, value in inputs.items():
        np.testing.assert_array_equal(fresh[key], value.numpy(), err_msg=key)
    with torch.no_grad():
        output = tiny_model(**inputs)
    # the pipeline (labels as written) gives the model's image x text probabilities of the first photo
    np.testing.assert_allclose(fresh["pipeline"], output.logits_per_image[0].softmax(-1).numpy(), atol=1e-5)
    for key, value in (("image", output.image_embeds), ("dna", output.dna_embeds), ("text", output.text_embeds)):
        assert np.abs(fresh[key] - value.numpy()).max() <= 1e-6, key
    assert float(fresh["logit_scale"]) == pytest.approx(float(tiny_model.logit_scale.detach()))


def test_saved_folder_layout(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "preprocessor_config.json",
            "tokenizer_config.json", "dna_tokenizer", *HUB_FILES} <= names
    assert not any(name.endswith(".bin") for name in names)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "bioscan_clip"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_bioscan_clip.BioscanClipConfig",
        "AutoModel": "modeling_bioscan_clip.BioscanClipModel",
        "AutoModelForZeroShotImageClassification": "modeling_bioscan_clip.BioscanClipModel",
    }
    assert config["custom_pipelines"]["zero-shot-image-classification"]["impl"] == (
        "pipeline_bioscan_clip.BioscanClipZeroShotImageClassificationPipeline")
    processor_config = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_bioscan_clip.BioscanClipProcessor"}
    image_config = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert image_config["image_processor_type"] == "BioscanClipImageProcessor"
    assert image_config["auto_map"] == {"AutoImageProcessor": "image_processing_bioscan_clip.BioscanClipImageProcessor"}
    assert image_config["do_normalize"] is True  # the tiny preset scales pixels to [-1, 1]
    assert image_config["image_mean"] == image_config["image_std"] == [0.5, 0.5, 0.5]
    dna_config = json.loads((tiny_model_dir / "dna_tokenizer" / "tokenizer_config.json").read_text())
    assert dna_config["auto_map"]["AutoTokenizer"][0] == "tokenization_barcode.BarcodeKmerTokenizer"
    assert (tiny_model_dir / "dna_tokenizer" / "tokenization_barcode.py").is_file()  # loadable on its own


def test_root_loads_separately_as_the_pipeline_does(tiny_model_dir, tiny_processor):
    """The zero-shot pipeline loads image processor and text tokenizer from the root on their own."""
    from transformers import AutoImageProcessor, AutoTokenizer

    image_processor = AutoImageProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, trust_remote_code=True)
    assert image_processor.crop_size == {"height": 224, "width": 224}
    assert tokenizer("Diptera Culicidae")["input_ids"] == tiny_processor.tokenizer("Diptera Culicidae")["input_ids"]


def test_installed_package_registers_auto_classes(tiny_model, tiny_model_dir):
    """With the package imported, the Auto classes resolve bioscan_clip without remote code."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_model_dir)
    assert type(model) is BioscanClipModel
    assert torch.equal(model.logit_scale, tiny_model.logit_scale)
    assert type(AutoProcessor.from_pretrained(tiny_model_dir)) is BioscanClipProcessor


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


@pytest.mark.parametrize("name", HUB_FILES)
def test_hub_files_import_only_allowed_modules(name):
    package = Path(bioscan_clip_hf.__file__).parent
    siblings = {Path(n).stem for n in HUB_FILES}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for module, level in _imports(package / name):
        top = module.split(".")[0]
        if level:
            assert level == 1 and module in siblings, f"{name}: relative import of {module!r} is not a Hub sibling"
        elif top == "transformers":
            # Public names only: the package root or transformers.utils (ModelOutput, cached_file).
            assert module in ("transformers", "transformers.utils"), f"{name}: private import {module}"
        else:
            assert top in {"torch", "numpy", "PIL"} | stdlib, f"{name}: imports {module}"


def test_save_writes_preset_config_that_round_trips(tmp_path):
    config = BioscanClipConfig.from_preset("tiny", modalities=["image", "dna"], dna_pooling="masked_mean")
    config.save_pretrained(tmp_path)
    loaded = BioscanClipConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.vision_config.patch_size == 32 and loaded.dna_config.vocab_size == 1027
