"""Hub round trip: saved folders load with plain transformers in a process that cannot import the package."""

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
    "tokenization_barcode.py",
)
DNA = ["ACGT" * 165, "TTGAC" * 90 + "N", "AACTTTATATTTTATTTTTGGAATTTGATCAGGAATAGTAGGAAC"]
TEXT = ["Diptera Culicidae Aedes Aedes aegypti", "Lepidoptera not_classified not_classified not_classified", "x"]

# Runs in a fresh interpreter: bioscan_clip_hf is made unimportable, cwd and HF_HOME are temporary.
FRESH_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["bioscan_clip_hf"] = None  # any import of the package now raises ImportError
    if os.environ.get("COMPAT_TRANSFORMERS_DIR"):  # an older transformers installed with --target
        sys.path.insert(0, os.environ["COMPAT_TRANSFORMERS_DIR"])
    try:
        import bioscan_clip_hf  # noqa: F401
        raise SystemExit("bioscan_clip_hf is importable")
    except ImportError:
        pass
    import numpy as np, torch
    from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor
    folder, photos, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    dna, text = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    zs = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__name__ == type(zs).__name__ == "BioscanClipModel", (type(model), type(zs))
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    inputs = processor(images=photos, text=text, dna=dna, return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    arrays = {k: v.numpy() for k, v in inputs.items()}
    arrays.update(image=output.image_embeds.numpy(), dna=output.dna_embeds.numpy(), text=output.text_embeds.numpy())
    arrays["logit_scale"] = model.logit_scale.detach().numpy()
    np.savez(out, **arrays)
    import transformers
    print(config.model_type, type(processor).__name__, transformers.__version__)
    """
)


COMPAT_DIR = Path(__file__).resolve().parents[1] / ".compat-tf457"  # `make compat`: transformers 4.57.x


def _run_fresh(folder: Path, photos: list[Path], workdir: Path, compat_dir: Path | None = None) -> dict[str, np.ndarray]:
    script = workdir / "load_fresh.py"
    script.write_text(FRESH_SCRIPT)
    out = workdir / "out.npz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(workdir / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if compat_dir is not None:
        env["COMPAT_TRANSFORMERS_DIR"] = str(compat_dir)
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(folder), json.dumps([str(p) for p in photos]), str(out),
         json.dumps(DNA), json.dumps(TEXT)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr  # no interactive prompt
    assert "bioscan_clip BioscanClipProcessor" in result.stdout
    if compat_dir is not None:
        assert result.stdout.split()[-1].startswith("4.57"), result.stdout
    return dict(np.load(out))


@pytest.mark.parametrize("transformers_version", ["installed", "4.57"])
def test_round_trip_in_fresh_process_without_package(
    tiny_model, tiny_model_dir, real_photo_paths, tmp_path, transformers_version
):
    compat_dir = None
    if transformers_version == "4.57":
        if not (COMPAT_DIR / "transformers").is_dir():
            pytest.skip("transformers 4.57.x not installed in .compat-tf457 (run `make compat`)")
        compat_dir = COMPAT_DIR
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    photos = real_photo_paths[:2] + real_photo_paths[-1:]
    fresh = _run_fresh(folder, photos, tmp_path, compat_dir)

    processor = BioscanClipProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(images=photos, text=TEXT, dna=DNA, return_tensors="pt")
    for key, value in inputs.items():
        np.testing.assert_array_equal(fresh[key], value.numpy(), err_msg=key)
    with torch.no_grad():
        output = tiny_model(**inputs)
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
    processor_config = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_bioscan_clip.BioscanClipProcessor"}
    image_config = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert image_config["image_processor_type"] == "CLIPImageProcessor"  # a stock class in 4.57 and 5
    assert image_config["do_normalize"] is True  # the tiny preset scales pixels to [-1, 1]
    assert image_config["image_mean"] == image_config["image_std"] == [0.5, 0.5, 0.5]
    assert (tiny_model_dir / "dna_tokenizer" / "tokenizer_config.json").is_file()


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
