"""Cheaper CPU inference: int8 dynamic quantization (torch's) and ONNX graphs run by ONNX Runtime, for the embedding
towers and the fused classification head.

    int8 = quantize_int8(model)                                    # nn.Linear weights in int8, same API
    export_onnx(model, "onnx/", processor)                         # image_embeds.onnx, text_embeds.onnx, (logits.onnx)
    image_embeds = OnnxPart("onnx/image_embeds.onnx")(pixel_values=pixels)

`make bench` checks each against fp32 PyTorch on the main job's model (agreement of retrieval and entailment top-1,
largest embedding difference) and measures speed and size (rows `int8_speedup`, `onnx_speedup`). Needs onnx,
onnxscript and onnxruntime for the ONNX part; like the gallery index, this module is not part of a checkpoint's code.
"""

import copy
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .packed_linear import to_plain_linear


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose `nn.Linear` layers compute with int8 weights and dynamically quantized activations
    (`torch.ao.quantization.quantize_dynamic`); convolutions, embeddings and norms stay fp32."""
    with warnings.catch_warnings():  # torch points to torchao for new code; the dynamic path is the CPU one here
        warnings.simplefilter("ignore")
        plain = to_plain_linear(copy.deepcopy(model))  # the decoder's `PackedLinear`s are quantized too
        return torch.ao.quantization.quantize_dynamic(plain, {nn.Linear}, dtype=torch.qint8, inplace=True)


class ImageEmbeds(nn.Module):
    """pixel_values [B, 3, H, W] -> L2-normalised image embeddings [B, D]."""

    def __init__(self, model):
        super().__init__()
        self.base = model.base_model

    def forward(self, pixel_values):
        return F.normalize(self.base.get_image_features(pixel_values).pooler_output, dim=-1)


class TextEmbeds(nn.Module):
    """input_ids, attention_mask [B, T] -> L2-normalised text embeddings [B, D]."""

    def __init__(self, model):
        super().__init__()
        self.base = model.base_model

    def forward(self, input_ids, attention_mask):
        return F.normalize(self.base.get_text_features(input_ids, attention_mask).pooler_output, dim=-1)


class ClassificationLogits(nn.Module):
    """pixel_values, input_ids, attention_mask -> the classification head's logits [B, num_labels]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask):
        return self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask).logits


def export_onnx(model, folder, processor) -> dict[str, Path]:
    """Writes `image_embeds.onnx` and `text_embeds.onnx` (and `logits.onnx` for a classification head) in `folder`,
    with a dynamic batch size and text length; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = processor(images=[torch.zeros(3, 8, 8)] * 2, text=["a red circle", "two"], return_tensors="pt")
    pixels, ids, mask = example["pixel_values"], example["input_ids"], example["attention_mask"]
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    image_shapes = {"pixel_values": {0: batch}}
    text_shapes = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    parts = {
        "image_embeds": (ImageEmbeds(model), (pixels,), image_shapes),
        "text_embeds": (TextEmbeds(model), (ids, mask), text_shapes),
    }
    if hasattr(model, "classifier"):
        parts["logits"] = (ClassificationLogits(model), (pixels, ids, mask), image_shapes | text_shapes)
    paths = {}
    for name, (module, inputs, dynamic_shapes) in parts.items():
        paths[name] = folder / f"{name}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, inputs, dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False)
        program.save(str(paths[name]))
    return paths


class OnnxPart:
    """One exported graph in an ONNX Runtime session: called with the same named tensors as the PyTorch part."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: inputs[name].numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feeds)[0])
