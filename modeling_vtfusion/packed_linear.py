"""`PackedLinear`: an `nn.Linear` whose CPU inference multiplies by a copy of its weight packed once for oneDNN.

The decoder and its LM head use it. A decoding step multiplies a few rows (images x beams, one token each) by every
weight of the decoder and by the whole vocabulary, and for so few rows `F.linear` repacks each weight on every call.
In a decoding step's order on 2 cores (the 30524 x 192 head evicting the 4 decoder layers' 32 weights from cache),
those 33 products took 2.1-2.9 ms packed against 4.6-14 ms with `F.linear` for 1-8 rows, and 2.4-3.7 ms with only the
head packed. (Timed alone, one 192 x 192 layer looks faster unpacked, 13-16 us against 29-39 us: its weight then
stays in cache.) The copy is made at the first call and reused until the weight changes (another tensor, or an
in-place update such as an optimizer step or `load_state_dict`; a write through `weight.data` is not seen).
A oneDNN product costs ~20 us however small, so `stacked_products` multiplies one input by several such layers at
once (self-attention's query, key and value projections), their weights stacked and packed together.

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
        self._packed = None  # (weight key, oneDNN weight)
        self._stacked = None  # (keys, oneDNN weight, bias) of the layers this one leads in `stacked_products`

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self._takes_packed_path(input):
            return F.linear(input, self.weight, self.bias)
        key = tensor_key(self.weight)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, pack(self.weight))
        return packed_product(input, self._packed[1], self.bias)

    def stacked_products(self, input: torch.Tensor, *others: nn.Linear) -> tuple[torch.Tensor, ...]:
        """`(self(input), *(layer(input) for layer in others))`, in one oneDNN product when every layer is a
        `PackedLinear` on its packed path: their weights stacked and packed together, the copy kept by this layer
        (self-attention's query, key and value projections: one call instead of three, each output equal to its own
        layer's)."""
        layers = (self, *others)
        stackable = all(isinstance(layer, PackedLinear) and layer._takes_packed_path(input) for layer in layers)
        if not stackable or len({layer.bias is None for layer in layers}) > 1:
            return tuple(layer(input) for layer in layers)
        keys = tuple(
            tensor_key(tensor) for layer in layers for tensor in (layer.weight, layer.bias) if tensor is not None
        )
        if self._stacked is None or self._stacked[0] != keys:
            weight = torch.cat([layer.weight for layer in layers])
            bias = None if self.bias is None else torch.cat([layer.bias for layer in layers])
            self._stacked = (keys, pack(weight), bias)
        output = packed_product(input, self._stacked[1], self._stacked[2])
        return output.split([layer.out_features for layer in layers], dim=-1)

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
        """Copies and pickles leave the packed weights behind (oneDNN tensors have no storage to copy)."""
        return {**self.__dict__, "_packed": None, "_stacked": None}


def tensor_key(tensor: torch.Tensor) -> tuple[int, int, int]:
    """What changes when a parameter is replaced or updated in place (`load_state_dict`, an optimizer step)."""
    return id(tensor), tensor.data_ptr(), tensor._version


def pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)


def packed_product(input: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # oneDNN reads the input as laid out contiguously, so a strided view (a slice of positions) is copied first
    return torch.ops.mkldnn._linear_pointwise(input.contiguous(), packed_weight, bias, "none", [], "")


def to_plain_linear(model: nn.Module) -> nn.Module:
    """Makes every `PackedLinear` of `model` the `nn.Linear` it extends, in place (parameters untouched), for tools
    that match modules by exact type, such as `torch.ao.quantization.quantize_dynamic`."""
    for module in model.modules():
        if isinstance(module, PackedLinear):
            module.__class__ = nn.Linear
            del module._packed, module._stacked
    return model
