# Copyright 2025 The vtfusion authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Processor class for VTFusion: any image processor plus any tokenizer."""

from .compat import MINIMUM_TRANSFORMERS  # noqa: F401  (first: an unsupported transformers fails here, with the fix)


# isort: split
import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import logging

from .image_utils import to_rgb_images


logger = logging.get_logger(__name__)

# Images whose shorter side exceeds this multiple of the image processor's target size are shrunk before it runs.
SHRINK_HEADROOM = 4
TARGET_SIDE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
TRUNCATION_WARNING = (
    "Some texts were longer than the maximum length and were truncated. Pass `max_length=` to change the limit, or "
    "`truncation=False` to keep whole texts (the text encoder may then fail on them)."
)


class VTFusionProcessorKwargs(ProcessingKwargs, total=False):
    # Lowest-priority defaults of `_merge_kwargs`: call kwargs and `text_kwargs={...}` override them. Declared here
    # rather than as the processor's `text_kwargs` attribute, which transformers reads only from 5.23 on.
    _defaults = {"text_kwargs": {"padding": True, "truncation": True}}


class VTFusionProcessor(ProcessorMixin):
    r"""
    Wraps any image processor and any tokenizer into one processor for the VTFusion models.

    Images first go through [`~image_utils.to_rgb_images`] (every PIL mode, EXIF orientation, transparency,
    16-bit and float pixels, numpy arrays and torch tensors in HWC or CHW, local file paths, early shrinking of huge
    images), so that any image processor, including `ViTImageProcessorPil`, which cannot handle grayscale, sees
    upright RGB images.

    Args:
        image_processor ([`BaseImageProcessor`]):
            The image processor, e.g. a `ViTImageProcessor`, `CLIPImageProcessor` or `ConvNextImageProcessor`.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer, e.g. a `BertTokenizer`.
    """

    # In transformers 5.x the sub-processors are read from the `__init__` signature (`get_attributes`) and loaded with
    # `AutoImageProcessor` / `AutoTokenizer`; `attributes` and `*_class` attributes are no longer needed (`*_class`
    # is deprecated and warns on load).

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)
        if self._auto_class is not None:
            # What `save_pretrained` writes (into the image processor's entry too), so that `to_dict()` is the same
            # before a save, after it and after loading.
            self.auto_map = {self._auto_class: f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"}
            self.image_processor.auto_map = dict(self.auto_map)

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        **kwargs: Unpack[VTFusionProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepares images and/or texts for a VTFusion model.

        Args:
            images (*optional*):
                One image or a batch: PIL images (any mode), numpy arrays or torch tensors (HW, HWC or CHW; a 4-D
                array or tensor is a batch), paths to local image files or the bytes of image files; nested lists (one
                list per sample, as the `image-text-to-text` pipeline sends) are flattened. See
                [`~image_utils.to_rgb_images`] for how each kind is read.
            text (`str` or `list[str]`, *optional*):
                One text or a batch of texts. Empty and whitespace-only strings are valid texts.
            **kwargs: routed by `ProcessorMixin` to the tokenizer or the image processor, whichever accepts them
                (e.g. `padding=`, `do_center_crop=False`, `add_special_tokens=False`), or given per modality:
                `images_kwargs={...}`, `text_kwargs={...}`. The ones most used:
            padding (`bool` or `str`, *optional*, defaults to `True`):
                Pads texts to the longest one of the batch (`True`), to `max_length` (`"max_length"`) or not at all.
            truncation (`bool` or `str`, *optional*, defaults to `True`):
                Truncates texts to `max_length`, or to the tokenizer's `model_max_length` when `max_length` is not
                given. Truncating a text logs a warning once.
            max_length (`int`, *optional*):
                Maximum number of tokens per text.
            return_tensors (`str`, *optional*):
                `"pt"` for torch tensors, `"np"` for numpy arrays; `None` returns lists.

        Returns:
            [`BatchFeature`] with `pixel_values` (`[num_images, 3, height, width]`) when images are given, and
            `input_ids`, `attention_mask` (and `token_type_ids` if the tokenizer returns them), each
            `[num_texts, sequence_length]`, when texts are given.

        The number of images and the number of texts may differ: zero-shot classification sends one image and one
        text per label, retrieval sends a gallery of images and a batch of queries. Models that pair image `i` with
        text `i` (fusion, matching, captioning) need as many images as texts.

        Raises:
            `ValueError`: when neither images nor text is given, when a batch is empty, when a text is not a string
            (naming its index) or when an image cannot be read (naming its index).
        """
        if images is None and text is None:
            raise ValueError(f"{type(self).__name__} needs `images`, `text` or both; got neither.")
        merged_kwargs = self._merge_kwargs(
            VTFusionProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, images_kwargs = merged_kwargs["text_kwargs"], merged_kwargs["images_kwargs"]
        # The sub-processors return lists; the BatchFeature below converts them all at once.
        return_tensors = [modality.pop("return_tensors", None) for modality in (text_kwargs, images_kwargs)]

        data = {}
        if text is not None:
            data.update(self._encode_texts(as_text_batch(text), text_kwargs))
        if images is not None:
            data.update(self._encode_images(images, images_kwargs))
        return BatchFeature(data, tensor_type=return_tensors[0] or return_tensors[1])

    def _encode_texts(self, texts: list[str], text_kwargs: dict) -> dict:
        encoding = self.tokenizer(texts, **text_kwargs)
        if truncation_requested(text_kwargs) and self._any_truncated(texts, encoding, text_kwargs):
            logger.warning_once(TRUNCATION_WARNING)
        return dict(encoding)

    def _any_truncated(self, texts: list[str], encoding, text_kwargs: dict) -> bool:
        """Whether truncation cut a text: only texts that reached the limit are encoded again, untruncated."""
        limit = text_kwargs.get("max_length") or self.tokenizer.model_max_length
        lengths = unpadded_lengths(encoding)
        candidates = [index for index, length in enumerate(lengths) if length >= limit]
        if not candidates or len(lengths) != len(texts):
            return False
        add_special_tokens = text_kwargs.get("add_special_tokens", True)
        untruncated = self.tokenizer(
            [texts[index] for index in candidates], add_special_tokens=add_special_tokens, verbose=False
        )
        return any(len(ids) > lengths[index] for index, ids in zip(candidates, untruncated["input_ids"]))

    def _encode_images(self, images, images_kwargs: dict) -> BatchFeature:
        max_size = shrink_limit(images_kwargs.get("size"), self.image_processor)
        return self.image_processor(to_rgb_images(images, max_size=max_size), **images_kwargs)

    @property
    def model_input_names(self) -> list[str]:
        """The tokenizer's input names followed by the image processor's, without duplicates."""
        names = list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)
        return list(dict.fromkeys(names))

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """
        Decodes generated token ids to text, as the `image-text-to-text` pipeline expects.

        Args:
            generated_outputs (`torch.Tensor`, `np.ndarray` or `list`):
                Token ids of shape `(batch_size, sequence_length)` or `(sequence_length,)`.
            skip_special_tokens (`bool`, *optional*, defaults to `True`):
                Whether to drop special tokens (padding, `[CLS]`, `[SEP]` ...) from the text.
            **kwargs:
                Passed to the tokenizer's `batch_decode` (e.g. `clean_up_tokenization_spaces`).

        Returns:
            `list[str]`: one text per sequence (a single sequence gives a list of one text).
        """
        if is_single_sequence(generated_outputs):
            generated_outputs = [generated_outputs]
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


def as_text_batch(text) -> list[str]:
    """Checks that `text` is a string or a non-empty list of strings and returns it as a list."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
    if not text:
        raise ValueError("Got an empty batch of texts: pass at least one text, or `text=None`.")
    for index, sample in enumerate(text):
        if sample is None:
            raise ValueError(f"text {index} is None; pass an empty string for a sample without text.")
        if not isinstance(sample, str):
            raise ValueError(f"text {index}: expected a string, got {type(sample).__name__}.")
    return list(text)


def truncation_requested(text_kwargs: dict) -> bool:
    return text_kwargs.get("truncation") not in (None, False, "do_not_truncate")


def unpadded_lengths(encoding) -> list[int]:
    """Number of real (non-padding) tokens of each encoded text."""
    if "attention_mask" in encoding:
        return [int(sum(mask)) for mask in encoding["attention_mask"]]
    return [len(ids) for ids in encoding["input_ids"]]


def shrink_limit(size, image_processor) -> int | None:
    """`SHRINK_HEADROOM` times the largest side the image processor resizes or crops to (`None`: unknown)."""
    sides = target_sides(size if size is not None else getattr(image_processor, "size", None))
    sides += target_sides(getattr(image_processor, "crop_size", None))
    return SHRINK_HEADROOM * max(sides) if sides else None


def target_sides(size) -> list[int]:
    """The pixel sides in an image processor `size` / `crop_size`: an int, a (height, width) pair or a dict."""
    if isinstance(size, int):
        return [size]
    if isinstance(size, (list, tuple)):
        return [side for side in size if isinstance(side, int)]
    if hasattr(size, "get"):  # dict or SizeDict
        return [size.get(key) for key in TARGET_SIDE_KEYS if isinstance(size.get(key), int)]
    return []


def is_single_sequence(token_ids) -> bool:
    if isinstance(token_ids, (torch.Tensor, np.ndarray)):
        return token_ids.ndim == 1
    return isinstance(token_ids, (list, tuple)) and len(token_ids) > 0 and isinstance(token_ids[0], int)


__all__ = ["VTFusionProcessor"]
