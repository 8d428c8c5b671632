"""The one reader and checker of user specimens (zero_shot/specimens.py), the provenance record and the writers.

The misleading inputs of issue 11 each get a test here: an all-N record, a "protein" written in IUPAC
letters, a 28-nt mostly-N record, a 50,000-nt record and 16-bit / 32-bit / float images.
"""

from __future__ import annotations

import io
import json
import re
import struct

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bioscan_clip_hf.tokenization_barcode import BarcodeKmerTokenizer
from bioscan_clip_hf.zero_shot.provenance import (
    PROVENANCE_COLUMNS, bank_fingerprint, build_provenance, check_log_path, provenance_columns, read_provenance, write_log,
)
from bioscan_clip_hf.zero_shot.specimens import (
    ImageError, Query, check_queries, gather_queries, load_image, queries_from_python, queries_from_text,
)
from bioscan_clip_hf.zero_shot.writers import write_rows

CLIBD_TOKENIZER = BarcodeKmerTokenizer()  # k=5, stride=5, max_length=660, as the original
BARCODE = "".join("ACGT"[(i * 7 + i // 3) % 4] for i in range(658))


def _checked(*dna: str, **kwargs) -> list[Query]:
    return check_queries(queries_from_python(dna=list(dna), ids=[f"q{i}" for i in range(len(dna))]), CLIBD_TOKENIZER, **kwargs)


# -- barcodes -------------------------------------------------------------------------------------
def test_unreadable_barcodes_are_error_rows_naming_the_reason():
    protein = "MKVLHAGRWSYNDBTC" * 20  # every letter an IUPAC code, so only the k-mers can tell
    protein = "".join(c for c in protein if c in "ACGTRYSWKMBDHVN")
    mostly_n = "N" * 20 + "ACGTACGT"  # 28 nt: one readable 5-mer of six
    queries = _checked("N" * 658, protein, mostly_n, BARCODE)
    for q, readable in zip(queries[:3], (0, 0, 1)):
        assert q.dna is None and q.error.startswith(f"too few valid 5-mers: {readable} of ")
        assert "at least 50% needed" in q.error and "N or another ambiguity code" in q.error
    assert queries[1].error.startswith(f"too few valid 5-mers: 0 of {len(protein) // 5} ")
    assert queries[2].error.startswith("too few valid 5-mers: 1 of 6 ")
    assert queries[3].error is None and queries[3].notes == [] and queries[3].dna == BARCODE


def test_min_valid_kmers_is_a_setting_counted_as_the_tokenizer_reads():
    # 660 nt = 132 k-mers; an N in three of every five k-mers leaves 52 readable (39 %).
    barcode = (BARCODE * 2)[:660]
    two_fifths = "".join("N" if (i // 5) % 5 < 3 and i % 5 == 0 else barcode[i] for i in range(660))
    assert _checked(two_fifths)[0].error.startswith("too few valid 5-mers: 52 of 132")
    assert _checked(two_fifths, min_valid_kmers=0.39)[0].error is None
    assert _checked(two_fifths, min_valid_kmers=0.0)[0].error is None
    assert _checked("N" * 100, min_valid_kmers=0.0)[0].error.startswith("too few valid 5-mers: 0 of 20")
    with pytest.raises(ValueError, match="between 0 and 1"):
        _checked(BARCODE, min_valid_kmers=1.5)


def test_long_barcode_is_cut_to_the_model_maximum_with_a_note_and_short_one_noted():
    long_q, short_q = _checked((BARCODE * 80)[:50_000], BARCODE[:120])
    assert long_q.error is None and long_q.dna == (BARCODE * 2)[:660]
    assert long_q.notes == ["barcode has 50,000 nt, classified on its first 660 nt (the model's maximum)"]
    assert short_q.error is None and short_q.notes == ["short barcode: 120 nt (COI barcodes are about 658), so the answer is less reliable"]
    # The model's own maximum decides, not a constant.
    assert check_queries([Query("x", dna=BARCODE)], BarcodeKmerTokenizer(max_length=500))[0].dna == BARCODE[:500]


def test_checking_cleans_raw_queries_and_twice_changes_nothing():
    raw = [Query("a", dna="acgt-" + BARCODE.lower()), Query("b", dna="ACGTQQ" * 40), Query("c", dna=BARCODE * 2)]
    once = check_queries(raw, CLIBD_TOKENIZER)
    assert once[0].dna == ("ACGT" + BARCODE)[:660] and "invalid characters 'Q'" in once[1].error
    assert raw[0].dna.startswith("acgt-") and raw[2].notes == []  # the caller's queries are left alone
    twice = check_queries(once, CLIBD_TOKENIZER)
    assert [(q.id, q.dna, q.error, q.notes) for q in twice] == [(q.id, q.dna, q.error, q.notes) for q in once]


def test_duplicate_ids_are_renamed_with_notes_on_every_specimen_involved():
    queries = check_queries([Query("P1", dna=BARCODE), Query("P2", dna=BARCODE), Query("P1", image="x.jpg"),
                             Query("P1#2", dna=BARCODE), Query("P1", dna=BARCODE)])
    assert [q.id for q in queries] == ["P1", "P2", "P1#3", "P1#2", "P1#4"]  # P1#2 was taken
    assert queries[0].notes == ["duplicate id: 3 specimens are called 'P1', the others were renamed 'P1#3', 'P1#4'"]
    assert queries[2].notes == ["duplicate id: 3 specimens are called 'P1', this one was renamed 'P1#3'"]
    assert queries[1].notes == queries[3].notes == []
    assert len({q.id for q in queries}) == len(queries)


def test_pasted_text_fasta_stdin_and_barcode_files(tmp_path, monkeypatch):
    assert [(q.id, q.dna) for q in queries_from_text(" acgt-ac\r\nGT..TT\n")] == [("pasted barcode", "ACGTACGTTT")]
    multi = queries_from_text(">r1 first\nACGT\n>r2\nACGZ\n", name="box")
    assert [(q.id, q.dna) for q in multi] == [("r1", "ACGT"), ("r2", None)] and "invalid characters 'Z'" in multi[1].error
    assert [q.id for q in queries_from_python(dna=">a\nACGT\n>b\nTTTT\n")] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="barcode file does not exist: .*missing.fasta"):
        queries_from_python(dna=str(tmp_path / "missing.fasta"))
    monkeypatch.setattr("sys.stdin", io.StringIO("s1\tACGTACGT\ns2\tTTTTAAAA\n"))
    (tmp_path / "s1.png").write_bytes(b"not read yet")
    queries = gather_queries([tmp_path, "-"])
    assert [(q.id, q.modality) for q in queries] == [("s1", "image+dna"), ("s2", "dna")]


# -- photos ---------------------------------------------------------------------------------------
def _tiff_rgb16(pixels: np.ndarray) -> bytes:
    """A minimal uncompressed 48-bit RGB TIFF (PIL cannot write one)."""
    h, w, _ = pixels.shape
    data = pixels.astype("<u2").tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 8 + 2 + 10 * 12 + 4), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 8 + 2 + 10 * 12 + 4 + 6), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, count, value in entries:
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1 else struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + data


def test_16_bit_tiff_is_scaled_not_whitened(tmp_path):
    gradient = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "scan16.tif"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.asarray(Image.open(path).convert("RGB")).mean() > 250  # what convert("RGB") alone does
    rgb = np.asarray(load_image(path))
    expected = np.rint(gradient / 257.0).astype(np.uint8)
    assert rgb.shape == (64, 64, 3) and (rgb == expected[:, :, None]).all()
    big_endian = Image.fromarray(gradient.astype(">u2"))
    assert big_endian.mode == "I;16B" and (np.asarray(load_image(big_endian)) == rgb).all()
    for form in (path.read_bytes(), {"bytes": path.read_bytes(), "path": None}, {"bytes": None, "path": str(path)}, Image.open(path)):
        assert (np.asarray(load_image(form)) == rgb).all()
    colour = np.zeros((8, 8, 3), np.uint16)
    colour[..., 0], colour[..., 1], colour[..., 2] = 40000, 20000, 1000
    assert np.asarray(load_image(_tiff_rgb16(colour)))[0, 0].tolist() == [156, 78, 3]  # PIL keeps the high byte


def test_32_bit_and_float_images_are_scaled_or_refused():
    assert load_image(Image.fromarray(np.full((4, 4), 30000, np.int32))).getpixel((0, 0)) == (117, 117, 117)  # mode I
    assert load_image(Image.fromarray(np.full((4, 4), 200, np.int32))).getpixel((0, 0)) == (200, 200, 200)
    assert load_image(Image.fromarray(np.full((4, 4), 0.5, np.float32))).getpixel((0, 0)) == (128, 128, 128)  # mode F
    assert load_image(np.full((4, 4, 3), 200.0)).getpixel((0, 0)) == (200, 200, 200)
    assert load_image(np.full((4, 4, 3), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    for pixels, reason in ((np.full((4, 4), 70000, np.int32), "32-bit integer image with values from 70000"),
                           (np.full((4, 4), 4095.0, np.float32), "floating-point image with values from 4095"),
                           (np.full((4, 4), np.nan), "NaN"), (np.zeros((4, 4, 2)), r"shape \(4, 4, 2\)")):
        with pytest.raises(ImageError, match=reason):
            load_image(pixels, name="scan.tif")
    with pytest.raises(ImageError, match="'scan.tif' is a floating-point"):
        load_image(Image.fromarray(np.full((4, 4), -1.0, np.float32)), name="scan.tif")


def test_exif_orientation_pixel_limit_and_unreadable_files(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), "red").save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (20, 40)
    with pytest.raises(ImageError, match="'big.png' is 40x20 pixels; images up to 0.0005 megapixels"):
        load_image(buf.getvalue(), name="big.png", max_pixels=500)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"field notes, not a photo")
    with pytest.raises(ImageError, match=r"'upload.jpg' could not be read as an image \(UnidentifiedImageError: .*upload.jpg.*JPEG, PNG"):
        load_image(broken, name="upload.jpg")
    with pytest.raises(ImageError, match=re.escape(f"'{tmp_path / 'gone.jpg'}' could not be read") + ".*No such file"):
        load_image(tmp_path / "gone.jpg")


def test_load_image_pickles_for_dataloader_workers():
    import pickle

    assert pickle.loads(pickle.dumps(load_image)) is load_image


# -- provenance and writers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bank(tiny_model, tiny_processor, zeroshot_data_dir):
    from bioscan_clip_hf.data import load_bioscan
    from bioscan_clip_hf.zero_shot import KeyBank

    return KeyBank.build(tiny_model, tiny_processor, load_bioscan(zeroshot_data_dir, split="train"), modality="dna", progress=False)


@pytest.fixture(scope="module")
def record(tiny_model, small_bank) -> dict:
    from bioscan_clip_hf.zero_shot import model_fingerprint

    return build_provenance(tiny_model, model_fingerprint(tiny_model), small_bank, bank_fingerprint(small_bank),
                            {"rank": "species", "k": 5, "method": "nearest", "taxa": None, "min_valid_kmers": 0.5})


def test_bank_fingerprint_survives_save_and_load_and_sees_every_change(small_bank, tmp_path):
    from bioscan_clip_hf.zero_shot import KeyBank

    before = bank_fingerprint(small_bank)
    loaded = KeyBank.load(small_bank.save(tmp_path / "bank"))
    assert bank_fingerprint(loaded) == before
    loaded.meta["created_utc"] = "another day"  # a rebuilt, identical bank
    assert bank_fingerprint(loaded) == before
    for change in (lambda b: b.meta.update(calibration={"x": 1}), lambda b: b.table.loc.__setitem__((0, "species"), "Other sp."),
                   lambda b: b.embeddings.__setitem__((0, 0), 0.5)):
        copy = KeyBank.load(tmp_path / "bank")
        change(copy)
        assert bank_fingerprint(copy) != before


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "table"])
def test_every_format_records_provenance_readable_with_pandas(record, tmp_path, fmt):
    flat = provenance_columns(record)
    rows = [{"id": "a", "species": "x", "species_probability": np.float32(0.5), "error": None, **flat},
            {"id": "b", "species": None, "species_probability": float("nan"), "error": "bad", **flat}]
    out = tmp_path / f"pred.{fmt}"
    write_rows(rows, fmt, out, provenance=record)
    if fmt == "table":
        text = out.read_text().splitlines()
        assert text[0].startswith("# bioscan-clip-hf ") and record["model"]["fingerprint"] in text[0]
        assert record["bank"]["fingerprint"] in text[0] and "min_valid_kmers=0.5" in text[1]
        assert text[2].split() == ["id", "species", "species_probability", "error"]
        return
    frame = {"csv": pd.read_csv, "json": lambda p: pd.read_json(p, dtype=False), "parquet": pd.read_parquet}[fmt](out)
    assert frame["id"].tolist() == ["a", "b"] and set(PROVENANCE_COLUMNS) <= set(frame.columns)
    assert json.loads(frame["settings"][0]) == record["settings"]
    assert frame["model_fingerprint"][1] == record["model"]["fingerprint"] and frame["bank_fingerprint"][0] == record["bank"]["fingerprint"]
    got = read_provenance(out)
    if fmt == "parquet":
        assert frame.attrs["provenance"] == got == record
        assert b"PANDAS_ATTRS" in pq.read_schema(out).metadata  # the record travels in the schema metadata
    else:
        assert got["model_fingerprint"] == record["model"]["fingerprint"] and got["package_version"] == record["package_version"]


def test_a_failed_write_leaves_the_previous_output_whole(record, tmp_path):
    out = tmp_path / "pred.parquet"
    write_rows([{"id": "a"}], "parquet", out, provenance=record)
    with pytest.raises(Exception, match="object"):  # pyarrow cannot store a Python object: fails mid-write
        write_rows([{"id": "b", "value": object()}], "parquet", out)
    assert pd.read_parquet(out)["id"].tolist() == ["a"] and [p.name for p in tmp_path.iterdir()] == ["pred.parquet"]


def test_log_json_record_and_appended_text(record, tmp_path):
    timing = {"read_inputs": 0.01, "load_model": 1.5, "classify": 0.25}
    log = tmp_path / "run.json"
    check_log_path(log)
    write_log(log, "predict", "bioscan-clip predict x.fasta", record, "2026-01-01T00:00:00+00:00", timing, {"rows": 3})
    entry = json.loads(log.read_text())
    assert entry["command_line"] == "bioscan-clip predict x.fasta" and entry["provenance"] == record
    assert entry["duration_s"] == pytest.approx(1.76) and entry["result"] == {"rows": 3} and entry["finished_utc"]
    with pytest.raises(ValueError, match="exists; a JSON log is never overwritten"):
        check_log_path(log)
    with pytest.raises(ValueError, match="does not exist"):
        check_log_path(tmp_path / "no" / "run.log")
    text = tmp_path / "runs.log"
    for n in (1, 2):
        write_log(text, "embed", f"bioscan-clip embed run{n}", record, "2026-01-01T00:00:00+00:00", timing)
    blocks = text.read_text().split("\n\n")
    assert [b.splitlines()[1] for b in blocks if b] == ["Command line: bioscan-clip embed run1", "Command line: bioscan-clip embed run2"]
    assert f"weights {record['model']['fingerprint']}" in blocks[0] and "Timing: read_inputs 0.01 s" in blocks[0]
