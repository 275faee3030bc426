"""Models meet bad input with errors that name the problem and the fix; checkpoints load from safetensors only."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import random_batch, tiny_config

from modeling_vtfusion import (
    FUSION_TYPES,
    VTFusionForConditionalGeneration,
    VTFusionForSequenceClassification,
    VTFusionModel,
)


@pytest.fixture(scope="module")
def model():
    return VTFusionModel(tiny_config()).eval()


def test_pickled_bin_checkpoint_is_refused_with_an_explanation(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="refuses pickled weights"):
        VTFusionModel.from_pretrained(tmp_path)


def test_use_safetensors_false_is_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        VTFusionModel.from_pretrained(tmp_path, use_safetensors=False)


def test_token_ids_outside_the_vocabulary_name_the_tokenizer_mismatch(model):
    batch = random_batch()
    batch["input_ids"][0, 1] = 5000
    with pytest.raises(ValueError, match=r"Token ids must lie in \[0, 300\).*tokenizer does not match"):
        model(**batch)


def test_texts_longer_than_the_encoder_positions_ask_for_truncation(model):
    batch = random_batch(length=80)
    with pytest.raises(ValueError, match="exceed the text encoder's 64 positions; truncate"):
        model(**batch)


@pytest.mark.parametrize("field", ["pixel_values", "input_ids"])
def test_empty_batch_is_a_clear_error(model, field):
    batch = random_batch()
    batch[field] = batch[field][:0]
    with pytest.raises(ValueError, match="non-empty batch"):
        model(**{field: batch[field]})


def test_three_dimensional_pixel_values_are_refused(model):
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        model(pixel_values=torch.randn(3, 32, 32))


def test_integer_pixel_values_are_refused(model):
    with pytest.raises(ValueError, match="floating point"):
        model(pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_attention_mask_of_another_shape_is_refused(model):
    batch = random_batch()
    batch["attention_mask"] = batch["attention_mask"][:, :-1]
    with pytest.raises(ValueError, match="attention_mask .* must match input_ids"):
        model(**batch)


def test_pair_heads_refuse_unequal_image_and_text_counts():
    head = VTFusionForSequenceClassification(tiny_config())
    batch = random_batch()
    with pytest.raises(ValueError, match="Got 1 images and 4 texts"):
        head(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"][:1])


def test_generation_without_labels_points_to_generate():
    head = VTFusionForConditionalGeneration(tiny_config())
    with pytest.raises(ValueError, match="call generate"):
        head(pixel_values=random_batch()["pixel_values"])


def test_generation_longer_than_the_decoder_positions_is_explained():
    head = VTFusionForConditionalGeneration(tiny_config(max_decoder_position_embeddings=8))
    with pytest.raises(ValueError, match="max_decoder_position_embeddings is 8"):
        head(pixel_values=random_batch()["pixel_values"], labels=torch.ones(4, 12, dtype=torch.long))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fusion_type=st.sampled_from(FUSION_TYPES),
    batch_size=st.integers(1, 3),
    length=st.integers(1, 20),
    masked_rows=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_any_valid_batch_gives_finite_outputs_of_documented_shapes(fusion_type, batch_size, length, masked_rows, seed):
    model = MODELS[fusion_type]
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 300, (batch_size, length), generator=generator)
    attention_mask = (torch.rand(batch_size, length, generator=generator) > 0.3).long()
    attention_mask[:masked_rows] = 0  # rows whose every token is padding
    pixel_values = torch.randn(batch_size, 3, 32, 32, generator=generator) * 10
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    assert out.logits_per_image.shape == (batch_size, batch_size)
    assert out.image_embeds.shape == out.text_embeds.shape == (batch_size, 16)
    assert out.fused_pooler_output.shape == (batch_size, 32)
    for tensor in (out.logits_per_image, out.fused_pooler_output, out.fused_last_hidden_state):
        assert torch.isfinite(tensor).all()


MODELS = {fusion_type: VTFusionModel(tiny_config(fusion_type=fusion_type)).eval() for fusion_type in FUSION_TYPES}
