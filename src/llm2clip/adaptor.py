"""The adaptor between the frozen LLM's caption embedding and the CLIP embedding space.

Default (paper §3.2, FuseMix-style): L2-normalise the LLM embedding, N residual
inverted-bottleneck blocks  x + W2(GELU(W1(LayerNorm(x))))  with W1: d -> e*d and
W2: e*d -> d, then LayerNorm + Linear(d -> embed_dim). The paper's default is N = 4,
e = 2 (Table 8 ablates N = 0..4). The transformer variant replaces each MLP block by a
pre-LN transformer block over a few learned "latent" tokens read out by mean pooling.
Outputs are not normalised: the model normalises after the adaptor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InvertedBottleneck(nn.Module):
    def __init__(self, dim: int, expansion: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, expansion * dim)
        self.down = nn.Linear(expansion * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class MLPAdaptor(nn.Module):
    def __init__(self, in_dim: int, embed_dim: int, num_blocks: int = 4, expansion: int = 2):
        super().__init__()
        self.blocks = nn.Sequential(*[InvertedBottleneck(in_dim, expansion) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(in_dim)
        self.out = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float() if x.dtype == torch.float16 else x, dim=-1)
        return self.out(self.norm(self.blocks(x)))


class TransformerAdaptor(nn.Module):
    """The embedding is projected into `num_latents` tokens, mixed by `num_blocks`
    pre-LN transformer layers, and mean-pooled back to one vector."""

    def __init__(self, in_dim: int, embed_dim: int, num_blocks: int = 1, num_latents: int = 4,
                 num_heads: int = 8, expansion: int = 2):
        super().__init__()
        if in_dim % num_heads:
            raise ValueError(f"in_dim {in_dim} is not divisible by num_heads {num_heads}")
        self.num_latents = num_latents
        self.to_latents = nn.Linear(in_dim, num_latents * in_dim)
        layer = nn.TransformerEncoderLayer(in_dim, num_heads, expansion * in_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(in_dim)
        self.out = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float() if x.dtype == torch.float16 else x, dim=-1)
        tokens = self.to_latents(x).unflatten(-1, (self.num_latents, -1))
        return self.out(self.norm(self.blocks(tokens).mean(dim=-2)))


ADAPTORS = {"mlp": MLPAdaptor, "transformer": TransformerAdaptor}


def build_adaptor(kind: str, in_dim: int, embed_dim: int, **options) -> nn.Module:
    if kind not in ADAPTORS:
        raise ValueError(f"adaptor kind must be one of {sorted(ADAPTORS)}, got {kind!r}")
    try:
        return ADAPTORS[kind](in_dim, embed_dim, **options)
    except TypeError as err:
        raise ValueError(f"bad options for the {kind} adaptor {options}: {err}") from None


def mlp_adaptor_param_count(in_dim: int, embed_dim: int, num_blocks: int = 4, expansion: int = 2) -> int:
    """Closed form: per block LayerNorm (2d) + d->ed (e*d*d + e*d) + ed->d (e*d*d + d);
    then LayerNorm (2d) + d->embed (d*embed + embed)."""
    d, e = in_dim, expansion
    block = 2 * d + (e * d * d + e * d) + (e * d * d + d)
    return num_blocks * block + 2 * d + d * embed_dim + embed_dim
