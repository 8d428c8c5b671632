"""Reading release images by their release-relative path, from a folder or from zip archives.

BIOSCAN-5M: ``{imgtype}/{split}/{chunk}/{processid}.jpg`` (no chunk for eval splits);
BIOSCAN-1M: ``part{chunk_number}/{image_file}``. An ``ImageStore`` resolves the key after the
anchor (``cropped_256/`` or ``part<N>/``) inside a folder or inside one or more zips (the 5M
release ships per-split zips), whichever prefix the archive adds.

Example:
    >>> store = ImageStore(["BIOSCAN_5M_cropped_256.zip"], anchor="cropped_256")  # doctest: +SKIP
    >>> data = store.read("train/0/ABCD123-22.jpg")                                # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def check_image_bytes(data: bytes) -> str | None:
    """Fully decode ``data``; return ``None`` if it is a readable image, else the error text.

    A full ``load()`` (not ``verify()``) is needed: truncated JPEGs pass ``verify``.

    Example:
        >>> check_image_bytes(b"not an image")[:20]
        'UnidentifiedImageErr'
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        return f"{type(error).__name__}: {error}"
    return None


class ImageStore:
    """Image bytes by release-relative key, from folders and/or zip files.

    Args:
        sources: folders or ``.zip`` files.
        anchor: for 5M the image package name (``"cropped_256"``): keys are relative to the folder
            of that name. For 1M use ``anchor=None``: keys start with ``part<N>/``.
    """

    def __init__(self, sources: Sequence[str | Path], anchor: str | None) -> None:
        if not sources:
            raise ValueError("no image source given (a folder or a zip file)")
        self.anchor = anchor
        self.folders: list[Path] = []
        self.zips: list[Path] = []
        for source in map(Path, sources):
            if not source.exists():
                raise FileNotFoundError(f"image source not found: {source}")
            if source.is_file() and zipfile.is_zipfile(source):
                self.zips.append(source)
            elif source.is_dir():
                self.folders.append(self._find_base(source))
            else:
                raise ValueError(f"image source is neither a folder nor a zip file: {source}")
        self._zip_index: dict[str, tuple[int, int, int, int]] | None = None
        self._zip_signature: dict[str, tuple[int, int]] = {}
        self._fds: dict[int, int] = {}
        self._fd_pid: int | None = None

    def _key_of(self, member: str) -> str | None:
        """The release-relative key of a path inside an archive, or ``None`` if it is not an image."""
        if member.endswith("/"):
            return None
        if self.anchor is not None:
            marker = f"{self.anchor}/"
            position = member.find(marker)
            if position == 0 or (position > 0 and member[position - 1] == "/"):
                return member[position + len(marker) :]
            return None
        match = re.search(r"(?:^|/)(part\d+/.+)$", member)
        return match.group(1) if match else None

    def _find_base(self, folder: Path) -> Path:
        """The folder that keys are relative to, searched at most three levels down."""
        candidates = [folder, *sorted(p for p in folder.glob("*") if p.is_dir())]
        candidates += sorted(p for p in folder.glob("*/*") if p.is_dir())
        candidates += sorted(p for p in folder.glob("*/*/*") if p.is_dir())
        for candidate in candidates:
            if self.anchor is not None and candidate.name == self.anchor:
                return candidate
            if self.anchor is None and any(candidate.glob("part[0-9]*")):
                return candidate
        wanted = f"a folder named {self.anchor!r}" if self.anchor else "folders named part<N>"
        raise FileNotFoundError(f"{folder}: found no {wanted} (searched 3 levels down)")

    def prepare(self) -> None:
        """Index the zips' central directories (once; worker processes inherit or receive it)."""
        if self._zip_index is not None or not self.zips:
            return
        index: dict[str, tuple[int, int, int, int]] = {}
        signature: dict[str, tuple[int, int]] = {}
        for number, path in enumerate(self.zips):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    key = self._key_of(info.filename)
                    if key is not None and key not in index:
                        index[key] = (number, info.header_offset, info.compress_size, info.compress_type)
                        signature[key] = (info.CRC, info.file_size)
        self._zip_index, self._zip_signature = index, signature

    def _read_member(self, number: int, offset: int, size: int, method: int) -> bytes:
        # os.pread needs no shared file position, so processes may read the same descriptor, and
        # no process re-parses a central directory of millions of entries.
        if self._fd_pid != os.getpid():
            self._fds, self._fd_pid = {}, os.getpid()
        if number not in self._fds:
            self._fds[number] = os.open(self.zips[number], os.O_RDONLY)
        fd = self._fds[number]
        header = os.pread(fd, 30, offset)
        if header[:4] != b"PK\x03\x04":
            raise ValueError(f"{self.zips[number]}: no local file header at offset {offset}")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        data = os.pread(fd, size, offset + 30 + name_length + extra_length)
        if method == zipfile.ZIP_STORED:
            return data
        if method == zipfile.ZIP_DEFLATED:
            return zlib.decompress(data, -15)
        raise ValueError(f"{self.zips[number]}: unsupported zip compression method {method}")

    def read(self, key: str) -> bytes | None:
        """Bytes of the image at ``key``, or ``None`` when no source has it."""
        for base in self.folders:
            path = base / key
            if path.is_file():
                return path.read_bytes()
        if self.zips:
            self.prepare()
            found = self._zip_index.get(key)
            if found is not None:
                return self._read_member(*found)
        return None

    def signature(self, key: str) -> tuple[str, int, int] | None:
        """What identifies the image at ``key`` without reading it, or ``None`` when no source has it:
        a file's size and modification time, a zip member's CRC-32 and size. A resumed build compares
        these to rebuild the shards whose images were added, removed or replaced."""
        for base in self.folders:
            try:
                info = os.stat(base / key)
            except OSError:
                continue
            return ("file", info.st_size, info.st_mtime_ns)
        if self.zips:
            self.prepare()
            found = self._zip_signature.get(key)
            if found is not None:
                return ("zip", *found)
        return None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"], state["_fd_pid"] = {}, None  # descriptors do not travel to other processes
        state["_zip_signature"] = {}  # only the main process compares signatures
        return state
