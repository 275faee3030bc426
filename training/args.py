"""Command-line arguments of the training entry point: what to build (`ModelArguments`), what to read (`DataArguments`)
and how to evaluate (`EvaluationArguments`); `transformers.TrainingArguments` covers the rest (batch size, steps,
checkpoints, logging, `push_to_hub`, ...)."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from modeling_vtfusion import FUSION_TYPES
from training.tasks import TASKS


def default_synthshapes_dir(num_scenes: int, seed: int) -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return str(cache / "vtfusion" / f"synthshapes-{num_scenes}-seed{seed}")


@dataclass
class ModelArguments:
    task: str = field(metadata={"help": f"What to train: one of {', '.join(TASKS)}."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A vtfusion checkpoint (folder or Hub id) to continue from, e.g. a pretrain run."},
    )
    vision_model_name_or_path: str | None = field(
        default=None, metadata={"help": "A pretrained vision encoder (with --text_model_name_or_path)."}
    )
    text_model_name_or_path: str | None = field(
        default=None, metadata={"help": "A pretrained text encoder (with --vision_model_name_or_path)."}
    )
    fusion_type: str | None = field(
        default=None,
        metadata={"help": f"One of {', '.join(FUSION_TYPES)} (from scratch, default: cross_attention)."},
    )
    # Size of a model trained from scratch (no --model_name_or_path, no pretrained encoders).
    vision_model_type: str = field(
        default="vit", metadata={"help": "Vision encoder from scratch: vit, or resnet (stages up to --hidden_size)."}
    )
    resnet_stages: int = field(
        default=3,
        metadata={
            "help": "ResNet stages (from scratch): the feature map is 1/4 of the image after the stem and halves at "
            "every stage after the first, so 3 stages give 4x4 tokens at 64px and 4 give 3x3 at 96px."
        },
    )
    image_size: int = field(default=64, metadata={"help": "Image side in pixels (from scratch)."})
    patch_size: int = field(default=8, metadata={"help": "ViT patch side in pixels (from scratch)."})
    hidden_size: int = field(default=192, metadata={"help": "Width of both encoders (from scratch)."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Depth of each encoder (from scratch)."})
    num_attention_heads: int = field(default=3, metadata={"help": "Attention heads of each encoder (from scratch)."})
    mlp_ratio: int = field(
        default=4,
        metadata={
            "help": "Feed-forward width of the transformers from scratch, in multiples of --hidden_size (BERT: 4)."
        },
    )
    num_fusion_layers: int = field(default=2, metadata={"help": "Depth of the fusion module."})
    fusion_pooling: str = field(
        default="max",
        metadata={
            "help": "How a new model pools fused tokens for its ITM / classification heads: max (learns matching "
            "sooner) or mean (VTFusionConfig's default). A checkpoint keeps its own."
        },
    )
    decoder_num_hidden_layers: int = field(default=2, metadata={"help": "Depth of the text decoder."})
    projection_dim: int = field(default=128, metadata={"help": "Size of the shared image-text embedding space."})
    tokenizer_vocab_size: int = field(
        default=1000, metadata={"help": "Largest WordPiece vocabulary trained on the training texts (from scratch)."}
    )
    multitask_itm: bool = field(
        default=True,
        metadata={
            "help": "Multitask: also train ITM on the captions (false: skip it, ~40% of a step, and keep the "
            "pre-trained ITM head; the saved config is unchanged)."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "VTFusionConfig fields to set, e.g. 'hidden_dropout_prob=0.1,itm_loss_weight=0.5'."},
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub data set name or a local folder (imagefolder, ...); default: SynthShapes."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The data set's configuration name."})
    synthshapes_dir: str | None = field(
        default=None, metadata={"help": "Where SynthShapes is generated once (default: a folder under ~/.cache)."}
    )
    synthshapes_num_scenes: int = field(default=20_000, metadata={"help": "SynthShapes size (all splits)."})
    synthshapes_seed: int = field(default=0, metadata={"help": "SynthShapes seed."})
    image_column: str = field(default="image", metadata={"help": "Column of the images."})
    text_column: str | None = field(
        default=None,
        metadata={"help": "Column of the texts (caption, statement or question; a list column gives several)."},
    )
    label_column: str = field(default="label", metadata={"help": "Column of the class labels (classification)."})
    answer_column: str = field(default="answers", metadata={"help": "Column of the answers (vqa)."})
    references_column: str = field(
        default="captions", metadata={"help": "Column of the reference captions (captioning evaluation)."}
    )
    canonical_column: str | None = field(
        default="canonical",
        metadata={"help": "Retrieval: a hit also counts when this column matches (skipped when absent)."},
    )
    subset_column: str | None = field(
        default="relational",
        metadata={"help": "Classification: also report accuracy where this boolean column is true (if present)."},
    )
    question_type_column: str | None = field(
        default="question_types", metadata={"help": "VQA: report accuracy per question type (if present)."}
    )
    statement_column: str = field(default="statement", metadata={"help": "Multitask: entailment statements."})
    train_statement_column: str | None = field(
        default=None,
        metadata={
            "help": "Multitask training: statements to train on (a list column gives several per image; SynthShapes: "
            "'statements'); default: --statement_column. Evaluation always reads --statement_column."
        },
    )
    train_label_column: str | None = field(
        default=None,
        metadata={"help": "Multitask training: labels of --train_statement_column (default: --label_column)."},
    )
    mlm_probability: float = field(
        default=0.15,
        metadata={"help": "pretrain / multitask: share of caption words masked for the MLM objective (0: no MLM)."},
    )
    max_statements_per_image: int = field(
        default=4, metadata={"help": "Multitask: statements trained per image and step (from a list column)."}
    )
    question_column: str = field(default="questions", metadata={"help": "Multitask: VQA questions."})
    max_questions_per_image: int = field(
        default=2, metadata={"help": "Multitask: question/answer pairs trained per image and step."}
    )
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names (classification); default: the label feature's, or 0..N-1."}
    )
    skip_unreadable_images: bool | None = field(
        default=None,
        metadata={
            "help": "Drop rows whose image is missing or corrupt (default: for --dataset_name, not SynthShapes)."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split for the evaluation loss (--do_eval)."})
    test_split: str = field(default="test", metadata={"help": "Split for the task metrics (--do_predict)."})
    streaming: bool = field(default=False, metadata={"help": "Stream the data set (needs --max_steps)."})
    shuffle_buffer_size: int = field(default=10_000, metadata={"help": "Shuffle buffer when streaming."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation split."})
    class_weighting: str = field(
        default="none",
        metadata={
            "help": "Classification: weigh the loss of each class by its training frequency: none, inverse_frequency "
            "or effective_number (training/balance.py); saved in the checkpoint's config (class_weights)."
        },
    )
    balanced_sampling: bool = field(
        default=False,
        metadata={
            "help": "Classification: draw training rows so that every class is equally likely (with replacement)."
        },
    )
    image_augmentation: bool = field(
        default=False,
        metadata={
            "help": "Augment training images (random resized crop, flip with left/right swapped in the texts, colour "
            "jitter without hue; training/augmentation.py). Evaluation never augments."
        },
    )
    augmentation_flip_probability: float = field(
        default=0.5,
        metadata={"help": "--image_augmentation: chance of a flip; 0 for images whose mirror means something else."},
    )
    max_length: int = field(default=64, metadata={"help": "Longest text in tokens (longer ones are truncated)."})
    max_target_length: int = field(default=48, metadata={"help": "Longest generation target in tokens."})


@dataclass
class EvaluationArguments:
    max_test_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many test rows."})
    retrieval_gallery_size: int = field(default=1000, metadata={"help": "Images in the retrieval gallery."})
    generation_max_new_tokens: int = field(default=48, metadata={"help": "Longest generated caption or answer."})
    generation_num_beams: int = field(default=1, metadata={"help": "Beam search width of generation."})
    test_batch_size: int = field(default=256, metadata={"help": "Batch size of the test-split evaluation."})
