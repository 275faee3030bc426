"""`PackedLinear`: an `nn.Linear` whose CPU inference multiplies by a copy of its weight packed once for oneDNN.

The decoder and its LM head use it. A decoding step multiplies a few rows (images x beams, one token each) by every
weight of the decoder and by the whole vocabulary, and for so few rows `F.linear` repacks each weight on every call.
In a decoding step's order on 2 cores (the 30524 x 192 head evicting the 4 decoder layers' 32 weights from cache),
those 33 products took 2.1-2.9 ms packed against 4.6-14 ms with `F.linear` for 1-8 rows, and 2.4-3.7 ms with only the
head packed. (Timed alone, one 192 x 192 layer looks faster unpacked, 13-16 us against 29-39 us: its weight then
stays in cache.) The copy is made at the first call and reused until the weight changes (another tensor, or an
in-place update such as an optimizer step or `load_state_dict`; a write through `weight.data` is not seen).

Only fp32 inference on CPU takes the packed path: with autograd on, on other devices or dtypes, under
`torch.compile`, export or tracing, for a weight created under `torch.inference_mode()`, and with a torch that lacks
the oneDNN ops, the module is `nn.Linear`. Parameters, state dict, saving and loading are `nn.Linear`'s; the packed
copy is never saved, copied or pickled.
"""

import torch
import torch.nn.functional as F
from torch import nn


_HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ROWS_HINT = 64  # oneDNN picks the weight layout for this many rows; any count works, few rows were fastest with it


class PackedLinear(nn.Linear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._packed = None  # (weight tensor id, data pointer, version) -> oneDNN weight

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self._takes_packed_path(input):
            return F.linear(input, self.weight, self.bias)
        key = (id(self.weight), self.weight.data_ptr(), self.weight._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), ROWS_HINT))
        # oneDNN reads the input as laid out contiguously, so a strided view (a slice of positions) is copied first
        return torch.ops.mkldnn._linear_pointwise(input.contiguous(), self._packed[1], self.bias, "none", [], "")

    def _takes_packed_path(self, input: torch.Tensor) -> bool:
        return (
            _HAS_ONEDNN
            and not torch.is_grad_enabled()
            and type(input) is torch.Tensor  # not a FakeTensor (export), DTensor or other subclass
            and input.device.type == "cpu"
            and input.dtype == self.weight.dtype == torch.float32
            and not self.weight.is_inference()  # made under `torch.inference_mode()`: no version to see updates by
            and not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting())
        )

    def __getstate__(self):
        """Copies and pickles leave the packed weight behind (oneDNN tensors have no storage to copy)."""
        return {**self.__dict__, "_packed": None}


def to_plain_linear(model: nn.Module) -> nn.Module:
    """Makes every `PackedLinear` of `model` the `nn.Linear` it extends, in place (parameters untouched), for tools
    that match modules by exact type, such as `torch.ao.quantization.quantize_dynamic`."""
    for module in model.modules():
        if isinstance(module, PackedLinear):
            module.__class__ = nn.Linear
            del module._packed
    return model
