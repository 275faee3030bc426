"""int8 dynamic quantization and ONNX Runtime graphs give the fp32 model's answers."""

import pytest
import torch
from tiny_models import random_batch, tiny_config

from modeling_vtfusion import VTFusionForSequenceClassification
from modeling_vtfusion.cpu_inference import (
    ClassificationLogits,
    ImageEmbeds,
    OnnxPart,
    TextEmbeds,
    export_onnx,
    quantize_int8,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VTFusionForSequenceClassification(tiny_config()).eval()


def test_int8_quantizes_every_linear_layer_and_keeps_the_answers_close(model):
    int8 = quantize_int8(model)
    batch = random_batch()
    with torch.no_grad():
        expected, actual = model(**batch).logits, int8(**batch).logits
    assert not any(type(module) is torch.nn.Linear for module in int8.modules())
    assert type(model.classifier) is torch.nn.Linear  # the original is left as it was
    torch.testing.assert_close(actual, expected, atol=0.05, rtol=0)


class TinyProcessor:
    """What `export_onnx` asks of a processor: example inputs of the model's sizes."""

    def __call__(self, images, text, return_tensors):
        batch = random_batch(batch_size=len(images))
        return batch


def test_onnx_graphs_give_the_pytorch_outputs_for_other_batch_sizes_and_lengths(model, tmp_path):
    paths = export_onnx(model, tmp_path, TinyProcessor())
    assert set(paths) == {"image_embeds", "text_embeds", "logits"}
    batch = random_batch(batch_size=5, length=7, seed=3)  # exported with 2 rows of 10 tokens
    with torch.no_grad():
        expected = {
            "image_embeds": ImageEmbeds(model)(batch["pixel_values"]),
            "text_embeds": TextEmbeds(model)(batch["input_ids"], batch["attention_mask"]),
            "logits": ClassificationLogits(model)(**batch),
        }
    for name, path in paths.items():
        torch.testing.assert_close(OnnxPart(path)(**batch), expected[name], atol=1e-5, rtol=1e-4)
