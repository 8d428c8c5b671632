"""BioscanClipProcessor: image preprocessing, taxonomy text, DNA, save/load and bad inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bioscan_clip_hf import BioscanClipProcessor, taxonomy_text


def torchvision_eval_transform(path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """The original evaluation transform, ToTensor -> Resize(resize, antialias=True) -> CenterCrop(crop), written
    from torchvision's source (transforms/functional.py ``_compute_resized_output_size``, ``center_crop``;
    _functional_tensor.py ``resize``), which is not installed here."""
    image = Image.open(path).convert("RGB")
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)  # to_tensor
    h, w = x.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) != (h, w):  # torchvision returns the image untouched at the target size
        x = torch.nn.functional.interpolate(x[None], size=[new_h, new_w], mode="bilinear", align_corners=False,
                                            antialias=True)[0]
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return x[:, top : top + crop, left : left + crop]


def pil_uint8_transform(path) -> np.ndarray:
    """What stock image processors do (and this package did): resize the uint8 PIL image, then rescale."""
    image = Image.open(path).convert("RGB")
    size = (int(256 * image.width / image.height), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    return (np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255).transpose(2, 0, 1)


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
    """Issue 15: max abs pixel difference <= 1e-6 against the original's float-tensor transform, on the cropped
    341x256 photos (no resize) and on full-size 2880x2160 ones (two: all 18 have that size)."""
    crops = [p for p in real_photo_paths if p.parent.name == "cropped"]
    full = [p for p in real_photo_paths if p.parent.name == "orders"]
    paths = crops + [full[0], full[-1]]
    pixels = base_processor(images=[Image.open(p) for p in paths])["pixel_values"]
    # no mean/std normalisation; bilinear weights are convex, so [0, 1] up to float rounding
    assert pixels.shape == (len(paths), 3, 224, 224) and 0.0 <= pixels.min() and pixels.max() <= 1.0 + 1e-6
    for got, path in zip(pixels, paths):
        assert (got - torchvision_eval_transform(path)).abs().max().item() <= 1e-6, path.name
    # The uint8 resize this replaces is off by up to ~0.8/255 on full-size photos: the check above can fail.
    assert np.abs(pixels[-1].numpy() - pil_uint8_transform(full[-1])).max() > 0.5 / 255
    pick = [0, len(paths) - 1]  # a crop and a full-size photo, now given as paths
    from_paths = base_processor(images=[str(paths[i]) for i in pick])["pixel_values"]
    torch.testing.assert_close(from_paths, pixels[pick], rtol=0, atol=0)
    # the tiny preset (trained from scratch) scales the same pixels to [-1, 1]
    tiny = tiny_processor(images=[str(paths[i]) for i in pick])["pixel_values"]
    torch.testing.assert_close(tiny, (pixels[pick] - 0.5) / 0.5, rtol=0, atol=1e-6)


def test_resize_and_crop_follow_torchvision_rounding():
    """Output sizes truncate the longer side; crop offsets use round-half-to-even (58.5 -> 58, 57.5 -> 58)."""
    from bioscan_clip_hf.image_processing_bioscan_clip import center_crop, resize_shortest_edge, shortest_edge_size

    assert shortest_edge_size(333, 1000, 256) == (256, 768) and shortest_edge_size(1000, 333, 256) == (768, 256)
    assert shortest_edge_size(2160, 2880, 256) == (256, 341)
    ramp = torch.arange(339.0).expand(3, 5, 339)
    assert center_crop(ramp, 5, 224)[0, 0, 0].item() == 58  # int(round(57.5)) == 58, not (339 - 224) // 2
    assert center_crop(torch.arange(341.0).expand(3, 5, 341), 5, 224)[0, 0, 0].item() == 58  # round(58.5) == 58
    padded = center_crop(torch.ones(3, 4, 6), 6, 8)  # smaller than the crop: zero padding around the image
    assert padded.shape == (3, 6, 8) and padded.sum() == 3 * 4 * 6 and padded[:, 0].sum() == 0
    same = torch.rand(3, 256, 300)
    assert resize_shortest_edge(same, 256) is same  # already at the target size: no resampling


def test_to_float_tensor_accepts_arrays_and_leaves_them_untouched():
    from bioscan_clip_hf.image_processing_bioscan_clip import to_float_tensor

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_float_tensor(gray).shape == (3, 3, 4) and to_float_tensor(gray)[:, 0, 1].tolist() == [np.float32(1) / 255] * 3
    hwc = np.zeros((5, 6, 3), dtype=np.uint8)
    assert to_float_tensor(hwc).shape == (3, 5, 6)
    floats = torch.rand(3, 4, 5)
    before = floats.clone()
    torch.testing.assert_close(to_float_tensor(floats), floats / 255, rtol=0, atol=0)
    assert torch.equal(floats, before)  # scaled out of place: the caller's tensor keeps its values
    with pytest.raises(ValueError, match="Expected an image"):
        to_float_tensor(np.zeros((5, 6, 4)))


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
    args = dict(images=[str(real_photo_paths[0])], text=["Diptera x"], dna=["ACGTAACGT"])  # a 341x256 crop
    for key, value in tiny_processor(**args).items():
        torch.testing.assert_close(loaded(**args)[key], value)
    assert loaded.dna_tokenizer.settings == tiny_processor.dna_tokenizer.settings
    assert loaded.image_processor.to_dict() == tiny_processor.image_processor.to_dict()


# The files of a processor folder as written before the DNA tokenizer and the image processor were
# transformers classes (e.g. outputs/demo/model from the first release): must keep loading.
PREVIOUS_DNA_TOKENIZER_CONFIG = {
    "tokenizer_class": "BarcodeKmerTokenizer", "k": 5, "stride": 5, "max_length": 660, "leading_id": 0,
    "clean": False, "pad_char": "N", "special_tokens": ["<MASK>", "<CLS>", "<UNK>"], "vocab_size": 1027,
}
PREVIOUS_IMAGE_PROCESSOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.5, 0.5, 0.5], "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256},
}


def test_folders_in_the_previous_format_still_load(tmp_path, tiny_processor, real_photo_paths):
    import json

    tiny_processor.save_pretrained(tmp_path)
    dna_dir = tmp_path / "dna_tokenizer"
    shutil.rmtree(dna_dir)
    dna_dir.mkdir()
    (dna_dir / "tokenizer_config.json").write_text(json.dumps(PREVIOUS_DNA_TOKENIZER_CONFIG, indent=2))
    (dna_dir / "vocab.txt").write_text("\n".join(tiny_processor.dna_tokenizer.get_vocab()) + "\n")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(PREVIOUS_IMAGE_PROCESSOR_CONFIG, indent=2))
    loaded = BioscanClipProcessor.from_pretrained(tmp_path)
    assert loaded.dna_tokenizer.settings == tiny_processor.dna_tokenizer.settings
    args = dict(images=[str(real_photo_paths[0])], text=["Diptera x"], dna=["ACGTAACGTN", "ACGT" * 200])
    for key, value in tiny_processor(**args).items():
        torch.testing.assert_close(loaded(**args)[key], value, rtol=0, atol=0)


def test_bad_images_name_the_index_and_file(tiny_processor, tmp_path, real_photo_paths):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"index 1 \(.*broken.jpg\)"):
        tiny_processor(images=[str(real_photo_paths[0]), str(broken)])
    with pytest.raises(ValueError, match=r"index 0 \(.*missing.jpg\)"):
        tiny_processor(images=[str(tmp_path / "missing.jpg")])
    truncated = tmp_path / "truncated.jpg"
    data = real_photo_paths[-1].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    with pytest.raises(ValueError, match="index 0"):
        tiny_processor(images=[Image.open(truncated)])
    with pytest.raises(TypeError, match="index 0 is a int"):
        tiny_processor(images=[3])


def test_images_of_more_than_8_bits_are_refused_never_whitened(tiny_processor, tmp_path):
    """PIL's convert("RGB") clips 16-bit / 32-bit / float pixels to 255: such images are refused with the
    mode and the one converter that scales them (specimens.load_image), from a path, a PIL image or an array."""
    from bioscan_clip_hf.image_processing_bioscan_clip import to_float_tensor
    from bioscan_clip_hf.zero_shot.specimens import load_image

    mid_gray = np.full((8, 8), 30000, dtype=np.uint16)
    tiff = tmp_path / "sixteen.tif"
    Image.fromarray(mid_gray).save(tiff)
    assert Image.open(tiff).mode.startswith("I;16") and Image.open(tiff).convert("RGB").getpixel((0, 0)) == (255,) * 3
    for item, words in [(str(tiff), "mode 'I;16"), (Image.fromarray(mid_gray.astype(np.int32)), "mode 'I'"),
                        (Image.fromarray(mid_gray.astype(np.float32)), "mode 'F'"), (mid_gray, "type uint16")]:
        with pytest.raises(ValueError, match=f"{words}.*bioscan_clip_hf.zero_shot.specimens.load_image"):
            tiny_processor(images=[item])
    with pytest.raises(ValueError, match=r"index 0 \(.*sixteen.tif\) has PIL mode"):
        tiny_processor(images=[str(tiff)])
    with pytest.raises(ValueError, match="type int64"):
        to_float_tensor(torch.full((3, 4, 4), 300))
    # What the refusal points to: scaled by the 16-bit range (30000 / 65535 * 255 = 117), then processed as usual.
    converted = load_image(tiff)
    assert converted.getpixel((0, 0)) == (117,) * 3
    ip = tiny_processor.image_processor
    expected = (torch.tensor(117 / 255) - torch.tensor(ip.image_mean)) / torch.tensor(ip.image_std) if ip.do_normalize \
        else torch.full((3,), 117 / 255)
    torch.testing.assert_close(tiny_processor(images=[converted])["pixel_values"][0, :, 0, 0], expected.float())


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
