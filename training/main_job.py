"""The main job (`make demo`): SynthShapes -> tokenizer -> pre-training -> multitask fine-tuning -> test metrics.

    python -m training.main_job --output_dir outputs/vtfusion-synthshapes

1. generates SynthShapes once into a cache folder (20k scenes: 16k train, 2k validation, 2k test);
2. pre-trains a from-scratch model (ResNet + BERT towers, cross-attention fusion, WordPiece tokenizer trained on the
   training texts) on image-caption pairs with ITC + ITM + captioning LM + MLM (`--task pretrain`). The vision tower is a
   small CNN because a ViT learns shapes and positions from scratch far too slowly for this budget (measured: after
   1000 multitask steps a ViT's captions were fluent but wrong about the scene, retrieval R@1 0.20 on 500 images;
   the ResNet reached R@1 0.97 in 600 steps). The transformers' feed-forward layers are 2x their width, not BERT's
   4x (at width 128 the 4x layers were half of the matmul time; a pre-training step took 0.80x the time). The
   64px scenes are resized to 96px and the ResNet has 4 stages, so its 3x3 feature map puts one token on each cell
   of the scene's 3x3 grid (with 4x4 tokens at 64px a centred shape straddles four tokens): after 100 steps from
   scratch ITC was 0.087 vs 0.32 and the caption LM 0.79 vs 0.99, for a CNN that stays a small part of a step;
3. fine-tunes the pre-trained base on all tasks at once (`--task multitask`: ITC and captioning LM go on, and VQA
   answers to 3 questions and entailment labels of all 3-5 statements of each image are added), so one base serves
   every head.
   The entailment classifier starts as the pre-trained ITM head (it leaves chance ~75 steps earlier), and both read
   the max of the fused tokens (`--fusion_pooling max`: ITM leaves its prior ~100 steps sooner than with the mean).
   ITM stays as pre-trained (`--multitask_itm false`): its three fused captions per image would cost ~40% of every
   multitask step. MLM, too, is pre-training only (`--mlm_probability 0` here): it costs ~20% of a multitask step, and
   at half the earlier compute the steps it frees bought VQA 0.945 against 0.847 (README, "Time to accuracy"). In
   pre-training it stays: without it in both stages relational entailment varied from 0.784 to 0.866;
4. evaluates on the first `--test_samples` test scenes: retrieval R@1/5/10 both ways over a 1k-image gallery,
   VQA accuracy, entailment accuracy (overall and relational), captioning BLEU-4 / ROUGE-L / CIDEr;
5. checks where the cross-attention of colour and shape words peaks on `--attention_scenes` unseen scenes (hit rate
   against chance, in `results.json`) and draws heat maps of a few of them into `<output_dir>/attention/`;
6. prints one markdown table, writes `results.json` and leaves in `--output_dir` a Hub-ready folder whose weights
   every head class loads (config with `auto_map`, code files, safetensors weights, processor, model card).
   `results.json` records the run's compute next to its metrics: `train_tflops` (model FLOPs of both training
   stages, measured by `VTFusionTrainer`), `train_time_s`, `wall_time_s` and `matmul_gflops` (the machine's fp32
   matmul speed measured at the start, as `make bench` measures it), so wall times compare across machines.

Both stages run `training.train.main`, the entry point users call; the pre-trained model stays in
`<output_dir>-pretrain`. The defaults cost 21.5 TFLOP (pre-training 7.5, multitask 14.0); wall times, with the
GFLOP/s they ran at, are in the README.
"""

import argparse
import json
import time
from pathlib import Path

from modeling_vtfusion.fusion import ATTENTION_MAP_FUSION_TYPES
from training import attention_check, model_card, train
from training.machine import matmul_gflops


# At batch 32 a pre-training step is 21.4 GFLOP and a multitask step (3 questions and 3-5 statements per image, no
# MLM) ~23.8 (forward + backward, measured): ~21.5 TFLOP in all, half the 43.5 of the earlier default (batch 64, 5
# questions, MLM in both stages, 350 + 450 steps), with every target met on 3 seeds (README, "Time to accuracy").
PRETRAIN_STEPS = 350
FINETUNE_STEPS = 590

# results.json names for the metrics whose task-generic names differ.
RENAMES = {
    "classification_accuracy": "entailment_accuracy",
    "classification_macro_f1": "entailment_macro_f1",
    "classification_relational_accuracy": "entailment_relational_accuracy",
}
HEADLINE = (
    "retrieval_t2i_r1",
    "retrieval_i2t_r1",
    "vqa_accuracy",
    "entailment_accuracy",
    "entailment_relational_accuracy",
    "bleu4",
    "cider",
    "rouge_l",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/vtfusion-synthshapes")
    parser.add_argument("--num_scenes", type=int, default=20_000, help="SynthShapes size (80/10/10 splits).")
    parser.add_argument("--synthshapes_dir", default=None, help="Default: a folder under ~/.cache/vtfusion.")
    parser.add_argument("--fusion_type", default="cross_attention")
    parser.add_argument("--pretrain_steps", type=int, default=PRETRAIN_STEPS)
    parser.add_argument("--finetune_steps", type=int, default=FINETUNE_STEPS)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    parser.add_argument("--mlp_ratio", type=int, default=2, help="Feed-forward width in multiples of hidden_size.")
    parser.add_argument("--vision_model_type", default="resnet", choices=["resnet", "vit"])
    parser.add_argument("--image_size", type=int, default=96, help="SynthShapes' 64px scenes are resized to this.")
    parser.add_argument("--resnet_stages", type=int, default=4, help="4 stages: 3x3 tokens at 96px, one per cell.")
    parser.add_argument("--test_samples", type=int, default=1000, help="Test scenes evaluated (retrieval gallery).")
    parser.add_argument(
        "--attention_scenes", type=int, default=200, help="Unseen scenes of the attention check (0: skip it)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More `training.train` arguments.")
    return parser.parse_args(argv)


def common_args(args: argparse.Namespace) -> list[str]:
    """`training.train` arguments shared by both stages."""
    values = {
        "synthshapes_num_scenes": args.num_scenes,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "warmup_steps": 20,
        # a cosine down to a tenth of the peak, not to zero: a seed whose VQA leaves its plateau late still learns in
        # the last steps (seed 2: VQA 0.909 against 0.856 with a cosine to zero, at the same compute)
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": json.dumps({"min_lr_rate": 0.1}),
        "weight_decay": 0.05,
        "logging_steps": 25,
        "save_strategy": "no",
        "seed": args.seed,
        "dataloader_pin_memory": False,
        "report_to": "none",
    }
    if args.synthshapes_dir:
        values["synthshapes_dir"] = args.synthshapes_dir
    return [item for name, value in values.items() for item in (f"--{name}", str(value))]


def pretrain_args(args: argparse.Namespace, output_dir: str) -> list[str]:
    return [
        "--task=pretrain",
        f"--output_dir={output_dir}",
        "--do_train",
        f"--max_steps={args.pretrain_steps}",
        f"--fusion_type={args.fusion_type}",
        f"--hidden_size={args.hidden_size}",
        f"--num_hidden_layers={args.num_hidden_layers}",
        f"--mlp_ratio={args.mlp_ratio}",
        "--num_attention_heads=2",
        f"--vision_model_type={args.vision_model_type}",
        f"--image_size={args.image_size}",
        f"--resnet_stages={args.resnet_stages}",
        *common_args(args),
        *args.extra,
    ]


def finetune_args(args: argparse.Namespace, pretrained: str) -> list[str]:
    return [
        "--task=multitask",
        f"--model_name_or_path={pretrained}",
        f"--output_dir={args.output_dir}",
        "--do_train",
        "--do_predict",
        f"--max_steps={args.finetune_steps}",
        f"--max_test_samples={args.test_samples}",
        "--max_questions_per_image=3",
        "--train_statement_column=statements",  # 3-5 statements per scene, relational ones in both orders
        "--train_label_column=statement_labels",
        "--max_statements_per_image=5",
        "--multitask_itm=false",  # ITM is trained in pre-training; in multitask it would cost ~40% of each step
        "--mlm_probability=0",  # MLM too: in multitask, with max pooling, it no longer pays for its cost
        "--class_names",
        "false",
        "true",
        *common_args(args),
        *args.extra,
    ]


def collect_results(metrics: dict[str, float], wall_time_s: float) -> dict[str, float]:
    """The test metrics under their results.json names, headline metrics first, then the wall time."""
    test = {RENAMES.get(name[5:], name[5:]): value for name, value in metrics.items() if name.startswith("test_")}
    ordered = {name: test[name] for name in HEADLINE if name in test}
    ordered |= {name: test[name] for name in sorted(test) if name not in ordered and not name.endswith("_runtime")}
    ordered |= {name: test[name] for name in sorted(test) if name.endswith("_runtime")}
    return ordered | {"wall_time_s": round(wall_time_s, 1)}


def markdown_table(results: dict[str, float]) -> str:
    """One row per metric; times (wall time, per-task evaluation time) in whole seconds, last."""
    is_time = [name.endswith(("_runtime", "_s")) for name in results]
    rows = [f"| {name} | {value:.4f} |" for (name, value), t in zip(results.items(), is_time) if not t]
    rows += [
        f"| {name.removesuffix('_s')} (s) | {value:.0f} |" for (name, value), t in zip(results.items(), is_time) if t
    ]
    return "\n".join(["| metric (test split) | value |", "| --- | ---: |", *rows])


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    gflops = matmul_gflops()  # the machine's speed, so this run's wall time compares with runs elsewhere
    start = time.time()
    pretrained = f"{args.output_dir.rstrip('/')}-pretrain"
    pretrain_metrics = train.main(pretrain_args(args, pretrained))
    metrics = train.main(finetune_args(args, pretrained))
    stages = (pretrain_metrics, metrics)
    compute = {  # the run's compute: measured model FLOPs and training time (both stages, no evaluation)
        "train_tflops": round(sum(stage["total_flos"] for stage in stages) / 1e12, 2),
        "train_time_s": round(sum(stage["train_runtime"] for stage in stages), 1),
    }
    if args.attention_scenes and args.fusion_type in ATTENTION_MAP_FUSION_TYPES:
        png_dir = Path(args.output_dir, "attention")
        attention = attention_check.check_attention(args.output_dir, args.attention_scenes, png_dir=png_dir)
        metrics |= {f"test_attention_{name}": value for name, value in attention.items()}
    results = collect_results(metrics, time.time() - start) | compute | {"matmul_gflops": round(gflops, 1)}
    Path(args.output_dir, "results.json").write_text(json.dumps(results, indent=2) + "\n")
    model_card.main([args.output_dir])  # README.md: the model card, with these metrics and a model-index
    print(f"\n{markdown_table(results)}\n\nHub-ready model in {args.output_dir}; metrics in results.json")
    return results


if __name__ == "__main__":
    main()
    train.end_processes()
