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
"""Turns whatever a user calls an image into an upright, 8-bit RGB `PIL.Image.Image`.

Image processors assume tidy input: `ViTImageProcessorPil` fails on grayscale, most clip 16-bit images and all of
them decode a 8000x8000 photo at full size before resizing it to 224x224. `to_rgb_images` runs first and settles
these cases in one place, with the rules below.

Accepted inputs (a single one, a list, a list of lists as the `image-text-to-text` pipeline sends, or a 4-D batch
array / tensor):

- `PIL.Image.Image` of any mode. EXIF orientation is applied; transparency (alpha channel or palette/colour-key
  transparency) is composited on white; 16-bit modes are scaled to 8 bits (`I;16*`: value / 257); `I` and `F` follow
  the integer and float rules below; multi-frame files give their first frame.
- `numpy.ndarray` and `torch.Tensor` of shape HW, HWC or CHW with 1, 3 or 4 (RGBA) channels. When both the first
  and the last axis could hold channels, numpy arrays are read as HWC and tensors as CHW (each library's convention).
  - `uint8`: as is. `bool`: `False` -> 0, `True` -> 255. `uint16`: value / 257 (full 16-bit range).
  - other integers: as is when all values are in [0, 255], scaled by 1/257 when in [0, 65535], min-max scaled
    (with a warning) otherwise.
  - floats: x 255 when all values are in [0, 1], as is when in [0, 255], min-max scaled (with a warning) otherwise,
    e.g. for mean/std-normalised arrays. NaN or infinite values raise a `ValueError`.
- `str` / `os.PathLike`: a local image file. URLs are refused (nothing is downloaded here).
- `bytes` / `bytearray`: the content of an image file (e.g. the `bytes` field of a `datasets` image column).

`max_size` bounds the work done on huge images: an image whose shorter side exceeds it is downscaled by the
smallest integer factor that brings its shorter side to at most `max_size`, with a box filter (`Image.reduce`).
Files that are JPEGs are decoded at a reduced scale in the first place (`Image.draft`), so a 8000x8000 JPEG never
exists at full size in memory. Keep `max_size` well above the size the image processor resizes to (the processor
uses 4x) and the final pixels barely change.

Every problem raises a `ValueError` that names the position of the bad image in the (flattened) batch, what is wrong
and what to pass instead.
"""

import math
import os
from io import BytesIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from transformers.utils import logging


logger = logging.get_logger(__name__)

SUPPORTED_INPUTS = (
    "pass a PIL.Image, a numpy array or torch tensor (HW, HWC or CHW with 1, 3 or 4 channels), "
    "a path to a local image file or the bytes of an image file"
)
CHANNEL_COUNTS = (1, 3, 4)
WHITE = (255, 255, 255, 255)
ALPHA_MODES = ("LA", "RGBA")
PREMULTIPLIED_ALPHA_MODES = {"La": "LA", "RGBa": "RGBA"}
MIN_MAX_SCALING_WARNING = (
    "Some images held values outside both [0, 1] and [0, 255]; they were min-max scaled to [0, 255]. Pass uint8 "
    "images, or floats in [0, 1], to control how pixel values are read."
)


def to_rgb_images(images, max_size: int | None = None) -> list[Image.Image]:
    """
    Converts one image or a batch of images to a flat list of upright 8-bit RGB `PIL.Image.Image`.

    Args:
        images: one image, a list of images, a list of lists of images (flattened in order) or a 4-D array / tensor
            (split along its first axis). See the module docstring for the accepted kinds and how each is read.
        max_size (`int`, *optional*):
            Images whose shorter side exceeds `max_size` are downscaled by an integer factor until it is at most
            `max_size` (JPEG files are decoded at reduced scale). `None` keeps every image at full size.

    Returns:
        `list[PIL.Image.Image]`: one RGB image per input image, in order.

    Raises:
        `ValueError`: for an empty batch, or for any image that cannot be read, naming its index in the flat batch.
    """
    flat_images = flatten_image_batch(images)
    if not flat_images:
        raise ValueError("Got an empty batch of images: pass at least one image, or `images=None`.")
    rgb_images = []
    for index, image in enumerate(flat_images):
        try:
            rgb_images.append(to_rgb_image(image, max_size=max_size))
        except ValueError as error:
            raise ValueError(f"image {index}: {error}") from error
    return rgb_images


def flatten_image_batch(images) -> list:
    """Flattens nested lists and splits 4-D arrays / tensors into a flat list of single images."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in flatten_image_batch(item)]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def to_rgb_image(image, max_size: int | None = None) -> Image.Image:
    """Converts a single image (see `to_rgb_images`) to an upright 8-bit RGB `PIL.Image.Image`."""
    if image is None:
        raise ValueError(f"got None; {SUPPORTED_INPUTS}.")
    if isinstance(image, Image.Image):
        return pil_to_rgb(image, max_size)
    if isinstance(image, torch.Tensor):
        return pil_to_rgb(array_to_pil(tensor_to_array(image), channels_first=True), max_size)
    if isinstance(image, np.ndarray):
        return pil_to_rgb(array_to_pil(image, channels_first=False), max_size)
    if isinstance(image, (str, os.PathLike)):
        return pil_to_rgb(open_image_file(image_path(image), max_size), max_size)
    if isinstance(image, (bytes, bytearray)):
        return pil_to_rgb(open_image_file(BytesIO(image), max_size), max_size)
    raise ValueError(f"unsupported type {type(image).__name__}; {SUPPORTED_INPUTS}.")


# ----------------------------------------------------------------------------------------------------------------
# Files


def image_path(path: str | os.PathLike) -> str:
    """Checks that `path` names a local file; URLs are refused because nothing is downloaded here."""
    path = os.fspath(path)
    if path.startswith(("http://", "https://")):
        raise ValueError(
            f"{path!r} is a URL and URLs are not downloaded; download it first (e.g. with "
            "`transformers.image_utils.load_image(url)`) and pass the PIL.Image."
        )
    if not os.path.isfile(path):
        raise ValueError(f"{path!r} is not an existing file; {SUPPORTED_INPUTS}.")
    return path


def open_image_file(source: str | BytesIO, max_size: int | None) -> Image.Image:
    """Decodes an image file completely (so truncation shows here), at reduced scale for huge JPEGs."""
    name = f"file {source!r}" if isinstance(source, str) else "bytes"
    try:
        with Image.open(source) as image:
            draft_for_max_size(image, max_size)
            image.load()
            return image
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, EOFError ... for bad files
        raise ValueError(
            f"cannot decode the image {name} ({type(error).__name__}: {error}); it may be truncated, corrupt or "
            f"not an image. Check the file, or {SUPPORTED_INPUTS}."
        ) from error


def draft_for_max_size(image: Image.Image, max_size: int | None) -> None:
    """Lets a JPEG decoder skip the detail `shrink` would drop anyway (scale 1/2, 1/4 or 1/8; others: no-op)."""
    factor = shrink_factor(image.size, max_size)
    if factor > 1:
        width, height = image.size
        image.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))


# ----------------------------------------------------------------------------------------------------------------
# PIL images


def pil_to_rgb(image: Image.Image, max_size: int | None) -> Image.Image:
    """Upright, 8 bits per channel, shrunk to `max_size`, transparency on white, RGB. Never modifies `image`."""
    if 0 in image.size:
        raise ValueError(f"the image is empty (size {image.size}); pass an image with at least one pixel.")
    image = apply_exif_orientation(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(array_to_uint8(np.asarray(image)))
    image = to_reducible_mode(image)
    image = shrink(image, max_size)
    if image.mode in ALPHA_MODES:
        return composite_on_white(image)
    return image.convert("RGB")


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotates / flips the image as its EXIF orientation tag says (and copies nothing when there is none)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def to_reducible_mode(image: Image.Image) -> Image.Image:
    """Converts the modes `Image.reduce` cannot average (1, P, PA) and premultiplied ones, keeping transparency."""
    if image.mode in PREMULTIPLIED_ALPHA_MODES:
        return image.convert(PREMULTIPLIED_ALPHA_MODES[image.mode])
    if image.mode == "1":
        return image.convert("L")
    has_transparency = image.mode == "PA" or "transparency" in image.info
    if has_transparency and image.mode in ("P", "PA", "L", "RGB"):
        return image.convert("RGBA")
    if image.mode == "P":
        return image.convert("RGB")
    return image


def shrink_factor(size: tuple[int, int], max_size: int | None) -> int:
    """The smallest integer factor that brings the shorter side to at most `max_size` (1: leave as is)."""
    if max_size is None:
        return 1
    return max(1, math.ceil(min(size) / max_size))


def shrink(image: Image.Image, max_size: int | None) -> Image.Image:
    """Box-downscales by `shrink_factor`: linear in the pixel count and anti-aliased."""
    factor = shrink_factor(image.size, max_size)
    return image.reduce(factor) if factor > 1 else image


def composite_on_white(image: Image.Image) -> Image.Image:
    """Blends an image with transparency over a white background and drops the alpha channel."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


# ----------------------------------------------------------------------------------------------------------------
# Arrays and tensors


def tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy of a tensor; half-precision floats become float32 (numpy has no bfloat16)."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.numpy()


def array_to_pil(array: np.ndarray, channels_first: bool) -> Image.Image:
    """Reads an HW, HWC or CHW array (see the module docstring) as an L, RGB or RGBA image."""
    array = to_channels_last(array, channels_first)
    if array.size == 0:
        raise ValueError(f"the image is empty (shape {array.shape}); pass an image with at least one pixel.")
    array = array_to_uint8(array)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def to_channels_last(array: np.ndarray, channels_first: bool) -> np.ndarray:
    """Returns an HWC view; `channels_first` settles shapes whose first and last axes could both be channels."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3:
        first_is_channels = array.shape[0] in CHANNEL_COUNTS
        last_is_channels = array.shape[-1] in CHANNEL_COUNTS
        if first_is_channels and (channels_first or not last_is_channels):
            return np.moveaxis(array, 0, -1)
        if last_is_channels:
            return array
    raise ValueError(
        f"cannot read an image from an array of shape {tuple(array.shape)}: expected HW, HWC or CHW with 1, 3 or 4 "
        "channels. Pass a batch as a list of images or as a 4-D array (batch first)."
    )


def array_to_uint8(array: np.ndarray) -> np.ndarray:
    """Maps pixel values to uint8 by the dtype and range rules of the module docstring."""
    kind, item_size = array.dtype.kind, array.dtype.itemsize
    if kind == "u" and item_size == 1:
        return array
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind == "u" and item_size == 2:  # any byte order, e.g. ">u2" from PIL mode I;16B
        return scale_16_bit(array)
    if kind in "iu":
        return integers_to_uint8(array)
    if kind == "f":
        return floats_to_uint8(array)
    raise ValueError(
        f"unsupported pixel dtype {array.dtype}; use uint8, uint16, bool, another integer or a float dtype."
    )


def scale_16_bit(array: np.ndarray) -> np.ndarray:
    """Maps [0, 65535] onto [0, 255] with rounding (value / 257), so that 16-bit images are scaled, not clipped."""
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def integers_to_uint8(array: np.ndarray) -> np.ndarray:
    low, high = array.min(), array.max()
    if low >= 0 and high <= 255:
        return array.astype(np.uint8)
    if low >= 0 and high <= 65535:
        return scale_16_bit(array)
    return min_max_to_uint8(array.astype(np.float32), low, high)


def floats_to_uint8(array: np.ndarray) -> np.ndarray:
    low, high = array.min(), array.max()  # NaN and inf propagate to min / max: no full-size mask needed
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("contains NaN or infinite values; replace them first (e.g. with `numpy.nan_to_num`).")
    pixels = array.astype(np.float32)  # a copy of our own, scaled in place below
    if low >= 0 and high <= 1:
        pixels *= 255
        return round_to_uint8(pixels)
    if low >= 0 and high <= 255:
        return round_to_uint8(pixels)
    return min_max_to_uint8(pixels, low, high)


def min_max_to_uint8(pixels: np.ndarray, low, high) -> np.ndarray:
    """Stretches float32 `pixels` (modified in place) from [low, high] onto [0, 255] and warns once; constant -> 0."""
    logger.warning_once(MIN_MAX_SCALING_WARNING)
    if high == low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    pixels -= np.float32(low)
    pixels *= np.float32(255.0 / (float(high) - float(low)))
    return round_to_uint8(pixels)


def round_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Rounds and clips float32 `pixels` in place (no extra full-size copies) and returns them as uint8."""
    np.rint(pixels, out=pixels)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)
