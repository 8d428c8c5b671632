"""Convert the original BIOSCAN-CLIP / CLIBD checkpoints (``best.pth``) into a model folder of ours.

Handles every released layout (reference ``clibd-original.md`` §4, §9):

* final CLIBD full fine-tune checkpoints, whose ViT blocks still carry LoRA q/v adapters
  (``attn.qkv.qkv`` + ``linear_a_q/linear_b_q/linear_a_v/linear_b_v``): the deltas are merged into
  the fused qkv (``W += B @ A``, no scaling), which is then split into query/key/value;
* v1 BIOSCAN-CLIP LoRA checkpoints: legacy prefixes (``lora_vit``, ``lora_barcode_bert``,
  ``lora_bert``) are renamed like the original ``update_checkpoint_param_names`` and the BERT
  ``_LoRALayer`` wrappers (``query.w`` + ``w_a``/``w_b``) are merged; ``logit_scale`` (absent in v1)
  is set to ln(1/0.07);
* image+DNA+text, image+DNA and image+text models (towers inferred from the keys, sizes from the
  shapes), ``module.`` prefixes from DDP, and the ``position_ids`` buffers, unused
  ``cls.predictions.bias`` and text pooler, which are dropped.

Checkpoints are read with ``torch.load(weights_only=True)`` only. A key that is missing, unexpected
or of the wrong shape is an error that lists every such key.

Example (command line)::

    bioscan-clip convert-clibd best.pth --text-tokenizer bert-small-tokenizer/ --out clibd-converted/

Example (Python)::

    >>> from bioscan_clip_hf.convert_clibd import convert_checkpoint
    >>> model_dir = convert_checkpoint("best.pth", "clibd-converted", text_tokenizer="bert-small/")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers are imported when converting, not when the CLI registers the parser
    import torch

    from .configuration_bioscan_clip import BioscanClipConfig

# Substring renames the original applies to v1 checkpoints (bioscanclip/util/util.py::update_checkpoint_param_names).
LEGACY_RENAMES = (
    ("LoRA_barcode_bert", "CLIBDDNAEncoder"),
    ("lora_barcode_bert", "base_dna_encoder"),
    ("LoRA_ViT_timm", "CLIBDImageEncoder"),
    ("lora_vit", "base_image_encoder"),
    ("LoRA_bert", "CLIBDLanguageEncoder"),
    ("lora_bert", "base_language_encoder"),
)
IMAGE_PREFIX = "image_encoder.base_image_encoder."
DNA_PREFIX = "dna_encoder.base_dna_encoder."
TEXT_PREFIX = "language_encoder.base_language_encoder."
TEXT_PROJ_PREFIX = "language_encoder.proj."
# Every released model uses 64-dimensional attention heads (ViT-B 768/12, BarcodeBERT 768/12,
# bert-small 512/8); head counts are not visible in the weight shapes.
DEFAULT_ATTENTION_HEAD_DIM = 64
_MAX_LISTED = 200  # enough for every key of a tower; longer lists end with a count


class CheckpointError(ValueError):
    """The checkpoint is not an original BIOSCAN-CLIP / CLIBD state dict (the message lists the offending keys)."""


@dataclass
class ConversionReport:
    """What the conversion found and did (printed by the CLI, stored as ``conversion_report.json``)."""

    source: str
    modalities: list[str]
    layout: str  # "clibd" (full fine-tune) or "lora" (v1 / lora_* configs: BERT LoRA adapters)
    merged_lora: dict[str, int] = field(default_factory=dict)  # tower -> number of merged adapters
    dropped_keys: list[str] = field(default_factory=list)
    renamed_legacy_prefixes: bool = False
    stripped_module_prefix: bool = False
    logit_scale_added: bool = False
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)


class _KeyReader:
    """Reads tensors from a state dict, remembering which keys were used, missing or mis-shaped."""

    def __init__(self, sd: dict[str, torch.Tensor]):
        self.sd = sd
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.bad_shapes: list[str] = []

    def has(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        if key not in self.sd:
            self.missing.append(key + (f" {list(shape)}" if shape is not None else ""))
            return None
        self.used.add(key)
        value = self.sd[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.bad_shapes.append(f"{key}: expected {list(shape)}, found {list(value.shape)}")
        return value

    def drop(self, key: str) -> bool:
        """Mark an optional, unused key (position_ids, pooler...) as consumed; True when present."""
        if key in self.sd:
            self.used.add(key)
            return True
        return False

    def indices(self, prefix: str) -> list[int]:
        """Sorted distinct N of keys ``prefix + "N."...``."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        return sorted({int(m.group(1)) for k in self.sd if (m := pattern.match(k))})

    def layer_indices(self, prefix: str) -> list[int]:
        """The layer numbers under ``prefix``; none, or gaps in 0..N, are recorded as missing keys."""
        layers = self.indices(prefix)
        if not layers:
            self.missing.append(prefix + "0.*")
        elif layers != list(range(len(layers))):
            self.missing.append(f"{prefix}N for N in {sorted(set(range(max(layers) + 1)) - set(layers))}")
        return layers


def _listing(title: str, items: list[str]) -> str:
    shown = "\n  ".join(items[:_MAX_LISTED])
    more = f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}):\n  {shown}{more}"


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load ``best.pth`` safely (``weights_only=True``) and return a flat ``{name: tensor}`` dict.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Example:
        >>> sd = load_original_state_dict("best.pth")  # doctest: +SKIP
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code objects, truncated files...
        raise CheckpointError(f"{path} cannot be read with torch.load(weights_only=True): {err}") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(_listing(f"{path} is not a flat state dict; entries that are not tensors", not_tensors))
    return dict(obj)


def normalize_key_names(sd: dict[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Strip DDP ``module.`` prefixes and apply the original's legacy (v1) renames."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = key
        while new.startswith("module."):
            new = new[len("module.") :]
            report.stripped_module_prefix = True
        for old, repl in LEGACY_RENAMES:
            if old in new:
                new = new.replace(old, repl)
                report.renamed_legacy_prefixes = True
        if new in out:
            raise CheckpointError(f"Two checkpoint keys map to {new!r} after stripping/renaming (last: {key!r})")
        out[new] = value
    return out


def _merge_lora_linear(r: _KeyReader, prefix: str, out_dim: int, in_dim: int) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
    """A BERT ``query``/``value`` Linear, plain (``prefix.weight``) or v1 ``_LoRALayer`` (``prefix.w`` + w_a/w_b)."""
    if r.has(prefix + ".w.weight"):
        w = r.get(prefix + ".w.weight", (out_dim, in_dim))
        b = r.get(prefix + ".w.bias", (out_dim,))
        a_mat = r.get(prefix + ".w_a.weight")
        b_mat = r.get(prefix + ".w_b.weight")
        if w is None or a_mat is None or b_mat is None:
            return w, b, True
        rank = a_mat.shape[0]
        if tuple(a_mat.shape) != (rank, in_dim) or tuple(b_mat.shape) != (out_dim, rank):
            r.bad_shapes.append(f"{prefix}.w_a/w_b: expected [r, {in_dim}] and [{out_dim}, r], "
                                f"found {list(a_mat.shape)} and {list(b_mat.shape)}")
            return w, b, True
        # The original adds w_b(w_a(x)) with no scaling, so the merged weight is W + B @ A.
        return w.float() + b_mat.float() @ a_mat.float(), b, True
    return r.get(prefix + ".weight", (out_dim, in_dim)), r.get(prefix + ".bias", (out_dim,)), False


def _convert_bert(r: _KeyReader, src: str, dst: str, out: dict[str, torch.Tensor],
                  head_dim: int, tower: str, report: ConversionReport) -> dict[str, Any] | None:
    """A transformers BertModel under ``src`` (original names) -> ``dst`` (names our BertModel loads)."""
    word = r.get(src + "embeddings.word_embeddings.weight")
    if word is None:
        return None
    vocab, hidden = word.shape
    pos = r.get(src + "embeddings.position_embeddings.weight")
    ttype = r.get(src + "embeddings.token_type_embeddings.weight")
    if pos is None or ttype is None:
        return None
    if pos.shape[1] != hidden or ttype.shape[1] != hidden:
        r.bad_shapes.append(f"{src}embeddings: position/token_type width differs from hidden size {hidden}")
    if hidden % head_dim:
        raise CheckpointError(f"{tower} tower: hidden size {hidden} is not a multiple of the attention head size "
                              f"{head_dim}; pass the right --attention-head-dim")
    if r.drop(src + "embeddings.position_ids"):
        report.dropped_keys.append(src + "embeddings.position_ids")
    out[dst + "embeddings.word_embeddings.weight"] = word
    out[dst + "embeddings.position_embeddings.weight"] = pos
    out[dst + "embeddings.token_type_embeddings.weight"] = ttype
    for p in ("weight", "bias"):
        out[dst + f"embeddings.LayerNorm.{p}"] = r.get(src + f"embeddings.LayerNorm.{p}", (hidden,))

    layers = r.layer_indices(src + "encoder.layer.")
    if not layers:
        return None
    fc1 = r.get(src + "encoder.layer.0.intermediate.dense.weight")
    inter = fc1.shape[0] if fc1 is not None else 4 * hidden
    merged = 0
    for i in layers:
        s, d = f"{src}encoder.layer.{i}.", f"{dst}encoder.layer.{i}."
        for name in ("query", "value"):
            w, b, was_lora = _merge_lora_linear(r, s + f"attention.self.{name}", hidden, hidden)
            out[d + f"attention.self.{name}.weight"], out[d + f"attention.self.{name}.bias"] = w, b
            merged += was_lora
        plain = {
            "attention.self.key": (hidden, hidden),
            "attention.output.dense": (hidden, hidden),
            "intermediate.dense": (inter, hidden),
            "output.dense": (hidden, inter),
        }
        for name, shape in plain.items():
            out[d + name + ".weight"] = r.get(s + name + ".weight", shape)
            out[d + name + ".bias"] = r.get(s + name + ".bias", (shape[0],))
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            for p in ("weight", "bias"):
                out[d + f"{name}.{p}"] = r.get(s + f"{name}.{p}", (hidden,))
    if merged:
        report.merged_lora[tower] = merged
    report.layout = "lora" if merged else report.layout
    return {
        "model_type": "bert",
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": len(layers),
        "num_attention_heads": int(hidden // head_dim),
        "intermediate_size": int(inter),
        "hidden_act": "gelu",
        "max_position_embeddings": int(pos.shape[0]),
        "type_vocab_size": int(ttype.shape[0]),
        "layer_norm_eps": 1e-12,
    }


def _convert_vit(r: _KeyReader, out: dict[str, torch.Tensor], head_dim: int,
                 report: ConversionReport) -> tuple[dict[str, Any], int] | None:
    """timm VisionTransformer (+ ``_LoRA_qkv_timm``) -> transformers ViTModel + ``image_projection``."""
    src, dst = IMAGE_PREFIX, "vision_model."
    cls_token = r.get(src + "cls_token")
    pos = r.get(src + "pos_embed")
    patch_w = r.get(src + "patch_embed.proj.weight")
    head_w = r.get(src + "head.weight")
    if cls_token is None or pos is None or patch_w is None or head_w is None:
        return None
    dim = cls_token.shape[-1]
    if dim % head_dim:
        raise CheckpointError(f"image tower: hidden size {dim} is not a multiple of the attention head size "
                              f"{head_dim}; pass the right --attention-head-dim")
    patch, channels = patch_w.shape[-1], patch_w.shape[1]
    grid = math.isqrt(pos.shape[1] - 1)
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(f"{src}pos_embed has {pos.shape[1] - 1} patch positions, not a square grid")
    out[dst + "embeddings.cls_token"] = cls_token
    out[dst + "embeddings.position_embeddings"] = pos
    out[dst + "embeddings.patch_embeddings.projection.weight"] = patch_w
    out[dst + "embeddings.patch_embeddings.projection.bias"] = r.get(src + "patch_embed.proj.bias", (dim,))

    blocks = r.layer_indices(src + "blocks.")
    if not blocks:
        return None
    fc1 = r.get(src + "blocks.0.mlp.fc1.weight")
    mlp = fc1.shape[0] if fc1 is not None else 4 * dim
    merged = 0
    for i in blocks:
        s, d = f"{src}blocks.{i}.", f"{dst}encoder.layer.{i}."
        # Final CLIBD checkpoints keep the LoRA wrapper (attn.qkv.qkv + adapters); a plain timm ViT has attn.qkv.
        wrapped = r.has(s + "attn.qkv.qkv.weight")
        qkv_key = s + ("attn.qkv.qkv" if wrapped else "attn.qkv")
        qkv_w = r.get(qkv_key + ".weight", (3 * dim, dim))
        qkv_b = r.get(qkv_key + ".bias", (3 * dim,))
        if wrapped:
            mats = {n: r.get(s + f"attn.qkv.{n}.weight") for n in ("linear_a_q", "linear_b_q", "linear_a_v", "linear_b_v")}
            if qkv_w is not None and all(m is not None for m in mats.values()):
                rank = mats["linear_a_q"].shape[0]
                shapes_ok = True
                for n, m in mats.items():
                    want = (rank, dim) if "_a_" in n else (dim, rank)
                    if tuple(m.shape) != want:
                        r.bad_shapes.append(f"{s}attn.qkv.{n}.weight: expected {list(want)}, found {list(m.shape)}")
                        shapes_ok = False
                if shapes_ok and tuple(qkv_w.shape) == (3 * dim, dim):
                    qkv_w = qkv_w.float().clone()
                    # Same as the original forward: q gets B_q A_q x, v gets B_v A_v x; k untouched; no scaling.
                    qkv_w[:dim] += mats["linear_b_q"].float() @ mats["linear_a_q"].float()
                    qkv_w[2 * dim :] += mats["linear_b_v"].float() @ mats["linear_a_v"].float()
                    merged += 2
        if qkv_w is not None and qkv_b is not None and qkv_w.shape[0] == 3 * dim and qkv_b.shape[0] == 3 * dim:
            for j, name in enumerate(("query", "key", "value")):
                out[d + f"attention.attention.{name}.weight"] = qkv_w[j * dim : (j + 1) * dim].clone()
                out[d + f"attention.attention.{name}.bias"] = qkv_b[j * dim : (j + 1) * dim].clone()
        mapping = {
            "attn.proj": ("attention.output.dense", (dim, dim)),
            "mlp.fc1": ("intermediate.dense", (mlp, dim)),
            "mlp.fc2": ("output.dense", (dim, mlp)),
        }
        for name, (target, shape) in mapping.items():
            out[d + target + ".weight"] = r.get(s + name + ".weight", shape)
            out[d + target + ".bias"] = r.get(s + name + ".bias", (shape[0],))
        for name, target in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
            for p in ("weight", "bias"):
                out[d + f"{target}.{p}"] = r.get(s + f"{name}.{p}", (dim,))
    for p in ("weight", "bias"):
        out[dst + f"layernorm.{p}"] = r.get(src + f"norm.{p}", (dim,))
    proj_dim = head_w.shape[0]
    out["image_projection.weight"] = r.get(src + "head.weight", (proj_dim, dim))
    out["image_projection.bias"] = r.get(src + "head.bias", (proj_dim,))
    if merged:
        report.merged_lora["image"] = merged
    config = {
        "model_type": "vit",
        "hidden_size": int(dim),
        "num_hidden_layers": len(blocks),
        "num_attention_heads": int(dim // head_dim),
        "intermediate_size": int(mlp),
        "hidden_act": "gelu",  # timm nn.GELU() is the exact (erf) GELU
        "image_size": int(grid * patch),
        "patch_size": int(patch),
        "num_channels": int(channels),
        "qkv_bias": True,
        "layer_norm_eps": 1e-6,
    }
    return config, int(proj_dim)


def convert_state_dict(
    sd: dict[str, torch.Tensor], source: str = "<state dict>", attention_head_dim: int = DEFAULT_ATTENTION_HEAD_DIM
) -> tuple[BioscanClipConfig, dict[str, torch.Tensor], ConversionReport]:
    """Map an original state dict onto ``BioscanClipModel`` parameter names.

    Returns the config (towers, sizes and modalities inferred from the keys; original pooling), the new
    state dict (transformers' checkpoint names, loadable by ``BioscanClipModel.from_pretrained``) and a
    report. Raises :class:`CheckpointError` listing every missing, unexpected or mis-shaped key.

    Example:
        >>> config, new_sd, report = convert_state_dict(torch.load("best.pth", weights_only=True))  # doctest: +SKIP
        >>> report.modalities  # doctest: +SKIP
        ['image', 'dna', 'text']
    """
    import torch

    from .configuration_bioscan_clip import BioscanClipConfig

    report = ConversionReport(source=source, modalities=[], layout="clibd")
    sd = normalize_key_names(sd, report)
    r = _KeyReader(sd)
    out: dict[str, torch.Tensor] = {}
    sub_configs: dict[str, Any] = {}
    proj_dims: dict[str, int] = {}

    present = {
        "image": any(k.startswith(IMAGE_PREFIX) for k in sd),
        "dna": any(k.startswith(DNA_PREFIX) for k in sd),
        "text": any(k.startswith((TEXT_PREFIX, TEXT_PROJ_PREFIX)) for k in sd),
    }
    if not present["image"] or not (present["dna"] or present["text"]):
        found = sorted({k.split(".")[0] for k in sd})
        raise CheckpointError(
            f"{source} is not a BIOSCAN-CLIP/CLIBD checkpoint: expected an image tower ('{IMAGE_PREFIX}*') and a "
            f"DNA ('{DNA_PREFIX}*') and/or text ('{TEXT_PREFIX}*') tower; top-level names found: {found[:20]}"
        )

    vit = _convert_vit(r, out, attention_head_dim, report)
    if vit is not None:
        sub_configs["vision_config"], proj_dims["image"] = vit
    if present["dna"]:
        dna = _convert_bert(r, DNA_PREFIX + "bert.", "dna_model.", out, attention_head_dim, "dna", report)
        if dna is not None:
            sub_configs["dna_config"] = dna
            hidden = dna["hidden_size"]
            if r.drop(DNA_PREFIX + "cls.predictions.bias"):  # the unused vocabulary bias of the MLM head
                report.dropped_keys.append(DNA_PREFIX + "cls.predictions.bias")
            for p, shape in (("weight", (hidden, hidden)), ("bias", (hidden,))):
                out[f"dna_head.dense.{p}"] = r.get(DNA_PREFIX + f"cls.predictions.transform.dense.{p}", shape)
                out[f"dna_head.layer_norm.{p}"] = r.get(DNA_PREFIX + f"cls.predictions.transform.LayerNorm.{p}", (hidden,))
            dec = r.get(DNA_PREFIX + "cls.predictions.decoder.weight")
            if dec is not None:
                proj_dims["dna"] = dec.shape[0]
                out["dna_projection.weight"] = r.get(DNA_PREFIX + "cls.predictions.decoder.weight", (dec.shape[0], hidden))
                out["dna_projection.bias"] = r.get(DNA_PREFIX + "cls.predictions.decoder.bias", (dec.shape[0],))
    if present["text"]:
        text = _convert_bert(r, TEXT_PREFIX, "text_model.", out, attention_head_dim, "text", report)
        if text is not None:
            sub_configs["text_config"] = text
            for p in ("weight", "bias"):
                if r.drop(TEXT_PREFIX + f"pooler.dense.{p}"):
                    report.dropped_keys.append(TEXT_PREFIX + f"pooler.dense.{p}")
            proj = r.get(TEXT_PROJ_PREFIX + "weight")
            if proj is not None:
                proj_dims["text"] = proj.shape[0]
                out["text_projection.weight"] = r.get(TEXT_PROJ_PREFIX + "weight", (proj.shape[0], text["hidden_size"]))
                out["text_projection.bias"] = r.get(TEXT_PROJ_PREFIX + "bias", (proj.shape[0],))

    if r.has("logit_scale"):
        out["logit_scale"] = r.get("logit_scale", ())
    else:  # v1 had no parameter and used a fixed 1/0.07
        out["logit_scale"] = torch.tensor(math.log(1 / 0.07))
        report.logit_scale_added = True

    unexpected = sorted(set(sd) - r.used)
    problems = []
    if r.missing:
        problems.append(_listing("missing keys", r.missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if r.bad_shapes:
        problems.append(_listing("keys with unexpected shapes", r.bad_shapes))
    if len(set(proj_dims.values())) > 1:
        problems.append(f"towers project to different sizes: {proj_dims}")
    if problems:
        raise CheckpointError(f"{source} does not match the original BIOSCAN-CLIP/CLIBD layout.\n" + "\n".join(problems))

    report.modalities = [m for m in ("image", "dna", "text") if present[m]]
    report.sizes = {k: {n: v for n, v in c.items() if isinstance(v, int)} for k, c in sub_configs.items()}
    config = BioscanClipConfig(
        **sub_configs,
        projection_dim=int(next(iter(proj_dims.values()))),
        modalities=report.modalities,
        image_pooling="cls",
        dna_pooling="softmax_mean",
        text_pooling="mean",
    )
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}
    return config, state, report


def build_model(config: BioscanClipConfig, state_dict: dict[str, torch.Tensor]):
    """Instantiate ``BioscanClipModel`` with the converted weights, through ``from_pretrained`` so each
    transformers version maps checkpoint names onto its own modules; any key left over is an error."""
    from safetensors.torch import save_file

    from .modeling_bioscan_clip import BioscanClipModel

    with tempfile.TemporaryDirectory(prefix="clibd-convert-") as tmp:
        config.save_pretrained(tmp)
        save_file(state_dict, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        model, info = BioscanClipModel.from_pretrained(tmp, output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise CheckpointError(f"Converted weights do not fit BioscanClipModel: {problems}")
    return model.eval()


def build_processor(config: BioscanClipConfig, text_tokenizer: str | Path):
    """The processor of a converted model: the original image preprocessing at the model's input size (no
    normalisation), the original 5-mer DNA tokenisation (reference §1.2) and the given text tokenizer
    (max length 20)."""
    from .processing_bioscan_clip import BioscanClipProcessor

    return BioscanClipProcessor.from_config(config, text_tokenizer=str(text_tokenizer))


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    text_tokenizer: str | Path,
    attention_head_dim: int = DEFAULT_ATTENTION_HEAD_DIM,
    overwrite: bool = False,
) -> Path:
    """Convert ``best.pth`` into ``out_dir``: safetensors weights, config with ``auto_map``, Hub code files,
    processor files and ``conversion_report.json``. Returns ``out_dir``.

    Example:
        >>> convert_checkpoint("best.pth", "clibd", text_tokenizer="bert-small/")  # doctest: +SKIP
        PosixPath('clibd')
    """
    from dataclasses import asdict

    from .atomic import atomic_dir, write_json

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    sd = load_original_state_dict(checkpoint)
    config, state, report = convert_state_dict(sd, source=str(checkpoint), attention_head_dim=attention_head_dim)
    del sd
    model = build_model(config, state)
    processor = build_processor(config, text_tokenizer)
    with atomic_dir(out_dir) as tmp:  # the folder appears complete or not at all; an old one stays until then
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(tmp / "conversion_report.json", asdict(report))
    return out_dir


def add_convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``convert-clibd`` on the ``bioscan-clip`` command line."""
    p = subparsers.add_parser(
        "convert-clibd",
        help="convert an original BIOSCAN-CLIP/CLIBD best.pth into a model folder",
        description="Convert an original BIOSCAN-CLIP / CLIBD checkpoint (best.pth: final full fine-tune or v1 LoRA; "
        "image+DNA+text, image+DNA or image+text) into a model folder loadable with "
        "AutoModel/AutoProcessor.from_pretrained(..., trust_remote_code=True).",
    )
    p.add_argument("checkpoint", type=Path, help="the original best.pth (read with torch.load(weights_only=True))")
    p.add_argument("--text-tokenizer", type=Path, required=True,
                   help="folder of the text tokenizer the model was trained with (prajjwal1/bert-small's WordPiece)")
    p.add_argument("--out", type=Path, required=True, help="output model folder")
    p.add_argument("--attention-head-dim", type=int, default=DEFAULT_ATTENTION_HEAD_DIM,
                   help="attention head size used to derive head counts (64 for every released model)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_run_convert)
    return p


def _run_convert(args: argparse.Namespace) -> int:
    import json

    try:
        out = convert_checkpoint(args.checkpoint, args.out, args.text_tokenizer,
                                 attention_head_dim=args.attention_head_dim, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = json.loads((out / "conversion_report.json").read_text())
    print(f"Converted {args.checkpoint} -> {out}")
    print(f"  towers: {', '.join(report['modalities'])}; layout: {report['layout']}; "
          f"merged LoRA adapters: {report['merged_lora'] or 'none'}; "
          f"logit_scale {'added (ln(1/0.07))' if report['logit_scale_added'] else 'from checkpoint'}; "
          f"dropped {len(report['dropped_keys'])} unused keys")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bioscan_clip_hf.convert_clibd best.pth --text-tokenizer DIR --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m bioscan_clip_hf.convert_clibd")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_parser(sub)
    args = parser.parse_args(["convert-clibd", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
