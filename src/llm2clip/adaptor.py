"""The adaptor between the frozen LLM's caption embedding and the CLIP embedding space.

Default (paper §3.2 and appendix: "an inverted bottleneck MLP, the same as FuseMix"):

    x = L2-normalise(llm_embedding)                           # d = LLM hidden size
    N times:  x = x + W2(GELU(W1(LayerNorm(x))))                # W1: d -> e*d, W2: e*d -> d
    out = Linear(LayerNorm(x))                                 # d -> embed_dim

with N = 4 and e = 2 (Table 8 ablates N = 0, 1, 2, 4; N = 0 leaves LayerNorm + Linear).
Normalising the input first makes the adaptor blind to the scale of the LLM's pooled
hidden state, which differs across LLMs and layers.

Variant (`TransformerAdaptor`): the paper also tried "latent cross-attention transformer
layers following NV-Embed-v2". Stage 2 only has the pooled caption vector, so we apply
NV-Embed's latent attention to that one token: each pre-LN block lets the vector (the
query) attend over a trainable array of latent vectors (keys and values), then runs an
MLP, both residual. Self-attention over a single token would be a plain linear map;
attending over learned latents is what makes the block more than an MLP.

Outputs are never normalised here: the model normalises after the adaptor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



def _normalised_input(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Normalise in float32: a fp16 LLM embedding of width 4096 can overflow its own
    # sum of squares. Then cast to the adaptor's dtype (fp32 or bf16 weights).
    return F.normalize(x.float(), dim=-1).to(like.dtype)


class InvertedBottleneck(nn.Module):
    """x + W2(GELU(W1(LayerNorm(x)))): widen by `expansion`, then back to `dim`."""

    def __init__(self, dim: int, expansion: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, expansion * dim)
        self.down = nn.Linear(expansion * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class MLPAdaptor(nn.Module):
    """The paper's default adaptor (see the module docstring). `num_blocks` may be 0."""

    def __init__(self, in_dim: int, embed_dim: int, num_blocks: int = 4, expansion: int = 2):
        super().__init__()
        _check_sizes(in_dim=in_dim, embed_dim=embed_dim, expansion=expansion)
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.blocks = nn.Sequential(*[InvertedBottleneck(in_dim, expansion) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(in_dim)
        self.out = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _normalised_input(x, self.out.weight)
        return self.out(self.norm(self.blocks(x)))


Adaptor = MLPAdaptor  # the paper's default under its plain name


class LatentCrossAttention(nn.Module):
    """One query vector per row attends over `num_latents` trainable key/value vectors."""

    def __init__(self, dim: int, num_latents: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"in_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * dim ** -0.5)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, d]
        batch = x.shape[0]
        q = self._heads(self.query(x).unsqueeze(-2))  # [B, h, 1, d/h]
        k, v = (self._heads(t).expand(batch, -1, -1, -1)  # [B, h, L, d/h]
                for t in self.key_value(self.latents).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, h, 1, d/h]
        return self.proj(out.transpose(-3, -2).flatten(-2).squeeze(-2))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[..., n, d] -> [..., h, n, d/h]"""
        return t.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)


class LatentAttentionBlock(nn.Module):
    """Pre-LN transformer block: latent cross-attention, then an MLP, both residual."""

    def __init__(self, dim: int, num_latents: int, num_heads: int, expansion: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = LatentCrossAttention(dim, num_latents, num_heads)
        self.mlp = InvertedBottleneck(dim, expansion)  # carries its own pre-LN and residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x + self.attn(self.attn_norm(x)))


class TransformerAdaptor(nn.Module):
    """NV-Embed-style latent-attention adaptor (see the module docstring)."""

    def __init__(self, in_dim: int, embed_dim: int, num_blocks: int = 1, num_latents: int = 512,
                 num_heads: int = 8, expansion: int = 2):
        super().__init__()
        _check_sizes(in_dim=in_dim, embed_dim=embed_dim, expansion=expansion, num_latents=num_latents,
                     num_heads=num_heads)
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.blocks = nn.Sequential(*[LatentAttentionBlock(in_dim, num_latents, num_heads, expansion)
                                      for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(in_dim)
        self.out = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _normalised_input(x, self.out.weight)
        return self.out(self.norm(self.blocks(x)))


# the one list of adaptor kinds: `model.adaptor.kind` is validated against its keys
ADAPTORS = {"mlp": MLPAdaptor, "transformer": TransformerAdaptor}


def build_adaptor(kind: str, in_dim: int, embed_dim: int, **options) -> nn.Module:
    """`kind` is "mlp" (the paper's default) or "transformer"; options go to its class."""
    if kind not in ADAPTORS:
        raise ValueError(f"adaptor kind must be one of {sorted(ADAPTORS)}, got {kind!r}")
    try:
        return ADAPTORS[kind](in_dim, embed_dim, **options)
    except TypeError as err:
        raise ValueError(f"bad options for the {kind} adaptor {options}: {err}") from None


def check_adaptor_options(options: dict, key: str = "model.adaptor") -> None:
    """`options` ({kind, ...}) names a kind and only options its class takes; raises
    ConfigError naming `key` (before anything loads)."""
    import inspect

    from .config import ConfigError

    if not isinstance(options, dict):
        raise ConfigError(f"{key} must be a mapping {{kind: mlp | transformer, ...options}}, got {options!r}")
    options = dict(options)
    kind = options.pop("kind", "mlp")
    if kind not in ADAPTORS:
        raise ConfigError(f"{key}.kind {kind!r} is not one of {', '.join(ADAPTORS)}")
    accepted = list(inspect.signature(ADAPTORS[kind]).parameters)[2:]  # after in_dim, embed_dim
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"{key}: the {kind} adaptor has no option(s) {unknown}; it takes {accepted}")


def adaptor_param_count(in_dim: int, embed_dim: int, num_blocks: int = 4, expansion: int = 2) -> int:
    """Parameters of MLPAdaptor, in closed form. Per block: LayerNorm 2d, W1 e*d*d + e*d,
    W2 e*d*d + d; then LayerNorm 2d and the output layer d*embed_dim + embed_dim.
    (Paper Table 8: "the 4-layer Linear Adaptor has 67.1M parameters" for d = 2048 —
    the four blocks alone, 4 * 16,787,456.)"""
    d, e = in_dim, expansion
    block = 2 * d + (e * d * d + e * d) + (e * d * d + d)
    return num_blocks * block + 2 * d + d * embed_dim + embed_dim


mlp_adaptor_param_count = adaptor_param_count  # the name the first version used


def _check_sizes(**sizes: int) -> None:
    bad = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
    if bad:
        raise ValueError(f"adaptor sizes must be positive integers, got {bad}")
