"""`PackedLinear`: `nn.Linear` that decodes on CPU with a weight packed once, and answers exactly as `nn.Linear`."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from tiny_models import random_batch, tiny_config

from modeling_vtfusion import VTFusionForConditionalGeneration
from modeling_vtfusion.cpu_inference import quantize_int8
from modeling_vtfusion.fusion import linear_products
from modeling_vtfusion.packed_linear import PackedLinear, to_plain_linear


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return PackedLinear(48, 300)


@pytest.mark.parametrize("rows", [1, 3, 8, 70])
def test_inference_output_matches_f_linear(linear, rows):
    inputs = torch.randn(rows, 48)
    with torch.no_grad():
        torch.testing.assert_close(linear(inputs), F.linear(inputs, linear.weight, linear.bias))
    assert linear._packed is not None


def test_a_strided_input_gives_the_same_output_as_its_contiguous_copy(linear):
    inputs = torch.randn(4, 6, 48)[:, -1]  # the last position of each row, as a decoder's head reads it
    with torch.no_grad():
        torch.testing.assert_close(linear(inputs), F.linear(inputs.contiguous(), linear.weight, linear.bias))


def test_an_in_place_weight_update_repacks(linear):
    inputs = torch.randn(2, 48)
    with torch.no_grad():
        linear(inputs)
        linear.weight.mul_(2)
        torch.testing.assert_close(linear(inputs), F.linear(inputs, linear.weight, linear.bias))


def test_with_autograd_on_gradients_reach_the_weight(linear):
    linear(torch.randn(2, 48)).sum().backward()
    assert linear.weight.grad is not None and linear._packed is None


def test_deepcopy_and_pickle_leave_the_packed_weight_behind(linear):
    with torch.no_grad():
        expected = linear(torch.ones(1, 48))
    for clone in (copy.deepcopy(linear), pickle.loads(pickle.dumps(linear))):
        assert clone._packed is None
        with torch.no_grad():
            torch.testing.assert_close(clone(torch.ones(1, 48)), expected)


@pytest.fixture
def projections():
    torch.manual_seed(0)
    return [PackedLinear(48, 48) for _ in range(3)]


@pytest.mark.parametrize("rows", [1, 8, 70])
def test_stacked_products_equal_each_layers_own_output(projections, rows):
    inputs = torch.randn(rows, 48)
    with torch.no_grad():
        outputs = linear_products(inputs, *projections)
        for output, layer in zip(outputs, projections):
            torch.testing.assert_close(output, F.linear(inputs, layer.weight, layer.bias))
    assert projections[0]._stacked is not None


def test_an_in_place_update_of_any_stacked_layer_restacks(projections):
    inputs = torch.randn(2, 48)
    with torch.no_grad():
        linear_products(inputs, *projections)
        projections[2].bias.add_(1)
        torch.testing.assert_close(linear_products(inputs, *projections)[2], projections[2](inputs))


def test_deepcopy_leaves_the_stacked_weight_behind(projections):
    with torch.no_grad():
        linear_products(torch.randn(2, 48), *projections)
    assert copy.deepcopy(projections[0])._stacked is None


def test_products_with_autograd_on_are_each_layers_own(projections):
    outputs = linear_products(torch.randn(2, 48), *projections)
    sum(output.sum() for output in outputs).backward()
    assert all(layer.weight.grad is not None for layer in projections) and projections[0]._stacked is None


def test_products_of_plain_linear_layers_are_their_own_calls():
    layers = [torch.nn.Linear(48, 48) for _ in range(3)]
    inputs = torch.randn(2, 48)
    with torch.no_grad():
        for output, layer in zip(linear_products(inputs, *layers), layers):
            assert torch.equal(output, layer(inputs))


def test_the_state_dict_is_nn_linears(linear):
    assert list(linear.state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("search", [{}, {"num_beams": 3}], ids=["greedy", "beam"])
def test_generation_gives_the_tokens_of_plain_linear_layers(search):
    torch.manual_seed(0)
    model = VTFusionForConditionalGeneration(tiny_config()).eval()
    plain = to_plain_linear(copy.deepcopy(model))
    assert not any(isinstance(module, PackedLinear) for module in plain.modules())
    inputs = random_batch(batch_size=3)
    tokens = model.generate(**inputs, max_new_tokens=8, **search)
    assert torch.equal(tokens, plain.generate(**inputs, max_new_tokens=8, **search))


def test_int8_quantization_reaches_the_decoder_and_lm_head():
    torch.manual_seed(0)
    model = VTFusionForConditionalGeneration(tiny_config()).eval()
    int8 = quantize_int8(model)
    assert not any(isinstance(module, torch.nn.Linear) for module in int8.modules())
    assert isinstance(model.lm_head, PackedLinear)  # the original is left as it was


def test_a_layer_built_under_inference_mode_computes_unpacked():
    with torch.inference_mode():
        layer = PackedLinear(48, 300)
        inputs = torch.randn(2, 48)
        torch.testing.assert_close(layer(inputs), F.linear(inputs, layer.weight, layer.bias))
    assert layer._packed is None
