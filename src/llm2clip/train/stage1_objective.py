"""The stage-1 objective as one module, so DDP sees a single forward per micro-step.

Anchors, positives and hard negatives are encoded in ONE batch (one forward through the
LLM); the optional MNTP pass runs inside the same forward. Training through DDP with
several separate forwards before one backward would break its gradient bookkeeping.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.pair_schedule import PairExample
from ..losses import simcse_loss
from ..text import CaptionEncoder
from .mntp import mask_caption_tokens, mask_token_id, mntp_loss


class Stage1Objective(nn.Module):
    def __init__(self, encoder: CaptionEncoder, temperature: float, mntp_weight: float = 0.0,
                 mntp_probability: float = 0.2, with_negatives: bool = False):
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature
        self.mntp_weight = mntp_weight
        self.mntp_probability = mntp_probability
        # every rank must take part in the negatives' gather, even with none locally
        self.with_negatives = with_negatives
        if mntp_weight > 0 and encoder.lm_head is None:
            raise ValueError("MNTP needs the LM head: load the encoder with lm_head=True")

    def make_batch(self, examples: list[PairExample], generator: torch.Generator | None = None) -> dict:
        """Tokenise anchors, positives and negatives into one padded batch."""
        negatives = [e.negative for e in examples if e.negative] if self.with_negatives else []
        texts = [e.anchor for e in examples] + [e.positive for e in examples] + negatives
        batch = self.encoder.tokenize(texts)
        batch["n_pairs"] = len(examples)
        if self.mntp_weight > 0:
            masked, labels = mask_caption_tokens(batch, mask_token_id(self.encoder.tokenizer),
                                                 self.mntp_probability, generator)
            batch["mntp_input_ids"], batch["mntp_labels"] = masked, labels
        return batch

    def forward(self, input_ids, attention_mask, position_ids, pool_mask, n_pairs: int,
                mntp_input_ids=None, mntp_labels=None) -> dict[str, torch.Tensor]:
        emb = F.normalize(self.encoder(input_ids, attention_mask, position_ids, pool_mask), dim=-1)
        anchors, positives, negatives = emb[:n_pairs], emb[n_pairs:2 * n_pairs], emb[2 * n_pairs:]
        simcse = simcse_loss(anchors, positives, self.temperature,
                             negatives=negatives if self.with_negatives else None)
        out = {"simcse": simcse, "loss": simcse}
        if self.mntp_weight > 0:
            with self.encoder.autocast():
                hidden = self.encoder.hidden_states(mntp_input_ids, attention_mask, position_ids)
            out["mntp"] = mntp_loss(hidden, mntp_labels, self.encoder.lm_head)
            out["loss"] = simcse + self.mntp_weight * out["mntp"]
        return out
