"""Cross-attention check of a trained SynthShapes checkpoint: heat maps of a few scenes as PNGs, and how often a
colour or shape word's attention peaks on the shape it names, against chance.

    python -m training.attention_check outputs/multitask --png_dir outputs/multitask/attention

The scenes are fresh ones (a seed the training data did not use). For each object the text is its definite name,
"the red circle"; the colour word's map and the shape word's map are each checked against the object's box.
"""

import argparse
import json
from pathlib import Path

from modeling_vtfusion import VTFusionModel, VTFusionProcessor
from modeling_vtfusion.interpretability import attention_peak_hit_rate, save_attention_maps
from training.synthshapes import SIZES, generate_scenes


WORDS = ("color", "shape")


def synthshapes_examples(scenes: list[dict], words=WORDS) -> list[dict]:
    """One example per object of each scene and per word kind: image, text "the {color} {shape}", the word, its kind
    and the object's bounding box in the image's pixels."""
    examples = []
    for scene in scenes:
        for obj in scene["objects"]:
            radius = SIZES[obj["size"]]
            box = (obj["x"] - radius, obj["y"] - radius, obj["x"] + radius, obj["y"] + radius)
            for kind in words:
                text = f"the {obj['color']} {obj['shape']}"
                examples.append({"image": scene["image"], "text": text, "word": obj[kind], "kind": kind, "box": box})
    return examples


def check_attention(model_dir, num_scenes: int = 200, seed: int = 12345, png_dir=None, num_pngs: int = 4) -> dict:
    """Hit and chance rates per word kind over `num_scenes` fresh scenes; PNGs of the first `num_pngs` in `png_dir`."""
    model = VTFusionModel.from_pretrained(model_dir).eval()
    processor = VTFusionProcessor.from_pretrained(model_dir)
    scenes = generate_scenes(num_scenes, seed=seed)
    examples = synthshapes_examples(scenes)
    results = {}
    for kind in WORDS:
        rates = attention_peak_hit_rate(model, processor, [e for e in examples if e["kind"] == kind])
        results |= {f"{kind}_{name}": value for name, value in rates.items()}
    if png_dir is not None:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
        for scene in scenes[:num_pngs]:
            obj = scene["objects"][0]
            text = f"the {obj['color']} {obj['shape']}"
            path = Path(png_dir) / f"scene_{scene['scene_id']}_{obj['color']}_{obj['shape']}.png"
            save_attention_maps(model, processor, scene["image"], text, path, words=[obj["color"], obj["shape"]])
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="A vtfusion checkpoint trained on SynthShapes (attention fusion type).")
    parser.add_argument("--num_scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=12345, help="Scene seed; pick one the training data did not use.")
    parser.add_argument("--png_dir", help="Write heat maps of a few scenes here.")
    parser.add_argument("--num_pngs", type=int, default=4)
    args = parser.parse_args(argv)
    results = check_attention(args.model_dir, args.num_scenes, args.seed, args.png_dir, args.num_pngs)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
