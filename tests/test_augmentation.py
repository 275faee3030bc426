"""Training-time image augmentation: flips keep texts true, colours keep their names, evaluation never augments."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import QUIET_ARGS, TINY_MODEL_ARGS

from training import data, train
from training.args import DataArguments
from training.augmentation import ImageTextAugmentation, swap_left_right
from training.synthshapes import load_synthshapes, write_imagefolder


def red_left_blue_right(size: int = 32) -> Image.Image:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[:, : size // 2] = (220, 20, 20)
    pixels[:, size // 2 :] = (20, 20, 220)
    return Image.fromarray(pixels)


def augmented(flip_probability: float, seed: int = 0, **batch) -> dict:
    augmentation = ImageTextAugmentation(
        "image", ["caption", "questions", "answers"], (32, 32), seed=seed, flip_probability=flip_probability
    )
    return augmentation({"image": [red_left_blue_right()]} | batch)


def test_swap_left_right_swaps_whole_words_keeping_their_case():
    assert swap_left_right("Left of the leftmost circle, right?") == "Right of the rightmost circle, left?"
    assert swap_left_right("bright, lefty") == "bright, lefty"
    assert swap_left_right(["on the left", ["LEFT", "right"]]) == ["on the right", ["RIGHT", "left"]]


def test_a_flip_mirrors_the_image_and_swaps_left_and_right_in_every_text_of_the_row():
    batch = augmented(
        1.0, caption=["a red square on the left"], questions=[["what is on the left?"]], answers=[["red"]]
    )
    pixels = np.asarray(batch["image"][0]).astype(int)
    assert pixels[:, :8, 2].mean() > pixels[:, :8, 0].mean()  # blue now on the left
    assert pixels[:, -8:, 0].mean() > pixels[:, -8:, 2].mean()  # red on the right
    assert batch["caption"] == ["a red square on the right"]
    assert batch["questions"] == [["what is on the right?"]]


def test_without_a_flip_the_texts_are_left_as_they_are():
    batch = augmented(0.0, caption=["a red square on the left"])
    pixels = np.asarray(batch["image"][0]).astype(int)
    assert pixels[:, :8, 0].mean() > pixels[:, :8, 2].mean()
    assert batch["caption"] == ["a red square on the left"]


@pytest.mark.parametrize("seed", range(5))
def test_colour_jitter_never_changes_which_colour_a_region_is(seed):
    pixels = np.asarray(augmented(0.0, seed=seed)["image"][0]).astype(int)
    red, blue = pixels[:, 4:12].reshape(-1, 3).mean(0), pixels[:, -12:-4].reshape(-1, 3).mean(0)
    assert red[0] > red[1] + 40 and red[0] > red[2] + 40
    assert blue[2] > blue[0] + 40 and blue[2] > blue[1] + 40


def test_augmentation_is_reproducible_from_its_seed_and_leaves_torchs_generator_alone():
    torch.manual_seed(0)
    first = np.asarray(augmented(0.5, seed=3)["image"][0])
    after_first = torch.rand(1)
    torch.manual_seed(0)
    second = np.asarray(augmented(0.5, seed=3)["image"][0])
    assert np.array_equal(first, second)
    assert torch.equal(torch.rand(1), after_first)


def test_any_image_mode_and_size_comes_out_at_the_output_size():
    augmentation = ImageTextAugmentation("image", [], (24, 24))
    images = [Image.new("L", (1, 1)), Image.new("RGBA", (300, 40)), Image.new("CMYK", (50, 50))]
    assert [image.size for image in augmentation({"image": images})["image"]] == [(24, 24)] * 3


def test_the_training_transform_augments_and_the_evaluation_transform_never_does(tmp_path, tiny_processor):
    rows = load_synthshapes(write_imagefolder(tmp_path / "shapes", num_scenes=8, seed=0))["train"].select(range(2))[:]
    args = DataArguments(text_column="caption")
    train_transform = data.build_transform("captioning", tiny_processor, args, seed=0, augment=True)
    eval_transform = data.build_transform("captioning", tiny_processor, args, seed=0)
    visits = [np.stack(train_transform(dict(rows))["pixel_values"]) for _ in range(2)]
    assert not np.array_equal(*visits)  # a fresh draw every visit
    assert np.array_equal(
        np.stack(eval_transform(dict(rows))["pixel_values"]), np.stack(eval_transform(dict(rows))["pixel_values"])
    )


def test_train_py_augments_the_training_split_only(tmp_path, monkeypatch):
    built = []

    class CountingAugmentation(ImageTextAugmentation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = 0
            built.append(self)

        def __call__(self, batch):
            self.calls += 1
            return super().__call__(batch)

    monkeypatch.setattr(data, "ImageTextAugmentation", CountingAugmentation)
    folder = write_imagefolder(tmp_path / "shapes", num_scenes=64, seed=0)
    train.main(
        [
            "--task=classification",
            f"--output_dir={tmp_path / 'run'}",
            f"--synthshapes_dir={folder}",
            "--synthshapes_num_scenes=64",
            "--do_train",
            "--do_eval",
            "--do_predict",
            "--max_steps=2",
            "--per_device_train_batch_size=8",
            "--image_augmentation",
            "--save_strategy=no",
            *TINY_MODEL_ARGS,
            *QUIET_ARGS,
        ]
    )
    assert len(built) == 1 and built[0].calls >= 2  # the training split's transform only, once per batch
