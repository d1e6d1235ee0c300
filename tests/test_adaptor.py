"""The adaptor: shapes, the parameter-count formula, normalisation, the N=0 reduction."""
import pytest
import torch
import torch.nn.functional as F

from llm2clip.adaptor import (Adaptor, MLPAdaptor, TransformerAdaptor, adaptor_param_count, build_adaptor,
                              mlp_adaptor_param_count)

KINDS = {"mlp": {"num_blocks": 2}, "transformer": {"num_blocks": 2, "num_latents": 6, "num_heads": 4}}


@pytest.mark.parametrize("blocks", [0, 1, 2, 3, 4, 6])
@pytest.mark.parametrize("expansion", [1, 2, 4])
def test_shapes_and_parameter_count_match_the_formula(blocks, expansion):
    adaptor = build_adaptor("mlp", 48, 32, num_blocks=blocks, expansion=expansion)
    assert adaptor(torch.randn(5, 48)).shape == (5, 32)
    assert sum(p.numel() for p in adaptor.parameters()) == adaptor_param_count(48, 32, blocks, expansion)


def test_count_formula_by_hand_and_the_papers_67m():
    d, e, out = 10, 2, 3
    by_hand = (2 * d) + (d * e * d + e * d) + (e * d * d + d) + (2 * d) + (d * out + out)
    assert adaptor_param_count(d, out, num_blocks=1, expansion=e) == by_hand == 503
    # Table 8: four blocks on Llama-3.2-1B (d = 2048) have 67.1M parameters
    blocks_only = adaptor_param_count(2048, 1, 4, 2) - adaptor_param_count(2048, 1, 0, 2)
    assert round(blocks_only / 1e6, 1) == 67.1
    assert mlp_adaptor_param_count is adaptor_param_count and Adaptor is MLPAdaptor


def test_defaults_are_the_papers():
    adaptor = Adaptor(16, 8)
    assert len(adaptor.blocks) == 4 and adaptor.blocks[0].up.out_features == 32


def test_zero_blocks_is_layernorm_plus_linear_on_the_normalised_input():
    torch.manual_seed(0)
    adaptor = MLPAdaptor(16, 8, num_blocks=0)
    with torch.no_grad():  # non-trivial LayerNorm affine, so the check is not vacuous
        adaptor.norm.weight.uniform_(0.5, 1.5)
        adaptor.norm.bias.uniform_(-0.1, 0.1)
    x = torch.randn(4, 16)
    reference = adaptor.out(F.layer_norm(F.normalize(x, dim=-1), (16,), adaptor.norm.weight, adaptor.norm.bias))
    torch.testing.assert_close(adaptor(x), reference)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_input_scale_does_not_matter_and_rows_are_independent(kind):
    torch.manual_seed(0)
    adaptor = build_adaptor(kind, 32, 16, **KINDS[kind]).eval()
    x = torch.randn(5, 32)
    out = adaptor(x)
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(adaptor(7.5 * x), out)
    torch.testing.assert_close(adaptor(x[2:3]), out[2:3])  # no mixing across the batch
    assert not torch.allclose(out.norm(dim=-1), torch.ones(5))  # the model normalises, not the adaptor


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    adaptor = build_adaptor(kind, 32, 16, **KINDS[kind])
    adaptor(torch.randn(3, 32)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adaptor.parameters())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_half_precision_inputs_with_large_values_stay_finite(kind):
    adaptor = build_adaptor(kind, 4096, 8, **{**KINDS[kind], "num_blocks": 0})
    x = torch.full((2, 4096), 300.0, dtype=torch.float16)  # sum of squares overflows fp16
    assert torch.isfinite(adaptor(x)).all()
    assert adaptor.to(torch.bfloat16)(x).dtype == torch.bfloat16


def test_transformer_block_structure():
    adaptor = TransformerAdaptor(32, 16, num_blocks=3, num_latents=5, num_heads=4)
    assert len(adaptor.blocks) == 3 and adaptor.blocks[0].attn.latents.shape == (5, 32)


def test_bad_kind_options_and_sizes_are_clear():
    with pytest.raises(ValueError, match="one of"):
        build_adaptor("conv", 8, 8)
    with pytest.raises(ValueError, match="bad options for the mlp adaptor"):
        build_adaptor("mlp", 8, 8, heads=3)
    with pytest.raises(ValueError, match="num_blocks must be >= 0"):
        build_adaptor("mlp", 8, 8, num_blocks=-1)
    with pytest.raises(ValueError, match="positive integers"):
        build_adaptor("mlp", 8, 0)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        build_adaptor("transformer", 30, 8, num_heads=4)


# ---------------------------------------------------------------- the forward written out by hand
# Independent of the modules' own forward: functional ops over their weights, with the
# LayerNorm affines randomised so that a dropped or swapped norm changes the numbers.
def _randomise_norms(module):
    with torch.no_grad():
        for norm in (m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)


def _ln(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias)


def _bottleneck_by_hand(x, block):
    hidden = F.gelu(F.linear(_ln(x, block.norm), block.up.weight, block.up.bias))
    return x + F.linear(hidden, block.down.weight, block.down.bias)


def _latent_attention_by_hand(x, attn, heads):
    batch, dim = x.shape
    q = F.linear(x, attn.query.weight, attn.query.bias).reshape(batch, heads, dim // heads)
    kv = F.linear(attn.latents, attn.key_value.weight, attn.key_value.bias)
    k = kv[:, :dim].reshape(-1, heads, dim // heads)
    v = kv[:, dim:].reshape(-1, heads, dim // heads)
    weights = torch.softmax(torch.einsum("bhd,lhd->bhl", q, k) / (dim // heads) ** 0.5, dim=-1)
    out = torch.einsum("bhl,lhd->bhd", weights, v).reshape(batch, dim)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("expansion", [1, 3])
def test_mlp_adaptor_equals_its_formula_written_out(expansion):
    torch.manual_seed(0)
    adaptor = MLPAdaptor(12, 5, num_blocks=3, expansion=expansion)
    _randomise_norms(adaptor)
    x = torch.randn(4, 12) * 3
    h = x / x.norm(dim=-1, keepdim=True)
    for block in adaptor.blocks:
        h = _bottleneck_by_hand(h, block)
    expected = F.linear(_ln(h, adaptor.norm), adaptor.out.weight, adaptor.out.bias)
    torch.testing.assert_close(adaptor(x), expected)


@pytest.mark.parametrize("heads", [1, 4])
def test_transformer_adaptor_equals_latent_attention_written_out(heads):
    torch.manual_seed(0)
    adaptor = TransformerAdaptor(16, 6, num_blocks=2, num_latents=7, num_heads=heads, expansion=3)
    _randomise_norms(adaptor)
    x = torch.randn(5, 16) * 2
    h = x / x.norm(dim=-1, keepdim=True)
    for block in adaptor.blocks:
        h = h + _latent_attention_by_hand(_ln(h, block.attn_norm), block.attn, heads)
        h = _bottleneck_by_hand(h, block.mlp)
    expected = F.linear(_ln(h, adaptor.norm), adaptor.out.weight, adaptor.out.bias)
    torch.testing.assert_close(adaptor(x), expected)


def test_transformer_defaults_and_the_expansion_reach_every_block():
    adaptor = TransformerAdaptor(32, 16)  # documented defaults: 1 block, 512 latents, 8 heads, e = 2
    (block,) = adaptor.blocks
    assert block.attn.latents.shape == (512, 32) and block.attn.num_heads == 8
    assert block.mlp.up.out_features == 64
    wider = TransformerAdaptor(32, 16, num_blocks=2, num_latents=4, num_heads=2, expansion=3)
    assert all(b.mlp.up.out_features == 96 for b in wider.blocks)
    from llm2clip.adaptor import InvertedBottleneck
    assert InvertedBottleneck(10).up.out_features == 20


def test_latents_start_at_unit_expected_norm():
    # latents ~ N(0, 1/d): each latent has expected squared norm 1, whatever the width
    torch.manual_seed(0)
    latents = TransformerAdaptor(256, 8, num_latents=512, num_heads=8).blocks[0].attn.latents
    assert abs(latents.std().item() - 256 ** -0.5) < 0.05 * 256 ** -0.5
    assert abs(latents.mean().item()) < 0.02 * 256 ** -0.5


@pytest.mark.parametrize("kind, setting", [("mlp", "in_dim"), ("mlp", "embed_dim"), ("mlp", "expansion"),
                                           ("transformer", "in_dim"), ("transformer", "embed_dim"),
                                           ("transformer", "expansion"), ("transformer", "num_latents"),
                                           ("transformer", "num_heads")])
def test_a_bad_size_is_refused_naming_the_setting(kind, setting):
    sizes = {"in_dim": 8, "embed_dim": 4, "expansion": 2, **({"num_latents": 3, "num_heads": 2}
                                                             if kind == "transformer" else {})}
    sizes[setting] = 0
    with pytest.raises(ValueError, match=rf"positive integers, got \{{'{setting}': 0\}}"):
        build_adaptor(kind, sizes.pop("in_dim"), sizes.pop("embed_dim"), **sizes)


def test_adaptor_options_are_checked_naming_the_key():
    from llm2clip.adaptor import check_adaptor_options
    from llm2clip.config import ConfigError

    def message(options, **key):
        with pytest.raises(ConfigError) as err:
            check_adaptor_options(options, **key)
        return str(err.value)

    check_adaptor_options({"num_blocks": 2, "expansion": 3})  # kind defaults to mlp
    check_adaptor_options({"kind": "transformer", "num_latents": 4, "num_heads": 2, "num_blocks": 1, "expansion": 2})
    assert message(["mlp"]) == "model.adaptor must be a mapping {kind: mlp | transformer, ...options}, got ['mlp']"
    assert message({"kind": "conv"}, key="x.adaptor") == "x.adaptor.kind 'conv' is not one of mlp, transformer"
    assert message({"num_latents": 4}) == ("model.adaptor: the mlp adaptor has no option(s) ['num_latents']; "
                                           "it takes ['num_blocks', 'expansion']")
    assert message({"kind": "transformer", "heads": 2, "depth": 1}) == (
        "model.adaptor: the transformer adaptor has no option(s) ['depth', 'heads']; "
        "it takes ['num_blocks', 'num_latents', 'num_heads', 'expansion']")
    options = {"kind": "mlp", "num_blocks": 1}
    check_adaptor_options(options)
    assert options == {"kind": "mlp", "num_blocks": 1}  # the caller's mapping is left as it was


def test_the_count_formulas_defaults_are_the_adaptors():
    assert adaptor_param_count(48, 32) == sum(p.numel() for p in Adaptor(48, 32).parameters())
    with pytest.raises(ValueError) as err:
        TransformerAdaptor(8, 4, num_blocks=-2)
    assert str(err.value) == "num_blocks must be >= 0, got -2"
