"""`training.tokenizer`: a WordPiece `BertTokenizer` trained on the corpus."""

import re

import pytest
from transformers import AutoTokenizer, BertTokenizer

from training.synthshapes import generate_scenes
from training.tokenizer import SPECIAL_TOKENS, corpus_texts, train_wordpiece_tokenizer


@pytest.fixture(scope="module")
def scenes():
    return [{key: value for key, value in scene.items() if key != "image"} for scene in generate_scenes(200, seed=0)]


@pytest.fixture(scope="module")
def tokenizer(scenes):
    return train_wordpiece_tokenizer(corpus_texts(scenes), vocab_size=500)


def test_corpus_texts_flattens_list_columns_and_keeps_string_columns():
    rows = [{"captions": ["a b", "c"], "statement": "d", "label": 1}]
    assert list(corpus_texts(rows, columns=("captions", "statement"))) == ["a b", "c", "d"]


def test_returns_a_bert_tokenizer_with_the_trained_vocabulary(tokenizer):
    assert isinstance(tokenizer, BertTokenizer)
    assert tokenizer.vocab_size == len(tokenizer.get_vocab()) > 100  # the corpus' characters, pieces and words


def test_special_tokens_have_the_bert_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.mask_token_id) == (0, 1, 4)


def test_every_corpus_word_is_one_token_and_case_is_ignored(tokenizer, scenes):
    words = {word for text in corpus_texts(scenes) for word in re.findall(r"\w+", text)}
    assert all(len(tokenizer.tokenize(word)) == 1 for word in words)
    assert tokenizer("What COLOR is the Circle?")["input_ids"] == tokenizer("what color is the circle?")["input_ids"]


def test_unseen_words_split_into_pieces_or_unk(tokenizer):
    assert tokenizer.tokenize("circles") == ["circles"]
    assert tokenizer.tokenize("circled")[0] == "circle"  # a known piece, then the rest
    assert tokenizer.tokenize("ζ") == ["[UNK]"]


def test_encodes_a_pair_with_cls_sep_and_token_types(tokenizer):
    encoding = tokenizer("is there a red circle?", "yes")
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert tokens == ["[CLS]", "is", "there", "a", "red", "circle", "?", "[SEP]", "yes", "[SEP]"]
    assert encoding["token_type_ids"] == [0] * 8 + [1] * 2


def test_model_max_length_defaults_to_64_and_truncates(tokenizer):
    assert tokenizer.model_max_length == 64
    assert len(tokenizer("circle " * 100, truncation=True)["input_ids"]) == 64


def test_vocab_size_caps_the_vocabulary(scenes):
    small = train_wordpiece_tokenizer(corpus_texts(scenes), vocab_size=80)
    assert small.vocab_size <= 80


def test_save_dir_round_trips_through_auto_tokenizer(scenes, tmp_path):
    tokenizer = train_wordpiece_tokenizer(corpus_texts(scenes), save_dir=tmp_path, model_max_length=32)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded, BertTokenizer)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.model_max_length == 32
    text = "a big orange triangle in the top left corner"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
