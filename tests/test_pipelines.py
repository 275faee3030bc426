"""pipeline() on a vtfusion checkpoint: the three built-in tasks and the two custom ones.

The checkpoint is the main job's kind (`VTFusionForMultitask`: every head's weights in one folder), tiny and trained
for a few seconds on three colour images, so the pipelines' answers can be checked, not only their types. Each
pipeline runs twice: in this process with the package installed, and in a fresh interpreter that cannot import the
package, from the folder's own code (`trust_remote_code=True`), as on a user's machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from colour_checkpoint import colour_config, colour_processor, save_trained_colour_checkpoint
from pipeline_runs import CAPTIONS, CLASS_NAMES, COLOURS, QUESTION, colour_image, run_pipelines
from tiny_models import tiny_config
from transformers import pipeline

from modeling_vtfusion import ImageTextClassificationPipeline, VTFusionForSequenceClassification
from modeling_vtfusion.pipelines import CUSTOM_PIPELINES


TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def processor():
    return colour_processor()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, processor):
    folder = tmp_path_factory.mktemp("checkpoint")
    save_trained_colour_checkpoint(folder, processor)
    return folder


@pytest.fixture(scope="module", params=["package", "remote"])
def results(request, checkpoint, tmp_path_factory):
    """Every pipeline's output, from the installed package or from a process that cannot import it."""
    image_dir = tmp_path_factory.mktemp(f"images_{request.param}")
    if request.param == "package":
        return run_pipelines(str(checkpoint), str(image_dir))
    out = image_dir / "results.json"
    command = [sys.executable, str(TESTS / "pipeline_runs.py"), str(checkpoint), str(image_dir), str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=image_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_pipelines_come_from_the_package_or_from_the_checkpoint_code(results, request):
    source = request.node.callspec.params["results"]
    for task, name in results["model_classes"].items():
        expected_prefix = "modeling_vtfusion." if source == "package" else "transformers_modules."
        assert name.startswith(expected_prefix), (task, name)
    for task in CUSTOM_PIPELINES:  # custom pipeline classes always come from the checkpoint's pipelines.py
        assert results["pipeline_classes"][task].startswith("transformers_modules."), task


def test_zero_shot_ranks_the_candidate_labels(results):
    for colour, ranking in results["zero_shot"].items():
        scores = [entry["score"] for entry in ranking]
        assert {entry["label"] for entry in ranking} == set(CAPTIONS.values())
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert ranking[0]["label"] == CAPTIONS[colour]


def test_image_feature_extraction_returns_one_unit_embedding_per_image(results):
    embeddings = {colour: torch.tensor(features) for colour, features in results["features"].items()}
    for embedding in embeddings.values():
        assert embedding.shape == (1, tiny_config().projection_dim)
        assert embedding.norm() == pytest.approx(1.0, abs=1e-4)
    assert not torch.allclose(embeddings["red"], embeddings["blue"])


def test_empty_prompt_captions_each_image_of_a_batch(results):
    assert [entry["generated_text"] for entry in results["captions"]] == list(CAPTIONS.values())


def test_question_prompt_answers_each_image_of_a_batch(results):
    assert [entry["input_text"] for entry in results["answers"]] == [QUESTION] * len(COLOURS)
    assert [entry["generated_text"] for entry in results["answers"]] == list(COLOURS)


def test_max_new_tokens_reaches_generate(results):
    for entry in results["one_token_answers"]:
        assert isinstance(entry["generated_text"], str)
        assert len(entry["generated_text"].split()) == 1


def test_full_text_is_the_question_followed_by_the_answer(results):
    (entry,) = results["full_text"]
    assert entry["generated_text"] == QUESTION + "red"


def test_a_batch_may_mix_captioning_and_questions(results):
    texts = [entry["generated_text"] for entry in results["mixed"]]
    assert texts == [CAPTIONS["red"], "green", CAPTIONS["blue"]]


def test_a_decoder_prefix_is_continued_into_a_caption(results):
    (entry,) = results["prefixed_caption"]  # the red image, captioned from "a blue"
    assert entry["generated_text"].startswith("a blue ")
    assert len(entry["generated_text"].split()) == 3


def test_image_text_classification_scores_every_label_and_ranks_them(results):
    for rankings, expected in ((results["true_statements"], "true"), (results["false_statements"], "false")):
        for ranking in rankings:
            scores = [entry["score"] for entry in ranking]
            assert [entry["label"] for entry in ranking][0] == expected
            assert {entry["label"] for entry in ranking} == set(CLASS_NAMES.values())
            assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert [entry["label"] for entry in results["top_1_statement"]] == ["true"]


def test_image_text_classification_batches_give_the_scores_of_single_pairs(results):
    for batched, single in zip(results["true_statements_batch_of_3"], results["true_statements"]):
        assert [entry["label"] for entry in batched] == [entry["label"] for entry in single]
        assert [entry["score"] for entry in batched] == pytest.approx([entry["score"] for entry in single], abs=1e-5)


def test_retrieval_ranks_a_gallery_of_images_for_a_text(results):
    ranking = results["images_for_text"]
    scores = [entry["score"] for entry in ranking]
    assert sorted(entry["index"] for entry in ranking) == [0, 1, 2]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert ranking[0]["index"] == list(COLOURS).index("blue")
    assert ranking[0]["image"].endswith("blue.png")  # the gallery item as it was passed: a path


def test_retrieval_ranks_a_gallery_of_texts_for_an_image(results):
    ranking = results["texts_for_image"]
    assert [entry["text"] for entry in ranking][0] == CAPTIONS["green"]
    assert {entry["text"] for entry in ranking} == set(CAPTIONS.values())


def test_retrieval_reranks_only_the_itc_shortlist(results):
    shortlist, full = results["shortlist_of_two"], results["images_for_text"]
    assert len(shortlist) == 2
    best_itc = sorted(full, key=lambda entry: -entry["itc_score"])[:2]
    assert {entry["index"] for entry in shortlist} == {entry["index"] for entry in best_itc}


def test_checkpoint_names_both_custom_pipelines_and_carries_their_code(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINES
    assert (checkpoint / "pipelines.py").read_text() == (TESTS.parent / "modeling_vtfusion/pipelines.py").read_text()


def test_registered_custom_task_runs_on_a_model_in_memory(processor):
    model = VTFusionForSequenceClassification(colour_config()).eval()
    classifier = pipeline("image-text-classification", model=model, processor=processor)  # PIPELINE_REGISTRY
    assert type(classifier) is ImageTextClassificationPipeline
    ranking = classifier(colour_image("red"), text=CAPTIONS["red"], function_to_apply="sigmoid")
    assert {entry["label"] for entry in ranking} == {"true", "false"}
    assert all(0 < entry["score"] < 1 for entry in ranking)
