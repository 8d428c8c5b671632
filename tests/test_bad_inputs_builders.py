"""The data set builders: bad metadata tables are refused in one line naming the file, a resumed build
rebuilds exactly the shards whose inputs changed, and a killed build leaves only complete files."""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bioscan_clip_hf.data import build as build_module
from bioscan_clip_hf.data import build_bioscan5m_dataset, build_realcoi_dataset
from test_data_releases import REPO, _chunk, _jpeg, write_5m_release

COLUMNS = ["processid", "dna_barcode", "dna_bin", "phylum", "class", "order", "family", "subfamily", "genus", "species"]
BARCODE = "AACATTATATTTTATTTTTGGAATTTGAGCAGGAATAGTAGGAACTTCTTTAAGATTATTAATTCGAGCTGAATTAGGAACTCCAGGATC" * 6


def _tsv_text(n: int = 12) -> str:
    rows = ["\t".join(COLUMNS)]
    for i in range(n):
        genus = ("Aedes", "Culex", "Anopheles")[i % 3]
        rows.append("\t".join([f"P{i:03d}", BARCODE[i:] + BARCODE[:i], f"BOLD:A{i}", "Arthropoda", "Insecta", "Diptera",
                               "Culicidae", "", genus, f"{genus} sp{i % 2}"]))
    return "\n".join(rows) + "\n"


def _cut_mid_line(text: str) -> str:
    """The file cut 15 characters into its last record (an interrupted copy)."""
    return text[: text.rindex("\n", 0, len(text) - 1) + 16]


TABLES = [  # name, file content (None: no file; "dir": a folder), words in the one-line error
    ("missing", None, ["metadata table not found"]),
    ("folder", "dir", ["is a folder"]),
    ("empty", "", ["is empty (0 bytes)"]),
    ("header only", "\t".join(COLUMNS) + "\n", ["header but no records"]),
    ("cut mid-line", _cut_mid_line(_tsv_text()), ["ends mid-line", "truncated"]),
    ("short row inside", _tsv_text().replace("\tDiptera\tCulicidae\t\t", "\t", 1), ["do not have the header's 10 fields"]),
    ("column missing", _tsv_text().replace("dna_barcode", "barcode", 1), ["missing required column(s): dna_barcode"]),
]


def _make_table(tmp_path: Path, content) -> Path:
    path = tmp_path / "coi.tsv"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    return path


def _script():
    spec = importlib.util.spec_from_file_location("build_dataset", REPO / "training" / "build_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("name, content, words", TABLES, ids=[t[0] for t in TABLES])
def test_bad_tsv_is_refused_in_one_line_and_nothing_is_built(tmp_path, capsys, name, content, words):
    tsv = _make_table(tmp_path, content)
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError)) as exc:
        build_realcoi_dataset(tsv, out)
    assert str(tsv) in str(exc.value) and all(w in str(exc.value) for w in words) and "\n" not in str(exc.value)
    assert _script().main(["realcoi", "--tsv", str(tsv), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("build_dataset.py: error:") and str(tsv) in err[0]
    assert not out.exists()


def test_a_complete_tsv_without_final_newline_builds_with_a_warning(tmp_path, caplog):
    tsv = _make_table(tmp_path, _tsv_text().rstrip("\n"))
    out = build_realcoi_dataset(tsv, tmp_path / "out")
    assert json.loads((out / "build_report.json").read_text())["total_records"] == 12
    assert "does not end with a newline" in caplog.text


def test_5m_metadata_cut_mid_line_is_refused(tmp_path):
    metadata, images = write_5m_release(tmp_path / "release", as_zip=False)
    metadata.write_text(_cut_mid_line(metadata.read_text()))
    with pytest.raises(ValueError, match="ends mid-line"):
        build_bioscan5m_dataset(metadata, images, tmp_path / "out")


def _image(images: Path, pid: str, split: str) -> Path:
    chunk = _chunk(pid, split)
    return images / "cropped_256" / split / chunk / f"{pid}.jpg" if chunk else images / "cropped_256" / split / f"{pid}.jpg"


def _records(out: Path) -> dict[str, dict]:
    rows = {}
    for shard in sorted((out / "data").glob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            rows[row["processid"]] = row
    return rows


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("*.parquet")}


def test_5m_resume_rebuilds_the_shards_whose_inputs_changed(tmp_path, monkeypatch):
    metadata, (images,) = write_5m_release(tmp_path / "release", as_zip=False)
    out = build_bioscan5m_dataset(metadata, [images], tmp_path / "out", shard_size=1)
    before, first = _mtimes(out), _records(out)
    assert "AAA004-21" not in first  # its image is missing
    metadata.write_text(metadata.read_text().replace("ACGT" * 160 + ",Canada,val,", "TTGA" * 160 + ",Canada,val,"))
    _image(images, "AAA004-21", "train").parent.mkdir(parents=True, exist_ok=True)
    _image(images, "AAA004-21", "train").write_bytes(_jpeg(404))  # restored
    _image(images, "AAA007-21", "test").write_bytes(_jpeg(707))  # replaced
    monkeypatch.setattr(build_module, "write_shard", lambda records, path: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # a resume killed half-way no longer looks finished
        build_bioscan5m_dataset(metadata, [images], out, shard_size=1)
    assert not (out / "build_report.json").exists()
    monkeypatch.undo()
    build_bioscan5m_dataset(metadata, [images], out, shard_size=1)
    after, second = _mtimes(out), _records(out)
    report = json.loads((out / "build_report.json").read_text())
    assert report["notes"]["shards_rebuilt_for_changed_inputs"] == 3
    assert second["AAA006-21"]["dna_barcode"] == "TTGA" * 160
    assert second["AAA004-21"]["image"]["bytes"] == _jpeg(404)
    assert second["AAA007-21"]["image"]["bytes"] == _jpeg(707)
    changed = {name for name in after if before.get(name) != after[name]}
    assert len(changed) == 3 and {"val-00000-of-00001.parquet", "test-00000-of-00001.parquet"} < changed
    assert report["total_records"] == 10 and set(second) - set(first) == {"AAA004-21"}


def test_5m_resume_after_records_were_added_replaces_the_old_shards(tmp_path):
    metadata, (images,) = write_5m_release(tmp_path / "release", as_zip=False)
    out = build_bioscan5m_dataset(metadata, [images], tmp_path / "out", shard_size=1)
    lines = metadata.read_text().splitlines(keepends=True)
    val = next(line for line in lines if ",val," in line)
    metadata.write_text("".join(lines) + val.replace("AAA006-21", "AAA099-21"))
    _image(images, "AAA099-21", "val").write_bytes(_jpeg(99))
    build_bioscan5m_dataset(metadata, [images], out, shard_size=1)
    val_shards = sorted(p.name for p in (out / "data").glob("val-*"))
    assert val_shards == ["val-00000-of-00002.parquet", "val-00001-of-00002.parquet"]
    assert not (out / ".build" / "val-00000-of-00001.parquet.json").exists()


def test_5m_build_killed_at_a_shard_boundary_leaves_complete_shards_and_resumes(tmp_path, monkeypatch):
    metadata, images = write_5m_release(tmp_path / "release", as_zip=False)
    real = build_module.write_shard
    calls = []

    def die_on_third(records, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill between two shards
        return real(records, path)

    monkeypatch.setattr(build_module, "write_shard", die_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_bioscan5m_dataset(metadata, images, tmp_path / "out", shard_size=2)
    monkeypatch.undo()
    out = tmp_path / "out"
    assert len(list((out / "data").glob("*.parquet"))) == 2 and not list(out.rglob(".tmp-*"))
    finished = len(list((out / ".build").glob("*.parquet.json")))  # incl. shards whose records were all dropped
    assert not (out / "build_report.json").exists()  # the build is not presented as finished
    build_bioscan5m_dataset(metadata, images, out, shard_size=2)
    report = json.loads((out / "build_report.json").read_text())
    assert report["notes"]["shards_reused_from_previous_run"] == finished and report["total_records"] == 9
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [*out.glob("data/*"), out / "build_report.json", out / "README.md"]}
    assert modes == {0o644}
