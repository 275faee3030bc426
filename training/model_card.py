"""The model card of a training run: `model_cards/vtfusion_card.md.j2` filled from the run's config and results.

    python -m training.model_card outputs/multitask --model_id me/vtfusion-synthshapes

reads `config.json`, `all_results.json` and `trainer_state.json` of the output folder and writes its `README.md`; in
code, `write_model_card(output_dir, results, config, ...)` does the same from objects. The card's metadata
(`library_name`, `pipeline_tag`, tags, datasets, metrics and the `model-index` results) goes through
`huggingface_hub.ModelCardData`, so the Hub reads it as it reads any transformers model.
"""

import argparse
import json
import math
import re
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_vtfusion.fusion import FUSION_STRATEGIES


TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "vtfusion_card.md.j2"
SYNTHSHAPES = "synthshapes"

TASK_PIPELINE_TAGS = {  # the Hub widget of each kind of checkpoint (image + text classification has none)
    "multitask": "image-text-to-text",
    "captioning": "image-text-to-text",
    "vqa": "image-text-to-text",
    "pretrain": "zero-shot-image-classification",
    "retrieval": "zero-shot-image-classification",
    "classification": None,
}
TASK_SUMMARIES = {
    "multitask": "retrieval (ITC + ITM), captioning, VQA and visual entailment at once, on one shared base",
    "pretrain": "pre-training: image-text contrast (ITC), matching (ITM) and captioning (LM)",
    "retrieval": "image-text retrieval: contrast (ITC) and matching with hard negatives (ITM)",
    "classification": "image + text classification",
    "captioning": "image captioning",
    "vqa": "visual question answering",
}
HEAD_TASKS = {
    "VTFusionForPreTraining": "pretrain",
    "VTFusionForImageTextRetrieval": "retrieval",
    "VTFusionForSequenceClassification": "classification",
    "VTFusionModel": "retrieval",
}
# Result name -> (task type, task name, metric type, metric name), for the table and the `model-index`.
METRIC_PATTERNS = [
    (r"retrieval_t2i_r(\d+)$", ("image-text-retrieval", "Image-text retrieval", "recall", "Text-to-image Recall@{0}")),
    (r"retrieval_i2t_r(\d+)$", ("image-text-retrieval", "Image-text retrieval", "recall", "Image-to-text Recall@{0}")),
    (
        r"retrieval_t2i_r(\d+)_canonical$",
        ("image-text-retrieval", "Image-text retrieval", "recall", "Text-to-image Recall@{0}, same-caption scenes"),
    ),
    (
        r"retrieval_i2t_r(\d+)_canonical$",
        ("image-text-retrieval", "Image-text retrieval", "recall", "Image-to-text Recall@{0}, same-caption scenes"),
    ),
    (r"vqa_accuracy$", ("visual-question-answering", "Visual question answering", "accuracy", "VQA accuracy")),
    (
        r"vqa_accuracy_(\w+)$",
        ("visual-question-answering", "Visual question answering", "accuracy", "VQA accuracy, {0} questions"),
    ),
    (r"classification_accuracy$", ("image-text-classification", "Visual entailment", "accuracy", "Accuracy")),
    (r"classification_macro_f1$", ("image-text-classification", "Visual entailment", "f1", "Macro F1")),
    (
        r"classification_(\w+)_accuracy$",
        ("image-text-classification", "Visual entailment", "accuracy", "Accuracy, {0} statements"),
    ),
    (r"bleu4$", ("image-to-text", "Image captioning", "bleu", "BLEU-4")),
    (r"rouge_l$", ("image-to-text", "Image captioning", "rouge", "ROUGE-L")),
    (r"cider$", ("image-to-text", "Image captioning", "cider", "CIDEr-D")),
]


def write_model_card(
    output_dir,
    results: dict,
    config,
    *,
    task: str | None = None,
    model_id: str | None = None,
    dataset_name: str = "SynthShapes",
    dataset_id: str = SYNTHSHAPES,
    dataset_description: str | None = None,
    eval_split: str = "test",
    training: dict | None = None,
    num_parameters: int | None = None,
    license: str = "apache-2.0",
    filename: str = "README.md",
) -> ModelCard:
    """Fills the vtfusion card template from a run and saves it as `output_dir/filename`.

    Args:
        output_dir: the run's folder (the checkpoint); the card is written into it.
        results (`dict`): metric name -> value, as the training entry point returns them; `test_*` names win over
            unprefixed ones, and names that are no task metric (losses, runtimes) are left out.
        config (`VTFusionConfig`): the checkpoint's config (encoders, fusion, heads, labels).
        task (`str`, *optional*): the training task (`multitask`, `pretrain`, `retrieval`, ...); by default read
            from `config.architectures`.
        model_id (`str`, *optional*): the Hub repository, for the usage examples (default: the folder's name).
        dataset_name / dataset_id / dataset_description: the training data (SynthShapes by default).
        eval_split (`str`): the split the results were computed on.
        training (`dict`, *optional*): hyperparameters to list (steps, batch size, learning rate, ...).
        num_parameters (`int`, *optional*): the model's size.

    Returns:
        The `huggingface_hub.ModelCard` written.
    """
    task = task or infer_task(config)
    model_id = model_id or Path(output_dir).resolve().name
    metrics = metric_results(results)
    synthetic = dataset_id == SYNTHSHAPES
    eval_results = [
        EvalResult(
            task_type=m["task_type"],
            task_name=m["task_name"],
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split=eval_split,
            metric_type=m["metric_type"],
            metric_name=m["metric_name"],
            metric_value=m["metric_value"],
        )
        for m in metrics
    ]
    card_data = ModelCardData(
        model_name=model_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag=TASK_PIPELINE_TAGS.get(task),
        license=license,
        tags=card_tags(config, task),
        datasets=[dataset_id],
        metrics=sorted({m["metric_type"] for m in metrics}),
        eval_results=eval_results or None,
    )
    strategy = FUSION_STRATEGIES[config.fusion_type]
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_id.split("/")[-1],
        model_id=model_id,
        task_summary=TASK_SUMMARIES.get(task),
        vision=encoder_summary(config.vision_config, "image"),
        text=encoder_summary(config.text_config, "text"),
        projection_dim=config.projection_dim,
        fusion_type=config.fusion_type,
        fusion_description=f"{strategy.description}; {layers(config.num_fusion_layers)}, width "
        f"{config.fusion_hidden_size}" + (f", {config.fusion_pooling} pooling" if strategy.token_interaction else ""),
        decoder_description=f"{layers(config.decoder_num_hidden_layers)} of width {config.decoder_hidden_size}, causal, "
        "cross-attending to the image tokens (captioning) or to the fused image-question tokens (VQA)",
        num_parameters=f"{num_parameters / 1e6:.2f}M" if num_parameters else "not recorded",
        dataset_name=dataset_name,
        dataset_description=dataset_description or default_dataset_description(dataset_name, synthetic),
        synthetic=synthetic,
        eval_split=eval_split,
        metrics=metrics,
        training=training,
        has_cross_attention=strategy.token_interaction,
        attention_check=attention_summary(results),
        attention_maps=sorted(path.name for path in Path(output_dir, "attention").glob("*.png")),
    )
    card.save(Path(output_dir) / filename)
    return card


def without_test_prefix(results: dict) -> dict:
    """`results` with `test_` stripped from names; a `test_` value wins over an unprefixed one of the same name."""
    values = {name: value for name, value in results.items() if not name.startswith("test_")}
    return values | {name.removeprefix("test_"): value for name, value in results.items() if name.startswith("test_")}


def attention_summary(results: dict) -> dict[str, str] | None:
    """The main job's attention check as percentages per word kind ("color" -> "61% (chance 11%)"), if it ran."""
    values = without_test_prefix(results)
    summary = {}
    for kind in ("color", "shape"):
        hit, chance = values.get(f"attention_{kind}_hit_rate"), values.get(f"attention_{kind}_chance_rate")
        if hit is not None and chance is not None:
            summary[kind] = f"{hit:.0%} (chance {chance:.0%})"
    return summary or None


def infer_task(config) -> str:
    """`multitask` for a checkpoint that holds every head; otherwise the task of the head that saved it."""
    architectures = getattr(config, "architectures", None) or []
    if len(architectures) > 1:
        return "multitask"
    if architectures == ["VTFusionForConditionalGeneration"]:
        return "captioning"
    return HEAD_TASKS.get(architectures[0] if architectures else "", "pretrain")


def metric_results(results: dict) -> list[dict]:
    """The task metrics among `results`, in the order of `METRIC_PATTERNS` (then by K), each described for the card."""
    values = without_test_prefix(results)
    described = []
    for pattern, (task_type, task_name, metric_type, metric_name) in METRIC_PATTERNS:
        matches = [re.match(pattern, name) for name, value in values.items() if isinstance(value, (int, float))]
        for match in sorted(filter(None, matches), key=lambda m: [int(g) if g.isdigit() else g for g in m.groups()]):
            described.append(
                {
                    "name": match.string,
                    "task_type": task_type,
                    "task_name": task_name,
                    "metric_type": metric_type,
                    "metric_name": metric_name.format(*match.groups()),
                    "metric_value": float(values[match.string]),
                }
            )
    return described


def card_tags(config, task: str) -> list[str]:
    tags = ["vtfusion", "vision-text", "multimodal", f"fusion-{config.fusion_type.replace('_', '-')}", "custom_code"]
    by_task = {
        "multitask": ["image-text-retrieval", "image-captioning", "visual-question-answering", "visual-entailment"],
        "pretrain": ["image-text-retrieval", "image-captioning"],
        "retrieval": ["image-text-retrieval"],
        "classification": ["image-text-classification"],
        "captioning": ["image-captioning"],
        "vqa": ["visual-question-answering"],
    }
    return tags + by_task.get(task, [])


def encoder_summary(encoder_config, modality: str) -> dict:
    """`kind` (e.g. "ViT") and a one-line description: source, depth, width and the modality's input size."""
    kind = {
        "vit": "ViT",
        "bert": "BERT",
        "clip_vision_model": "CLIP ViT",
        "deit": "DeiT",
        "convnext": "ConvNeXt",
        "resnet": "ResNet",
    }
    name = kind.get(encoder_config.model_type, encoder_config.model_type)
    source = getattr(encoder_config, "_name_or_path", "") or ""
    origin = f"initialised from `{source}`" if source else "trained from scratch"
    depth = getattr(encoder_config, "num_hidden_layers", None)
    width = getattr(encoder_config, "hidden_size", None)
    stages = getattr(encoder_config, "hidden_sizes", None)
    if depth and width:
        shape = f"{layers(depth)}, width {width}"
    elif stages:  # a CNN: its stages' widths
        shape = f"{len(stages)} stages of widths {'/'.join(map(str, stages))}, feature-map cells as tokens"
    else:
        shape = "see config.json"
    if modality == "image" and hasattr(encoder_config, "patch_size"):
        shape += f", {encoder_config.image_size}px images in {encoder_config.patch_size}px patches"
    if modality == "text":
        shape += f", {encoder_config.vocab_size} word pieces"
    return {"kind": name, "description": f"{name} ({shape}), {origin}"}


def layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def count_parameters(folder: Path) -> int | None:
    """Parameters stored in a folder's safetensors files, read from their headers (no tensor is loaded)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                total += math.prod(weights.get_slice(name).get_shape())
    return total


def default_dataset_description(dataset_name: str, synthetic: bool) -> str:
    if not synthetic:
        return f"{dataset_name}."
    return (
        "SynthShapes, the data set vtfusion generates from a seed: 64x64 scenes of one to four coloured circles, "
        "squares and triangles on a noisy background, each with paraphrased captions, VQA pairs (colour, shape, "
        "count, existence, spatial relation) and a true-or-false statement (half of them relational, so that only "
        "real fusion solves them). Splits are disjoint ranges of scene ids."
    )


def training_summary(state: dict) -> dict:
    """Hyperparameters worth listing, from a `trainer_state.json`."""
    names = {
        "global_step": "Optimizer steps",
        "num_train_epochs": "Epochs",
        "train_batch_size": "Batch size per device",
    }
    summary = {label: state[key] for key, label in names.items() if state.get(key) is not None}
    learning_rates = [entry["learning_rate"] for entry in state.get("log_history", []) if "learning_rate" in entry]
    if learning_rates:
        summary["Peak learning rate"] = f"{max(learning_rates):.2e}"
    return summary


def main(argv: list[str] | None = None) -> ModelCard:
    from modeling_vtfusion import VTFusionConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="A training run's output folder (config.json, all_results.json).")
    parser.add_argument("--model_id", help="Hub repository id for the usage examples (default: the folder name).")
    parser.add_argument("--task", help="Training task (default: read from config.architectures).")
    parser.add_argument("--output", help="Write the card here instead of OUTPUT_DIR/README.md.")
    args = parser.parse_args(argv)
    folder = Path(args.output_dir)
    config = VTFusionConfig.from_pretrained(folder)
    results = read_json(folder / "all_results.json") | read_json(folder / "results.json")  # + the main job's
    state = read_json(folder / "trainer_state.json")
    output = Path(args.output) if args.output else folder / "README.md"
    if output.parent.resolve() != folder.resolve():  # the heat maps the card links travel with it
        for png in (folder / "attention").glob("*.png"):
            (output.parent / "attention").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, output.parent / "attention" / png.name)
    return write_model_card(
        output.parent,
        results,
        config,
        task=args.task,
        model_id=args.model_id or folder.resolve().name,
        training=training_summary(state),
        num_parameters=count_parameters(folder),
        filename=output.name,
    )


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    main()
