"""The model card: the template filled from a run is a valid transformers model card with the run's results."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, ModelCardData
from tiny_models import tiny_config
from transformers.pipelines import SUPPORTED_TASKS

from modeling_vtfusion import VTFusionModel
from modeling_vtfusion.pipelines import CUSTOM_PIPELINES
from training.model_card import main, metric_results, write_model_card


EXAMPLE_CARD = Path(__file__).resolve().parents[1] / "model_cards" / "example_card.md"
PIPELINE_TASKS = [
    "zero-shot-image-classification",
    "image-feature-extraction",
    "image-text-to-text",
    *CUSTOM_PIPELINES,
]
RESULTS = {
    "test_retrieval_t2i_r1": 0.5,
    "test_retrieval_t2i_r10": 0.9,
    "test_retrieval_i2t_r1": 0.25,
    "test_vqa_accuracy": 0.75,
    "test_vqa_accuracy_color": 0.8,
    "test_classification_accuracy": 0.6,
    "test_cider": 1.25,
    "vqa_accuracy": 0.1,  # an unprefixed duplicate: the test_ value wins
    "train_loss": 2.0,  # not a task metric
    "test_runtime": 3.0,
}


def multitask_config():
    config = tiny_config()
    config.architectures = ["VTFusionForPreTraining", "VTFusionForConditionalGeneration"]
    return config


def test_example_card_is_a_valid_transformers_model_card():
    card = ModelCard.load(EXAMPLE_CARD, ignore_metadata_errors=False)
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag in SUPPORTED_TASKS
    assert {"vtfusion", "custom_code"} <= set(data.tags)
    assert data.datasets and data.license == "apache-2.0"
    assert {"recall", "accuracy"} <= set(data.metrics)
    assert data.eval_results and all(isinstance(result.metric_value, float) for result in data.eval_results)
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()  # the metadata round-trips


def test_example_card_lists_every_model_index_result_in_its_table():
    card = ModelCard.load(EXAMPLE_CARD)
    for result in card.data.eval_results:
        assert f"| {result.task_name} | {result.metric_name} | {result.metric_value:.4f} |" in card.text


def test_card_reports_the_task_metrics_of_a_run_in_the_model_index(tmp_path):
    card = write_model_card(tmp_path, RESULTS, multitask_config(), model_id="me/tiny")
    reported = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert reported == {
        "Text-to-image Recall@1": 0.5,
        "Text-to-image Recall@10": 0.9,
        "Image-to-text Recall@1": 0.25,
        "VQA accuracy": 0.75,
        "VQA accuracy, color questions": 0.8,
        "Accuracy": 0.6,
        "CIDEr-D": 1.25,
    }
    assert {result.dataset_split for result in card.data.eval_results} == {"test"}
    assert ModelCard.load(tmp_path / "README.md").data.to_dict() == card.data.to_dict()


def test_metrics_are_ordered_by_task_then_by_k():
    names = [m["name"] for m in metric_results({"retrieval_t2i_r10": 1, "retrieval_t2i_r5": 1, "retrieval_t2i_r1": 1})]
    assert names == ["retrieval_t2i_r1", "retrieval_t2i_r5", "retrieval_t2i_r10"]


def test_card_shows_how_to_run_every_pipeline_from_the_repo(tmp_path):
    card = write_model_card(tmp_path, RESULTS, multitask_config(), model_id="me/tiny")
    assert 'repo = "me/tiny"' in card.text
    for task in PIPELINE_TASKS:
        assert f'pipeline("{task}", model=repo, trust_remote_code=True)' in card.text


def test_card_describes_encoders_and_fusion_from_the_config(tmp_path):
    config = multitask_config()
    card = write_model_card(tmp_path, {}, config)
    assert "ViT (2 layers, width 32, 32px images in 8px patches), trained from scratch" in card.text
    assert "BERT (2 layers, width 32, 300 word pieces)" in card.text
    assert f"`{config.fusion_type}`" in card.text
    assert "No evaluation results were recorded." in card.text
    assert card.data.eval_results is None


@pytest.mark.parametrize(
    "architectures, pipeline_tag",
    [
        (["VTFusionForConditionalGeneration"], "image-text-to-text"),
        (["VTFusionForImageTextRetrieval"], "zero-shot-image-classification"),
        (["VTFusionForSequenceClassification"], None),
    ],
)
def test_pipeline_tag_follows_the_head_that_saved_the_checkpoint(architectures, pipeline_tag, tmp_path):
    config = tiny_config()
    config.architectures = architectures
    assert write_model_card(tmp_path, {}, config).data.pipeline_tag == pipeline_tag


def test_card_reports_the_attention_check_and_links_the_heat_maps(tmp_path):
    (tmp_path / "attention").mkdir()
    (tmp_path / "attention" / "scene_7_red_circle.png").write_bytes(b"\x89PNG")
    rates = {"color_hit_rate": 0.61, "color_chance_rate": 0.11, "shape_hit_rate": 0.5, "shape_chance_rate": 0.1}
    results = {f"attention_{name}": value for name, value in rates.items()}

    card = write_model_card(tmp_path, results, multitask_config())

    assert "a colour word peaks on the shape it names in 61% (chance 11%)" in " ".join(card.text.split())
    assert "[scene_7_red_circle.png](attention/scene_7_red_circle.png)" in card.text


def test_late_fusion_card_warns_it_has_no_token_interaction(tmp_path):
    card = write_model_card(tmp_path, {}, tiny_config(fusion_type="late"))
    assert "no token-level interaction" in card.text
    assert "save_attention_maps" not in card.text


def test_command_line_writes_the_card_of_an_output_folder(tmp_path):
    model = VTFusionModel(tiny_config())
    model.save_pretrained(tmp_path)
    (tmp_path / "all_results.json").write_text(json.dumps({"cider": 0.5, "train_loss": 1.0}))
    state = {"global_step": 60, "train_batch_size": 16, "log_history": [{"learning_rate": 1e-3}, {"loss": 2.0}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    main([str(tmp_path), "--model_id", "me/tiny"])
    card = ModelCard.load(tmp_path / "README.md")
    assert [result.metric_name for result in card.data.eval_results] == ["CIDEr-D"]
    assert "| Optimizer steps | 60 |" in card.text and "| Peak learning rate | 1.00e-03 |" in card.text
    assert f"| Parameters | {model.num_parameters() / 1e6:.2f}M |" in card.text


def test_command_line_card_written_elsewhere_reports_the_main_job_and_carries_its_heat_maps(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "cards"
    VTFusionModel(tiny_config()).save_pretrained(run)
    (run / "results.json").write_text(
        json.dumps(
            {
                "cider": 0.5,
                "attention_color_hit_rate": 0.5,
                "attention_color_chance_rate": 0.2,
                "attention_shape_hit_rate": 0.4,
                "attention_shape_chance_rate": 0.2,
            }
        )
    )
    (run / "attention").mkdir()
    (run / "attention" / "scene_0_red_circle.png").write_bytes(b"\x89PNG")
    elsewhere.mkdir()

    main([str(run), "--output", str(elsewhere / "example_card.md")])

    card = ModelCard.load(elsewhere / "example_card.md")
    assert [result.metric_name for result in card.data.eval_results] == ["CIDEr-D"]
    assert "50% (chance 20%)" in card.text
    assert (elsewhere / "attention" / "scene_0_red_circle.png").read_bytes() == b"\x89PNG"
