"""The training entry point for every vtfusion task, on `transformers.Trainer`.

    python -m training.train --task pretrain --output_dir outputs/pretrain --do_train --do_predict --max_steps 500
    python -m training.train --task vqa --model_name_or_path outputs/pretrain --output_dir outputs/vqa --do_train ...

Tasks and heads: `pretrain` (ITC + ITM + captioning LM, `VTFusionForPreTraining`), `retrieval` (ITC + ITM,
`VTFusionForImageTextRetrieval`), `classification` (e.g. entailment, `VTFusionForSequenceClassification`),
`captioning` and `vqa` (`VTFusionForConditionalGeneration`), `multitask` (all of them on one base,
`training.multitask.VTFusionForMultitask`).

The model comes from a vtfusion checkpoint (`--model_name_or_path`), from two pretrained encoders
(`--vision_model_name_or_path` + `--text_model_name_or_path`) or from scratch: a config sized by the command line
and a WordPiece tokenizer trained on the training texts. The data is SynthShapes (generated once) or any data set
`datasets.load_dataset` reads (`--dataset_name`, `--streaming`), preprocessed on the fly. `--do_predict` computes the
task metrics on the test split. The output folder is Hub-ready: safetensors weights, config with `auto_map`, code,
processor.

Scaling out needs no code change, only a launcher (configs in `training/configs/`):

    accelerate launch --config_file training/configs/cpu_2proc.yaml -m training.train ...      # 2 CPU processes
    accelerate launch --config_file training/configs/ddp_8gpu.yaml -m training.train ...       # 8 GPUs, DDP
    accelerate launch --config_file training/configs/fsdp_8gpu.yaml -m training.train ...      # 8 GPUs, FSDP2
    accelerate launch --config_file training/configs/deepspeed_zero2.yaml -m training.train ... # DeepSpeed ZeRO-2
    accelerate launch --config_file training/configs/ddp_multinode.yaml --machine_rank R -m training.train ...
"""

import ast
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import datasets
import torch
import transformers
from safetensors import safe_open
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    ViTImageProcessorPil,
    set_seed,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.utils import SAFE_WEIGHTS_NAME, cached_file

from modeling_vtfusion import (
    FUSION_TYPES,
    VTFusionConfig,
    VTFusionForConditionalGeneration,
    VTFusionForSequenceClassification,
    VTFusionModel,
    VTFusionProcessor,
    special_token_ids,
)
from training import evaluation, model_card
from training.args import DataArguments, EvaluationArguments, ModelArguments
from training.balance import balanced_sampler, class_weights
from training.data import (
    VTFusionCollator,
    build_transform,
    check_columns,
    class_names,
    corpus_columns,
    corpus_texts,
    get_split,
    limit,
    load_raw_datasets,
    optional_column,
    prepare_dataset,
    resolve_text_column,
)
from training.data_checks import check_finite_loss, drop_unpaired_rows, drop_unreadable_images
from training.machine import BusyMachineCallback, configure_threads
from training.multitask import VTFusionForMultitask
from training.tasks import TASKS
from training.tokenizer import train_wordpiece_tokenizer


logger = logging.getLogger(__name__)

DEFAULT_FUSION_TYPE = "cross_attention"


class VTFusionTrainer(Trainer):
    """`Trainer` that also logs every `*_loss` the model returns (ITC, ITM, LM, ...), averaged since the last log,
    draws training rows with `train_sampler` when one is given (`--balanced_sampling`), and reports measured model
    FLOPs as `total_flos`.

    Trainer's default `total_flos` is 6 x parameters x main-input elements, a language-model rule that here would
    multiply by pixels. Instead one training step in `FLOP_SAMPLE_EVERY` runs under torch's `FlopCounterMode`
    (matmuls, convolutions and attention, forward + backward) and each step counts as the last one measured; steps
    differ only by their texts' padded lengths (main job: the first step's count is within 1% of the run's mean)."""

    FLOP_SAMPLE_EVERY = 25

    def __init__(self, *args, train_sampler: torch.utils.data.Sampler | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._component_losses = defaultdict(list)
        self.train_sampler = train_sampler
        self._step_flops = 0
        self._steps_run = 0  # this process's calls, not `global_step`: a resumed run measures its first step too

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._steps_run += 1
        if (self._steps_run - 1) % self.FLOP_SAMPLE_EVERY:
            return super().training_step(model, inputs, num_items_in_batch)
        with FlopCounterMode(display=False) as counter:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_flops = counter.get_total_flops()
        return loss

    def floating_point_ops(self, inputs) -> int:
        return self._step_flops

    def _get_train_sampler(self, train_dataset=None):
        return self.train_sampler or super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            check_finite_loss(loss, self.state.global_step + 1)  # the step being taken
        if model.training and isinstance(outputs, dict):
            for name, value in outputs.items():
                if name.endswith("_loss") and value is not None:  # kept on the device: no sync per step
                    self._component_losses[name].append(value.detach().float())
        return (loss, outputs) if return_outputs else loss

    def create_model_card(self, *args, **kwargs) -> None:
        """The vtfusion card (encoders, fusion, metrics, every pipeline) instead of Trainer's generic one; it is what
        `--push_to_hub` uploads as README.md."""
        if self.is_world_process_zero():
            model_card.main([self.args.output_dir])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._component_losses:
            logs |= {name: round(torch.stack(v).mean().item(), 4) for name, v in self._component_losses.items()}
            self._component_losses.clear()
        super().log(logs, start_time)


def parse_args(argv: list[str] | None = None):
    """Command line (or one .json / .yaml file) -> (ModelArguments, DataArguments, EvaluationArguments,
    TrainingArguments)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, EvaluationArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def check_args(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    if model_args.task not in TASKS:
        raise ValueError(f"--task {model_args.task!r} is not a task; choose one of {', '.join(TASKS)}.")
    if model_args.fusion_type is not None and model_args.fusion_type not in FUSION_TYPES:
        raise ValueError(f"--fusion_type {model_args.fusion_type!r}: choose one of {', '.join(FUSION_TYPES)}.")
    if bool(model_args.vision_model_name_or_path) != bool(model_args.text_model_name_or_path):
        raise ValueError("Pass both --vision_model_name_or_path and --text_model_name_or_path, or neither.")
    if model_args.resnet_stages < 1:
        raise ValueError(f"--resnet_stages {model_args.resnet_stages}: a ResNet needs at least 1 stage.")
    balancing = data_args.class_weighting != "none" or data_args.balanced_sampling
    if balancing and not TASKS[model_args.task].class_labels:
        raise ValueError(
            "--class_weighting and --balanced_sampling weigh classes: use them with --task classification."
        )
    if balancing and data_args.streaming:
        raise ValueError(
            "--class_weighting and --balanced_sampling count the training labels first: not with --streaming."
        )
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError("A streamed data set has no length: pass --max_steps with --streaming.")


def override_training_args(task: str, training_args: TrainingArguments) -> None:
    """Set what vtfusion's training needs, logging each value that differs from what was asked."""
    needed = {
        "remove_unused_columns": (False, "the on-the-fly transform reads the raw columns"),
        "prediction_loss_only": (True, "task metrics come from the test evaluation (--do_predict), not from logits"),
    }
    if TASKS[task].may_idle_parameters and training_args.ddp_find_unused_parameters is None:
        reason = f"{task} steps can leave parameters without a gradient (switched-off objectives, captions decoded "
        reason += "from the image alone); pass --ddp_find_unused_parameters false to skip the search"
        needed["ddp_find_unused_parameters"] = (True, reason)
    for name, (value, reason) in needed.items():
        if getattr(training_args, name) != value:
            logger.info(f"{name}={value}: {reason}.")
            setattr(training_args, name, value)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def use_cpu_without_accelerator() -> None:
    """Under `accelerate launch --multi_gpu` (torchrun) on a machine without GPUs, train the processes on the CPU over
    gloo: accelerate only sets up a CPU process group when told to use the CPU before `TrainingArguments` exists."""
    if int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.accelerator.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def resolve_checkpoint(training_args: TrainingArguments) -> str | None:
    """`--resume_from_checkpoint PATH`, or `latest` for the newest complete checkpoint in --output_dir."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None or checkpoint.lower() not in ("latest", "last", "true"):
        return checkpoint
    last = last_complete_checkpoint(training_args.output_dir)
    if last is None:
        raise ValueError(f"--resume_from_checkpoint {checkpoint}: no checkpoint in {training_args.output_dir}.")
    return last


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder holding `trainer_state.json`, which `Trainer` writes last: a run killed while
    saving leaves a newer folder without it, which is skipped."""
    folders = [path for path in Path(output_dir).glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    complete = [path for path in folders if (path / TRAINER_STATE_NAME).is_file()]
    for skipped in set(folders) - set(complete):
        logger.warning(f"Skipping {skipped}: incomplete (the run stopped while saving it).")
    return str(max(complete, key=lambda path: int(path.name.split("-")[-1]))) if complete else None


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.5,c=late' -> {'a': 1, 'b': 0.5, 'c': 'late'}; integers become floats for float fields (the config
    is a strict dataclass)."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        key, _, value = (part.strip() for part in item.partition("="))
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a plain string
        if isinstance(getattr(VTFusionConfig, key, None), float) and isinstance(value, int):
            value = float(value)
        overrides[key] = value
    return overrides


def task_config_kwargs(task: str, train_split, data_args: DataArguments) -> dict:
    """Label names of the classification heads."""
    if not TASKS[task].class_labels:
        return {}
    names = class_names(train_split, data_args)
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
    }


def scratch_config(model_args: ModelArguments, data_args: DataArguments, tokenizer, **kwargs) -> VTFusionConfig:
    """A ViT + BERT pair sized by the command line, with the trained tokenizer's vocabulary and special tokens."""
    intermediate_size = model_args.mlp_ratio * model_args.hidden_size  # every transformer's feed-forward width
    encoder = {
        "hidden_size": model_args.hidden_size,
        "num_hidden_layers": model_args.num_hidden_layers,
        "num_attention_heads": model_args.num_attention_heads,
        "intermediate_size": intermediate_size,
        # no dropout, as in the fusion layers: a short run from scratch underfits (BERT's 0.1 also costs 6% of a step)
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    vision = {"model_type": "vit", "image_size": model_args.image_size, "patch_size": model_args.patch_size} | encoder
    if model_args.vision_model_type == "resnet":
        width, stages = model_args.hidden_size, model_args.resnet_stages
        widths = [width // 4 * 2 ** min(stage, 2) for stage in range(stages)]  # double up to --hidden_size, then stay
        vision = {
            "model_type": "resnet",
            "embedding_size": width // 4,
            "hidden_sizes": widths,
            "depths": [1] * stages,
            "layer_type": "basic",
        }
    # BERT's 0.02 is sized for width 768: at width 128 the image's share of the fused stream starts 20x below the
    # text's and fusion learned nothing for ~150 steps (measured); 0.05 is close to PyTorch's default for width 128.
    kwargs.setdefault("initializer_range", 0.05)
    text = {"model_type": "bert", "vocab_size": len(tokenizer), "max_position_embeddings": data_args.max_length}
    return VTFusionConfig(
        vision_config=vision,
        text_config=text | encoder,
        fusion_type=model_args.fusion_type or DEFAULT_FUSION_TYPE,
        fusion_pooling=model_args.fusion_pooling,
        num_fusion_layers=model_args.num_fusion_layers,
        decoder_num_hidden_layers=model_args.decoder_num_hidden_layers,
        fusion_intermediate_size=intermediate_size,
        decoder_intermediate_size=intermediate_size,
        projection_dim=model_args.projection_dim,
        max_decoder_position_embeddings=max(64, data_args.max_target_length + 1),
        **special_token_ids(tokenizer),
        **kwargs,
    )


def scratch_processor(train_split, model_args, data_args, training_args) -> VTFusionProcessor:
    """The local main process trains the tokenizer and saves the processor in --output_dir; the others load it
    (WordPiece training may number tokens differently from run to run)."""
    with training_args.main_process_first(desc="training the tokenizer"):
        if training_args.local_process_index > 0:
            return VTFusionProcessor.from_pretrained(training_args.output_dir)
        texts = corpus_texts(train_split, corpus_columns(train_split, data_args))
        tokenizer = train_wordpiece_tokenizer(
            texts, model_args.tokenizer_vocab_size, model_max_length=data_args.max_length
        )
        size = {"height": model_args.image_size, "width": model_args.image_size}
        processor = VTFusionProcessor(image_processor=ViTImageProcessorPil(size=size), tokenizer=tokenizer)
        processor.save_pretrained(training_args.output_dir)
        return processor


def build_model_and_processor(task, train_split, model_args, data_args, training_args, checkpoint):
    """From a checkpoint to resume or continue, from two pretrained encoders, or from scratch."""
    head = TASKS[task].head
    kwargs = task_config_kwargs(task, train_split, data_args) | parse_overrides(model_args.config_overrides)
    source = checkpoint or model_args.model_name_or_path
    if source:
        if model_args.fusion_type:
            kwargs["fusion_type"] = model_args.fusion_type
        model, loading = head.from_pretrained(source, output_loading_info=True, **kwargs)
        if "classifier.weight" in loading["missing_keys"]:
            start_classifier_as_itm_head(model, source)
        return model, VTFusionProcessor.from_pretrained(source)
    if model_args.vision_model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.text_model_name_or_path)
        image_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path, backend="pil")
        model = head.from_vision_text_pretrained(
            model_args.vision_model_name_or_path,
            model_args.text_model_name_or_path,
            fusion_type=model_args.fusion_type or DEFAULT_FUSION_TYPE,
            fusion_pooling=model_args.fusion_pooling,
            num_fusion_layers=model_args.num_fusion_layers,
            decoder_num_hidden_layers=model_args.decoder_num_hidden_layers,
            projection_dim=model_args.projection_dim,
            **kwargs,
        )
        return model, VTFusionProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor = scratch_processor(train_split, model_args, data_args, training_args)
    return head(scratch_config(model_args, data_args, processor.tokenizer, **kwargs)), processor


@torch.no_grad()
def start_classifier_as_itm_head(model, source: str) -> None:
    """A new two-way classifier (entailment) starts as the checkpoint's ITM head: "does the text match the image?"
    (match = 1) is where "is the statement true?" (true = 1) starts. Measured from the main job's pre-trained base:
    entailment loss 0.617 after 120 multitask steps, against 0.685 for a new classifier (chance: 0.693)."""
    if model.config.num_labels != 2:
        return
    if isinstance(model, VTFusionForMultitask):  # it keeps an ITM head of its own
        model.classifier.load_state_dict(model.itm_head.state_dict())
        return
    with safe_open(cached_file(source, SAFE_WEIGHTS_NAME), framework="pt") as weights:
        if "itm_head.weight" in weights.keys():
            model.classifier.weight.copy_(weights.get_tensor("itm_head.weight"))
            model.classifier.bias.copy_(weights.get_tensor("itm_head.bias"))


def readable_split(raw_datasets, split: str, data_args: DataArguments, texts_alone: bool = False):
    """A split without the rows whose image is corrupt (--skip_unreadable_images, default: for a user's
    --dataset_name; generated SynthShapes needs no check) and, for a user's data set, without the rows lacking an
    image or a text that the task cannot train on (`texts_alone`: texts without an image train); with the counters of
    both (None where not checked), for the run's results."""
    dataset, skipped, unpaired = get_split(raw_datasets, split), None, None
    skip = data_args.skip_unreadable_images
    if skip or (skip is None and data_args.dataset_name is not None):
        dataset, skipped = drop_unreadable_images(dataset, data_args.image_column, keep_missing=True)
    if data_args.dataset_name is not None:
        image_column, text_column = data_args.image_column, data_args.text_column
        dataset, unpaired = drop_unpaired_rows(dataset, image_column, text_column, texts_alone)
    return dataset, (skipped, unpaired)


def with_skipped_count(metrics: dict, counters) -> dict:
    """Metrics plus the rows skipped for an unreadable image and the rows lacking an image or a text (how many, and
    how many of them were dropped), so the run's results record them."""
    skipped, unpaired = counters
    if skipped is not None:
        metrics = metrics | {"skipped_unreadable_images": skipped.count}
    if unpaired is not None:
        metrics = metrics | {"unpaired_rows": unpaired.count, "unpaired_rows_dropped": unpaired.dropped}
    return metrics


def evaluate_on_test(task, model_dir, processor, test_split, data_args, eval_args, training_args) -> dict[str, float]:
    """The task's metrics on the test split; each metric uses the head class it needs, loaded from `model_dir`.

    Called on every process: generation (captioning, VQA) is shared by all of them in Trainer's prediction loop,
    retrieval and classification run on the main process alone (the others return without them)."""
    results, device, is_main = {}, training_args.device, training_args.process_index == 0
    common = {"batch_size": eval_args.test_batch_size}
    generation = {"max_new_tokens": eval_args.generation_max_new_tokens, "num_beams": eval_args.generation_num_beams}
    image_column = data_args.image_column
    spec = TASKS[task]
    for kind in spec.evaluations:
        if kind not in ("captioning", "vqa") and not is_main:
            continue
        start = time.perf_counter()
        if kind == "retrieval":
            model = VTFusionModel.from_pretrained(model_dir).to(device)
            results |= evaluation.evaluate_retrieval(
                model,
                processor,
                test_split,
                image_column,
                data_args.text_column,
                optional_column(test_split, data_args.canonical_column),
                gallery_size=min(eval_args.retrieval_gallery_size, eval_args.max_test_samples or 10**9),
                **common,
            )
        elif kind == "captioning":
            model = VTFusionForConditionalGeneration.from_pretrained(model_dir)  # Trainer places it
            references = optional_column(test_split, data_args.references_column) or data_args.text_column
            results |= evaluation.evaluate_captioning(
                model,
                processor,
                test_split,
                image_column,
                references,
                eval_args.max_test_samples,
                **common,
                **generation,
            )
        elif kind == "vqa":
            model = VTFusionForConditionalGeneration.from_pretrained(model_dir)
            questions = getattr(data_args, spec.question_column)
            results |= evaluation.evaluate_vqa(
                model,
                processor,
                test_split,
                image_column,
                questions,
                data_args.answer_column,
                optional_column(test_split, data_args.question_type_column),
                eval_args.max_test_samples,
                **common,
                max_new_tokens=min(8, eval_args.generation_max_new_tokens),
                num_beams=eval_args.generation_num_beams,
            )
        elif kind == "classification":
            model = VTFusionForSequenceClassification.from_pretrained(model_dir).to(device)
            statements = getattr(data_args, spec.statement_column)
            results |= evaluation.evaluate_classification(
                model,
                processor,
                test_split,
                image_column,
                statements,
                data_args.label_column,
                optional_column(test_split, data_args.subset_column),
                eval_args.max_test_samples,
                **common,
            )
        results[f"{kind}_runtime"] = round(time.perf_counter() - start, 2)  # seconds, as Trainer's eval_runtime
    return results


def balance_classes(model, train_rows, data_args: DataArguments, seed: int):
    """`--class_weighting`: the loss's class weights, set in the model's config (saved with the checkpoint).
    `--balanced_sampling`: the sampler that draws every class equally often (returned; None without the flag)."""
    if data_args.class_weighting == "none" and not data_args.balanced_sampling:
        return None
    labels = list(train_rows[data_args.label_column])  # the label column alone: no image is decoded
    if data_args.class_weighting != "none":
        model.config.class_weights = class_weights(labels, model.config.num_labels, data_args.class_weighting)
        logger.info(f"class_weights ({data_args.class_weighting}): {model.config.class_weights}")
    return balanced_sampler(labels, seed) if data_args.balanced_sampling else None


def build_collator(task: str, processor, data_args: DataArguments, seed: int) -> VTFusionCollator:
    """Padding, plus the MLM masking of captions for the tasks that pre-train the fusion module with it."""
    tokenizer = processor.tokenizer
    mlm = None
    if TASKS[task].mlm and data_args.mlm_probability > 0:
        if tokenizer.mask_token_id is None:
            raise ValueError(
                f"--mlm_probability {data_args.mlm_probability} needs a tokenizer with a mask token; "
                f"{type(tokenizer).__name__} has none. Pass --mlm_probability 0 to train without MLM."
            )
        mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=data_args.mlm_probability, seed=seed)
    return VTFusionCollator(tokenizer.pad_token_id, return_loss=TASKS[task].loss_without_labels, mlm=mlm)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs the command line `argv` (default: `sys.argv`); returns the train, eval and `test_*` metrics."""
    use_cpu_without_accelerator()
    model_args, data_args, eval_args, training_args = parse_args(argv)
    check_args(model_args, data_args, training_args)
    setup_logging(training_args)
    override_training_args(model_args.task, training_args)
    configure_threads()
    set_seed(training_args.seed)
    task = model_args.task

    raw_datasets = load_raw_datasets(data_args, training_args.main_process_first)
    resolve_text_column(task, data_args)
    check_columns(get_split(raw_datasets, data_args.train_split), task, data_args)
    train_split, train_skipped = readable_split(
        raw_datasets, data_args.train_split, data_args, TASKS[task].texts_alone
    )
    checkpoint = resolve_checkpoint(training_args)
    model, processor = build_model_and_processor(task, train_split, model_args, data_args, training_args, checkpoint)
    if isinstance(model, VTFusionForMultitask):
        model.skip_itm = not model_args.multitask_itm
    logger.info(f"{type(model).__name__} ({model.config.fusion_type}): {model.num_parameters() / 1e6:.2f}M parameters")

    train_dataset = eval_dataset = train_sampler = None
    if training_args.do_train:
        transform = build_transform(task, processor, data_args, training_args.seed, data_args.image_augmentation)
        train_rows = limit(train_split, data_args.max_train_samples)
        train_sampler = balance_classes(model, train_rows, data_args, training_args.seed)
        train_dataset = prepare_dataset(train_rows, transform, training_args.seed, data_args)
    if training_args.do_eval:
        eval_split, _ = readable_split(raw_datasets, data_args.eval_split, data_args)
        transform = build_transform(task, processor, data_args, seed=training_args.seed + 1)
        eval_dataset = prepare_dataset(limit(eval_split, data_args.max_eval_samples), transform, None, data_args)

    trainer = VTFusionTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=build_collator(task, processor, data_args, training_args.seed),
        processing_class=processor,
        train_sampler=train_sampler,
        callbacks=[BusyMachineCallback()],
    )
    metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # weights, config with auto_map, code files and processor: a Hub-ready folder
        train_metrics = with_skipped_count(result.metrics, train_skipped)  # streaming: counted while training
        train_metrics["total_flos"] = trainer.state.total_flos  # a logging callback pops it from result.metrics
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        metrics |= train_metrics
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics |= eval_metrics
    if training_args.do_predict:
        model_dir = training_args.output_dir if training_args.do_train else model_args.model_name_or_path
        if model_dir is None:
            raise ValueError("--do_predict without --do_train needs --model_name_or_path (the model to evaluate).")
        test_split, test_skipped = readable_split(raw_datasets, data_args.test_split, data_args)
        test_metrics = evaluate_on_test(task, model_dir, processor, test_split, data_args, eval_args, training_args)
        if trainer.is_world_process_zero():
            test_metrics = with_skipped_count(test_metrics, test_skipped)
            trainer.log_metrics("test", test_metrics)
            trainer.save_metrics("test", test_metrics)
            metrics |= {f"test_{name}": value for name, value in test_metrics.items()}
    if training_args.push_to_hub and training_args.do_train:
        trainer.push_to_hub(commit_message=f"vtfusion {task} ({model.config.fusion_type})")
    return metrics


def end_processes() -> None:
    """Destroys the process group of an `accelerate launch` run: gloo threads still alive at interpreter exit abort
    a rank (SIGABRT) after its work is done. Called once at the very end, as `main` may run twice in one process."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    end_processes()
