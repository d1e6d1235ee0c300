"""Turn captions into token sequences that know which tokens belong to the caption.

Each sequence is `[tokenizer specials] [instruction] [caption] [EOS]`. The whole sequence
is attended to; only caption tokens are pooled (mean/weighted mean), while `last` pooling
takes the appended EOS. Padding is added by `collate`, on either side, with position ids
that ignore it, so that an embedding never depends on its batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

# A token is at most this many characters in practice; cutting an absurdly long caption
# to max_length * this before tokenising keeps tokenisation cheap without changing the
# tokens that survive truncation.
_CHARS_PER_TOKEN_BOUND = 64


@dataclass
class TokenizedCaption:
    input_ids: list[int]
    pool_mask: list[int]  # 1 = caption token (pooled), 0 = instruction/special
    truncated: bool


class CaptionTokenizer:
    def __init__(self, tokenizer, instruction: str | None, max_length: int):
        self.tokenizer = tokenizer
        self.prefix = f"{instruction.strip()} " if instruction else ""
        self.max_length = int(max_length)
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)

    def __call__(self, caption: str) -> TokenizedCaption:
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"captions must be non-empty strings, got {caption!r}")
        char_limit = self.max_length * _CHARS_PER_TOKEN_BOUND
        cut = len(caption) > char_limit
        caption = caption[:char_limit] if cut else caption
        text = self.prefix + caption
        enc = self.tokenizer(
            text,
            add_special_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            truncation=False,
            verbose=False,
        )
        start, end = len(self.prefix), len(text)
        ids = list(enc["input_ids"])
        # a token belongs to the caption when its characters overlap the caption's span
        pool = [
            int(not special and e > start and s < end)
            for (s, e), special in zip(enc["offset_mapping"], enc["special_tokens_mask"])
        ]
        if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            pool.append(0)
        ids, pool, truncated = self._truncate(ids, pool)
        return TokenizedCaption(ids, pool, truncated or cut)

    def _truncate(self, ids: list[int], pool: list[int]) -> tuple[list[int], list[int], bool]:
        """Drop caption tokens from the end until the sequence fits; keep the rest."""
        excess = len(ids) - self.max_length
        if excess <= 0:
            return ids, pool, False
        caption_positions = [i for i, p in enumerate(pool) if p]
        keep_caption = len(caption_positions) - excess
        if keep_caption < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for the caption after the "
                f"instruction and special tokens ({len(ids) - len(caption_positions)} tokens)"
            )
        drop = set(caption_positions[keep_caption:])
        kept = [i for i in range(len(ids)) if i not in drop]
        return [ids[i] for i in kept], [pool[i] for i in kept], True

    def collate(self, items: list[TokenizedCaption], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad to the longest item; positions count real tokens only."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        width = max(len(item.input_ids) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        pool_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item.input_ids)
            cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
            input_ids[row, cols] = torch.tensor(item.input_ids)
            attention[row, cols] = 1
            pool_mask[row, cols] = torch.tensor(item.pool_mask)
        position_ids = (attention.cumsum(1) - 1).clamp(min=0)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "position_ids": position_ids,
            "pool_mask": pool_mask,
        }


# What starting one more batch costs, in padded token slots per row of a full batch: the
# fixed cost of a forward call (kernel launches, Python, under-filled matmuls). Batches
# are cut to minimise padding + this, so a heavy-tailed length mix pays little padding
# without falling apart into tiny batches.
BATCH_COST_SLOTS_PER_ROW = 4


def plan_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices into `lengths`, grouped by length so each batch pads little.

    The rule `CaptionEncoder.encode` batches by (and the embedding store, which encodes
    through it): sort by length (stable), then cut the sorted order into runs of at most
    `batch_size` that minimise the padded token slots plus a fixed cost per batch
    (`BATCH_COST_SLOTS_PER_ROW * batch_size` slots), exactly, by dynamic programming. Never
    more padding than cutting the sorted order into full consecutive chunks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    batch_cost = BATCH_COST_SLOTS_PER_ROW * batch_size
    # best[j]: least cost of batching the j shortest; start[j]: where its last batch starts
    best, start = [0] + [0] * len(order), [0] * (len(order) + 1)
    for stop in range(1, len(order) + 1):
        longest = sorted_lengths[stop - 1]  # sorted: the last row of a run is its longest
        best[stop], start[stop] = min((best[first] + (stop - first) * longest + batch_cost, first)
                                      for first in range(max(0, stop - batch_size), stop))
    batches, stop = [], len(order)
    while stop > 0:
        batches.append(order[start[stop]:stop])
        stop = start[stop]
    return batches[::-1]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The share of the padded token slots of `batches` that are padding."""
    slots = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 1.0 - real / slots if slots else 0.0
