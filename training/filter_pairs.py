"""Noisy pairs: score every image-text pair of a data set with a trained model's ITM head and keep the likely matches,
as BLIP's CapFilt filters web captions before pre-training again.

    python -m training.filter_pairs --model_name_or_path outputs/vtfusion-synthshapes \\
        --dataset_name my_pairs --text_column caption --output_dir my_pairs_filtered --threshold 0.5

Each split is written as `<output_dir>/<split>.parquet` with an `itm_score` column (the model's probability that
the text describes the image); rows below `--threshold` are left out of the training split only (evaluation splits
keep every row, scored). `training.train --dataset_name <output_dir>` then trains on the filtered pairs. The counts
kept and dropped are printed and saved in `<output_dir>/filter_results.json`.

Why a filter before training rather than a loss that down-weights outliers as it trains: the ITM score of a
separately trained model is a judgement of the pair, while a pair's ITC similarity early in training is mostly
noise of a model that has not learned yet; the data study measures how well the filter finds corrupted captions
(`noisy_pairs` in `make data-study`).
"""

import argparse
import contextlib
import json
from pathlib import Path

import torch

from modeling_vtfusion import VTFusionForImageTextRetrieval, VTFusionProcessor
from training.args import DataArguments
from training.data import load_raw_datasets


def itm_scores(model, processor, images: list, texts: list[str], batch_size: int = 128) -> list[float]:
    """P(match) of each (image, text) pair from the ITM head, `batch_size` pairs at a time."""
    scores = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = slice(start, start + batch_size)
            inputs = processor(images=list(images[rows]), text=texts[rows], return_tensors="pt")
            inputs.pop("token_type_ids", None)
            logits = model(**inputs.to(model.device), return_loss=False).itm_logits
            scores += logits.softmax(-1)[:, 1].tolist()
    return scores


def first_text(value) -> str:
    return value if isinstance(value, str) else value[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="A vtfusion checkpoint with a trained ITM head.")
    parser.add_argument("--dataset_name", default=None, help="As training.train's (default: SynthShapes).")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--text_column", default="caption")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--threshold", type=float, default=0.5, help="Keep training pairs with P(match) >= this.")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--batch_size", type=int, default=128)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model = VTFusionForImageTextRetrieval.from_pretrained(args.model_name_or_path)
    processor = VTFusionProcessor.from_pretrained(args.model_name_or_path)
    data_args = DataArguments(dataset_name=args.dataset_name, image_column=args.image_column)
    raw = load_raw_datasets(data_args, main_process_first=lambda desc: contextlib.nullcontext())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for split, dataset in raw.items():
        scores = []
        for batch in dataset.select_columns([args.image_column, args.text_column]).iter(args.batch_size):
            texts = [first_text(value) for value in batch[args.text_column]]  # images decoded a batch at a time
            scores += itm_scores(model, processor, batch[args.image_column], texts, args.batch_size)
        scored = dataset.add_column("itm_score", scores)
        if split == args.train_split:
            scored = scored.filter(lambda score: score >= args.threshold, input_columns=["itm_score"])
        scored.to_parquet(str(output_dir / f"{split}.parquet"))
        results[split] = {"rows": len(dataset), "kept": len(scored), "dropped": len(dataset) - len(scored)}
        print(f"{split}: kept {len(scored)} of {len(dataset)} rows")
    (output_dir / "filter_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
