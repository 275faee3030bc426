"""A tiny multitask checkpoint trained for a few seconds on three colour images, so that what a pipeline answers can
be checked, not only its types. Shared by the pipeline tests and the transformers-version tests."""

import torch
from pipeline_runs import CAPTIONS, CLASS_NAMES, COLOURS, QUESTION, colour_image
from tiny_models import TINY_TEXT, tiny_config
from transformers import BertTokenizer, ViTImageProcessorPil

from modeling_vtfusion import VTFusionProcessor
from modeling_vtfusion.modeling_vtfusion import caption_labels
from training.multitask import VTFusionForMultitask


TRAINING_STEPS = 300  # 200 left seed 0 short of converging (ITM loss 0.43); 300 converges seeds 0-2
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "what", "colour", "is", "shape"]
VOCAB += ["circle", "star", "square", "red", "green", "blue"]


def colour_processor() -> VTFusionProcessor:
    """A fixed word-level vocabulary (a trained WordPiece numbers tokens differently from run to run, and so would
    make the few-second training below irreproducible)."""
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(VOCAB)}, model_max_length=32)
    assert tokenizer.vocab_size == len(VOCAB)
    size = {"height": 32, "width": 32}
    return VTFusionProcessor(image_processor=ViTImageProcessorPil(size=size), tokenizer=tokenizer)


def colour_config(**overrides):
    return tiny_config(text_config=dict(TINY_TEXT, vocab_size=len(VOCAB)), id2label=CLASS_NAMES, **overrides)


def colour_batches(processor):
    """Multitask batches over the three colours: captions, one question each, and statements, true when shift == 0:
    every image meets every caption, and each image half of the time its own."""
    colours = list(COLOURS)
    captions = processor(
        images=[colour_image(c) for c in colours], text=[CAPTIONS[c] for c in colours], return_tensors="pt"
    )
    questions = processor(text=[QUESTION] * len(colours), return_tensors="pt")
    answers = processor.tokenizer(colours, return_tensors="pt", padding=True)
    batches = []
    for shifts in [(0, 0, 0), (0, 1, 2), (1, 2, 0), (2, 0, 1)]:  # row i states the caption of colour i + shift
        statements = [CAPTIONS[colours[(i + s) % len(colours)]] for i, s in enumerate(shifts)]
        statement_inputs = processor(text=statements, return_tensors="pt")
        batches.append(
            {
                "pixel_values": captions["pixel_values"],
                "input_ids": captions["input_ids"],
                "attention_mask": captions["attention_mask"],
                "question_input_ids": questions["input_ids"],
                "question_attention_mask": questions["attention_mask"],
                "question_image_index": torch.arange(len(colours)),
                "answer_labels": caption_labels(answers["input_ids"], answers["attention_mask"]),
                "statement_input_ids": statement_inputs["input_ids"],
                "statement_attention_mask": statement_inputs["attention_mask"],
                "entailment_labels": torch.tensor([int(s == 0) for s in shifts]),
            }
        )
    return batches


def save_trained_colour_checkpoint(folder, processor) -> None:
    """A folder laid out as a Hub repo: a tiny multitask model trained to caption, answer, match and classify."""
    torch.manual_seed(0)
    model = VTFusionForMultitask(colour_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = colour_batches(processor)
    for step in range(TRAINING_STEPS):
        model(**batches[step % len(batches)]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
