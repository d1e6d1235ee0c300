"""An LLM2CLIP model whose caption side reads an embedding store instead of running the LLM.

Stage 2 trains against captions embedded once by `llm2clip embed`; when a benchmark's
captions were embedded in the same store (the demo embeds its test captions there), the
evaluation can look them up rather than run the LLM again. The store is checked against
the records first (embeddings/alignment.py), so an edited caption is refused, not
silently answered with the embedding of its old text.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.records import field_matches
from ..embeddings import EmbeddingStore
from ..text_embeddings import TextEmbeddings


class StoredCaptionModel:
    """`encode_image` by the model; `encode_text` of a caption of `records` (in `fields`)
    by its stored embedding, through the model's text head. A text that is no caption of
    the records raises KeyError naming it."""

    def __init__(self, model, store_dir, records: Sequence, fields: Sequence[str] | None = None):
        self.model = model
        self.store = EmbeddingStore.open(store_dir, records=records, field_names=fields)
        self._key: dict[str, tuple[str, str]] = {}  # caption -> (sample id, field) of its first occurrence
        for record in records:
            for source, text in record.caption_by_source().items():
                if field_matches(source, fields):
                    self._key.setdefault(text.strip(), (str(record.id), source))

    @property
    def max_text_tokens(self) -> int | None:
        """The caption encoder's limit, as the store's identity records it."""
        identity = self.store.manifest.get("identity", {})
        settings = identity.get("settings", identity)
        return settings.get("max_length") or settings.get("max_tokens")

    def encode_image(self, images) -> torch.Tensor:
        return self.model.encode_image(images)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int | None = None) -> TextEmbeddings:
        # batch_size is the eval interface's; a lookup runs the head once over all rows
        missing = [t for t in texts if t.strip() not in self._key]
        if missing:
            raise KeyError(f"{len(missing)} caption(s) are not in the store {self.store.directory}, "
                           f"e.g. {missing[0][:80]!r}")
        keys = [self._key[t.strip()] for t in texts]
        stored = self.store.get_many([k[0] for k in keys], [k[1] for k in keys])
        # a caption cut at embed time was counted and logged by the store's writer then
        return TextEmbeddings.of(self.model.encode_text_embeddings(torch.from_numpy(stored)), 0)
