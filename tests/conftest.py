"""Shared fixtures: a tiny tokenizer, image processor and processor, built locally (no Hub access)."""

import os


os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: tests never reach the Hub

import sys
from pathlib import Path

import pytest
import torch


# `make test` runs two pytest workers on two cores: one thread each. More threads per worker oversubscribe the cores
# and make tiny ops ~100x slower. The environment variable also tells `training.train`, run in-process, to keep it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `modeling_vtfusion` is importable without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

TINY_CORPUS = [
    "a red circle on the left of a blue square",
    "two green triangles above a yellow star",
    "what colour is the small shape",
    "how many shapes are there in the picture",
    "is there a purple circle below the triangle",
    "the big square is to the right of the small circle",
]
TINY_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_MODEL_MAX_LENGTH = 32
TINY_IMAGE_SIZE = 32


def build_tiny_tokenizer(model_max_length: int = TINY_MODEL_MAX_LENGTH):
    """A WordPiece `BertTokenizer` trained on `TINY_CORPUS` in a few milliseconds."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=TINY_SPECIAL_TOKENS)
    wordpiece.train_from_iterator(TINY_CORPUS, trainer)
    vocab = wordpiece.get_vocab()
    # `BertTokenizer(vocab_file=...)` silently ignores the file in transformers 5.x: pass the vocab itself and check.
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=model_max_length)
    assert tokenizer.vocab_size == len(vocab) > len(TINY_SPECIAL_TOKENS)
    return tokenizer


@pytest.fixture
def tiny_tokenizer():
    """`BertTokenizer` with a WordPiece vocab of the SynthShapes-like corpus, `model_max_length=32`."""
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_image_processor():
    """`ViTImageProcessorPil` resizing to 32x32 (the PIL backend: no torchvision needed, no fallback warning)."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


@pytest.fixture
def tiny_processor(tiny_image_processor, tiny_tokenizer):
    """`VTFusionProcessor` over `tiny_image_processor` and `tiny_tokenizer`."""
    from modeling_vtfusion.processing_vtfusion import VTFusionProcessor

    return VTFusionProcessor(image_processor=tiny_image_processor, tokenizer=tiny_tokenizer)
