"""Behaviour of `to_rgb_images` and `VTFusionProcessor`: every kind of image and text a user may pass."""

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from conftest import TINY_IMAGE_SIZE, TINY_MODEL_MAX_LENGTH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image
from transformers import CLIPImageProcessor, ViTImageProcessor
from transformers.utils import logging as transformers_logging

from modeling_vtfusion.image_utils import MIN_MAX_SCALING_WARNING, draft_for_max_size, to_rgb_images
from modeling_vtfusion.processing_vtfusion import TRUNCATION_WARNING, VTFusionProcessor


PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"]
PIL_HIGH_DEPTH_MODES = ["I", "I;16", "I;16B", "I;16L", "F"]
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture
def warnings_log(caplog):
    """Captures this package's warnings, `warning_once` ones included (its cache is cleared first)."""
    transformers_logging.warning_once.cache_clear()
    caplog.set_level(logging.WARNING)
    return caplog


def expected_pixel_values_shape(num_images: int) -> tuple[int, ...]:
    return (num_images, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)


def random_rgb_array(height: int = 24, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def encoded_file(image: Image.Image, file_format: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **save_kwargs)
    return buffer.getvalue()


def only_pixel(images: list[Image.Image]) -> tuple[int, int, int]:
    (image,) = images
    return image.getpixel((0, 0))


# ---------------------------------------------------------------------------------------------------------------
# Images: modes, layouts, value ranges


@pytest.mark.parametrize("mode", PIL_MODES + PIL_HIGH_DEPTH_MODES)
def test_every_pil_mode_gives_finite_rgb_pixel_values(tiny_processor, mode):
    pixel_values = tiny_processor(images=Image.new(mode, (37, 23)), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == expected_pixel_values_shape(1)
    assert torch.isfinite(pixel_values).all()


def test_grayscale_image_works_with_transformers_vit_image_processor_fallback(tiny_tokenizer):
    image_processor = ViTImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    processor = VTFusionProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer)
    pixel_values = processor(images=Image.new("L", (50, 40), 128), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == expected_pixel_values_shape(1)


def test_clip_image_processor_resizes_and_crops_non_square_images(tiny_tokenizer):
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    processor = VTFusionProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer)
    images = [Image.new("P", (90, 40)), random_rgb_array(height=30, width=70)]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == expected_pixel_values_shape(2)
    assert torch.isfinite(pixel_values).all()


def test_rgba_transparency_is_composited_on_white():
    assert only_pixel(to_rgb_images(Image.new("RGBA", (2, 2), (255, 0, 0, 0)))) == WHITE
    assert only_pixel(to_rgb_images(Image.new("RGBA", (2, 2), (255, 0, 0, 128)))) == (255, 127, 127)


def test_palette_transparency_in_a_gif_file_is_composited_on_white():
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([*RED, *BLUE])
    assert only_pixel(to_rgb_images(encoded_file(palette_image, "GIF", transparency=0))) == WHITE


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 10))  # top-left quadrant
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored rotated: display rotates 90 degrees clockwise
    (upright,) = to_rgb_images(encoded_file(image, "PNG", exif=exif))
    assert upright.size == (20, 40)
    assert upright.getpixel((19, 0)) == RED  # the top-left corner moved to the top-right
    assert upright.getpixel((0, 0)) == BLUE


@pytest.mark.parametrize("array_byte_order", ["<u2", ">u2"])
def test_16_bit_image_is_scaled_to_8_bits_not_clipped(array_byte_order):
    image = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16).astype(array_byte_order))  # I;16 or I;16B
    assert only_pixel(to_rgb_images(image)) == (128, 128, 128)


def test_32_bit_integer_image_holding_16_bit_values_is_scaled():
    image = Image.fromarray(np.full((4, 4), 65535, dtype=np.int32))  # mode I, as some 16-bit files open
    assert image.mode == "I"
    assert only_pixel(to_rgb_images(image)) == WHITE


def test_uint16_array_is_scaled_to_8_bits():
    assert only_pixel(to_rgb_images(np.full((4, 4), 257 * 200, dtype=np.uint16))) == (200, 200, 200)


def test_chw_and_hwc_numpy_arrays_give_the_same_image():
    hwc = random_rgb_array()
    (from_hwc,) = to_rgb_images(hwc)
    (from_chw,) = to_rgb_images(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
    assert np.array_equal(np.asarray(from_hwc), hwc)
    assert np.array_equal(np.asarray(from_chw), hwc)


def test_chw_and_hwc_torch_tensors_give_the_same_image():
    hwc = random_rgb_array()
    (from_chw,) = to_rgb_images(torch.from_numpy(hwc).permute(2, 0, 1))
    (from_hwc,) = to_rgb_images(torch.from_numpy(hwc))
    assert np.array_equal(np.asarray(from_chw), hwc)
    assert np.array_equal(np.asarray(from_hwc), hwc)


def test_float_images_in_unit_range_and_in_byte_range_give_the_same_pixels():
    hwc = random_rgb_array()
    (from_unit_range,) = to_rgb_images(hwc.astype(np.float32) / 255)
    (from_byte_range,) = to_rgb_images(hwc.astype(np.float64))
    (from_bfloat16,) = to_rgb_images(torch.from_numpy(hwc).permute(2, 0, 1).to(torch.bfloat16))
    assert np.array_equal(np.asarray(from_unit_range), hwc)
    assert np.array_equal(np.asarray(from_byte_range), hwc)
    assert np.array_equal(np.asarray(from_bfloat16), hwc)


def test_float_image_outside_both_ranges_is_min_max_scaled_with_a_warning(warnings_log):
    normalised = np.linspace(-2.0, 2.0, num=16, dtype=np.float32).reshape(4, 4)
    (image,) = to_rgb_images(normalised)
    pixels = np.asarray(image)[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255
    assert MIN_MAX_SCALING_WARNING in warnings_log.text


def test_bool_mask_becomes_black_and_white():
    mask = np.zeros((2, 2), dtype=bool)
    mask[0, 0] = True
    image = np.asarray(to_rgb_images(mask)[0])
    assert tuple(image[0, 0]) == WHITE and tuple(image[1, 1]) == (0, 0, 0)


def test_one_by_one_image_is_processed(tiny_processor):
    pixel_values = tiny_processor(images=Image.new("RGB", (1, 1), RED), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == expected_pixel_values_shape(1)


def test_8000_by_8000_image_is_processed_quickly(tiny_processor):
    huge_image = Image.new("RGB", (8000, 8000), RED)
    start = time.perf_counter()
    pixel_values = tiny_processor(images=huge_image, return_tensors="pt")["pixel_values"]
    assert time.perf_counter() - start < 2.0  # about 0.1 s: shrunk by box filter before the image processor runs
    assert pixel_values.shape == expected_pixel_values_shape(1)
    assert torch.isfinite(pixel_values).all()


def test_huge_image_is_shrunk_below_max_size_on_its_shorter_side():
    (image,) = to_rgb_images(Image.new("L", (3000, 1000)), max_size=128)
    assert image.size == (375, 125)  # reduced by 8, aspect ratio kept


def test_huge_jpeg_file_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(encoded_file(Image.new("RGB", (2048, 2048), RED), "JPEG"))
    with Image.open(path) as lazy_image:
        draft_for_max_size(lazy_image, max_size=128)
        assert lazy_image.size == (256, 256)  # the decoder itself skips 7 of every 8 rows and columns
    (image,) = to_rgb_images(path, max_size=128)
    assert image.size == (128, 128)


def test_user_images_are_not_modified():
    image = Image.new("RGBA", (600, 400), (255, 0, 0, 0))
    to_rgb_images(image, max_size=32)
    assert image.mode == "RGBA" and image.size == (600, 400) and image.getpixel((0, 0)) == (255, 0, 0, 0)


def test_4d_array_is_a_batch_and_nested_lists_are_flattened():
    batch = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    assert len(to_rgb_images(batch)) == 2
    assert len(to_rgb_images([[Image.new("RGB", (4, 4))], [Image.new("L", (4, 4)), batch]])) == 4


# ---------------------------------------------------------------------------------------------------------------
# Images: errors name the index of the bad image


def test_corrupt_bytes_raise_value_error_naming_the_index(tiny_processor):
    with pytest.raises(ValueError, match=r"image 1: cannot decode the image bytes .*pass a PIL.Image"):
        tiny_processor(images=[Image.new("RGB", (4, 4)), b"definitely not an image"])


def test_truncated_png_file_raises_value_error_naming_the_index(tiny_processor, tmp_path):
    png = encoded_file(Image.fromarray(random_rgb_array(64, 64)), "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(png[: len(png) // 2])
    images = [Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4)), str(path)]
    with pytest.raises(ValueError, match=r"image 2: cannot decode the image file .*truncated"):
        tiny_processor(images=images)


def test_nan_pixels_raise_value_error_naming_the_index():
    with pytest.raises(ValueError, match="image 1: contains NaN"):
        to_rgb_images([np.zeros((4, 4), np.float32), np.full((4, 4), np.nan, np.float32)])


def test_url_raises_value_error_saying_urls_are_not_downloaded():
    with pytest.raises(ValueError, match="image 0: 'https://example.com/cat.png' is a URL"):
        to_rgb_images("https://example.com/cat.png")


def test_missing_file_raises_value_error_naming_the_index(tmp_path):
    with pytest.raises(ValueError, match="image 0: .* is not an existing file"):
        to_rgb_images(tmp_path / "missing.png")


@pytest.mark.parametrize("not_an_image", [None, {"bytes": b""}, 3.5, np.zeros((5, 6, 7)), np.zeros((2, 0, 3))])
def test_objects_that_are_not_images_raise_value_error_naming_the_index(not_an_image):
    with pytest.raises(ValueError, match="image 1: "):
        to_rgb_images([Image.new("RGB", (4, 4)), not_an_image])


def test_empty_image_batch_raises_value_error(tiny_processor):
    with pytest.raises(ValueError, match="empty batch of images"):
        tiny_processor(images=[])


# ---------------------------------------------------------------------------------------------------------------
# Texts


def test_text_gives_input_ids_attention_mask_and_token_type_ids_only(tiny_processor):
    encoding = tiny_processor(text=["a red circle", "two green triangles above a star"], return_tensors="pt")
    assert set(encoding) == {"input_ids", "attention_mask", "token_type_ids"}
    assert encoding["input_ids"].shape == encoding["attention_mask"].shape == (2, 8)  # padded to the longest


def test_images_alone_give_pixel_values_only(tiny_processor):
    assert set(tiny_processor(images=Image.new("RGB", (4, 4)))) == {"pixel_values"}


def test_single_text_is_a_batch_of_one(tiny_processor):
    assert tiny_processor(text="a red circle", return_tensors="pt")["input_ids"].shape == (1, 5)


def test_empty_and_whitespace_only_texts_are_valid(tiny_processor):
    encoding = tiny_processor(text=["", "   \n\t"], return_tensors="pt")
    assert encoding["attention_mask"].sum(dim=1).tolist() == [2, 2]  # [CLS] [SEP]


def test_100k_character_text_is_truncated_to_model_max_length_with_a_warning(tiny_processor, warnings_log):
    encoding = tiny_processor(text=["red " * 25_000, "a blue square"], return_tensors="pt")
    assert encoding["input_ids"].shape == (2, TINY_MODEL_MAX_LENGTH)
    assert TRUNCATION_WARNING in warnings_log.text


def test_text_that_fits_exactly_is_not_reported_as_truncated(tiny_processor, warnings_log):
    encoding = tiny_processor(text="red " * (TINY_MODEL_MAX_LENGTH - 2))  # + [CLS] and [SEP]
    assert len(encoding["input_ids"][0]) == TINY_MODEL_MAX_LENGTH
    assert TRUNCATION_WARNING not in warnings_log.text


def test_max_length_argument_overrides_model_max_length(tiny_processor):
    encoding = tiny_processor(text="red " * 100, max_length=8, return_tensors="pt")
    assert encoding["input_ids"].shape == (1, 8)


def test_non_latin_and_emoji_texts_are_encoded(tiny_processor):
    texts = ["日本語のテキスト", "Привет, мир", "مرحبا بالعالم", "a red 🔴 circle 😀"]
    encoding = tiny_processor(text=texts, return_tensors="pt")
    assert encoding["input_ids"].shape[0] == 4
    assert (encoding["attention_mask"].sum(dim=1) > 2).all()  # more than [CLS] [SEP]: nothing was dropped


def test_none_in_text_batch_raises_value_error_naming_the_index(tiny_processor):
    with pytest.raises(ValueError, match="text 1 is None"):
        tiny_processor(text=["a red circle", None])


@pytest.mark.parametrize("text", [42, ["a red circle", 42], [["pre", "tokenized"]]])
def test_non_string_text_raises_value_error(tiny_processor, text):
    with pytest.raises(ValueError, match="string"):
        tiny_processor(text=text)


def test_empty_text_batch_raises_value_error(tiny_processor):
    with pytest.raises(ValueError, match="empty batch of texts"):
        tiny_processor(text=[])


# ---------------------------------------------------------------------------------------------------------------
# Images and texts together, pipelines, decoding


def test_neither_images_nor_text_raises_value_error(tiny_processor):
    with pytest.raises(ValueError, match="needs `images`, `text` or both"):
        tiny_processor()


def test_image_and_text_batches_may_differ_in_size(tiny_processor):
    labels = ["a photo of a circle", "a photo of a square", "a photo of a star"]
    encoding = tiny_processor(images=Image.new("RGB", (8, 8)), text=labels, return_tensors="pt")
    assert encoding["pixel_values"].shape == expected_pixel_values_shape(1)
    assert encoding["input_ids"].shape[0] == 3


def test_image_text_to_text_pipeline_call_is_accepted(tiny_processor):
    # What `ImageTextToTextPipeline.preprocess` sends: nested image lists, `padding=True`, `return_tensors="pt"`,
    # then `.to(dtype=model.dtype)` on the result.
    images = [[Image.new("RGB", (20, 10))], [Image.new("RGB", (10, 20))]]
    encoding = tiny_processor(images=images, text=["a photo of", "what colour is"], return_tensors="pt", padding=True)
    encoding = encoding.to(dtype=torch.float16)
    assert encoding["pixel_values"].shape == expected_pixel_values_shape(2)
    assert encoding["pixel_values"].dtype == torch.float16
    assert encoding["input_ids"].dtype == torch.int64


def test_kwargs_reach_the_sub_processor_that_accepts_them(tiny_processor):
    encoding = tiny_processor(
        images=Image.new("RGB", (8, 8)),
        text="a red circle",
        add_special_tokens=False,
        images_kwargs={"size": {"height": 16, "width": 16}},
        return_tensors="pt",
    )
    assert encoding["input_ids"].shape == (1, 3)
    assert encoding["pixel_values"].shape == (1, 3, 16, 16)


def test_post_process_image_text_to_text_returns_one_string_per_sequence(tiny_processor):
    input_ids = tiny_processor(text=["a red circle", "two squares"], return_tensors="pt")["input_ids"]
    assert tiny_processor.post_process_image_text_to_text(input_ids) == ["a red circle", "two squares"]
    assert tiny_processor.post_process_image_text_to_text(input_ids[0]) == ["a red circle"]


def test_decode_and_batch_decode_delegate_to_the_tokenizer(tiny_processor):
    input_ids = tiny_processor(text=["a red circle"])["input_ids"]
    assert tiny_processor.batch_decode(input_ids, skip_special_tokens=True) == ["a red circle"]
    assert tiny_processor.decode(input_ids[0]) == "[CLS] a red circle [SEP]"


def test_model_input_names_are_the_union_of_tokenizer_and_image_processor_names(tiny_processor):
    assert tiny_processor.model_input_names == ["input_ids", "token_type_ids", "attention_mask", "pixel_values"]


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading


def sample_inputs() -> dict:
    return {
        "images": [Image.fromarray(random_rgb_array(seed=1)), Image.new("LA", (9, 7), (30, 200))],
        "text": ["a red circle on the left", ""],
        "return_tensors": "pt",
    }


def test_save_and_load_round_trip_gives_identical_outputs(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    reloaded = VTFusionProcessor.from_pretrained(tmp_path)
    expected, actual = tiny_processor(**sample_inputs()), reloaded(**sample_inputs())
    assert set(actual) == set(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_saved_processor_config_nests_the_image_processor_and_maps_auto_processor(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "VTFusionProcessor"
    assert config["image_processor"]["size"] == {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    assert config["auto_map"]["AutoProcessor"] == "processing_vtfusion.VTFusionProcessor"
    assert {"processing_vtfusion.py", "image_utils.py", "tokenizer.json"} <= set(os.listdir(tmp_path))


def test_saved_processor_loads_as_remote_code_in_a_fresh_process(tiny_processor, tmp_path):
    saved = tmp_path / "saved"
    tiny_processor.save_pretrained(saved)
    script = textwrap.dedent(
        f"""
        import sys
        from transformers import AutoProcessor
        from PIL import Image
        processor = AutoProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert "modeling_vtfusion" not in sys.modules
        encoding = processor(images=Image.new("L", (40, 30)), text="a red circle", return_tensors="pt")
        print(type(processor).__name__, tuple(encoding["pixel_values"].shape))
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["VTFusionProcessor", "(1,", "3,", "32,", "32)"]


# ---------------------------------------------------------------------------------------------------------------
# Property: any mix of supported images and texts gives finite, documented shapes


@st.composite
def any_supported_image(draw):
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random((height, width, 4))
    kind = draw(st.sampled_from(["pil", "hwc_uint8", "chw_float", "tensor_chw", "uint16", "gray_float"]))
    if kind == "pil":
        mode = draw(st.sampled_from(PIL_MODES + PIL_HIGH_DEPTH_MODES))
        return Image.fromarray((pixels[..., :3] * 255).astype(np.uint8)).convert(mode)
    if kind == "hwc_uint8":
        return (pixels[..., : draw(st.sampled_from([1, 3, 4]))] * 255).astype(np.uint8)
    if kind == "chw_float":
        return pixels[..., :3].transpose(2, 0, 1).astype(np.float32)
    if kind == "tensor_chw":
        return torch.from_numpy(pixels[..., :3].copy()).permute(2, 0, 1) * 255
    if kind == "uint16":
        return (pixels[..., 0] * 65535).astype(np.uint16)
    return (pixels[..., 0] - 0.5) * 10  # outside both ranges: min-max scaled


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    images=st.lists(any_supported_image(), min_size=1, max_size=3),
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=3),
)
def test_any_supported_images_and_texts_give_finite_documented_shapes(tiny_processor, images, texts):
    encoding = tiny_processor(images=images, text=texts, return_tensors="pt")
    assert encoding["pixel_values"].shape == expected_pixel_values_shape(len(images))
    assert torch.isfinite(encoding["pixel_values"]).all()
    num_texts, sequence_length = encoding["input_ids"].shape
    assert num_texts == len(texts) and 2 <= sequence_length <= TINY_MODEL_MAX_LENGTH
    assert encoding["attention_mask"].shape == encoding["input_ids"].shape
