"""Run under `accelerate launch` (or alone): `training.evaluation.generate_texts` over the rows of `rows()` with the
model and processor in folder argv[1]; the main process writes the texts, as JSON, to argv[2]."""

import json
import sys

import numpy as np
from PIL import Image

from modeling_vtfusion import VTFusionForConditionalGeneration, VTFusionProcessor
from training.evaluation import generate_texts


def rows() -> list[dict]:
    """7 different random images, every other one with a question: an odd count, so the processes' last batches are
    evened out with repeated rows."""
    generator = np.random.default_rng(0)
    images = [Image.fromarray(generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(7)]
    return [
        {"image": image, "question": "where is the red square" if i % 2 else None} for i, image in enumerate(images)
    ]


if __name__ == "__main__":
    folder, out = sys.argv[1:3]
    model, processor = (
        VTFusionForConditionalGeneration.from_pretrained(folder),
        VTFusionProcessor.from_pretrained(folder),
    )
    texts = generate_texts(model, processor, rows(), max_new_tokens=5, batch_size=2)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        with open(out, "w") as file:
            json.dump(texts, file)
