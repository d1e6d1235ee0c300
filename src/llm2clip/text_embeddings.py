"""The value every text encoder's `encode` returns: embeddings that say how many inputs
were cut. The protocol that returns it is `text/protocol.py`; this type sits at the
bottom of the package so the conventional text towers (baseline/), which text/ builds
on, can return it too."""
from __future__ import annotations

import torch


class TextEmbeddings(torch.Tensor):
    """`[N, D]` embeddings of N texts, of which `truncated` were cut to the encoder's limit.

    A tensor, because `encode` returned one in 0.1 (`enc.encode(texts)` works as before);
    `.embeddings` is the same rows as a plain tensor. Any operation on it (indexing,
    `torch.cat`, `.numpy()`, arithmetic) gives a plain tensor: the count describes this
    call's rows only, so it is not carried further.
    """

    # plain-tensor semantics for every torch operation (no subclass propagation)
    __torch_function__ = torch._C._disabled_torch_function_impl
    truncated: int

    @staticmethod
    def of(embeddings: torch.Tensor, truncated: int) -> "TextEmbeddings":
        result = embeddings.as_subclass(TextEmbeddings)
        result.truncated = int(truncated)
        return result

    @property
    def embeddings(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)
