"""The fusion study (`make study`): every `fusion_type` trained with the same recipe and budget on SynthShapes.

    python -m training.fusion_study --output_dir outputs/fusion-study

Each fusion type runs the main job's recipe (`training.main_job`: pre-training, then multitask fine-tuning) with the
same data, steps, sizes and seed, in `<output_dir>/<fusion_type>/`. The study writes `results.json`, a markdown
table `results.md` and a bar chart `fusion_study.png` of entailment accuracy (overall and on the relational
statements, which only a model that relates the words to positions in the image can get right), VQA accuracy and
retrieval R@1 per fusion type. A fusion type whose folder already holds a `results.json` (a finished run) is not
trained again unless `--overwrite` is given, so a study that was stopped goes on where it stopped, and more fusion
types can be added to it later.
"""

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure  # the object API renders with Agg: no display, no pyplot state

from modeling_vtfusion import FUSION_TYPES
from training import main_job


COLUMNS = {
    "entailment_accuracy": "entailment acc.",
    "entailment_relational_accuracy": "relational entailment acc.",
    "vqa_accuracy": "VQA acc.",
    "retrieval_t2i_r1": "retrieval R@1 (text->image)",
    "retrieval_i2t_r1": "retrieval R@1 (image->text)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/fusion-study")
    parser.add_argument("--fusion_types", nargs="+", default=list(FUSION_TYPES), choices=FUSION_TYPES)
    parser.add_argument("--pretrain_steps", type=int, default=main_job.PRETRAIN_STEPS)
    parser.add_argument("--finetune_steps", type=int, default=main_job.FINETUNE_STEPS)
    parser.add_argument("--overwrite", action="store_true", help="Train again fusion types that have results.")
    parser.add_argument("--job_args", nargs=argparse.REMAINDER, default=[], help="More `training.main_job` arguments.")
    return parser.parse_args(argv)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    header = "| fusion_type | " + " | ".join(COLUMNS.values()) + " | wall time (s) |"
    lines = [header, "| --- |" + " ---: |" * (len(COLUMNS) + 1)]
    for fusion_type, metrics in results.items():
        values = " | ".join(f"{metrics[name]:.3f}" for name in COLUMNS)
        lines.append(f"| {fusion_type} | {values} | {metrics['wall_time_s']:.0f} |")
    return "\n".join(lines)


def bar_chart(results: dict[str, dict[str, float]], path: Path) -> None:
    """Grouped bars: one group per fusion type, one bar per metric."""
    fusion_types, width = list(results), 0.8 / len(COLUMNS)
    figure = Figure(figsize=(2 + 1.6 * len(fusion_types), 5))
    axes = figure.subplots()
    for i, (name, label) in enumerate(COLUMNS.items()):
        positions = [x + (i - (len(COLUMNS) - 1) / 2) * width for x in range(len(fusion_types))]
        axes.bar(positions, [results[f][name] for f in fusion_types], width, label=label)
    axes.set_xticks(range(len(fusion_types)), fusion_types)
    axes.set_ylim(0, 1)
    axes.set_ylabel("test split")
    axes.set_title("vtfusion on SynthShapes: fusion types at the same training budget")
    axes.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")  # chance level of entailment
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=3, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    results = {}
    for fusion_type in args.fusion_types:
        finished = output_dir / fusion_type / "results.json"
        if finished.exists() and not args.overwrite:
            print(f"{fusion_type}: reusing the finished run in {finished.parent} (--overwrite trains it again)")
            results[fusion_type] = json.loads(finished.read_text())
            continue
        results[fusion_type] = main_job.main(
            [
                f"--output_dir={output_dir / fusion_type}",
                f"--fusion_type={fusion_type}",
                f"--pretrain_steps={args.pretrain_steps}",
                f"--finetune_steps={args.finetune_steps}",
                *args.job_args,
            ]
        )
    table = markdown_table(results)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "results.md").write_text(table + "\n")
    bar_chart(results, output_dir / "fusion_study.png")
    print(f"\n{table}\n\nTable, chart and per-run folders in {output_dir}")
    return results


if __name__ == "__main__":
    main()
