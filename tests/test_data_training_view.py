"""The training view: lazy decoding, CLIBD's augmentations without torchvision, batched collation."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bioscan_clip_hf.data import BioscanCollator, load_bioscan, record_taxonomy_text
from bioscan_clip_hf.data.transforms import TrainImageTransform, random_resized_crop_box, resize_shorter_side


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_cache")


@pytest.fixture(scope="module")
def train_records(synthetic_tiny_dir, cache):
    dataset = load_bioscan(synthetic_tiny_dir, split="train", cache_dir=cache, decode_images=False)
    return [dataset[i] for i in range(6)]


def test_random_resized_crop_follows_torchvision_rules():
    rng = random.Random(0)
    for _ in range(500):
        left, top, w, h = random_resized_crop_box(341, 256, rng)
        assert 0 <= left and left + w <= 341 and 0 <= top and top + h <= 256
        assert 0.08 * 341 * 256 * 0.9 <= w * h <= 341 * 256
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # impossible ratio range: falls back to a centre crop clamped to the ratio bounds
    assert random_resized_crop_box(1000, 10, rng, scale=(2.0, 3.0)) == (493, 0, 13, 10)


def test_train_transform_output_and_rotation_fill():
    image = Image.new("RGB", (682, 512), (255, 255, 255))
    assert resize_shorter_side(image, 256).size == (341, 256)
    transform = TrainImageTransform(resize=256, crop=224, rng=random.Random(3))
    outputs = [np.asarray(transform(image)) for _ in range(20)]
    assert all(o.shape == (224, 224, 3) for o in outputs)
    # rotation by up to 45 degrees fills the corners with black (fill 0), as the original
    assert any((o[0, 0] == 0).all() for o in outputs) and any((o[112, 112] == 255).all() for o in outputs)


def test_train_transform_sizes_follow_the_processor(tiny_processor):
    transform = TrainImageTransform.from_image_processor(tiny_processor.image_processor)
    crop = tiny_processor.image_processor.crop_size["height"]
    assert transform.crop == crop and transform.resize == tiny_processor.image_processor.size["shortest_edge"]


def test_eval_collation_equals_the_processor(tiny_processor, train_records):
    batch = BioscanCollator(tiny_processor)(train_records)
    images = [Image.open(io.BytesIO(r["image"]["bytes"])) for r in train_records]
    expected = tiny_processor(
        images=images,
        text=[record_taxonomy_text(r) for r in train_records],
        dna=[r["dna_barcode"] for r in train_records],
    )
    for key, value in expected.items():
        assert torch.equal(batch[key], value), key
    assert batch["processid"] == [r["processid"] for r in train_records]
    assert "processid" not in batch.model_inputs()


@pytest.mark.parametrize("normalize", [False, True])
def test_fast_pixel_values_equal_the_image_processor(tiny_processor, normalize):
    import copy

    from bioscan_clip_hf.data.collator import pixel_values

    image_processor = copy.deepcopy(tiny_processor.image_processor)
    image_processor.do_normalize = normalize
    image_processor.image_mean, image_processor.image_std = [0.76, 0.77, 0.76], [0.14, 0.16, 0.17]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    expected = image_processor(images, do_resize=False, do_center_crop=False, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values(images, image_processor), expected, rtol=1e-6, atol=1e-6)


def test_train_collation_augments_reproducibly(tiny_processor, train_records):
    first = BioscanCollator(tiny_processor, train=True, seed=0)(train_records)
    again = BioscanCollator(tiny_processor, train=True, seed=0)(train_records)
    other = BioscanCollator(tiny_processor, train=True, seed=1)(train_records)
    crop = tiny_processor.image_processor.crop_size["height"]
    assert first["pixel_values"].shape == (len(train_records), 3, crop, crop)
    image_processor = tiny_processor.image_processor
    low, high = torch.tensor([0.0]), torch.tensor([1.0])
    if image_processor.do_normalize:  # the pixel range the processor's settings allow
        mean, std = torch.tensor(image_processor.image_mean), torch.tensor(image_processor.image_std)
        low, high = (0 - mean) / std, (1 - mean) / std
    assert low.min() - 1e-6 <= first["pixel_values"].min() and first["pixel_values"].max() <= high.max() + 1e-6
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert not torch.equal(first["pixel_values"], other["pixel_values"])
    assert torch.equal(first["dna_input_ids"], other["dna_input_ids"])  # no DNA/text augmentation


def test_collated_batch_trains_the_model(tiny_model, tiny_processor, train_records):
    batch = BioscanCollator(tiny_processor, train=True, seed=0)(train_records)
    output = tiny_model(**batch.model_inputs(), return_loss=True)
    assert torch.isfinite(output.loss)


def test_streaming_dataloader_with_workers(tiny_processor, synthetic_tiny_dir, cache):
    stream = load_bioscan(synthetic_tiny_dir, split=["pretrain", "train"], streaming=True, cache_dir=cache,
                          decode_images=False)
    loader = DataLoader(stream, batch_size=32, collate_fn=BioscanCollator(tiny_processor, train=True),
                        num_workers=1)
    seen = [pid for batch in loader for pid in batch["processid"]]
    total = len(load_bioscan(synthetic_tiny_dir, split=["pretrain", "train"], cache_dir=cache))
    assert len(seen) == len(set(seen)) == total


def test_decoded_and_lazy_images_collate_the_same(tiny_processor, synthetic_tiny_dir, cache, train_records):
    decoded = load_bioscan(synthetic_tiny_dir, split="train", cache_dir=cache)
    collator = BioscanCollator(tiny_processor, modalities=("image",))
    lazy = collator(train_records)["pixel_values"]
    eager = collator([decoded[i] for i in range(len(train_records))])["pixel_values"]
    assert torch.equal(lazy, eager)


def test_images_of_more_than_8_bits_are_rescaled_not_whitened(tiny_processor, train_records):
    """A 16-bit PNG (bytes, as a data set stores it) or an already decoded 16-bit PIL image is scaled by its
    range (specimens.load_image) and collates like its 8-bit equivalent; PIL's convert would give white."""
    sixteen = Image.fromarray(np.full((48, 64), 30000, dtype=np.uint16))
    buffer = io.BytesIO()
    sixteen.save(buffer, format="PNG")
    eight = Image.new("RGB", (64, 48), (117,) * 3)  # 30000 / 65535 * 255
    records = [{**train_records[0], "image": image} for image in
               ({"bytes": buffer.getvalue(), "path": "x.png"}, sixteen, eight)]
    pixels = BioscanCollator(tiny_processor, modalities=("image", "dna"))(records)["pixel_values"]
    assert torch.equal(pixels[0], pixels[2]) and torch.equal(pixels[1], pixels[2])
    assert not torch.equal(pixels[0], tiny_processor(images=[sixteen.convert("RGB")])["pixel_values"][0])


def test_dna_text_only_and_missing_inputs(tiny_processor, train_records):
    dna_only = [dict(r, image=None) for r in train_records]
    batch = BioscanCollator(tiny_processor, modalities=("dna", "text"))(dna_only)
    assert "pixel_values" not in batch and batch["dna_input_ids"].shape[0] == len(dna_only)
    with pytest.raises(ValueError, match=f"no image.*{dna_only[0]['processid']}"):
        BioscanCollator(tiny_processor)(dna_only)
    no_dna = [dict(r, dna_barcode=None) for r in train_records[:2]]
    with pytest.raises(ValueError, match=f"no barcode.*{no_dna[1]['processid']}"):
        BioscanCollator(tiny_processor)(no_dna)
    broken = [dict(train_records[0], image={"bytes": b"not a jpeg", "path": None})]
    with pytest.raises(ValueError, match=f"{broken[0]['processid']}.*cannot be decoded"):
        BioscanCollator(tiny_processor)(broken)
    with pytest.raises(ValueError, match="modalities"):
        BioscanCollator(tiny_processor, modalities=("audio",))


def test_large_photos_are_decoded_at_reduced_scale(tiny_processor, real_photo_paths):
    big = next(p for p in real_photo_paths if "orders" in str(p))
    record = {"processid": "photo", "image": {"bytes": big.read_bytes(), "path": None}, "dna_barcode": "ACGT"}
    batch = BioscanCollator(tiny_processor, modalities=("image",), train=True, seed=0)([record])
    crop = tiny_processor.image_processor.crop_size["height"]
    assert batch["pixel_values"].shape == (1, 3, crop, crop)
