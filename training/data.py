"""Data for every task: loading (SynthShapes, a Hub name or a local folder, streamed or not), column checks, the
from-scratch tokenizer, on-the-fly preprocessing per task (`with_transform`) and the padding collator.

A preprocessed example holds `pixel_values` ([3, H, W]) and unpadded token lists; the collator pads each list
(`*input_ids` with the tokenizer's pad id, `*attention_mask` with 0, `*labels` with -100) and stacks the batch.
Generation targets are the tokenised text without its first [CLS] token ("w1 .. wn [SEP]"): the decoder reads
them shifted right behind `decoder_start_token_id`.
"""

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset
from PIL import Image
from transformers import DataCollatorForLanguageModeling

from training.args import DataArguments, default_synthshapes_dir
from training.augmentation import ImageTextAugmentation, output_size
from training.synthshapes import INFO_FILE, load_synthshapes, write_imagefolder
from training.tasks import TASKS


AnyDataset = Dataset | IterableDataset

# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def load_raw_datasets(data_args: DataArguments, main_process_first) -> DatasetDict | IterableDatasetDict:
    """SynthShapes (generated once into a cache folder) by default, else `load_dataset(--dataset_name)`.

    `main_process_first` is `TrainingArguments.main_process_first`: the main process generates, the others reuse.
    """
    if data_args.dataset_name is None:
        folder = data_args.synthshapes_dir or default_synthshapes_dir(
            data_args.synthshapes_num_scenes, data_args.synthshapes_seed
        )
        with main_process_first(desc="generating SynthShapes"):
            write_imagefolder(folder, data_args.synthshapes_num_scenes, data_args.synthshapes_seed)
        return load_synthshapes(folder, streaming=data_args.streaming)
    if (Path(data_args.dataset_name) / INFO_FILE).exists():  # a SynthShapes folder: skip the loader's file globbing
        return load_synthshapes(data_args.dataset_name, streaming=data_args.streaming)
    with main_process_first(desc="loading the data set"):
        return load_dataset(data_args.dataset_name, data_args.dataset_config_name, streaming=data_args.streaming)


def resolve_text_column(task: str, data_args: DataArguments) -> None:
    if data_args.text_column is None:
        data_args.text_column = TASKS[task].default_text_column


def get_split(datasets: DatasetDict | IterableDatasetDict, split: str) -> AnyDataset:
    if split not in datasets:
        raise ValueError(f"The data set has no split {split!r}; its splits are: {', '.join(datasets)}.")
    return datasets[split]


def column_names(dataset: AnyDataset) -> list[str]:
    """The columns of a data set; a stream of unknown features is peeked at."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)))


def check_columns(dataset: AnyDataset, task: str, data_args: DataArguments) -> None:
    """Fail early, naming the flag and listing the columns that exist, when a configured column is missing."""
    existing = column_names(dataset)
    for argument in TASKS[task].columns:
        column = getattr(data_args, argument)
        if column is not None and column not in existing:
            raise ValueError(
                f"--{argument} {column!r} is not a column of the data set. Its columns are: {', '.join(existing)}. "
                f"Pass --{argument} with one of them."
            )


def optional_column(dataset: AnyDataset, column: str | None) -> str | None:
    """`column` if the data set has it, else None (optional metric breakdowns)."""
    return column if column and column in column_names(dataset) else None


def limit(dataset: AnyDataset, max_samples: int | None) -> AnyDataset:
    if max_samples is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.take(max_samples)
    return dataset.select(range(min(max_samples, len(dataset))))


def iterate_rows(dataset: AnyDataset, columns: list[str], max_rows: int | None = None) -> Iterator[dict]:
    """Rows with only `columns` (images are not decoded unless asked for)."""
    dataset = dataset.select_columns(columns)
    return islice(iter(dataset), max_rows)


def class_names(dataset: AnyDataset, data_args: DataArguments) -> list[str]:
    """--class_names, else the names of a `ClassLabel` feature, else "0" .. str(max label)."""
    if data_args.class_names:
        return list(data_args.class_names)
    feature = (dataset.features or {}).get(data_args.label_column)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(dataset, IterableDataset):
        raise ValueError("Pass --class_names when streaming a data set whose labels are not a ClassLabel feature.")
    return [str(i) for i in range(max(dataset[data_args.label_column]) + 1)]


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer corpus
# ----------------------------------------------------------------------------------------------------------------


def corpus_columns(dataset: AnyDataset, data_args: DataArguments) -> list[str]:
    """Every configured text column the data set has, whatever the task: a tokenizer trained for pre-training then
    also knows the words of the questions, answers and statements a fine-tuning stage adds."""
    names = [
        data_args.text_column,
        data_args.references_column,
        data_args.question_column,
        data_args.answer_column,
        data_args.statement_column,
    ]
    existing = column_names(dataset)
    return list(dict.fromkeys(name for name in names if name in existing))


def corpus_texts(dataset: AnyDataset, columns: list[str], max_rows: int | None = 50_000) -> Iterator[str]:
    """Every string of `columns` (list columns flattened) over the first `max_rows` rows."""
    for row in iterate_rows(dataset, columns, max_rows):
        for column in columns:
            value = row[column]
            yield from [value] if isinstance(value, str) else value


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------------


def encode_images(processor, images: list) -> list[np.ndarray]:
    return list(processor(images=images, return_tensors="np")["pixel_values"])


def encode_texts(processor, texts: list[str], max_length: int) -> dict[str, list[list[int]]]:
    if not texts:  # the tokenizer fails on an empty batch
        return {"input_ids": [], "attention_mask": []}
    encoding = processor.tokenizer(texts, truncation=True, max_length=max_length, return_token_type_ids=False)
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}


def encode_targets(processor, texts: list[str], max_length: int) -> list[list[int]]:
    """Generation labels: the tokenised text without its leading [CLS] / BOS ("w1 .. wn [SEP]")."""
    if not texts:
        return []
    tokenizer = processor.tokenizer
    start = {tokenizer.cls_token_id, tokenizer.bos_token_id} - {None}
    ids = tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]
    return [sequence[1:] if sequence and sequence[0] in start else sequence for sequence in ids]


def majority(answers) -> str:
    """The answer itself, or the most frequent of several annotators' answers."""
    return answers if isinstance(answers, str) else Counter(answers).most_common(1)[0][0]


def question_answer_pairs(questions, answers) -> list[tuple[str, str]]:
    """One row's (question, answer) pairs: aligned lists (SynthShapes) or one question with annotators' answers."""
    if isinstance(questions, str):
        return [(questions, majority(answers))]
    return [(question, majority(answer)) for question, answer in zip(questions, answers)]


def pick(value, rng: random.Random):
    """A string, or one random element of a list of strings (e.g. one caption paraphrase per visit)."""
    return value if isinstance(value, str) else value[rng.randrange(len(value))]


def text_columns(data_args: DataArguments) -> list[str]:
    """Every column a training row's texts can come from (captions, statements, questions, answers)."""
    names = [data_args.text_column, data_args.answer_column, data_args.question_column, data_args.statement_column]
    names += list(train_statement_columns(data_args)[:1])
    return list(dict.fromkeys(name for name in names if name))


def build_transform(
    task: str, processor, data_args: DataArguments, seed: int = 0, augment: bool = False
) -> Callable[[dict], dict]:
    """A batched function from raw rows to model inputs, for `Dataset.with_transform` / `IterableDataset.map`;
    with `augment`, the images are augmented first (`ImageTextAugmentation`: training only)."""
    spec, rng = TASKS[task], random.Random(seed)
    max_length, max_target = data_args.max_length, data_args.max_target_length
    image_column, text_column = data_args.image_column, data_args.text_column
    size = output_size(processor.image_processor)
    augmentation = None
    if augment:
        augmentation = ImageTextAugmentation(
            image_column, text_columns(data_args), size, seed, flip_probability=data_args.augmentation_flip_probability
        )
    blank = Image.new("RGB", size[::-1])  # the stand-in of a missing image (`spec.texts_alone`)

    def transform(batch: dict) -> dict:
        out = {}
        if spec.texts_alone:  # rows with a text and no image (the others were dropped by `drop_unpaired_rows`)
            out["image_present"] = [image is not None for image in batch[image_column]]
            images = [image if kept else blank for image, kept in zip(batch[image_column], out["image_present"])]
            batch = batch | {image_column: images}
        if augmentation is not None:
            batch = augmentation(batch)
        out["pixel_values"] = encode_images(processor, batch[image_column])
        if spec.questions:
            pairs = [
                rng.choice(question_answer_pairs(q, a))
                for q, a in zip(batch[text_column], batch[data_args.answer_column])
            ]
            out |= encode_texts(processor, [question for question, _ in pairs], max_length)
            out["labels"] = encode_targets(processor, [answer for _, answer in pairs], max_target)
            return out
        texts = [pick(value, rng) for value in batch[text_column]]
        if spec.fuses_text:
            out |= encode_texts(processor, texts, max_length)
        if spec.labels == "caption":
            out["labels"] = encode_targets(processor, texts, max_target)
        elif spec.labels == "class":
            out["labels"] = list(batch[data_args.label_column])
        if spec.multitask_extras:
            out |= multitask_extras(batch, processor, data_args, rng)
        return out

    return transform


def train_statement_columns(data_args: DataArguments) -> tuple[str, str]:
    return (
        data_args.train_statement_column or data_args.statement_column,
        data_args.train_label_column or data_args.label_column,
    )


def multitask_extras(batch: dict, processor, data_args: DataArguments, rng: random.Random) -> dict:
    """Up to `max_statements_per_image` statements + labels and `max_questions_per_image` question/answer pairs per
    image, as per-image lists (the collator flattens them). Each kind of text is tokenised in one call for the batch
    (one call per image cost 0.1 s of a 64-image batch)."""
    statement_column, label_column = train_statement_columns(data_args)
    statement_pairs = []
    for statements, labels in zip(batch[statement_column], batch[label_column]):
        pairs = [(statements, labels)] if isinstance(statements, str) else list(zip(statements, labels))
        statement_pairs.append(rng.sample(pairs, min(data_args.max_statements_per_image, len(pairs))))
    qa_pairs = []
    for questions, answers in zip(batch[data_args.question_column], batch[data_args.answer_column]):
        pairs = question_answer_pairs(questions, answers)
        qa_pairs.append(rng.sample(pairs, min(data_args.max_questions_per_image, len(pairs))))

    statements = encode_texts(
        processor, [text for pairs in statement_pairs for text, _ in pairs], data_args.max_length
    )
    questions = encode_texts(processor, [text for pairs in qa_pairs for text, _ in pairs], data_args.max_length)
    answers = encode_targets(processor, [answer for pairs in qa_pairs for _, answer in pairs], data_args.max_length)
    return {
        "statement_input_ids": per_image(statements["input_ids"], statement_pairs),
        "statement_attention_mask": per_image(statements["attention_mask"], statement_pairs),
        "entailment_labels": [[label for _, label in pairs] for pairs in statement_pairs],
        "question_input_ids": per_image(questions["input_ids"], qa_pairs),
        "question_attention_mask": per_image(questions["attention_mask"], qa_pairs),
        "answer_labels": per_image(answers, qa_pairs),
    }


def per_image(flat: list, groups: list[list]) -> list[list]:
    """Splits `flat` (one entry per text of the batch) back into one list per image, as `groups` are sized."""
    bounds = np.cumsum([0, *map(len, groups)])
    return [flat[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def prepare_dataset(dataset: AnyDataset, transform: Callable, shuffle_seed: int | None, data_args) -> AnyDataset:
    """Preprocess on the fly: `with_transform` for a map-style data set, a lazy batched `map` for a stream."""
    if isinstance(dataset, IterableDataset):
        if shuffle_seed is not None:
            dataset = dataset.shuffle(seed=shuffle_seed, buffer_size=data_args.shuffle_buffer_size)
        return dataset.map(transform, batched=True, batch_size=64, remove_columns=column_names(dataset))
    return dataset.with_transform(transform)


# ----------------------------------------------------------------------------------------------------------------
# Collation
# ----------------------------------------------------------------------------------------------------------------

# Per-image lists (several statements and questions per image in multitask): flattened, and each `*_input_ids` list
# gives an `*_image_index` (the image of each sequence).
NESTED_KEYS = (
    "statement_input_ids",
    "statement_attention_mask",
    "entailment_labels",
    "question_input_ids",
    "question_attention_mask",
    "answer_labels",
)


def padding_value(key: str, pad_token_id: int) -> int:
    if key.endswith("input_ids"):
        return pad_token_id
    if key.endswith("labels"):
        return -100
    return 0  # attention masks


def pad_sequences(sequences: Iterable[list[int]], value: int) -> torch.Tensor:
    """Right-pad token lists to the longest one: [N, T_max]."""
    sequences = [torch.as_tensor(sequence, dtype=torch.long) for sequence in sequences]
    return torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=value)


@dataclass
class VTFusionCollator:
    """Stacks `pixel_values`, pads token lists and labels; flattens per-image question lists (`NESTED_KEYS`).

    `return_loss=True` adds `return_loss` to every batch, for heads that compute a loss without labels (retrieval).
    `mlm` (a `DataCollatorForLanguageModeling`) adds `mlm_input_ids` / `mlm_labels`: the captions with words masked
    afresh at every visit, and the masked words (pre-training's MLM objective).
    """

    pad_token_id: int
    return_loss: bool = False
    mlm: DataCollatorForLanguageModeling | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        if self.mlm is not None:
            special = torch.isin(batch["input_ids"], torch.tensor(self.mlm.tokenizer.all_special_ids))
            batch["mlm_input_ids"], batch["mlm_labels"] = self.mlm.torch_mask_tokens(
                batch["input_ids"].clone(), special_tokens_mask=special | (batch["attention_mask"] == 0)
            )
        return batch

    def pad(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in features[0]:
            values = [feature[key] for feature in features]
            if key in NESTED_KEYS:
                if key.endswith("input_ids"):
                    counts = torch.tensor([len(value) for value in values])
                    index_key = key.replace("input_ids", "image_index")
                    batch[index_key] = torch.repeat_interleave(torch.arange(len(values)), counts)
                values = [sequence for value in values for sequence in value]
            if key == "pixel_values":
                batch[key] = torch.as_tensor(np.stack(values))
            elif isinstance(values[0], (list, tuple, np.ndarray, torch.Tensor)):
                batch[key] = pad_sequences(values, padding_value(key, self.pad_token_id))
            else:
                batch[key] = torch.as_tensor(values)
        if self.return_loss:
            batch["return_loss"] = True
        return batch
