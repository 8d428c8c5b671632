"""The one atomic writer: complete or not at all, umask modes, never a rename onto a non-regular file."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bioscan_clip_hf import atomic
from bioscan_clip_hf.atomic import WriteTargetError, atomic_dir, atomic_path, check_writable, write_json, write_text


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one."""
    old = os.umask(0o022)
    try:
        yield lambda value: os.umask(value)
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")))


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_path_follows_the_umask_even_through_a_private_temp_file(tmp_path, umask, mask, expected):
    umask(mask)
    target = tmp_path / "w.safetensors"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(target.name)  # suffix kept for format sniffing
        save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors renames its own 0600 temp file onto tmp
    assert _mode(target) == expected
    assert _leftovers(tmp_path) == []


def test_atomic_path_error_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_atomic_path_replaces_through_a_symlink_and_keeps_the_link(tmp_path):
    real = tmp_path / "run3.csv"
    real.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(real.name)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing" / "x.csv", "folder .*missing does not exist"),
    (lambda d: d, "it is a folder"),
    (lambda d: (d / "f").write_text("") or d / "f" / "x.csv", "is not a folder"),
])
def test_check_writable_refuses_bad_locations_naming_them(tmp_path, make, message):
    target = make(tmp_path)
    with pytest.raises(WriteTargetError, match=message) as info:
        check_writable(target)
    assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_a_read_only_file_is_refused_even_for_root(tmp_path):
    target = tmp_path / "keep.csv"
    target.write_text("precious")
    target.chmod(0o444)
    with pytest.raises(WriteTargetError, match="read-only"):
        write_text(target, "new")
    assert target.read_text() == "precious" and _mode(target) == 0o444


def test_dev_full_is_refused_before_any_work_and_dev_null_is_written_into():
    with pytest.raises(WriteTargetError, match="/dev/full: No space left on device"):
        check_writable("/dev/full")
    write_text("/dev/null", "discarded")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # the device node is still a device


def test_a_fifo_gets_the_complete_content_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_text(fifo, "a,b\n1,2\n")
    reader.join(timeout=10)
    assert received == [b"a,b\n1,2\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_write_json_is_strict_and_writes_nothing_on_nan(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(ValueError):
        write_json(target, {"ece": math.nan})
    assert not target.exists() and _leftovers(tmp_path) == []
    write_json(target, {"ece": 0.5})
    assert json.loads(target.read_text()) == {"ece": 0.5}


def _fill(folder: Path) -> None:
    (folder / "sub").mkdir()
    save_file({"x": torch.zeros(2)}, str(folder / "sub" / "w.safetensors"))
    (folder / "bank.json").write_text("{}")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_dir_replaces_the_whole_folder_with_umask_modes(tmp_path, umask, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    umask(0o027)
    target = tmp_path / "bank"
    target.mkdir()
    (target / "stale.parquet").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        _fill(tmp)
    assert sorted(p.name for p in target.iterdir()) == ["bank.json", "sub"]
    assert _mode(target) == 0o750 and _mode(target / "sub") == 0o750
    assert _mode(target / "sub" / "w.safetensors") == 0o640
    assert _leftovers(tmp_path) == []


def test_atomic_dir_error_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            _fill(tmp)
            raise RuntimeError("killed between files")
    assert [p.name for p in target.iterdir()] == ["config.json"]
    assert (target / "config.json").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_dir_creates_a_new_folder_and_refuses_a_file_or_device(tmp_path):
    with atomic_dir(tmp_path / "new") as tmp:
        _fill(tmp)
    assert (tmp_path / "new" / "bank.json").is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteTargetError, match="existing file"):
        with atomic_dir(tmp_path / "file"):
            pass
    with pytest.raises(WriteTargetError, match="not a folder"):
        with atomic_dir("/dev/null"):
            pass


def test_write_figure_saves_by_suffix_and_closes_the_figure(tmp_path, umask):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from bioscan_clip_hf.atomic import write_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    write_figure(tmp_path / "p.png", fig, dpi=50)
    assert Image.open(tmp_path / "p.png").format == "PNG" and _mode(tmp_path / "p.png") == 0o644
    assert not plt.fignum_exists(fig.number) and _leftovers(tmp_path) == []
