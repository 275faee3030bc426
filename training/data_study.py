"""The data study (`make data-study`): class imbalance and low-data remedies, measured over seeds.

    python -m training.data_study --output_dir outputs/data-study

Two data sets, both trained from scratch (a small ResNet + BERT pair; no run sees a label of another): scikit-learn's
bundled handwritten digits (UCI optdigits, 1,797 8x8 scans upscaled to 32px, with the constant text "a handwritten
digit" -> 0-9), which no one here wrote, and SynthShapes as a counting task (a 64px scene with "how many shapes are
there?" -> 1-4). Two experiments on each, every arm at the same number of steps, for `--seeds`:

- long tail: the training split keeps 10% of one class's rows (digits: the 3s; SynthShapes: scenes of 3 shapes);
  arms: plain loss, `--class_weighting inverse_frequency`, `--balanced_sampling`. Reported: the rare class's recall
  and macro F1 on the (untouched) test split.
- low data: 10% of the training rows; arms: without and with `--image_augmentation` (no flips on digits, whose
  mirror images are other glyphs). Reported: test accuracy.
- noisy pairs (SynthShapes): 20% of the test captions swapped for other scenes'; how many of them the ITM filter
  of `training.filter_pairs` drops, and how many of the pairs it drops were corrupted. The filter is the main job's
  pre-trained base (`--pretrained`, what `make demo` leaves in `outputs/vtfusion-synthshapes-pretrain`), whose ITM
  head was trained with its fusion layers: the main job's final model keeps that head while multitask fine-tuning
  moves the fusion layers (`--multitask_itm false`), and with it the filter dropped 1169 of 2000 pairs at precision
  0.36.

Finished runs (a `test_results.json`) are reused, so a stopped study goes on where it stopped. Writes
`results.json` (every run) and `results.md` (mean and min-max over seeds).
"""

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from training import train
from training.args import default_synthshapes_dir
from training.synthshapes import write_imagefolder


RARE_FRACTION = 0.1  # share of the rare class's training rows kept (long tail: that class 10x rarer)
LOW_DATA_FRACTION = 0.1  # share of the training rows kept (low data)
DIGITS_RARE_CLASS = 3
SYNTHSHAPES_RARE_CLASS = 2  # scenes of 3 shapes

CLASS_NAMES = {"digits": [str(digit) for digit in range(10)], "synthshapes": ["1", "2", "3", "4"]}
ARMS = {
    "long_tail": {
        "plain": [],
        "class_weighting": ["--class_weighting=inverse_frequency"],
        "balanced_sampling": ["--balanced_sampling"],
    },
    "low_data": {"plain": [], "augmentation": ["--image_augmentation"]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/data-study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["digits", "synthshapes"], choices=["digits", "synthshapes"])
    parser.add_argument("--pretrained", default="outputs/vtfusion-synthshapes-pretrain")
    parser.add_argument(
        "--model", default="outputs/vtfusion-synthshapes", help="Scores pairs in the noisy-pair check."
    )
    parser.add_argument("--num_scenes", type=int, default=20_000, help="SynthShapes size, as the main job's.")
    parser.add_argument("--synthshapes_steps", type=int, default=300)
    parser.add_argument("--digits_steps", type=int, default=300)
    return parser.parse_args(argv)


# -- data ------------------------------------------------------------------------------------------------------------


def write_rows(folder: Path, split: str, rows: list[dict]) -> None:
    (folder / split).mkdir(parents=True, exist_ok=True)
    with open(folder / split / "metadata.jsonl", "w") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)


def keep_fraction_of_class(rows: list[dict], label: int, fraction: float, seed: int = 0) -> list[dict]:
    """All rows of the other classes and every 1/fraction-th row (at random) of class `label`."""
    rng = np.random.default_rng(seed)
    return [row for row in rows if row["label"] != label or rng.random() < fraction]


def digits_folders(root: Path) -> dict[str, Path]:
    """scikit-learn's digits as image folders: `full` (60/10/30 split), `long_tail` and `low_data` (train changed)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    bounds = {
        "train": order[: int(0.6 * len(order))],
        "validation": order[int(0.6 * len(order)) : int(0.7 * len(order))],
    }
    bounds["test"] = order[int(0.7 * len(order)) :]
    full = root / "digits"
    rows = {}
    for split, indices in bounds.items():
        (full / split).mkdir(parents=True, exist_ok=True)
        rows[split] = []
        for i in indices:
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)  # 0..16 ink levels
            Image.fromarray(255 - pixels).resize((32, 32), Image.NEAREST).save(full / split / f"{i:04d}.png")
            rows[split].append(
                {"file_name": f"{i:04d}.png", "text": "a handwritten digit", "label": int(digits.target[i])}
            )
        write_rows(full, split, rows[split])
    return variants(full, rows, DIGITS_RARE_CLASS, images=full)


def synthshapes_folders(root: Path, num_scenes: int) -> dict[str, Path]:
    """SynthShapes as a counting task (image + "how many shapes are there?" -> 1-4), with the `long_tail` and
    `low_data` training splits; images linked, not copied."""
    source = write_imagefolder(default_synthshapes_dir(num_scenes, 0), num_scenes=num_scenes, seed=0)
    rows = {}
    for split in ("train", "validation", "test"):
        scenes = map(json.loads, (source / split / "metadata.jsonl").read_text().splitlines())
        question = "how many shapes are there?"
        rows[split] = [{"file_name": s["file_name"], "text": question, "label": s["num_shapes"] - 1} for s in scenes]
    return variants(root / "synthshapes", rows, SYNTHSHAPES_RARE_CLASS, images=source)


def link_split(folder: Path, split: str, rows: list[dict], images: Path) -> None:
    """`folder/split`: `rows` as its metadata.jsonl and links to their images in `images/split` (linked one by one:
    `datasets` does not follow a linked folder)."""
    (folder / split).mkdir(parents=True, exist_ok=True)
    for row in rows:
        link = folder / split / row["file_name"]
        if not link.exists():
            os.symlink((images / split / row["file_name"]).resolve(), link)
    write_rows(folder, split, rows)


def variants(base: Path, rows: dict[str, list[dict]], rare_class: int, images: Path) -> dict[str, Path]:
    """Image folders `<base>-long_tail` and `<base>-low_data`: the same validation and test rows, a changed training
    split."""
    train_rows = {
        "long_tail": keep_fraction_of_class(rows["train"], rare_class, RARE_FRACTION),
        "low_data": rows["train"][: int(LOW_DATA_FRACTION * len(rows["train"]))],
    }
    folders = {}
    for name, kept in train_rows.items():
        folders[name] = base.parent / f"{base.name}-{name}"
        for split, split_rows in {"train": kept, "validation": rows["validation"], "test": rows["test"]}.items():
            link_split(folders[name], split, split_rows, images)
    return folders


# -- runs ------------------------------------------------------------------------------------------------------------


def run_args(dataset: str, folder: Path, output_dir: Path, seed: int, args: argparse.Namespace) -> list[str]:
    common = [
        "--task=classification",
        f"--dataset_name={folder}",
        f"--output_dir={output_dir}",
        "--do_train",
        "--do_predict",
        f"--seed={seed}",
        "--per_device_train_batch_size=64",
        "--learning_rate=1e-3",
        "--warmup_steps=10",
        "--lr_scheduler_type=cosine",
        "--save_strategy=no",
        "--report_to=none",
        "--disable_tqdm=true",
        "--dataloader_pin_memory=false",
        "--log_level=warning",
    ]
    steps = args.digits_steps if dataset == "digits" else args.synthshapes_steps
    common += [f"--max_steps={steps}", "--text_column=text", "--class_names", *CLASS_NAMES[dataset]]
    if dataset == "digits":
        common.append("--augmentation_flip_probability=0")  # a mirrored digit is another glyph (or none)
    image_size, stages = (32, 2) if dataset == "digits" else (64, 3)
    return common + [
        "--vision_model_type=resnet",  # a ViT from scratch reached 0.40-0.56 on digits in 300 steps, a ResNet 0.97
        f"--resnet_stages={stages}",
        f"--image_size={image_size}",
        "--hidden_size=64",
        "--num_hidden_layers=1",
        "--num_attention_heads=2",
        "--num_fusion_layers=1",
        "--decoder_num_hidden_layers=1",
        "--projection_dim=32",
        "--tokenizer_vocab_size=100",
    ]


def run(dataset: str, folder: Path, output_dir: Path, seed: int, args: argparse.Namespace, flags: list[str]) -> dict:
    finished = output_dir / "test_results.json"
    if not finished.exists():
        train.main(run_args(dataset, folder, output_dir, seed, args) + flags)
    return json.loads(finished.read_text())


def noisy_pairs_check(model_dir: str, num_scenes: int, fraction: float = 0.2, threshold: float = 0.5) -> dict:
    """How well `filter_pairs` finds corrupted captions: `fraction` of SynthShapes' test captions are swapped for
    another scene's; precision and recall of the pairs the filter drops (ITM P(match) < `threshold`)."""
    from modeling_vtfusion import VTFusionForImageTextRetrieval, VTFusionProcessor
    from training.filter_pairs import itm_scores
    from training.synthshapes import load_synthshapes

    test = load_synthshapes(write_imagefolder(default_synthshapes_dir(num_scenes, 0), num_scenes, seed=0))["test"]
    captions = list(test["caption"])
    rng = np.random.default_rng(0)
    corrupted = rng.random(len(captions)) < fraction
    swapped = rng.permutation(np.flatnonzero(corrupted))
    for target, source in zip(np.flatnonzero(corrupted), np.roll(swapped, 1)):
        captions[target] = captions[source] if source != target else captions[(target + 1) % len(captions)]
    model = VTFusionForImageTextRetrieval.from_pretrained(model_dir)
    scores = np.array(itm_scores(model, VTFusionProcessor.from_pretrained(model_dir), test["image"], captions))
    dropped = scores < threshold
    hits = int((dropped & corrupted).sum())
    return {
        "pairs": len(captions),
        "corrupted": int(corrupted.sum()),
        "dropped": int(dropped.sum()),
        "precision": hits / max(1, int(dropped.sum())),
        "recall": hits / max(1, int(corrupted.sum())),
    }


def summary(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def markdown_tables(results: dict) -> str:
    lines = []
    for experiment, metrics in (
        ("long_tail", ["classification_recall_{rare}", "classification_macro_f1", "classification_accuracy"]),
        ("low_data", ["classification_accuracy", "classification_macro_f1"]),
    ):
        names = [metric.replace("classification_", "").replace("_{rare}", " of the rare class") for metric in metrics]
        lines += [f"\n{experiment}: mean (min-max) over seeds\n", "| data set | arm | " + " | ".join(names) + " |"]
        lines.append("| --- | --- |" + " ---: |" * len(metrics))
        for dataset, arms in results.get(experiment, {}).items():
            rare = CLASS_NAMES[dataset][DIGITS_RARE_CLASS if dataset == "digits" else SYNTHSHAPES_RARE_CLASS]
            for arm, runs in arms.items():
                cells = [summary([run[metric.format(rare=rare)] for run in runs.values()]) for metric in metrics]
                lines.append(f"| {dataset} | {arm} | " + " | ".join(cells) + " |")
    if "noisy_pairs" in results:
        check = results["noisy_pairs"]
        lines += [
            "\nnoisy pairs: the ITM filter (training/filter_pairs.py, threshold 0.5) on SynthShapes' test pairs with "
            f"{check['corrupted']} of {check['pairs']} captions swapped\n",
            "| pairs dropped | precision (dropped that were corrupted) | recall (corrupted that were dropped) |",
            "| ---: | ---: | ---: |",
            f"| {check['dropped']} | {check['precision']:.3f} | {check['recall']:.3f} |",
        ]
    return "\n".join(lines).strip()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root = Path(args.output_dir)
    if "synthshapes" in args.datasets and not (Path(args.pretrained) / "model.safetensors").exists():
        raise ValueError(
            f"--pretrained {args.pretrained} holds no model (the noisy-pair filter): run `make demo` first."
        )
    results = {}
    for dataset in args.datasets:
        folders = (
            digits_folders(root / "data")
            if dataset == "digits"
            else synthshapes_folders(root / "data", args.num_scenes)
        )
        for experiment, arms in ARMS.items():
            for arm, flags in arms.items():
                for seed in args.seeds:
                    output_dir = root / experiment / dataset / arm / f"seed{seed}"
                    metrics = run(dataset, folders[experiment], output_dir, seed, args, flags)
                    results.setdefault(experiment, {}).setdefault(dataset, {}).setdefault(arm, {})[seed] = metrics
    if "synthshapes" in args.datasets:
        results["noisy_pairs"] = noisy_pairs_check(args.pretrained, args.num_scenes)
    tables = markdown_tables(results)
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (root / "results.md").write_text(tables + "\n")
    print(f"\n{tables}\n\nPer-run folders in {root}")
    return results


if __name__ == "__main__":
    main()
