"""VTFusionConfig and VTFusionModel: the five fusion strategies, towers, outputs, attention and training."""

import pytest
import torch
from tiny_models import TINY_TEXT, TINY_VISION, random_batch, tiny_config
from transformers import AutoModel, BertConfig, BertModel, ConvNextConfig, ResNetConfig, ViTConfig, ViTModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from modeling_vtfusion import (
    FUSION_TYPES,
    VTFusionConfig,
    VTFusionForImageTextRetrieval,
    VTFusionModel,
)


SHARED_PREFIXES = ("vision_model.", "text_model.", "visual_projection.", "text_projection.", "logit_scale")


# -- config ------------------------------------------------------------------------------------------------------


def test_default_config_builds_a_working_model():
    model = VTFusionModel(VTFusionConfig()).eval()
    out = model(**random_batch(batch_size=2, image_size=64, vocab_size=1000))
    assert out.logits_per_image.shape == (2, 2)
    assert out.fused_pooler_output.shape == (2, model.config.fusion_hidden_size)


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(fusion_type="co_attention", modality_dropout=0.1, vision_config=ResNetConfig().to_dict())
    config.save_pretrained(tmp_path)
    loaded = VTFusionConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.vision_config.model_type == "resnet"


def test_unknown_fusion_type_error_lists_the_valid_ones():
    with pytest.raises(ValueError, match="choose one of cross_attention, co_attention, concat, weighted, late"):
        tiny_config(fusion_type="gated")


def test_unknown_fusion_pooling_error_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown fusion_pooling 'cls'; choose one of mean, max"):
        tiny_config(fusion_pooling="cls")


def test_fusion_width_not_divisible_by_heads_is_explained():
    with pytest.raises(ValueError, match=r"fusion_hidden_size \(30\) must be divisible by fusion_num_attention_heads"):
        tiny_config(fusion_hidden_size=30, fusion_num_attention_heads=4)


def test_modality_dropout_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="modality_dropout must be in"):
        tiny_config(modality_dropout=1.5)


# -- fusion strategies -------------------------------------------------------------------------------------------


def test_five_fusion_types_give_different_fused_outputs_with_the_same_shared_weights():
    torch.manual_seed(0)
    reference = VTFusionModel(tiny_config(fusion_type="cross_attention"))
    shared = {k: v for k, v in reference.state_dict().items() if k.startswith(SHARED_PREFIXES)}
    batch = random_batch()
    pooled = {}
    for fusion_type in FUSION_TYPES:
        model = VTFusionModel(tiny_config(fusion_type=fusion_type)).eval()
        model.load_state_dict(shared, strict=False)
        with torch.no_grad():
            out = model(**batch)
        torch.testing.assert_close(out.logits_per_image, reference.eval()(**batch).logits_per_image)
        pooled[fusion_type] = out.fused_pooler_output
    for i, a in enumerate(FUSION_TYPES):
        for b in FUSION_TYPES[i + 1 :]:
            assert not torch.allclose(pooled[a], pooled[b], atol=1e-4), f"{a} and {b} fuse identically"


@pytest.mark.parametrize("fusion_type", ["cross_attention", "co_attention", "concat"])
def test_attention_fusion_sees_the_image_tokens(fusion_type):
    model = VTFusionModel(tiny_config(fusion_type=fusion_type)).eval()
    batch = random_batch()
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    with torch.no_grad():
        a, b = model(**batch).fused_last_hidden_state, model(**other).fused_last_hidden_state
    assert not torch.allclose(a[:, 0], b[:, 0]), "the text [CLS] token must change when the image changes"


@pytest.mark.parametrize("fusion_type", ["cross_attention", "concat"])
def test_max_pooling_takes_each_features_max_over_the_real_fused_tokens(fusion_type):
    model = VTFusionModel(tiny_config(fusion_type=fusion_type, fusion_pooling="max")).eval()
    batch = random_batch()
    batch["attention_mask"][0, -2:] = 0  # padding must not take part
    with torch.no_grad():
        out = model(**batch)
    real = out.fused_attention_mask.bool()
    expected = torch.stack([tokens[keep].amax(0) for tokens, keep in zip(out.fused_last_hidden_state, real)])
    torch.testing.assert_close(out.fused_pooler_output, expected)


def test_fusion_pooling_defaults_to_the_mean_so_saved_checkpoints_pool_as_before():
    model = VTFusionModel(tiny_config()).eval()
    with torch.no_grad():
        out = model(**random_batch())
    real = out.fused_attention_mask.bool()
    expected = torch.stack([tokens[keep].mean(0) for tokens, keep in zip(out.fused_last_hidden_state, real)])
    torch.testing.assert_close(out.fused_pooler_output, expected)


@pytest.mark.parametrize("fusion_type", ["weighted", "late"])
def test_pooled_only_fusion_keeps_text_tokens_independent_of_the_image(fusion_type):
    model = VTFusionModel(tiny_config(fusion_type=fusion_type)).eval()
    batch = random_batch()
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    with torch.no_grad():
        a, b = model(**batch), model(**other)
    num_text = batch["input_ids"].shape[1]
    torch.testing.assert_close(a.fused_last_hidden_state[:, :num_text], b.fused_last_hidden_state[:, :num_text])
    assert not torch.allclose(a.fused_pooler_output, b.fused_pooler_output)


@pytest.mark.parametrize("fusion_type", FUSION_TYPES)
def test_every_fusion_type_overfits_eight_pairs(fusion_type):
    """ITC + ITM on 8 random pairs: the contrastive loss falls by more than half within 100 steps."""
    torch.manual_seed(0)
    model = VTFusionForImageTextRetrieval(tiny_config(fusion_type=fusion_type)).train()
    batch = random_batch(batch_size=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(100):
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first = first if first is not None else out.itc_loss.item()
        if out.itc_loss.item() < 0.5 * first:
            break
    assert out.itc_loss.item() < 0.5 * first, f"{fusion_type}: ITC loss {first:.3f} -> {out.itc_loss.item():.3f}"


# -- calls and outputs -------------------------------------------------------------------------------------------


def test_image_only_call_returns_image_embeddings():
    model = VTFusionModel(tiny_config()).eval()
    out = model(pixel_values=random_batch()["pixel_values"])
    assert out.image_embeds.shape == (4, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    assert out.text_embeds is None and out.logits_per_image is None


def test_text_only_call_returns_text_embeddings():
    model = VTFusionModel(tiny_config()).eval()
    batch = random_batch()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.text_embeds.shape == (4, 16) and out.image_embeds is None


def test_unequal_image_and_text_counts_skip_fusion():
    model = VTFusionModel(tiny_config()).eval()
    batch = random_batch()
    out = model(pixel_values=batch["pixel_values"][:1], input_ids=batch["input_ids"])
    assert out.logits_per_image.shape == (1, 4)
    assert out.fused_pooler_output is None


def test_return_loss_gives_the_contrastive_loss_and_skips_fusion():
    model = VTFusionModel(tiny_config())
    out = model(**random_batch(), return_loss=True)
    assert out.loss.ndim == 0 and out.loss.item() > 0
    assert out.fused_pooler_output is None
    assert model(**random_batch(), return_loss=True, skip_fusion=False).fused_pooler_output is not None


def test_get_features_match_forward_embeddings():
    model = VTFusionModel(tiny_config()).eval()
    batch = random_batch()
    out = model(**batch)
    image = model.get_image_features(batch["pixel_values"]).pooler_output
    text = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    torch.testing.assert_close(torch.nn.functional.normalize(image, dim=-1), out.image_embeds)
    torch.testing.assert_close(torch.nn.functional.normalize(text, dim=-1), out.text_embeds)


@pytest.mark.parametrize("fusion_type", ["cross_attention", "co_attention", "concat"])
def test_output_attentions_returns_text_to_image_maps_per_layer(fusion_type):
    model = VTFusionModel(tiny_config(fusion_type=fusion_type, num_fusion_layers=2)).eval()
    out = model(**random_batch(), output_attentions=True)
    num_image_tokens = (32 // 8) ** 2 + 1
    assert len(out.cross_attentions) == 2
    for attention in out.cross_attentions:
        assert attention.shape == (4, 2, 10, num_image_tokens)
        mass_on_image = attention.sum(-1)
        if fusion_type == "concat":  # the image block of a joint softmax over text and image keys
            assert ((mass_on_image > 0) & (mass_on_image < 1)).all()
        else:
            torch.testing.assert_close(mass_on_image, torch.ones_like(mass_on_image))


def test_output_hidden_states_returns_every_fusion_layer():
    model = VTFusionModel(tiny_config(num_fusion_layers=2)).eval()
    out = model(**random_batch(), output_hidden_states=True)
    assert len(out.fusion_hidden_states) == 3
    assert len(out.vision_model_output.hidden_states) == TINY_VISION["num_hidden_layers"] + 1


@pytest.mark.parametrize("fusion_type", ["cross_attention", "co_attention", "concat"])
def test_sdpa_and_eager_attention_agree(fusion_type):
    torch.manual_seed(0)
    sdpa = VTFusionModel(tiny_config(fusion_type=fusion_type)).eval()
    eager = VTFusionModel(tiny_config(fusion_type=fusion_type, attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    batch = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(sdpa(**batch).fused_pooler_output, eager(**batch).fused_pooler_output)


def test_fully_masked_text_row_gives_finite_outputs():
    model = VTFusionModel(tiny_config()).eval()
    batch = random_batch()
    batch["attention_mask"][0] = 0
    out = model(**batch)
    assert torch.isfinite(out.fused_pooler_output).all() and torch.isfinite(out.logits_per_image).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = VTFusionModel(tiny_config(num_fusion_layers=2)).train()
    checkpointed = VTFusionModel(tiny_config(num_fusion_layers=2)).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.fusion.layers[0].gradient_checkpointing
    batch = random_batch()
    for model in (plain, checkpointed):
        out = model(**batch)
        (out.fused_pooler_output.sum() + out.logits_per_text.sum()).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_modality_dropout_only_acts_in_training():
    model = VTFusionModel(tiny_config(modality_dropout=0.9)).eval()
    batch = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).fused_pooler_output, model(**batch).fused_pooler_output)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a = model(**batch).fused_pooler_output
        b = model(**batch).fused_pooler_output
    assert not torch.allclose(a, b)


def test_freeze_flags_stop_encoder_gradients():
    model = VTFusionModel(tiny_config(freeze_vision_encoder=True, freeze_text_encoder=True))
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert not any(p.requires_grad for p in model.text_model.parameters())
    assert all(p.requires_grad for p in model.fusion.parameters())


# -- backbones ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vision_config",
    [
        ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]),
        ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
        ViTConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"}),
    ],
    ids=["resnet", "convnext", "vit"],
)
def test_cnn_and_vit_backbones_feed_every_fusion(vision_config):
    for fusion_type in FUSION_TYPES:
        model = VTFusionModel(tiny_config(vision_config=vision_config.to_dict(), fusion_type=fusion_type)).eval()
        out = model(**random_batch())
        assert out.fused_pooler_output.shape == (4, 32)
        assert torch.isfinite(out.logits_per_image).all()


def test_from_vision_text_pretrained_keeps_encoder_weights(tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"}))
    bert = BertModel(BertConfig(**{k: v for k, v in TINY_TEXT.items() if k != "model_type"}))
    vit.save_pretrained(tmp_path / "vit")
    bert.save_pretrained(tmp_path / "bert")
    model = VTFusionForImageTextRetrieval.from_vision_text_pretrained(
        str(tmp_path / "vit"), str(tmp_path / "bert"), fusion_type="co_attention", projection_dim=16
    )
    assert model.config.fusion_type == "co_attention"
    for ours, pretrained in ((model.vtfusion.vision_model, vit), (model.vtfusion.text_model, bert)):
        pretrained_weights = pretrained.state_dict()
        for name, weight in ours.state_dict().items():
            torch.testing.assert_close(weight, pretrained_weights[name], msg=name)


def test_saved_model_reloads_with_automodel(tmp_path):
    model = VTFusionModel(tiny_config(fusion_type="concat")).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "modeling_vtfusion.py").exists()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is VTFusionModel
    batch = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).fused_pooler_output, model(**batch).fused_pooler_output)


def test_base_model_loads_from_a_head_checkpoint(tmp_path):
    head = VTFusionForImageTextRetrieval(tiny_config()).eval()
    head.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is VTFusionModel
    batch = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(base(**batch).logits_per_text, head.vtfusion(**batch).logits_per_text)


def test_cnn_tokens_carry_distinct_2d_positions():
    from modeling_vtfusion.modeling_vtfusion import sincos_position_grid

    grid = sincos_position_grid(32, 4, 5, torch.zeros(1))
    assert grid.shape == (32, 4, 5)
    codes = grid.flatten(1).t()  # [positions, channels]
    assert torch.cdist(codes, codes).add(torch.eye(20) * 1e3).min() > 0.1, "two positions share a code"


def test_cnn_tokens_are_layer_normalised_then_placed():
    from modeling_vtfusion.modeling_vtfusion import cnn_tokens, sincos_position_grid

    feature_map = torch.rand(2, 32, 3, 3) * 5 + 1  # ReLU-like: positive, with a large shared mean
    tokens = cnn_tokens(feature_map) - sincos_position_grid(32, 3, 3, feature_map).flatten(1).t()
    assert tokens.shape == (2, 9, 32)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(2, 9), atol=1e-3, rtol=0)


def test_cnn_image_tokens_of_a_mirrored_scene_are_not_a_permutation():
    """Attention is permutation-invariant over its keys: without positions, fusion could not tell left from right."""
    config = tiny_config(vision_config=ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]).to_dict())
    model = VTFusionModel(config).eval()
    features = torch.randn(1, 32, 2, 2)

    def image_tokens(feature_map):  # [1, 4, 32], row-major over the 2x2 map
        model.vision_model.forward = lambda **_: BaseModelOutputWithPooling(last_hidden_state=feature_map)
        return model.encode_image(torch.zeros(1, 3, 32, 32))[0]

    mirror = [1, 0, 3, 2]  # token i of the mirrored map holds the features of token mirror[i]
    original, mirrored = image_tokens(features), image_tokens(features.flip(-1))
    assert not torch.allclose(mirrored, original[:, mirror], atol=1e-3)
