"""BioscanClipProcessor: image preprocessing, taxonomy text, DNA, save/load and bad inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bioscan_clip_hf import BioscanClipProcessor, taxonomy_text


def reference_pixels(path) -> np.ndarray:
    """CLIBD image transform written with PIL + numpy: shorter side 256 (bilinear), centre crop 224, /255."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    size = (256, int(height * scale)) if width <= height else (int(width * scale), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    array = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    return array.transpose(2, 0, 1)


def test_outputs_for_all_modalities(tiny_processor, real_photo_paths):
    batch = tiny_processor(
        images=[str(p) for p in real_photo_paths[:2]],
        text=[taxonomy_text("Diptera", "Culicidae", "Aedes", "Aedes aegypti")] * 2,
        dna=["ACGT" * 170, "ACGTN"],
    )
    expected = {"pixel_values": (2, 3, 224, 224), "input_ids": (2, 20), "attention_mask": (2, 20),
                "token_type_ids": (2, 20), "dna_input_ids": (2, 133), "dna_attention_mask": (2, 133)}
    assert {k: tuple(v.shape) for k, v in batch.items()} == expected
    assert batch["pixel_values"].dtype == torch.float32 and batch["input_ids"].dtype == torch.int64
    assert set(tiny_processor.model_input_names) == set(expected)


@pytest.fixture(scope="module")
def base_processor() -> BioscanClipProcessor:
    return BioscanClipProcessor.from_preset("clibd-base")


def test_images_match_the_original_transform(base_processor, tiny_processor, real_photo_paths):
    paths = [real_photo_paths[0], real_photo_paths[-1]]  # a 2880x2160 order photo and a 341x256 crop
    pixels = base_processor(images=[Image.open(p) for p in paths])["pixel_values"].numpy()
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0  # clibd-base: no mean/std normalisation
    for got, path in zip(pixels, paths):
        assert np.abs(got - reference_pixels(path)).max() <= 1 / 255 + 1e-6
    from_paths = base_processor(images=[str(p) for p in paths])["pixel_values"].numpy()
    np.testing.assert_array_equal(from_paths, pixels)
    # the tiny preset (trained from scratch) scales the same pixels to [-1, 1]
    tiny = tiny_processor(images=[str(p) for p in paths])["pixel_values"].numpy()
    np.testing.assert_allclose(tiny, (pixels - 0.5) / 0.5, atol=1e-6)


def test_text_tokenisation_is_the_clibd_one(tiny_processor):
    text = taxonomy_text("Lepidoptera", "Gelechiidae", "Tuta", "Tuta absoluta")
    ids = tiny_processor(text=[text])["input_ids"][0]
    tokens = tiny_processor.tokenizer.convert_ids_to_tokens(ids.tolist())
    assert tokens[0] == "[CLS]" and tokens[-1] == "[PAD]"  # padded to 20
    assert tiny_processor.tokenizer.decode(ids, skip_special_tokens=True) == text.lower()  # uncased WordPiece
    long_text = " ".join(["Diptera"] * 40)
    assert tiny_processor(text=long_text)["input_ids"].shape == (1, 20)


def test_taxonomy_text():
    assert taxonomy_text("Diptera", "Sciaridae", None, "") == "Diptera Sciaridae not_classified not_classified"
    assert taxonomy_text("Diptera", float("nan"), " Aedes ", "Aedes  aegypti") == "Diptera not_classified Aedes Aedes aegypti"


def test_clibd_base_preset_uses_the_standard_bert_vocab(base_processor):
    processor = base_processor
    assert processor.tokenizer.vocab_size == 30522
    assert processor(text="insect")["input_ids"][0, 1] == processor.tokenizer.convert_tokens_to_ids("insect")
    assert processor.dna_tokenizer.max_length == 660 and not processor.dna_tokenizer.clean
    assert BioscanClipProcessor.from_preset("tiny", clean_dna=True).dna_tokenizer.clean


def test_save_and_load(tmp_path, tiny_processor, real_photo_paths):
    tiny_processor.save_pretrained(tmp_path)
    loaded = BioscanClipProcessor.from_pretrained(tmp_path)
    args = dict(images=[str(real_photo_paths[-1])], text=["Diptera x"], dna=["ACGTAACGT"])
    for key, value in tiny_processor(**args).items():
        torch.testing.assert_close(loaded(**args)[key], value)
    assert loaded.dna_tokenizer == tiny_processor.dna_tokenizer


def test_bad_images_name_the_index_and_file(tiny_processor, tmp_path, real_photo_paths):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"index 1 \(.*broken.jpg\)"):
        tiny_processor(images=[str(real_photo_paths[-1]), str(broken)])
    with pytest.raises(ValueError, match=r"index 0 \(.*missing.jpg\)"):
        tiny_processor(images=[str(tmp_path / "missing.jpg")])
    truncated = tmp_path / "truncated.jpg"
    data = real_photo_paths[-1].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    with pytest.raises(ValueError, match="index 0"):
        tiny_processor(images=[Image.open(truncated)])
    with pytest.raises(TypeError, match="index 0 is a int"):
        tiny_processor(images=[3])


def test_other_bad_inputs(tiny_processor):
    with pytest.raises(ValueError, match="at least one"):
        tiny_processor()
    with pytest.raises(TypeError, match="Text at index 1 is int"):
        tiny_processor(text=["Diptera", 3])
    with pytest.raises(ValueError, match="index 0 contains characters outside the IUPAC"):
        tiny_processor(dna=["ACGT!"])
    with pytest.raises(TypeError, match="Unexpected arguments"):
        tiny_processor(dna=["ACGT"], padding=True)


def test_missing_parts_of_a_saved_processor(tmp_path, tiny_processor):
    tiny_processor.save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "dna_tokenizer")
    with pytest.raises(OSError, match="no dna_tokenizer/ sub-folder"):
        BioscanClipProcessor.from_pretrained(tmp_path)
    (tmp_path / "processor_config.json").unlink()
    with pytest.raises(OSError, match="no processor_config.json"):
        BioscanClipProcessor.from_pretrained(tmp_path)


def test_from_config_follows_the_model_settings():
    from bioscan_clip_hf import BioscanClipConfig

    config = BioscanClipConfig.from_preset(
        "tiny", vision_config={"image_size": 112, "patch_size": 16}, dna_max_length=300, dna_leading_id=None,
        text_max_length=12,
    )
    processor = BioscanClipProcessor.from_config(config)
    assert processor.image_processor.crop_size == {"height": 112, "width": 112}
    assert processor.image_processor.size == {"shortest_edge": 128}
    assert processor(dna=["ACGT"])["dna_input_ids"].shape == (1, config.dna_num_tokens) == (1, 60)
    assert processor(text=["Diptera"])["input_ids"].shape == (1, 12)
