"""One fast inference path per device: the dtype, attention kernel and compilation a model runs with.

``dtype="auto"`` (the default of :class:`~bioscan_clip_hf.zero_shot.ZeroShotClassifier`, the CLI's
``--dtype`` and so the Space) picks, by device:

* CUDA: bfloat16 weights where the GPU computes bf16 (Ampere and newer), else float16 weights;
* CPU: bfloat16 weights when the CPU computes bf16 natively (AVX-512 BF16 or AMX, read from the
  kernel's CPU flags), else float32. Without those instructions torch's bf16 matmul takes a slow
  generic path (measured 7x to 500x slower than fp32 on an AVX2-only AMD EPYC), so bf16 there would
  be a trap, not a speed-up;
* anything else (MPS, ...): float32 (not measured).

Weights are cast, rather than run under ``torch.autocast``: with bf16 weights nothing is cast per
call (measured faster, BENCHMARKS.md "Inference"). Embeddings are returned in float32 either way, and
bf16 / fp16 embeddings agree with fp32 to a cosine >= 0.999 (tests/test_zeroshot_runtime.py).

Attention: PyTorch's fused ``sdpa`` kernel (FlashAttention / memory-efficient kernels on CUDA, the
fused CPU kernel elsewhere; measured faster than ``eager``), or ``flash_attention_2`` when the
``flash-attn`` package is installed and the model runs in half precision on CUDA.

``torch.compile`` is optional (``compile=True``): it compiles each tower's forward in place, so the
weights, their names and the model's fingerprint stay as they are; the first batch then pays the
compilation (see BENCHMARKS.md for when it pays).

Example:
    >>> import torch
    >>> resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
    True
    >>> resolve_dtype("float16", torch.device("cpu"))
    torch.float16
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["DTYPE_CHOICES", "InferenceConfig", "cpu_computes_bf16", "prepare_model", "resolve_attention", "resolve_dtype"]

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
_TOWERS = ("vision_model", "dna_model", "text_model")
# x86 CPU flags (Linux /proc/cpuinfo) of instructions that compute bf16 dot products natively.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_computes_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has native bf16 dot products (AVX-512 BF16 or AMX) and oneDNN uses them.

    Reads the kernel's CPU flags (Linux); elsewhere, and when oneDNN reports no bf16 support, False.
    """
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return bool(flags & _BF16_FLAGS)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weight dtype for ``dtype`` (one of :data:`DTYPE_CHOICES` or a torch dtype) on ``device``."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = "auto" if dtype is None else str(dtype)
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_computes_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_attention(attention: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto`` -> ``flash_attention_2`` (flash-attn installed, CUDA, half precision), else ``sdpa``."""
    if attention != "auto":
        return attention
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


@dataclass(frozen=True)
class InferenceConfig:
    """What a model runs with: device, weight dtype, attention implementation, compiled or not."""

    device: torch.device
    dtype: torch.dtype
    attention: str
    compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (provenance records, bank metadata)."""
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "attention": self.attention, "compile": self.compile}


def prepare_model(
    model: torch.nn.Module,
    device: torch.device,
    dtype: str | torch.dtype | None = "auto",
    attention: str = "auto",
    compile: bool = False,
) -> InferenceConfig:
    """Put ``model`` on ``device`` in eval mode with the chosen dtype, attention and compilation, in place.

    Before a dtype cast the fingerprint of the loaded weights is kept on the model, so key banks
    built from the same checkpoint stay valid whatever precision serves them
    (:func:`~bioscan_clip_hf.zero_shot.bank.model_fingerprint`).

    Example:
        >>> config = prepare_model(model, torch.device("cpu"), "float32")  # doctest: +SKIP
        >>> config.to_dict()  # doctest: +SKIP
        {'device': 'cpu', 'dtype': 'float32', 'attention': 'sdpa', 'compile': False}
    """
    from .bank import model_fingerprint

    weight_dtype = resolve_dtype(dtype, device)
    current = next(model.parameters()).dtype
    if weight_dtype != current:
        model._loaded_weights_fingerprint = model_fingerprint(model)
    model.to(device=device, dtype=weight_dtype).eval()
    implementation = resolve_attention(attention, device, weight_dtype)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    if compile:
        for name in _TOWERS:
            tower = getattr(model, name, None)
            if tower is not None:
                tower.compile(dynamic=False)
    return InferenceConfig(device, weight_dtype, implementation, bool(compile))
