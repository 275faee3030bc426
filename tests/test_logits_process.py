"""`EosBlockedBelowLength`: generate()'s minimum-length processors at the cost of a few columns, with the same scores."""

import pytest
import torch
from tiny_models import random_batch, tiny_config
from transformers import (
    GenerationMixin,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from modeling_vtfusion import VTFusionForConditionalGeneration
from modeling_vtfusion.logits_process import EosBlockedBelowLength, with_eos_blocked_cheaply


VOCAB = 300
EOS = torch.tensor([2, 7])


def library_and_cheap(processor):
    (cheap,) = with_eos_blocked_cheaply(LogitsProcessorList([processor]), VOCAB)
    return processor, cheap


@pytest.mark.parametrize("length", [3, 5, 6, 9])
@pytest.mark.parametrize(
    "processor",
    [MinLengthLogitsProcessor(6, EOS), MinNewTokensLengthLogitsProcessor(2, 4, EOS)],
    ids=["min_length", "min_new_tokens"],
)
def test_scores_equal_the_library_processors_below_at_and_above_the_minimum(processor, length):
    library, cheap = library_and_cheap(processor)
    assert isinstance(cheap, EosBlockedBelowLength)
    input_ids, scores = torch.zeros(4, length, dtype=torch.long), torch.randn(4, VOCAB)
    assert torch.equal(cheap(input_ids, scores), library(input_ids, scores))


def test_min_length_and_min_new_tokens_in_a_row_become_one_processor_blocking_while_either_would():
    processors = LogitsProcessorList([MinLengthLogitsProcessor(5, EOS), MinNewTokensLengthLogitsProcessor(3, 4, EOS)])
    (cheap,) = with_eos_blocked_cheaply(processors, VOCAB)
    scores = torch.randn(2, VOCAB)
    for length in range(1, 10):
        input_ids = torch.zeros(2, length, dtype=torch.long)
        assert torch.equal(cheap(input_ids, scores), processors(input_ids, scores))


def test_other_processors_keep_their_places():
    temperature, top_k = TemperatureLogitsWarper(0.7), TopKLogitsWarper(5)
    processors = LogitsProcessorList([temperature, MinLengthLogitsProcessor(5, EOS), top_k])
    cheap = with_eos_blocked_cheaply(processors, VOCAB)
    assert [cheap[0], cheap[2]] == [temperature, top_k]
    assert isinstance(cheap[1], EosBlockedBelowLength)


def test_continuous_batching_drops_it_as_it_drops_the_library_processors():
    library, cheap = library_and_cheap(MinLengthLogitsProcessor(5, EOS))
    assert cheap.supports_continuous_batching is library.supports_continuous_batching is False


@pytest.mark.parametrize("eos", [[-1], [VOCAB]], ids=["negative", "past_the_vocabulary"])
def test_an_eos_id_outside_the_vocabulary_keeps_the_library_processor(eos):
    library, kept = library_and_cheap(MinLengthLogitsProcessor(5, torch.tensor(eos)))
    assert kept is library


@pytest.mark.parametrize(
    "search",
    [{}, {"num_beams": 3}, {"do_sample": True, "top_k": 20}],
    ids=["greedy", "beam", "sampling"],
)
def test_generation_with_a_minimum_length_gives_the_tokens_of_the_library_processors(search, monkeypatch):
    torch.manual_seed(0)
    model = VTFusionForConditionalGeneration(tiny_config()).eval()
    pixel_values = random_batch(batch_size=3)["pixel_values"]
    # A token greedy decoding emits third for the first image: as end of sequence, only the minimum keeps it going.
    eos = model.generate(pixel_values=pixel_values, max_new_tokens=3)[0, 3].item()

    def generate():
        torch.manual_seed(0)
        kwargs = {"max_new_tokens": 8, "min_new_tokens": 6, "eos_token_id": eos, "pad_token_id": 0}
        return model.generate(pixel_values=pixel_values, **kwargs, **search)

    blocked_calls = []
    monkeypatch.setattr(EosBlockedBelowLength, "__call__", recording(EosBlockedBelowLength.__call__, blocked_calls))
    cheap = generate()
    monkeypatch.setattr(
        VTFusionForConditionalGeneration, "_get_logits_processor", GenerationMixin._get_logits_processor
    )
    assert len(blocked_calls) == 8  # one processor, called at every step
    assert torch.equal(cheap, generate())
    assert (cheap[:, 1:7] != eos).all()


def recording(method, calls: list):
    def recorded(self, *args):
        calls.append(self)
        return method(self, *args)

    return recorded
