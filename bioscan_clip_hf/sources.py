"""Where a model, key bank or data set comes from: a local path, or a Hugging Face Hub repo id.

One rule for the CLI, :meth:`ZeroShotClassifier.from_pretrained` and the Space, so a typo never
turns into a request for someone else's repo (whose weights and key bank would then be used):

* an existing local path is used as it is;
* a name that looks local and does not exist is an error naming the path: it starts with ``.``,
  ``/`` or ``~``, holds a backslash, has other than exactly one ``/``, or its first part is an
  existing local folder (``outputs/modle``);
* anything else is a Hub id ``ORG/NAME`` only when the Hub knows it (online) or the local Hugging
  Face cache holds it (offline, ``HF_HUB_OFFLINE=1``); otherwise it is an error naming it.

Example::

    >>> resolve_source("outputs/demo/model")        # doctest: +SKIP
    PosixPath('outputs/demo/model')
    >>> resolve_source("bioscan-ml/clibd")          # doctest: +SKIP
    'bioscan-ml/clibd'
    >>> model, processor = load_model("outputs/demo/model")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ModelLoadError", "SourceError", "is_hub_id", "load_model", "resolve_source"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class SourceError(FileNotFoundError):
    """Neither an existing local path nor a Hub repo; the message names the input (one line)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelLoadError(ValueError):
    """A model folder or repo that exists but cannot be loaded (damaged weights, not our model)."""


def _looks_local(spec: str) -> bool:
    if spec.startswith((".", "/", "~")) or "\\" in spec or not _HUB_ID.match(spec):
        return True
    return Path(spec.split("/", 1)[0]).is_dir()


def _hub_has(repo_id: str, repo_type: str, cache_dir: str | Path | None) -> bool | None:
    """Whether the Hub (online) or the local cache (offline) has the repo; None when it cannot be told."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    if constants.is_offline_mode():
        cache = Path(cache_dir or constants.HF_HUB_CACHE)
        return (cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type) / "snapshots").is_dir()
    return _hub_repo_exists(repo_id, repo_type)


@lru_cache(maxsize=64)  # the CLI resolves before it announces "loading ... from the Hub", then loads
def _hub_repo_exists(repo_id: str, repo_type: str) -> bool | None:
    from huggingface_hub import HfApi

    try:
        return HfApi().repo_exists(repo_id, repo_type=repo_type)
    except Exception:  # unreachable Hub, proxy trouble: the download itself will report it
        return None


def is_hub_id(source: Path | str) -> bool:
    """Whether a :func:`resolve_source` result names a Hub repo (a ``str``) rather than a local Path."""
    return isinstance(source, str)


def resolve_source(
    spec: str | Path,
    *,
    what: str = "model",
    repo_type: str = "model",
    cache_dir: str | Path | None = None,
) -> Path | str:
    """A local ``Path`` when ``spec`` exists here, else the Hub repo id (``str``) it names.

    Args:
        spec: what the user typed (a folder, or ``ORG/NAME``).
        what: the word used in error messages ("model", "key bank", "data set").
        repo_type: Hub repo type checked for an id: ``model`` or ``dataset``.
        cache_dir: the Hugging Face Hub cache consulted offline (default: the standard one).

    Raises:
        SourceError: a local-looking path that does not exist, or an id the Hub / cache does not know.

    Example::

        >>> resolve_source("modle/x")  # doctest: +SKIP
        SourceError: model modle/x: no such local path, and no model repo of that name in the local Hugging Face cache ...
    """
    text = str(spec)
    local = Path(text).expanduser()
    if local.exists():
        return local
    if isinstance(spec, Path) or _looks_local(text):
        raise SourceError(f"{what} path does not exist: {text}")
    known = _hub_has(text, repo_type, cache_dir)
    if known is False:
        from huggingface_hub import constants

        where = ("in the local Hugging Face cache (offline: HF_HUB_OFFLINE is set)" if constants.is_offline_mode()
                 else "on the Hugging Face Hub (or it is private: log in with `hf auth login`)")
        raise SourceError(f"{what} {text}: no such local path, and no {repo_type} repo of that name {where}")
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(spec: str | Path, revision: str | None = None, **model_kwargs: Any):
    """``(BioscanClipModel, BioscanClipProcessor)`` from a folder or Hub id, via :func:`resolve_source`.

    ``model_kwargs`` go to ``BioscanClipModel.from_pretrained`` (``dtype``, ``attn_implementation``...).

    Raises:
        SourceError: see :func:`resolve_source`.
        ModelLoadError: the weights are truncated or empty, the folder holds no (or another) model;
            one line naming ``spec``.

    Example::

        >>> model, processor = load_model("outputs/demo/model")  # doctest: +SKIP
    """
    from safetensors import SafetensorError

    from . import BioscanClipModel, BioscanClipProcessor

    source = resolve_source(spec)
    name = str(source)
    try:
        model = BioscanClipModel.from_pretrained(name, revision=revision, **model_kwargs)
        processor = BioscanClipProcessor.from_pretrained(name, revision=revision)
    except SafetensorError as exc:
        raise ModelLoadError(f"cannot load model {spec}: damaged weights file ({_first_line(exc)}); "
                             "copy or download it again") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load model {spec}: {_first_line(exc)}") from exc
    return model, processor
