"""Task metrics on a held-out split, computed with the project's `evaluate` modules (`training/metrics`).

- retrieval: Recall@1/5/10 both ways over a gallery of the first `gallery_size` images and their texts, from ITC
  embeddings computed in batches; `*_canonical` also counts a scene with the same canonical description as a hit;
- vqa: VQA accuracy of generated answers (overall and per question type);
- classification: accuracy, macro F1, each class's recall and the accuracy on a subset (SynthShapes: relational
  statements);
- captioning: BLEU-4, ROUGE-L and CIDEr-D of generated captions against every reference paraphrase.

Every function takes a model, a `VTFusionProcessor` and a `datasets` split (map-style or streamed), and returns a
flat dict of floats whose names are those of `results.json`. Generation runs in `Seq2SeqTrainer`'s prediction loop,
so under `accelerate launch` the processes share it (every process calls the generation metrics); retrieval and
classification run on the process that calls them.
"""

import math
import tempfile
import uuid
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from training.metrics import load_metric


def metric(name: str):
    """A metric kept in memory under a unique id, so concurrent evaluations never share cache files."""
    return load_metric(name, keep_in_memory=True, experiment_id=uuid.uuid4().hex)


def batches(dataset, columns: list[str], batch_size: int, max_rows: int | None = None) -> Iterator[dict]:
    """Dicts of column lists, `batch_size` rows each, over the first `max_rows` rows."""
    if max_rows is not None:
        dataset = dataset.take(max_rows)
    yield from dataset.select_columns(columns).iter(batch_size=batch_size)


def base_model(model):
    """The `VTFusionModel` of any head (or the model itself)."""
    return getattr(model, "vtfusion", model)


def to_device(encoding, device) -> dict:
    return {key: value.to(device) for key, value in encoding.items()}


@torch.inference_mode()
def evaluate_retrieval(
    model,
    processor,
    dataset,
    image_column: str,
    text_column: str,
    canonical_column: str | None = None,
    gallery_size: int = 1000,
    batch_size: int = 256,
) -> dict[str, float]:
    """Text-to-image and image-to-text Recall@1/5/10 over the first `gallery_size` pairs (ITC similarity)."""
    model, device = base_model(model).eval(), model.device
    image_embeds, text_embeds, canonical = [], [], []
    columns = [image_column, text_column] + ([canonical_column] if canonical_column else [])
    for batch in batches(dataset, columns, batch_size, gallery_size):
        texts = [text if isinstance(text, str) else text[0] for text in batch[text_column]]
        inputs = to_device(processor(images=batch[image_column], text=texts, return_tensors="pt"), device)
        image_embeds.append(F.normalize(model.get_image_features(inputs["pixel_values"]).pooler_output, dim=-1))
        text_inputs = {key: value for key, value in inputs.items() if key != "pixel_values"}
        text_embeds.append(F.normalize(model.get_text_features(**text_inputs).pooler_output, dim=-1))
        canonical += batch[canonical_column] if canonical_column else []
    similarity = (torch.cat(text_embeds) @ torch.cat(image_embeds).t()).float().cpu().numpy()  # [texts, images]
    results = recall_results(similarity, list(range(len(similarity))), suffix="")
    if canonical_column:
        results |= recall_results(similarity, canonical, suffix="_canonical")
    return results


def recall_results(similarity, ids: list, suffix: str) -> dict[str, float]:
    scores = metric("retrieval_recall").compute(predictions=similarity, references=ids, image_ids=ids)
    names = {"text_to_image": "t2i", "image_to_text": "i2t"}
    return {
        f"retrieval_{names[direction]}_r{k}{suffix}": scores[f"{direction}_recall@{k}"]
        for direction in names
        for k in (1, 5, 10)
    }


class GenerationCollator:
    """Rows {"image", "question" (or None: caption it)} -> the processor's batch for `generate()`."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        questions = [row["question"] or "" for row in rows]  # an empty text is captioned, as no text is
        images = [row["image"] for row in rows]
        inputs = self.processor(images=images, text=questions if any(questions) else None, return_tensors="pt")
        inputs.pop("token_type_ids", None)
        return dict(inputs)


def generate_texts(model, processor, rows: list[dict], max_new_tokens=48, num_beams=1, batch_size=64) -> list[str]:
    """The generated caption (row without question) or answer of each row {"image", "question"}, in row order.

    Through `Seq2SeqTrainer.predict` with `predict_with_generate`: under `accelerate launch` each process generates
    for its share of the rows and every process gets all the texts back (the prediction loop gathers them), so the
    metrics come out the same on every process. Every process must call it.
    """
    args = Seq2SeqTrainingArguments(
        output_dir=tempfile.gettempdir(),  # nothing is saved
        predict_with_generate=True,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
    )
    # few rows: share them out in one batch per process, rather than pad a process's batch with repeated rows
    args.per_device_eval_batch_size = max(1, min(batch_size, math.ceil(len(rows) / args.world_size)))
    trainer = Seq2SeqTrainer(
        model=model, args=args, data_collator=GenerationCollator(processor), processing_class=processor.tokenizer
    )
    generated = trainer.predict(rows, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False).predictions
    # Seq2SeqTrainer gathers with `gather`, not `gather_for_metrics`: the rows accelerate repeats to even out the
    # processes' last batches come after all the others, in row order; cut them off.
    generated = generated[: len(rows)]
    generated = np.where(generated == -100, processor.tokenizer.pad_token_id, generated)  # padding between batches
    return [text.strip() for text in processor.batch_decode(generated, skip_special_tokens=True)]


def evaluate_vqa(
    model,
    processor,
    dataset,
    image_column: str,
    question_column: str,
    answer_column: str,
    question_type_column: str | None = None,
    max_rows: int | None = None,
    batch_size: int = 256,
    max_new_tokens: int = 8,
    num_beams: int = 1,
) -> dict[str, float]:
    """VQA accuracy of generated answers to every question of the first `max_rows` rows."""
    rows, references, types = [], [], []
    columns = [image_column, question_column, answer_column] + ([question_type_column] if question_type_column else [])
    for batch in batches(dataset, columns, batch_size, max_rows):
        kinds = batch[question_type_column] if question_type_column else [None] * len(batch[question_column])
        for image, *row in zip(batch[image_column], batch[question_column], batch[answer_column], kinds):
            for question, answers, kind in vqa_items(*row):
                rows.append({"image": image, "question": question})
                references.append(answers)
                types += [kind] if kind is not None else []
    predictions = generate_texts(model, processor, rows, max_new_tokens, num_beams, batch_size)
    return metric("vqa_accuracy").compute(predictions=predictions, references=references, question_types=types or None)


def vqa_items(questions, answers, kinds=None) -> list[tuple[str, list[str], str | None]]:
    """One row's (question, reference answers, type) triples: aligned lists (SynthShapes: one answer per question)
    or one question with its annotators' answers."""
    if isinstance(questions, str):
        return [(questions, [answers] if isinstance(answers, str) else list(answers), kinds)]
    kinds = kinds if kinds is not None else [None] * len(questions)
    return [(q, [a] if isinstance(a, str) else list(a), k) for q, a, k in zip(questions, answers, kinds)]


@torch.inference_mode()
def evaluate_classification(
    model,
    processor,
    dataset,
    image_column: str,
    text_column: str,
    label_column: str,
    subset_column: str | None = None,
    max_rows: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy, macro F1 and the recall of each class (`classification_recall_<label name>`); with `subset_column` (a
    boolean column) also the accuracy on its true rows."""
    model.eval()
    predictions, labels, in_subset = [], [], []
    columns = [image_column, text_column, label_column] + ([subset_column] if subset_column else [])
    for batch in batches(dataset, columns, batch_size, max_rows):
        inputs = processor(images=batch[image_column], text=batch[text_column], return_tensors="pt")
        predictions += model(**to_device(inputs, model.device)).logits.argmax(-1).tolist()
        labels += batch[label_column]
        in_subset += batch[subset_column] if subset_column else []
    scores = metric("classification").compute(
        predictions=predictions, references=labels, labels=list(range(model.config.num_labels))
    )
    results = {"classification_accuracy": scores["accuracy"], "classification_macro_f1": scores["macro_f1"]}
    names = model.config.id2label
    results |= {f"classification_recall_{names[i]}": recall for i, recall in enumerate(scores["recall"])}
    if subset_column:
        hits = [p == y for p, y, chosen in zip(predictions, labels, in_subset) if chosen]
        results[f"classification_{subset_column}_accuracy"] = sum(hits) / max(1, len(hits))
    return results


def evaluate_captioning(
    model,
    processor,
    dataset,
    image_column: str,
    references_column: str,
    max_rows: int | None = None,
    batch_size: int = 256,
    max_new_tokens: int = 48,
    num_beams: int = 1,
) -> dict[str, float]:
    """BLEU-4, ROUGE-L and CIDEr-D of generated captions; each image's references are all its captions."""
    rows, references = [], []
    for batch in batches(dataset, [image_column, references_column], batch_size, max_rows):
        rows += [{"image": image, "question": None} for image in batch[image_column]]
        references += [[refs] if isinstance(refs, str) else list(refs) for refs in batch[references_column]]
    predictions = generate_texts(model, processor, rows, max_new_tokens, num_beams, batch_size)
    return {
        "bleu4": metric("bleu").compute(predictions=predictions, references=references)["bleu"],
        "rouge_l": metric("rouge_l").compute(predictions=predictions, references=references)["rouge_l"],
        "cider": metric("cider").compute(predictions=predictions, references=references)["cider"],
    }
