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
import re
import zipfile
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
        self._zip_handles: list[zipfile.ZipFile] | None = None
        self._zip_index: dict[str, tuple[int, str]] | None = None

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

    def _open_zips(self) -> None:
        # Opened lazily, once per process: ZipFile handles cannot be shared with worker processes.
        self._zip_handles = [zipfile.ZipFile(path) for path in self.zips]
        self._zip_index = {}
        for number, handle in enumerate(self._zip_handles):
            for member in handle.namelist():
                key = self._key_of(member)
                if key is not None:
                    self._zip_index.setdefault(key, (number, member))

    def read(self, key: str) -> bytes | None:
        """Bytes of the image at ``key``, or ``None`` when no source has it."""
        for base in self.folders:
            path = base / key
            if path.is_file():
                return path.read_bytes()
        if self.zips:
            if self._zip_index is None:
                self._open_zips()
            found = self._zip_index.get(key)
            if found is not None:
                number, member = found
                return self._zip_handles[number].read(member)
        return None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_zip_handles"] = None
        state["_zip_index"] = None
        return state
