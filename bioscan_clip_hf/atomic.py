"""The one atomic writer: every file or folder the package writes appears complete or not at all.

A writer fills a temporary name next to the target and renames it into place only once the content is
complete and on disk, so a killed run leaves either the old state or the new one, never half a CSV or
new embeddings beside an old ``bank.json``. Results follow the user's umask (``0644`` / ``0755`` by
default), also for files that libraries write through private ``0600`` temp files (safetensors).

Targets that are not regular files are never renamed onto (tests and CI run as root, where a rename
onto ``/dev/full`` or a FIFO would replace the device node): the complete content is written into
them directly instead. A file the user marked read-only (no write bit) is refused, also for root.

Example::

    from bioscan_clip_hf.atomic import atomic_dir, atomic_path, write_json

    with atomic_path("predictions.csv") as tmp:
        frame.to_csv(tmp, index=False)          # predictions.csv appears only when complete
    with atomic_dir("bank") as tmp:
        save_file(tensors, tmp / "embeddings.safetensors")
        write_json(tmp / "bank.json", meta)     # bank/ is replaced as one unit
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "finite_json",
    "WriteTargetError",
    "atomic_dir",
    "atomic_path",
    "check_writable",
    "write_bytes",
    "write_figure",
    "write_json",
    "write_text",
]


class WriteTargetError(OSError):
    """A target that cannot be written; the message names it and says why (one line)."""


def _temp_name(target: Path, kind: str) -> Path:
    # Hidden, and the target's own name last so format-by-suffix writers (savefig, to_parquet) still work.
    return target.parent / f".{kind}-{secrets.token_hex(4)}-{target.name}"


def _is_proc_link(path: str) -> bool:
    return path.startswith("/proc/")


def _resolve(target: Path) -> Path:
    """Follow symbolic links to the file they name, so a link itself survives the write.

    A chain through /proc (``/dev/stdout`` -> ``/proc/self/fd/1``) is not followed: that is the process's
    own stream, written into directly rather than replaced.
    """
    path = target
    for _ in range(40):  # the kernel's own limit on link hops
        if not path.is_symlink():
            return path
        path = Path(os.path.join(os.path.realpath(path.parent), os.readlink(path)))
        if _is_proc_link(str(path)):
            return target
    return target


def _is_direct(target: Path) -> bool:
    """Whether ``target`` exists and is not a regular file or folder (a device, FIFO, socket, /dev/stdout)."""
    try:
        mode = os.stat(target).st_mode
    except OSError:  # missing, or a path through a file: nothing there to write into
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or target.is_symlink()


def check_writable(target: str | os.PathLike, *, folder: bool = False) -> Path:
    """Check, before any work, that ``target`` can be written; return it as a Path.

    Raises :class:`WriteTargetError` naming the target when its folder is missing or not writable, when
    it is a folder (a file for ``folder=True``), when it is a read-only file (refused also for root), or
    when a device refuses a write (``/dev/full``).

    Example::

        check_writable("out/predictions.csv")   # WriteTargetError: ... folder out does not exist
    """
    target = Path(target)
    real = _resolve(target)
    parent = real.parent
    if _is_direct(real):
        if folder:
            raise WriteTargetError(f"cannot write folder {target}: it is a device or stream, not a folder")
        if stat.S_ISCHR(os.stat(real).st_mode):
            # A zero-length write reaches the driver: /dev/full answers ENOSPC before any work is done.
            try:
                fd = os.open(real, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(fd, b"")
                finally:
                    os.close(fd)
            except OSError as exc:
                raise WriteTargetError(f"cannot write {target}: {exc.strerror or exc}") from None
        return target
    if not parent.exists():
        raise WriteTargetError(f"cannot write {target}: folder {parent} does not exist")
    if not parent.is_dir():
        raise WriteTargetError(f"cannot write {target}: {parent} is not a folder")
    if real.exists():
        if folder and not real.is_dir():
            raise WriteTargetError(f"cannot write folder {target}: it is an existing file")
        if not folder and real.is_dir():
            raise WriteTargetError(f"cannot write {target}: it is a folder; give a file name")
        if not folder and not real.stat().st_mode & 0o222:
            raise WriteTargetError(f"cannot write {target}: the file is read-only; remove it or make it writable first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteTargetError(f"cannot write {target}: folder {parent} is not writable")
    return target


def _created_mode(path: Path) -> int:
    """The mode the kernel gave a file made with 0o666 or a folder made with 0o777: the umask applied.

    Reading it back this way is thread-safe, unlike the os.umask(0)/os.umask(old) dance.
    """
    return stat.S_IMODE(os.stat(path).st_mode)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic there
        pass


def _create_temp(target: Path) -> Path:
    while True:
        tmp = _temp_name(target, "tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in the target's folder; renamed onto ``target`` on success, removed on error.

    The caller writes the whole file to the yielded path (by any library); the result follows the umask.
    A device, FIFO or ``/dev/stdout`` target gets the complete content written into it instead.

    Example::

        with atomic_path("embeddings.parquet") as tmp:
            table.to_parquet(tmp)
    """
    target = Path(target)
    check_writable(target)
    real = _resolve(target)
    if _is_direct(real):
        with _direct(real) as tmp:
            yield tmp
        return
    tmp = _create_temp(real)
    file_mode = _created_mode(tmp)
    try:
        yield tmp
        if not tmp.is_file():
            raise WriteTargetError(f"cannot write {target}: the writer left no file behind")
        os.chmod(tmp, file_mode)  # a library may have renamed its own 0600 temp file onto ours
        _fsync(tmp)
        os.replace(tmp, real)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(real.parent)


@contextmanager
def _direct(target: Path) -> Iterator[Path]:
    """Collect the content in a private temp file, then write it into a non-regular target in one go."""
    fd, name = tempfile.mkstemp(prefix="bioscan-clip-")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), str(b))


def _apply_umask(root: Path, file_mode: int, dir_mode: int) -> None:
    """Give every file and folder under ``root`` the umask's mode (executables keep their x bits)."""
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, dir_mode)
        for name in files:
            path = Path(folder, name)
            if path.is_symlink():
                continue
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, dir_mode if executable else file_mode)
            _fsync(path)
        for name in dirs:
            if Path(folder, name).is_symlink():
                dirs.remove(name)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh sibling folder to fill; on success it replaces ``target`` (old content gone) as one unit.

    On error the temporary folder is removed and ``target`` is untouched. Files and folders inside follow
    the umask. Where the system can swap two folders atomically (Linux), no reader ever sees ``target``
    missing; elsewhere it is missing only between two renames.

    Example::

        with atomic_dir("outputs/model") as tmp:
            model.save_pretrained(tmp)
    """
    target = Path(target)
    check_writable(target, folder=True)
    real = _resolve(target)
    tmp = _temp_name(real, "tmp")
    os.mkdir(tmp, 0o777)  # the kernel applies the umask
    probe = _create_temp(tmp / "probe")
    file_mode, dir_mode = _created_mode(probe), _created_mode(tmp)
    probe.unlink()
    try:
        yield tmp
        _apply_umask(tmp, file_mode, dir_mode)
        _fsync_dir(tmp)
        if not real.exists():
            os.rename(tmp, real)
        elif _exchange(tmp, real):
            shutil.rmtree(tmp)  # now holds the old content
        else:
            old = _temp_name(real, "old")
            os.rename(real, old)
            os.rename(tmp, real)
            shutil.rmtree(old)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(real.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path.

    Example::

        write_bytes("weights.bin", blob)
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return the path.

    Example::

        write_text("README.md", card)
    """
    return write_bytes(path, text.encode(encoding))


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, NaN) replaced by None, so strict JSON can hold it.

    Example::

        finite_json({"threshold": float("inf"), "scores": (0.5, float("nan"))})  # {"threshold": None, "scores": [0.5, None]}
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as strict JSON (NaN / Infinity refused with ValueError) atomically; return the path.

    Example::

        write_json("eval_results.json", {"genus_accuracy": 0.91})
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
    return write_text(path, text + "\n")


def write_figure(path: str | os.PathLike, fig: Any, **savefig: Any) -> Path:
    """Save a matplotlib figure atomically (format from the suffix, PNG if none) and close it.

    Example::

        write_figure("accuracy.png", fig, dpi=120)
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=savefig.pop("format", path.suffix.lstrip(".") or "png"), **savefig)
    finally:
        plt.close(fig)
    return path
