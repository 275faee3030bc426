"""Cross-attention heat maps: geometry on constructed attention, a real forward drawn to PNG, and the peak check.

Whether a trained model's colour and shape words look at the shapes they name needs a model trained for minutes;
`training.attention_check` runs that check on the main job's checkpoint (the last test here, when one is given).
"""

import os
import types

import matplotlib
import pytest
import torch
from PIL import Image
from tiny_models import tiny_config
from transformers import ViTConfig

from modeling_vtfusion import VTFusionModel
from modeling_vtfusion.interpretability import (
    attention_peak_hit_rate,
    explain,
    patch_grid,
    pooled_heat_map,
    save_attention_maps,
    token_heat_maps,
    upsample,
    word_positions,
)


GRID = (4, 4, 1)  # tiny_config's ViT: 32px images in 8px patches, plus [CLS]
MAIN_CHECKPOINT = os.environ.get("VTFUSION_MAIN_CHECKPOINT")


def peaked_attention(patch_of_token: list[int], heads: int = 2, cls_weight: float = 0.3) -> torch.Tensor:
    """[1, heads, Nt, 1 + 16]: token t puts `cls_weight` on [CLS] and the rest on patch `patch_of_token[t]`."""
    attention = torch.zeros(1, heads, len(patch_of_token), 1 + 16)
    attention[..., 0] = cls_weight
    for token, patch in enumerate(patch_of_token):
        attention[:, :, token, 1 + patch] = 1 - cls_weight
    return attention


def test_patch_grid_of_a_vit_leaves_its_cls_token_as_prefix():
    assert patch_grid(ViTConfig(image_size=32, patch_size=8), 17) == (4, 4, 1)
    assert patch_grid(ViTConfig(image_size=64, patch_size=8), 66) == (8, 8, 2)  # DeiT: [CLS] and distillation


def test_patch_grid_of_a_cnn_feature_map_is_square_without_prefix():
    assert patch_grid(types.SimpleNamespace(), 49) == (7, 7, 0)


def test_patch_grid_refuses_token_counts_that_do_not_fold():
    with pytest.raises(ValueError, match="patch grid"):
        patch_grid(ViTConfig(image_size=32, patch_size=8), 21)


def test_token_maps_put_each_token_on_its_patch_row_major():
    maps = token_heat_maps((peaked_attention([0, 6, 15]),), GRID)
    assert maps.shape == (1, 3, 4, 4)
    peaks = [divmod(int(m.argmax()), 4) for m in maps[0]]
    assert peaks == [(0, 0), (1, 2), (3, 3)]


def test_token_maps_drop_the_cls_token_and_sum_to_one():
    maps = token_heat_maps((peaked_attention([5, 9]),), GRID)
    assert torch.allclose(maps.sum((-1, -2)), torch.ones(1, 2))
    assert maps[0, 0, 1, 1] == pytest.approx(1.0)


def test_token_maps_average_heads_and_the_chosen_layers():
    first, second = peaked_attention([0]), peaked_attention([15])
    both = token_heat_maps((first, second), GRID)[0, 0]
    assert both[0, 0] == pytest.approx(0.5) and both[3, 3] == pytest.approx(0.5)
    assert token_heat_maps((first, second), GRID, layers=[1])[0, 0, 3, 3] == pytest.approx(1.0)


def test_pooled_map_averages_only_the_word_tokens():
    maps = token_heat_maps((peaked_attention([0, 5, 10, 15]),), GRID)  # [CLS] w1 w2 [SEP]
    pooled = pooled_heat_map(maps, torch.tensor([[0, 1, 1, 0]]))[0]
    assert pooled[1, 1] == pytest.approx(0.5) and pooled[2, 2] == pytest.approx(0.5)
    assert pooled.sum() == pytest.approx(1.0)


def test_upsampled_map_peaks_inside_its_patch_and_spans_zero_to_one():
    heat_map = torch.zeros(4, 4)
    heat_map[1, 2] = 1.0
    image = upsample(heat_map, (32, 32))
    row, col = divmod(int(image.argmax()), 32)
    assert image.shape == (32, 32) and 8 <= row < 16 and 16 <= col < 24
    assert image.min() == 0 and image.max() == 1


def test_word_positions_join_word_pieces():
    tokens = ["[CLS]", "the", "tri", "##angle", "left", "[SEP]"]
    assert word_positions(tokens, "triangle") == [2, 3]
    assert word_positions(tokens, "Left") == [4]
    assert word_positions(tokens, "circle") == []


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return VTFusionModel(tiny_config()).eval()


def test_explain_gives_one_map_per_token_of_a_real_forward(tiny_model, tiny_processor):
    explanation = explain(tiny_model, tiny_processor, Image.new("RGB", (48, 40), "red"), "a red circle")
    assert explanation.tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert explanation.token_maps.shape == (5, 4, 4)
    assert torch.allclose(explanation.token_maps.sum((-1, -2)), torch.ones(5))
    assert torch.allclose(explanation.pooled, explanation.token_maps[1:4].mean(0))
    assert explanation.image.size == (48, 40)


def test_save_attention_maps_writes_a_png_with_one_panel_per_word(tiny_model, tiny_processor, tmp_path):
    backend = matplotlib.get_backend()
    path = tmp_path / "attention.png"
    save_attention_maps(tiny_model, tiny_processor, Image.new("L", (32, 32), 90), "a red circle", path)
    with Image.open(path) as figure:
        assert figure.format == "PNG"
        assert figure.width > 4 * figure.height  # image, pooled map and three words side by side
    assert matplotlib.get_backend() == backend  # drawn without switching the caller's backend


def test_fusion_without_cross_attention_has_no_map_to_draw(tiny_processor):
    model = VTFusionModel(tiny_config(fusion_type="late")).eval()
    with pytest.raises(ValueError, match="no cross-attention"):
        explain(model, tiny_processor, Image.new("RGB", (32, 32)), "a red circle")


class PeakedModel(torch.nn.Module):
    """Stands in for a model whose every token attends to one patch of the 4x4 grid."""

    def __init__(self, patch: int):
        super().__init__()
        self.config = types.SimpleNamespace(vision_config=ViTConfig(image_size=32, patch_size=8))
        self.patch = patch
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, output_attentions=False, **kwargs):
        attention = peaked_attention([self.patch] * input_ids.shape[1])
        return types.SimpleNamespace(cross_attentions=(attention,))


def test_peak_hit_rate_counts_peaks_inside_the_object_box_against_its_patch_share(tiny_processor):
    image = Image.new("RGB", (64, 64))
    inside = {"image": image, "text": "a red circle", "word": "red", "box": (20, 20, 28, 28)}  # patch (1, 1) only
    straddling = {"image": image, "text": "a red circle", "word": "circle", "box": (10, 10, 20, 20)}  # 4 patches
    rates = attention_peak_hit_rate(PeakedModel(patch=5), tiny_processor, [inside, straddling])
    assert rates == {"hit_rate": 1.0, "chance_rate": pytest.approx((1 / 16 + 4 / 16) / 2), "num_maps": 2}
    assert attention_peak_hit_rate(PeakedModel(patch=15), tiny_processor, [inside])["hit_rate"] == 0.0


@pytest.mark.skipif(not MAIN_CHECKPOINT, reason="set VTFUSION_MAIN_CHECKPOINT to the main job's output folder")
def test_main_checkpoint_words_look_at_the_shapes_they_name(tmp_path):
    from training.attention_check import check_attention

    results = check_attention(MAIN_CHECKPOINT, num_scenes=100, png_dir=tmp_path, num_pngs=2)
    assert results["color_hit_rate"] > results["color_chance_rate"]
    assert results["shape_hit_rate"] > results["shape_chance_rate"]
    assert len(list(tmp_path.glob("*.png"))) == 2
