"""Unpaired rows: texts without an image train as negatives and on the text side; rows without a text are dropped;
both are counted in the run's results."""

import json

import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from tiny_models import QUIET_ARGS, TINY_MODEL_ARGS, TINY_TEXT, random_batch, tiny_config

from modeling_vtfusion import VTFusionForImageTextRetrieval, VTFusionForPreTraining
from modeling_vtfusion.modeling_vtfusion import contrastive_loss
from training import filter_pairs, train
from training.data_checks import drop_unpaired_rows


PRESENT = torch.tensor([True, True, False, False])


def build(head):
    torch.manual_seed(0)
    return head(tiny_config())


def build_with(text_config):
    torch.manual_seed(0)
    return VTFusionForImageTextRetrieval(tiny_config(text_config=text_config))


def test_a_text_without_image_is_no_query_of_the_contrastive_loss():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, -100, -100])
    expected = (
        torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.t(), targets)
    ) / 2
    torch.testing.assert_close(contrastive_loss(logits, image_present=PRESENT), expected)


def test_a_batch_of_texts_without_images_has_zero_contrastive_loss_not_nan():
    loss = contrastive_loss(torch.randn(3, 3, requires_grad=True), image_present=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("head", [VTFusionForPreTraining, VTFusionForImageTextRetrieval])
def test_every_image_present_gives_the_losses_of_a_plain_batch(head):
    model, batch = build(head).eval(), random_batch()
    with torch.no_grad():
        plain = model(**batch, return_loss=True)
        marked = model(**batch, return_loss=True, image_present=torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(marked.loss, plain.loss)


def test_itm_never_draws_a_blank_image_as_a_negative():
    model, batch = build(VTFusionForImageTextRetrieval).eval(), random_batch()
    batch["pixel_values"][2:] = 0  # the stand-in of the missing images
    fused_images = []
    fuse = model.vtfusion.fuse

    def recording_fuse(*args, image_index=None, **kwargs):
        fused_images.append(image_index)
        return fuse(*args, image_index=image_index, **kwargs)

    model.vtfusion.fuse = recording_fuse
    with torch.no_grad():
        out = model(**batch, image_present=PRESENT)
    negative_images = fused_images[0][8:]  # [positives; image + negative text; negative image + text]
    assert not set(negative_images.tolist()) & {2, 3}
    assert torch.isfinite(out.loss)


def test_texts_without_images_train_the_language_model():
    model, batch = build(VTFusionForPreTraining).train(), random_batch()
    out = model(**batch, image_present=torch.zeros(4, dtype=torch.bool))
    out.loss.backward()
    assert out.itc_loss.item() == 0.0 and out.lm_loss.item() > 0
    assert model.text_decoder.embed_tokens.weight.grad.abs().sum() > 0


def rows_with_gaps() -> Dataset:
    """6 rows: 4 pairs, a caption without image, an image without caption."""
    image = PILImage.new("RGB", (32, 32), "red")
    features = Features({"image": Image(), "caption": Value("string")})
    images = [image] * 4 + [None, image]
    captions = ["a red square"] * 4 + ["a blue circle", None]
    return Dataset.from_dict({"image": images, "caption": captions}, features=features)


@pytest.mark.parametrize("texts_alone, kept", [(True, 5), (False, 4)])
def test_rows_without_text_are_dropped_and_texts_alone_kept_where_the_task_trains_them(texts_alone, kept):
    dataset, unpaired = drop_unpaired_rows(rows_with_gaps(), "image", "caption", keep_texts_alone=texts_alone)
    assert len(dataset) == kept
    assert (unpaired.count, unpaired.dropped) == (2, 6 - kept)


def test_pretraining_on_a_data_set_with_gaps_trains_and_counts_them(tmp_path):
    folder = tmp_path / "data"
    for split in ("train", "validation", "test"):
        rows_with_gaps().to_parquet(str(folder / f"{split}.parquet"))
    args = [
        "--task=pretrain",
        f"--dataset_name={folder}",
        "--text_column=caption",
        f"--output_dir={tmp_path / 'run'}",
        "--do_train",
        "--max_steps=2",
        "--per_device_train_batch_size=6",
        "--save_strategy=no",
        *TINY_MODEL_ARGS,
        *QUIET_ARGS,
    ]
    metrics = train.main(args)
    assert (metrics["unpaired_rows"], metrics["unpaired_rows_dropped"]) == (2, 1)
    assert json.loads((tmp_path / "run" / "train_results.json").read_text())["unpaired_rows"] == 2


@pytest.mark.parametrize("threshold, kept", [(0.0, 4), (1.01, 0)])
def test_filter_pairs_scores_every_pair_and_drops_training_pairs_below_the_threshold(
    threshold, kept, tmp_path, tiny_processor
):
    text_config = dict(TINY_TEXT, vocab_size=len(tiny_processor.tokenizer))
    build_with(text_config).save_pretrained(tmp_path / "model")
    tiny_processor.save_pretrained(tmp_path / "model")
    pairs = rows_with_gaps().select(range(4))
    for split in ("train", "test"):
        pairs.to_parquet(str(tmp_path / "data" / f"{split}.parquet"))

    results = filter_pairs.main(
        [
            f"--model_name_or_path={tmp_path / 'model'}",
            f"--dataset_name={tmp_path / 'data'}",
            f"--output_dir={tmp_path / 'filtered'}",
            f"--threshold={threshold}",
        ]
    )

    assert results["train"] == {"rows": 4, "kept": kept, "dropped": 4 - kept}
    test = Dataset.from_parquet(str(tmp_path / "filtered" / "test.parquet"))
    assert len(test) == 4 and all(0 <= score <= 1 for score in test["itm_score"])  # evaluation rows all kept
