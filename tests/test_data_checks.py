"""Bad rows in a data set are skipped and counted; escaping paths are refused; a NaN loss stops the run."""

import json

import pytest
import torch
from datasets import load_dataset
from PIL import Image

from training.data_checks import check_finite_loss, drop_unreadable_images


def write_imagefolder(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))


@pytest.fixture
def folder_with_bad_rows(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    for name, color in (("red.png", "red"), ("blue.png", "blue")):
        Image.new("RGB", (8, 8), color).save(folder / name)
    (folder / "garbage.png").write_bytes(b"this is not an image")
    full = (folder / "red.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    rows = [{"file_name": n, "text": n} for n in ("red.png", "garbage.png", "blue.png", "truncated.png")]
    write_imagefolder(folder, rows)
    return folder


def test_corrupt_and_truncated_images_are_skipped_and_counted(folder_with_bad_rows):
    dataset = load_dataset("imagefolder", data_dir=str(folder_with_bad_rows), split="train")
    kept, skipped = drop_unreadable_images(dataset, "image")
    assert skipped.count == 2
    assert sorted(kept["text"]) == ["blue.png", "red.png"]
    assert kept[0]["image"].size == (8, 8)  # images decode again after the check


def test_streaming_data_set_counts_skipped_rows_as_it_is_read(folder_with_bad_rows):
    dataset = load_dataset("imagefolder", data_dir=str(folder_with_bad_rows), split="train", streaming=True)
    kept, skipped = drop_unreadable_images(dataset, "image")
    assert sorted(row["text"] for row in kept) == ["blue.png", "red.png"]
    assert skipped.count == 2


def test_metadata_path_escaping_the_folder_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    write_imagefolder(tmp_path / "data", [{"file_name": "../secret.png", "text": "escape"}])
    with pytest.raises(Exception) as error:
        load_dataset("imagefolder", data_dir=str(tmp_path / "data"), split="train")
    chain, cause = [], error.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    assert any("must be a relative path pointing inside the directory" in message for message in chain)


def test_nan_loss_stops_with_the_step_named():
    with pytest.raises(FloatingPointError, match="loss is nan at step 17.*resume with --resume_from_checkpoint"):
        check_finite_loss(torch.tensor(float("nan")), step=17)


def test_finite_loss_passes():
    check_finite_loss(torch.tensor(0.5), step=1)
