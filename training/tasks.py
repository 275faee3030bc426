"""Every training task in one table: the head it trains, the columns it reads, what its batches hold, its objectives
and its test-split metrics. `train.py`, `data.py` and `args.py` read all that is task-specific from here, so a new
task is one entry."""

from dataclasses import dataclass

from modeling_vtfusion import (
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
)
from training.multitask import VTFusionForMultitask


@dataclass(frozen=True)
class Task:
    head: type  # the model class trained
    columns: tuple[str, ...]  # `DataArguments` column fields read; `check_columns` fails early on a missing column
    default_text_column: str  # the SynthShapes column read when --text_column is not given
    evaluations: tuple[str, ...]  # metric groups computed on the test split (--do_predict)
    fuses_text: bool = True  # the texts go in as `input_ids` (captioning decodes from the image alone)
    labels: str | None = None  # "caption": the texts as decoder targets; "class": the label column; None: no labels
    questions: bool = False  # rows hold question lists and answers (VQA): one pair a visit, the answer as target
    multitask_extras: bool = False  # statements and question/answer pairs per image besides the caption
    mlm: bool = False  # pre-trains the fusion module with MLM on masked captions (--mlm_probability)
    loss_without_labels: bool = False  # batches carry `return_loss=True` (the head's loss needs no label column)
    class_labels: bool = False  # the label column's names become the config's `id2label`
    may_idle_parameters: bool = False  # steps can leave parameters without gradient: DDP must search for them
    texts_alone: bool = False  # rows with a text and no image train (as negatives, LM / MLM), marked `image_present`
    question_column: str = "text_column"  # the `DataArguments` field naming the questions, for the VQA metrics
    statement_column: str = "text_column"  # the one naming the statements, for the classification metrics


MULTITASK_COLUMNS = ("image_column", "text_column", "question_column", "answer_column", "statement_column")
MULTITASK_COLUMNS += ("label_column", "train_statement_column", "train_label_column")  # the last two optional

TASKS = {
    "pretrain": Task(
        VTFusionForPreTraining,
        ("image_column", "text_column"),
        "caption",
        ("retrieval", "captioning"),
        labels="caption",
        mlm=True,
        may_idle_parameters=True,
        texts_alone=True,
    ),
    "retrieval": Task(
        VTFusionForImageTextRetrieval,
        ("image_column", "text_column"),
        "caption",
        ("retrieval",),
        loss_without_labels=True,
        texts_alone=True,
    ),
    "classification": Task(
        VTFusionForSequenceClassification,
        ("image_column", "text_column", "label_column"),
        "statement",
        ("classification",),
        labels="class",
        class_labels=True,
    ),
    "captioning": Task(
        VTFusionForConditionalGeneration,
        ("image_column", "text_column"),
        "caption",
        ("captioning",),
        fuses_text=False,
        labels="caption",
        may_idle_parameters=True,
    ),
    "vqa": Task(
        VTFusionForConditionalGeneration,
        ("image_column", "text_column", "answer_column"),
        "questions",
        ("vqa",),
        questions=True,
    ),
    "multitask": Task(
        VTFusionForMultitask,
        MULTITASK_COLUMNS,
        "caption",
        ("retrieval", "vqa", "classification", "captioning"),
        labels="caption",
        multitask_extras=True,
        mlm=True,
        class_labels=True,
        may_idle_parameters=True,
        question_column="question_column",
        statement_column="statement_column",
    ),
}
