"""A WordPiece tokenizer trained on the corpus with `tokenizers`: the text side of a from-scratch model.

The result is a plain `transformers.BertTokenizer` (lowercasing, `[PAD]`=0, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`), so it
saves, loads with `AutoTokenizer` and travels in a processor like any pretrained BERT tokenizer.
"""

import os
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT_COLUMNS = ("captions", "questions", "answers", "statement")


def corpus_texts(rows: Iterable[dict], columns: Iterable[str] = TEXT_COLUMNS) -> Iterator[str]:
    """Every string of the named columns of `rows` (a `datasets.Dataset` or dicts); list columns are flattened."""
    columns = tuple(columns)
    for row in rows:
        for column in columns:
            value = row[column]
            yield from [value] if isinstance(value, str) else value


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1000,
    save_dir: str | os.PathLike | None = None,
    model_max_length: int = 64,
    min_frequency: int = 1,
) -> BertTokenizer:
    """Trains a lowercasing WordPiece vocabulary of at most `vocab_size` tokens on `texts`.

    A small corpus (SynthShapes has about 50 words) yields fewer tokens than `vocab_size`: whole words, their
    characters and the pieces between. `save_dir`, when given, receives the tokenizer's `save_pretrained` files.
    """
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS
    )
    wordpiece.train_from_iterator(texts, trainer)
    vocab = wordpiece.get_vocab()
    # `BertTokenizer(vocab_file=...)` silently ignores the file in transformers 5.x: pass the vocab itself and check.
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=model_max_length)
    if tokenizer.vocab_size != len(vocab) or tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) != list(range(5)):
        raise RuntimeError(f"BertTokenizer did not take the trained vocabulary ({len(vocab)} tokens)")
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer
