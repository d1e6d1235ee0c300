"""What every text encoder offers, so callers need not know which one they hold.

A text encoder (the stage-1 `CaptionEncoder`, the [LLM ‖ CLIP-text] `ConcatTextEncoder`,
the MiniLM `SentenceTextTower`, the HF CLIP/SigLIP text side of `HFClipBaseline`, the
demo's `DualEncoder`) has:

- `dim`: the width of its embeddings;
- `max_tokens`: the longest input it reads; longer inputs are cut to it;
- `identity()`: the settings its embeddings are a function of (JSON values);
- `encode(texts, batch_size=...)` -> `TextEmbeddings`: `[N, dim]` float32 rows in input
  order, whose `.truncated` says how many of these texts were cut to `max_tokens`.

The count travels with the result of the call that cut, so no caller keeps, differences
or restores a counter. A two-tower model (`LLM2CLIP`, the baselines) exposes its text side
the same way: `encode_text(texts, batch_size=...)` -> `TextEmbeddings`, and
`max_text_tokens` (its text encoder's `max_tokens`).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from ..text_embeddings import TextEmbeddings


@runtime_checkable
class TextEncoder(Protocol):
    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def identity(self) -> dict[str, Any]: ...

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> TextEmbeddings: ...


__all__ = ["TextEmbeddings", "TextEncoder"]
