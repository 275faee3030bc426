"""Every vtfusion pipeline run on one checkpoint folder, with JSON-able results.

The same function runs in the test process (the package importable) and as a script in a fresh interpreter that
blocks the package (`python pipeline_runs.py FOLDER IMAGE_DIR OUT_JSON`), where only the checkpoint's own code can
serve. Imports nothing from the package, training/ or the other test files.
"""

import json
import sys
from pathlib import Path

from PIL import Image


COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 80, 230)}
CAPTIONS = {"red": "a red circle", "green": "a green star", "blue": "a blue square"}
QUESTION = "what colour is the shape"
CLASS_NAMES = {0: "false", 1: "true"}


def colour_image(colour: str, size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), COLOURS[colour])


def write_colour_images(image_dir) -> dict[str, str]:
    """One PNG per colour; returns their paths (pipelines accept paths as well as PIL images)."""
    Path(image_dir).mkdir(parents=True, exist_ok=True)
    paths = {colour: str(Path(image_dir) / f"{colour}.png") for colour in COLOURS}
    for colour, path in paths.items():
        colour_image(colour, size=40).save(path)
    return paths


def decoder_prefix(generator, prefix: str = "a blue"):
    """[1, T] decoder ids: the decoder's start token, then `prefix`: the start of a caption the model continues."""
    import torch

    tokenizer = generator.processor.tokenizer
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    return torch.tensor([[generator.model.config.decoder_start_token_id, *ids]])


def run_pipelines(folder: str, image_dir: str, trust_remote_code: bool | None = None) -> dict:
    """Runs zero-shot classification, image feature extraction, captioning / VQA, image-text classification and
    image-text retrieval on `folder`. Built-in tasks get `trust_remote_code`; the custom ones always need it."""
    from transformers import pipeline

    paths = write_colour_images(image_dir)
    colours = list(COLOURS)
    images = [colour_image(colour) for colour in colours]
    pipes = {
        task: pipeline(task, model=folder, trust_remote_code=trust_remote_code)
        for task in ("zero-shot-image-classification", "image-feature-extraction", "image-text-to-text")
    }
    for task in ("image-text-classification", "image-text-retrieval"):
        pipes[task] = pipeline(task, model=folder, trust_remote_code=True)

    zero_shot, features, generate = (
        pipes["zero-shot-image-classification"],
        pipes["image-feature-extraction"],
        pipes["image-text-to-text"],
    )
    classify, retrieve = pipes["image-text-classification"], pipes["image-text-retrieval"]
    captions = list(CAPTIONS.values())
    wrong_captions = [CAPTIONS[colours[(i + 1) % len(colours)]] for i in range(len(colours))]
    return {
        "pipeline_classes": {task: f"{type(p).__module__}.{type(p).__name__}" for task, p in pipes.items()},
        "model_classes": {task: f"{type(p.model).__module__}.{type(p.model).__name__}" for task, p in pipes.items()},
        # the bare captions the model was trained on: the default "This is a photo of {}." adds five words outside its
        # 17-word vocabulary, whose untrained [UNK] embedding outweighs the colour word in the mean-pooled text
        "zero_shot": {c: zero_shot(paths[c], candidate_labels=captions, hypothesis_template="{}") for c in colours},
        "features": {c: features(image) for c, image in zip(colours, images)},
        "captions": generate(images, text=[""] * len(images), return_full_text=False),
        "answers": generate(images, text=[QUESTION] * len(images), return_full_text=False),
        "one_token_answers": generate(images, text=[QUESTION] * len(images), max_new_tokens=1, return_full_text=False),
        "full_text": generate(images[0], text=QUESTION),
        "mixed": generate(images, text=["", QUESTION, ""], return_full_text=False),
        "prefixed_caption": generate(
            images[0], text="", generate_kwargs={"decoder_input_ids": decoder_prefix(generate)}
        ),
        "true_statements": classify(images, text=captions),
        "false_statements": classify(images, text=wrong_captions),
        "true_statements_batch_of_3": classify(images, text=captions, batch_size=3),
        "top_1_statement": classify({"image": images[0], "text": captions[0]}, top_k=1),
        "images_for_text": retrieve([paths[c] for c in colours], text=CAPTIONS["blue"]),
        "texts_for_image": retrieve(images[1], text=captions),
        "shortlist_of_two": retrieve([paths[c] for c in colours], text=CAPTIONS["blue"], num_candidates=2),
    }


if __name__ == "__main__":
    sys.modules["modeling_vtfusion"] = None  # the package is unreachable: `import modeling_vtfusion` raises
    sys.modules["training"] = None
    folder, image_dir, out = sys.argv[1:4]
    Path(out).write_text(json.dumps(run_pipelines(folder, image_dir, trust_remote_code=True)))
