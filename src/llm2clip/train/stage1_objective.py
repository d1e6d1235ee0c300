"""The stage-1 objective as one module, so DDP sees a single forward per micro-step.

Anchors, positives and hard negatives are encoded in ONE batch (one forward through the
LLM); the optional MNTP pass runs inside the same forward. Training through DDP with
several separate forwards before one backward would break its gradient bookkeeping.

`simcse` (Table 9): "supervised" pairs two captions of one image; "unsupervised" pairs
each anchor caption with itself, so the two rows differ only by dropout (SimCSE's
augmentation: both copies sit in the same forward and draw independent masks); "none"
trains MNTP alone on the anchors and positives. The dropout is LoRA's (`model.lora.dropout`)
and the LLM's own (Llama's attention dropout is 0): LoRA's B starts at 0, so the two views
are identical until B has moved off 0 - the first step contrasts identical copies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..choices import SIMCSE_MODES
from ..data.pair_schedule import PairExample
from ..losses import simcse_loss
from ..text import CaptionEncoder
from .grad_cache import split_rows
from .mntp import IGNORE, mask_caption_tokens, mask_token_id, mntp_loss


class Stage1Objective(nn.Module):
    def __init__(self, encoder: CaptionEncoder, temperature: float, mntp_weight: float = 0.0,
                 mntp_probability: float = 0.2, with_negatives: bool = False, simcse: str = "supervised"):
        super().__init__()
        if simcse not in SIMCSE_MODES:
            raise ValueError(f"simcse must be one of {SIMCSE_MODES}, got {simcse!r}")
        if simcse == "none" and mntp_weight <= 0:
            raise ValueError("simcse='none' leaves no loss: give mntp_weight > 0")
        self.encoder = encoder
        self.simcse = simcse
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
        anchors = [e.anchor for e in examples]
        positives = anchors if self.simcse == "unsupervised" else [e.positive for e in examples]
        texts = anchors + positives + negatives
        batch = self.encoder.tokenize(texts)
        batch["n_pairs"] = len(examples)
        if self.mntp_weight > 0:
            masked, labels = mask_caption_tokens(batch, mask_token_id(self.encoder.tokenizer),
                                                 self.mntp_probability, generator)
            batch["mntp_input_ids"], batch["mntp_labels"] = masked, labels
        return batch

    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        """The batch of `make_batch`: SimCSE over its rows (+ the weighted MNTP loss)."""
        if self.simcse == "none":  # no pooled embedding is needed: MNTP reads the hidden states
            return self.chunk_terms(inputs, inputs, whole=True)
        out = self.contrast(self.embed(inputs), inputs)
        if self.mntp_weight > 0:
            mntp = self.chunk_terms(inputs, inputs, whole=True)
            out["mntp"], out["loss"] = mntp["mntp"], out["loss"] + mntp["loss"]
        return out

    # ---------------------------------------------------------- in pieces, for GradCache (grad_cache.py)
    def split(self, inputs: dict, pieces: int) -> list[dict]:
        """The batch's rows (anchors, positives, negatives alike) in `pieces` micro-batches."""
        return split_rows({k: v for k, v in inputs.items() if k != "n_pairs"}, pieces)

    def precompute(self, chunk: dict) -> dict:
        return chunk  # the LLM trains: nothing is frozen

    def embed(self, chunk: dict) -> list[torch.Tensor]:
        rows = self.encoder(chunk["input_ids"], chunk["attention_mask"], chunk["position_ids"], chunk["pool_mask"])
        return [F.normalize(rows, dim=-1)]

    def contrast(self, embeddings: list[torch.Tensor], inputs: dict) -> dict[str, torch.Tensor]:
        n_pairs = inputs["n_pairs"]
        emb = embeddings[0]
        anchors, positives, negatives = emb[:n_pairs], emb[n_pairs:2 * n_pairs], emb[2 * n_pairs:]
        simcse = simcse_loss(anchors, positives, self.temperature,
                             negatives=negatives if self.with_negatives else None)
        return {"simcse": simcse, "loss": simcse}

    def chunk_terms(self, chunk: dict, inputs: dict, whole: bool = False) -> dict[str, torch.Tensor]:
        """MNTP on the micro-batch's rows: its share of the batch's mean over masked tokens."""
        if self.mntp_weight <= 0:
            return {}
        with self.encoder.autocast():
            hidden = self.encoder.hidden_states(chunk["mntp_input_ids"], chunk["attention_mask"], chunk["position_ids"])
        masked = None if whole else int((inputs["mntp_labels"][:, 1:] != IGNORE).sum())
        mntp = mntp_loss(hidden, chunk["mntp_labels"], self.encoder.lm_head, masked_in_batch=masked)
        return {"mntp": mntp, "loss": self.mntp_weight * mntp}
