"""Independent reference of the original BIOSCAN-CLIP / CLIBD ``SimpleCLIP`` for the converter parity test.

Nothing here imports ``bioscan_clip_hf``. The image tower is written from timm's ``VisionTransformer``
definition (timm 1.0.x, ``vit_base_patch16_224`` family) with timm's module names and math: fused
``qkv`` with bias, LayerNorm eps 1e-6, exact GELU, pre-norm blocks, the CLS token read after the final
``norm``, then ``head``. timm itself cannot be imported here (it needs torchvision), hence the copy of
its math. LoRA wrappers follow the original code: ``_LoRA_qkv_timm`` (ViT, q and v deltas added to the
fused qkv output, no scaling) and ``_LoRALayer`` (BERT query/value, ``w(x) + w_b(w_a(x))``).

The DNA tower is transformers' ``BertForMaskedLM`` with ``cls.predictions.decoder`` replaced by a fresh
``Linear(hidden, out)``, embedded as ``logits.softmax(-1).mean(1)`` with no attention mask; the text tower
is transformers' ``BertModel`` (with pooler) + ``proj``, embedded as the mean of ``last_hidden_state`` over
all positions, padding included. ``original_state_dict`` returns the state dict exactly as the original
code saved it (key names of reference §9.3/§9.4, including the ``position_ids`` buffers that
transformers 4.29 persisted and ``cls.predictions.bias``).

Example:
    >>> ref = ReferenceCLIBD(ReferenceSizes(), layout="clibd")
    >>> sd = original_state_dict(ref)
    >>> "image_encoder.base_image_encoder.blocks.0.attn.qkv.linear_a_q.weight" in sd
    True
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertModel

# --------------------------------------------------------------------------------------------------
# timm VisionTransformer (the parts vit_base_patch16_224 uses), same module names and math
# --------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """timm ``PatchEmbed``: a strided conv, then (B, C, H, W) -> (B, N, C)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm ``Attention`` with a fused ``qkv`` projection (q, k, v stacked in that order)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    """timm ``Mlp``: fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm pre-norm ``Block`` (no layer scale, no drop path at eval)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm ``VisionTransformer`` with ``global_pool='token'``: ``head(norm(x)[:, 0])``."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_hidden: int, num_classes: int, in_chans: int = 3):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class _LoRA_qkv_timm(nn.Module):
    """The original ViT LoRA wrapper around a fused qkv: adds B_q A_q x to q and B_v A_v x to v."""

    def __init__(self, qkv: nn.Linear, linear_a_q: nn.Linear, linear_b_q: nn.Linear,
                 linear_a_v: nn.Linear, linear_b_v: nn.Linear):
        super().__init__()
        self.qkv = qkv
        self.linear_a_q = linear_a_q
        self.linear_b_q = linear_b_q
        self.linear_a_v = linear_a_v
        self.linear_b_v = linear_b_v
        self.dim = qkv.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        new_q = self.linear_b_q(self.linear_a_q(x))
        new_v = self.linear_b_v(self.linear_a_v(x))
        qkv[:, :, : self.dim] += new_q
        qkv[:, :, -self.dim :] += new_v
        return qkv


class _LoRALayer(nn.Module):
    """The original BERT LoRA wrapper (v1 and ``lora_*`` configs): ``w(x) + w_b(w_a(x))``."""

    def __init__(self, w: nn.Linear, w_a: nn.Linear, w_b: nn.Linear):
        super().__init__()
        self.w = w
        self.w_a = w_a
        self.w_b = w_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(x) + self.w_b(self.w_a(x))


def add_vit_lora(vit: VisionTransformer, rank: int = 4) -> None:
    """Wrap every block's ``attn.qkv`` like the original ``CLIBDImageEncoder`` does."""
    for blk in vit.blocks:
        dim = blk.attn.qkv.in_features
        blk.attn.qkv = _LoRA_qkv_timm(
            blk.attn.qkv,
            nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False),
            nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False),
        )


def add_bert_lora(bert: BertModel, rank: int = 4) -> None:
    """Replace every ``attention.self.query``/``value`` with ``_LoRALayer`` like the original BERT encoders."""
    for layer in bert.encoder.layer:
        attn = layer.attention.self
        for name in ("query", "value"):
            w = getattr(attn, name)
            setattr(attn, name, _LoRALayer(w, nn.Linear(w.in_features, rank, bias=False),
                                           nn.Linear(rank, w.out_features, bias=False)))


# --------------------------------------------------------------------------------------------------
# The three towers and SimpleCLIP, with the original attribute names
# --------------------------------------------------------------------------------------------------


@dataclass
class ReferenceSizes:
    """Tower sizes; the defaults are small but keep 64-dim attention heads like every released model."""

    image_size: int = 224  # 7 x 7 patches of 32 px: the real input size at a small cost
    patch_size: int = 32
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp: int = 256
    dna_hidden: int = 192
    dna_layers: int = 2
    dna_heads: int = 3
    dna_intermediate: int = 384
    dna_vocab: int = 1027
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 1
    text_intermediate: int = 128
    text_vocab: int = 30522
    max_position_embeddings: int = 512
    output_dim: int = 96
    lora_rank: int = 4


class ImageEncoder(nn.Module):
    """``CLIBDImageEncoder`` (attribute ``base_image_encoder``) or v1 ``LoRA_ViT_timm`` (``lora_vit``)."""

    def __init__(self, s: ReferenceSizes, attr: str, lora: bool):
        super().__init__()
        self.attr = attr
        vit = VisionTransformer(s.image_size, s.patch_size, s.vision_hidden, s.vision_layers,
                                s.vision_heads, s.vision_mlp, s.output_dim)
        if lora:
            add_vit_lora(vit, s.lora_rank)
        setattr(self, attr, vit)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attr)(pixel_values)


class DNAEncoder(nn.Module):
    """``CLIBDDNAEncoder`` (``base_dna_encoder``) or v1 ``LoRA_barcode_bert`` (``lora_barcode_bert``)."""

    def __init__(self, s: ReferenceSizes, attr: str, lora: bool):
        super().__init__()
        self.attr = attr
        cfg = BertConfig(vocab_size=s.dna_vocab, hidden_size=s.dna_hidden, num_hidden_layers=s.dna_layers,
                         num_attention_heads=s.dna_heads, intermediate_size=s.dna_intermediate,
                         max_position_embeddings=s.max_position_embeddings, output_hidden_states=True,
                         attn_implementation="eager")
        mlm = BertForMaskedLM(cfg)
        # The original replaces the vocabulary decoder with a fresh projection to the shared space.
        mlm.cls.predictions.decoder = nn.Linear(s.dna_hidden, s.output_dim)
        if lora:
            add_bert_lora(mlm.bert, s.lora_rank)
        setattr(self, attr, mlm)

    def forward(self, dna_ids: torch.Tensor) -> torch.Tensor:
        # No attention mask: the original attends to the N-padding too.
        return getattr(self, self.attr)(dna_ids).logits.softmax(dim=-1).mean(dim=1)


class LanguageEncoder(nn.Module):
    """``CLIBDLanguageEncoder`` (``base_language_encoder``) or v1 ``LoRA_bert`` (``lora_bert``) + ``proj``."""

    def __init__(self, s: ReferenceSizes, attr: str, lora: bool):
        super().__init__()
        self.attr = attr
        cfg = BertConfig(vocab_size=s.text_vocab, hidden_size=s.text_hidden, num_hidden_layers=s.text_layers,
                         num_attention_heads=s.text_heads, intermediate_size=s.text_intermediate,
                         max_position_embeddings=s.max_position_embeddings, attn_implementation="eager")
        bert = BertModel(cfg)  # with pooler, as the original (unused)
        if lora:
            add_bert_lora(bert, s.lora_rank)
        setattr(self, attr, bert)
        self.proj = nn.Linear(s.text_hidden, s.output_dim)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        out = getattr(self, self.attr)(input_ids=input_ids, token_type_ids=token_type_ids,
                                       attention_mask=attention_mask)
        # Mean over all positions, padding included, as the original.
        return self.proj(out.last_hidden_state.mean(dim=1))


LAYOUT_ATTRS = {
    # layout -> (image attr, dna attr, text attr, LoRA in BERTs, has logit_scale)
    "clibd": ("base_image_encoder", "base_dna_encoder", "base_language_encoder", False, True),
    "v1_lora": ("lora_vit", "lora_barcode_bert", "lora_bert", True, False),
}


class ReferenceCLIBD(nn.Module):
    """The original ``SimpleCLIP`` with towers for ``modalities``; ``layout`` picks clibd (full fine-tune,
    ViT LoRA deltas, ``logit_scale``) or v1 LoRA (LoRA in every tower, no ``logit_scale``)."""

    def __init__(self, sizes: ReferenceSizes, layout: str = "clibd",
                 modalities: tuple[str, ...] = ("image", "dna", "text")):
        super().__init__()
        img_attr, dna_attr, txt_attr, bert_lora, has_scale = LAYOUT_ATTRS[layout]
        self.modalities = modalities
        if has_scale:
            self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        if "image" in modalities:
            self.image_encoder = ImageEncoder(sizes, img_attr, lora=True)  # ViT adapters in both layouts
        if "dna" in modalities:
            self.dna_encoder = DNAEncoder(sizes, dna_attr, lora=bert_lora)
        if "text" in modalities:
            self.language_encoder = LanguageEncoder(sizes, txt_attr, lora=bert_lora)

    @torch.no_grad()
    def embed(self, pixel_values=None, dna_ids=None, input_ids=None, token_type_ids=None,
              attention_mask=None) -> dict[str, torch.Tensor]:
        """L2-normalised embeddings per given modality, as ``SimpleCLIP.forward`` returns them."""
        out = {}
        if pixel_values is not None:
            out["image"] = F.normalize(self.image_encoder(pixel_values), p=2, dim=-1)
        if dna_ids is not None:
            out["dna"] = F.normalize(self.dna_encoder(dna_ids), p=2, dim=-1)
        if input_ids is not None:
            out["text"] = F.normalize(self.language_encoder(input_ids, token_type_ids, attention_mask), p=2, dim=-1)
        return out


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values (LoRA B and LayerNorms too, so no term is trivially zero/identity).
    The DNA decoder gets a larger scale so the softmax over features is far from uniform."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1 and ("norm" in name.lower() or "LayerNorm" in name):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                    else 0.1 * torch.randn(p.shape, generator=g))
        elif "predictions.decoder" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        elif name == "logit_scale":
            p.fill_(math.log(1 / 0.05))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def original_state_dict(model: ReferenceCLIBD) -> dict[str, torch.Tensor]:
    """The state dict as the original saved it under transformers 4.29: like ``model.state_dict()`` plus
    the persistent ``bert.embeddings.position_ids`` buffers (int64 [1, max_positions]) that newer
    transformers no longer persist."""
    sd: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith("embeddings.word_embeddings.weight"):
            prefix = key[: -len("word_embeddings.weight")]
            n_pos = dict(model.named_parameters())[prefix + "position_embeddings.weight"].shape[0]
            sd[prefix + "position_ids"] = torch.arange(n_pos, dtype=torch.long).unsqueeze(0)
        sd[key] = value.clone()
    return sd


def lora_deltas_off(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``sd`` with every LoRA B matrix zeroed (the checkpoint as if the deltas were dropped)."""
    return {k: (torch.zeros_like(v) if k.endswith(("linear_b_q.weight", "linear_b_v.weight", "w_b.weight")) else v)
            for k, v in sd.items()}


# --------------------------------------------------------------------------------------------------
# The original DNA tokenisation (reference §1.2), written out independently
# --------------------------------------------------------------------------------------------------

_KMER_VOCAB = {"".join(p): 3 + i for i, p in enumerate(itertools.product("ACGT", repeat=5))}


def reference_dna_ids(sequences: list[str], max_len: int = 660, k: int = 5) -> torch.Tensor:
    """PadSequence(660) with 'N', non-overlapping 5-mers, <UNK>=2 for any non-ACGT k-mer, leading id 0."""
    rows = []
    for seq in sequences:
        s = seq[:max_len].ljust(max_len, "N")
        rows.append([0] + [_KMER_VOCAB.get(s[i : i + k], 2) for i in range(0, max_len, k)])
    return torch.tensor(rows, dtype=torch.long)
