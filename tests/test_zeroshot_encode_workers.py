"""Photos decoded in DataLoader workers (bioscan_clip_hf/zero_shot/encode.py): the same features and
per-item errors as in-process decoding, in input order, and data-set images read by the specimen reader."""

from __future__ import annotations

import torch

from bioscan_clip_hf.zero_shot.encode import encode_dataset, encode_images
from bioscan_clip_hf.zero_shot.specimens import load_image


def test_workers_give_the_in_process_features_and_errors_in_order(tiny_model, tiny_processor, real_photo_paths, tmp_path):
    cropped = [p for p in real_photo_paths if p.parent.name == "cropped"]
    missing = tmp_path / "gone.jpg"
    items = [cropped[0], b"not an image", *cropped[1:], str(missing), cropped[0].read_bytes()]
    serial, serial_errors = encode_images(tiny_model, tiny_processor, items, batch_size=2, progress=False, num_workers=0)
    parallel, parallel_errors = encode_images(tiny_model, tiny_processor, items, batch_size=2, progress=False, num_workers=2)
    assert torch.equal(serial, parallel) and serial_errors == parallel_errors
    assert [e is None for e in serial_errors] == [True, False, *[True] * (len(cropped) - 1), False, True]
    assert "could not be read as an image" in serial_errors[1] and "gone.jpg" in serial_errors[-2]
    assert torch.equal(serial[0], serial[-1])  # a path and its bytes are the same photo
    assert (serial[1] == 0).all() and serial[0].norm() > 0.99


def test_data_set_photos_go_through_the_specimen_reader(tiny_model, tiny_processor, zeroshot_data_dir):
    from bioscan_clip_hf.data import load_bioscan

    data = load_bioscan(zeroshot_data_dir, split="train")
    feats, errors = encode_dataset(tiny_model, tiny_processor, data, "image", batch_size=4, progress=False, num_workers=1)
    assert errors == [None] * len(data)
    raw = data.cast_column("image", type(data.features["image"])(decode=False))
    photos = [load_image(raw[i]["image"]) for i in range(len(data))]
    expected, _ = encode_images(tiny_model, tiny_processor, photos, batch_size=4, progress=False, num_workers=0)
    assert torch.equal(feats, expected)
