"""The adaptor: shapes, the parameter-count formula, normalisation, the N=0 reduction."""
import pytest
import torch
import torch.nn.functional as F

from llm2clip.adaptor import MLPAdaptor, build_adaptor, mlp_adaptor_param_count


@pytest.mark.parametrize("blocks", [0, 1, 2, 3, 4])
def test_shapes_and_parameter_count_match_the_formula(blocks):
    adaptor = build_adaptor("mlp", 48, 32, num_blocks=blocks)
    assert adaptor(torch.randn(5, 48)).shape == (5, 32)
    assert sum(p.numel() for p in adaptor.parameters()) == mlp_adaptor_param_count(48, 32, blocks)


def test_count_formula_by_hand_for_one_block():
    d, e, out = 10, 2, 3
    by_hand = (2 * d) + (d * e * d + e * d) + (e * d * d + d) + (2 * d) + (d * out + out)
    assert mlp_adaptor_param_count(d, out, num_blocks=1, expansion=e) == by_hand == 503


def test_input_scale_does_not_matter_and_zero_blocks_is_norm_plus_linear():
    torch.manual_seed(0)
    adaptor = MLPAdaptor(16, 8, num_blocks=0)
    x = torch.randn(4, 16)
    torch.testing.assert_close(adaptor(x), adaptor(7.5 * x))
    reference = adaptor.out(F.layer_norm(F.normalize(x, dim=-1), (16,), adaptor.norm.weight, adaptor.norm.bias))
    torch.testing.assert_close(adaptor(x), reference)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_gradients_reach_every_parameter(kind):
    adaptor = build_adaptor(kind, 32, 16, num_blocks=2)
    adaptor(torch.randn(3, 32)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adaptor.parameters())


def test_bad_kind_and_options_are_clear():
    with pytest.raises(ValueError, match="one of"):
        build_adaptor("conv", 8, 8)
    with pytest.raises(ValueError, match="bad options for the mlp adaptor"):
        build_adaptor("mlp", 8, 8, heads=3)
