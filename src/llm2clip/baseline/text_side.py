"""The text side of a two-tower model seen as a text encoder (text/protocol.py): its
projected, normalised rows. A model that has `embed_dim`, `max_text_tokens` and
`encode_text` gets `dim`, `max_tokens` and `encode` from here; it writes `identity()`."""
from __future__ import annotations

from typing import Sequence

from ..text_embeddings import TextEmbeddings


class TwoTowerTextSide:
    @property
    def dim(self) -> int:
        return self.embed_dim

    @property
    def max_tokens(self) -> int:
        return self.max_text_tokens

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> TextEmbeddings:
        return self.encode_text(texts, batch_size)
