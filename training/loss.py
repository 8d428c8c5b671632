"""Contrastive loss with global negatives across processes (open_clip semantics).

Every process gathers the embeddings of all processes *with gradients* and computes the same loss
over the global batch with ``bioscan_clip_loss`` (the single-process loss of the model file), so the
negatives of each record are the whole global batch, as in the original ``ClipLoss(gather_with_grad=True,
local_loss=False)``. The backward of the gather sums the gradient of every process's copy of the loss
into the local features; DDP then averages parameter gradients over processes, which gives exactly
the gradient of one process on the concatenated batch.

Example:
    >>> emb = {"image": img_feats, "dna": dna_feats}          # L2-normalised, local batch
    >>> loss = gathered_clip_loss(emb, model.logit_scale)   # same value on every process
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from bioscan_clip_hf.modeling_bioscan_clip import bioscan_clip_loss


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, keeping the autograd graph.

    Without an initialised process group (one process) the tensor is returned unchanged.
    All processes must pass the same shape (training uses ``drop_last`` for that).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return torch.cat(dist_fn.all_gather(tensor), dim=0)


def gathered_clip_loss(embeddings: dict[str, torch.Tensor], logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean symmetric InfoNCE over all modality pairs of the *global* batch.

    ``embeddings`` maps modality name to the local, L2-normalised features; they are gathered
    with gradients, cast to float32 (bf16 logits lose the ranking of close negatives) and passed
    to ``bioscan_clip_loss``.
    """
    gathered = {name: gather_with_grad(feats.float()) for name, feats in embeddings.items()}
    return bioscan_clip_loss(gathered, logit_scale.float())
