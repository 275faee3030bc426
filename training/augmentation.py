"""Image augmentation for training that keeps every text of a row true of its image, on kornia.

The recipe is the usual one (random resized crop, horizontal flip, colour jitter), made safe for texts that describe
the image:
- a flip swaps "left" and "right" (and "leftmost" / "rightmost") in every text of the row, so "a red square on the
  left" stays true of the mirrored image (English words only: for texts in other languages, pass
  `flip_probability=0`);
- crops keep 85-100% of the image's area at about its aspect ratio, so every object stays in the frame and
  left/right/above/below relations hold;
- colour jitter changes brightness, contrast and saturation but never hue, which would turn a "red" circle orange.

Evaluation and inference never augment: `train.py` applies it to the training split only (`--image_augmentation`).
For your own data set, augment before the processor:

```python
augment = ImageTextAugmentation("image", ["caption"], size=(224, 224))


def transform(batch):
    batch = augment(batch)  # the images, and the captions of the flipped ones
    return processor(images=batch["image"], text=batch["caption"], return_tensors="pt")


train_dataset.set_transform(transform)
```

Why kornia: it is Apache-2.0, maintained and needs only torch (~7 MB with kornia-rs); torchvision is a 5 GB CUDA
build on the machines this project targets, and albumentations' last MIT release (2.0.8) is no longer maintained
(its successor is AGPL) and brings OpenCV and SciPy (~100 MB).
"""

import random
import re

import kornia.augmentation as K
import numpy as np
import torch
from kornia.geometry.transform import hflip
from PIL import Image

from modeling_vtfusion.image_utils import to_rgb_images


SIDES = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
SIDE_WORD = re.compile(rf"\b({'|'.join(SIDES)})\b", re.IGNORECASE)


def swap_left_right(text):
    """ "left" <-> "right" (case kept) in a text, or in every text of a (nested) list."""
    if isinstance(text, str):
        return SIDE_WORD.sub(lambda match: same_case(SIDES[match.group(0).lower()], match.group(0)), text)
    if isinstance(text, (list, tuple)):
        return [swap_left_right(item) for item in text]
    return text  # labels, None


def same_case(word: str, like: str) -> str:
    return word.upper() if like.isupper() else word.capitalize() if like[0].isupper() else word


class ImageTextAugmentation:
    """A batched transform (`Dataset.set_transform`, or inside `train.py`'s) of rows {image_column, *text_columns}:
    each image randomly cropped to `size`, flipped (its row's texts swapping left and right) and colour-jittered.

    The draws come from `seed` alone (not from torch's global generator, which training's dropout uses), so a run
    with augmentation is reproducible and a run without it draws the same dropout masks as before.
    """

    def __init__(
        self,
        image_column: str,
        text_columns: list[str],
        size: tuple[int, int],
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.85, 1.0),
        crop_ratio: tuple[float, float] = (0.9, 1.1),
        flip_probability: float = 0.5,
        jitter: float = 0.2,
    ):
        self.image_column, self.text_columns, self.size = image_column, list(text_columns), tuple(size)
        self.rng = random.Random(seed)
        self.flip_probability = flip_probability
        self.crop_and_jitter = K.AugmentationSequential(
            K.RandomResizedCrop(self.size, scale=crop_scale, ratio=crop_ratio),
            K.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0.0, p=0.8),
        )

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        # never decode more pixels than a crop keeps: an 8000x8000 photo is shrunk to ~4x the output side first
        images = to_rgb_images(batch[self.image_column], max_size=4 * max(self.size))
        flips = [self.rng.random() < self.flip_probability for _ in images]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.rng.getrandbits(63))
            batch[self.image_column] = [self.augment(image, flip) for image, flip in zip(images, flips)]
        for column in self.text_columns:
            if column in batch:
                batch[column] = [swap_left_right(text) if flip else text for text, flip in zip(batch[column], flips)]
        return batch

    def augment(self, image: Image.Image, flip: bool) -> Image.Image:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255  # [1, 3, H, W]
        pixels = self.crop_and_jitter(hflip(pixels) if flip else pixels)
        return Image.fromarray((pixels[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def output_size(image_processor) -> tuple[int, int]:
    """The (height, width) an image processor feeds the model: its crop size, else its resize target."""
    size = getattr(image_processor, "crop_size", None) or image_processor.size
    if "height" in size:
        return size["height"], size["width"]
    return size["shortest_edge"], size["shortest_edge"]
