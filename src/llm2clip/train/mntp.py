"""Masked next-token prediction (MNTP, LLM2Vec): the optional stage-1 auxiliary objective.

Caption tokens are masked at random; with bidirectional attention the model predicts each
masked token from the state one position *before* it (the position whose next-token head
was trained to predict it), so the pretrained LM head is reused as is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def mask_caption_tokens(batch: dict[str, torch.Tensor], mask_id: int, probability: float,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (masked input_ids, labels with IGNORE except at masked caption positions)."""
    ids = batch["input_ids"]
    candidates = batch["pool_mask"].bool()
    candidates[:, 0] = False  # position 0 has no previous state to predict it from
    draw = torch.rand(ids.shape, generator=generator) < probability
    chosen = candidates & draw.to(ids.device)
    if not chosen.any() and candidates.any():  # always train on at least one token
        first = candidates.flatten().nonzero()[0]
        chosen.view(-1)[first] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return torch.where(chosen, torch.full_like(ids, mask_id), ids), labels


def mntp_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
              masked_in_batch: int | None = None) -> torch.Tensor:
    """Cross-entropy of token i predicted from the state at i-1, averaged over the masked
    tokens; given `masked_in_batch`, these rows' share of the mean over a larger batch."""
    shifted = labels[:, 1:]
    rows = shifted != IGNORE
    logits = lm_head(hidden[:, :-1][rows])
    if masked_in_batch is None:
        return F.cross_entropy(logits.float(), shifted[rows])
    return F.cross_entropy(logits.float(), shifted[rows], reduction="sum") / masked_in_batch


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask token, else its unknown or padding token (Llama has no mask)."""
    for candidate in (tokenizer.mask_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("the tokenizer has no mask, unk, pad or eos token to mask with")
