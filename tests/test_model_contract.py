"""What every model inside transformers honours, checked on every head x fusion type with tiny random configs: save
and load, `return_dict`, eager vs SDPA attention, gradient checkpointing, determinism in eval, resizing the
vocabulary, generation outputs, keyword arguments, special token ids and the processor's serialisation."""

import inspect

import pytest
import torch
from tiny_models import TINY_TEXT, random_batch, tiny_config
from transformers import ViTImageProcessorPil

from modeling_vtfusion import (
    FUSION_TYPES,
    VTFusionConfig,
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
    VTFusionModel,
    VTFusionProcessor,
    special_token_ids,
)


HEADS = [
    VTFusionModel,
    VTFusionForImageTextRetrieval,
    VTFusionForSequenceClassification,
    VTFusionForConditionalGeneration,
    VTFusionForPreTraining,
]
CASES = [pytest.param(head, fusion, id=f"{head.__name__}-{fusion}") for head in HEADS for fusion in FUSION_TYPES]
HEAD_IDS = [head.__name__ for head in HEADS]


def build(head, fusion_type="cross_attention", **overrides):
    torch.manual_seed(0)
    return head(tiny_config(fusion_type=fusion_type, **overrides))


def head_inputs(head, batch_size=4) -> dict:
    """A batch that exercises everything the head computes: labels, VQA questions, masked captions."""
    batch = random_batch(batch_size=batch_size)
    if head is VTFusionForSequenceClassification:
        batch["labels"] = torch.arange(batch_size) % 2
    if head is VTFusionForConditionalGeneration:
        batch["labels"] = batch["input_ids"][:, 1:]  # the questions are the texts fused with the images
    if head is VTFusionForPreTraining:
        batch["mlm_labels"] = torch.full_like(batch["input_ids"], -100)
        batch["mlm_labels"][:, 2] = batch["input_ids"][:, 2]
        batch["mlm_input_ids"] = batch["input_ids"].clone()
        batch["mlm_input_ids"][:, 2] = 4  # [MASK]
    return batch


def tensors(outputs) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of a (nested) model output, by name."""
    found = {}
    for name, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            found[name] = value
        elif isinstance(value, dict):
            found |= {f"{name}.{inner}": tensor for inner, tensor in tensors(value).items()}
        elif isinstance(value, tuple):
            found |= {f"{name}.{i}": t for i, t in enumerate(value) if isinstance(t, torch.Tensor)}
    return found


def assert_same_outputs(actual, expected, atol=1e-5):
    actual, expected = tensors(actual), tensors(expected)
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(actual[name], expected[name], atol=atol), name


# -- save / load, return_dict, attention implementations ----------------------------------------------------------


@pytest.mark.parametrize("head, fusion_type", CASES)
def test_save_and_load_give_identical_outputs(head, fusion_type, tmp_path):
    model, inputs = build(head, fusion_type).eval(), head_inputs(head)
    model.save_pretrained(tmp_path)
    loaded = head.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_same_outputs(loaded(**inputs), model(**inputs))


@pytest.mark.parametrize("head, fusion_type", CASES)
def test_return_dict_false_gives_the_tuple_of_the_output_values(head, fusion_type):
    model, inputs = build(head, fusion_type).eval(), head_inputs(head)
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
        model.config.return_dict = False
        from_config = model(**inputs)
    assert isinstance(as_tuple, tuple) and isinstance(from_config, tuple)
    for values in (as_tuple, from_config):
        assert len(values) == len(as_dict.to_tuple())
        for value, expected in zip(values, as_dict.to_tuple()):
            if isinstance(expected, torch.Tensor):
                assert torch.equal(value, expected)


@pytest.mark.parametrize("head, fusion_type", CASES)
def test_eager_and_sdpa_attention_give_the_same_outputs(head, fusion_type):
    inputs = head_inputs(head)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = build(head, fusion_type).eval()
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = model(**inputs)
    assert_same_outputs(outputs["eager"], outputs["sdpa"], atol=1e-5)


def test_generation_is_the_same_with_eager_and_sdpa_attention():
    inputs = random_batch()
    sequences = {}
    for implementation in ("eager", "sdpa"):
        model = build(VTFusionForConditionalGeneration).eval()
        model.set_attn_implementation(implementation)
        sequences[implementation] = model.generate(**inputs, max_new_tokens=5, num_beams=2)
    assert torch.equal(sequences["eager"], sequences["sdpa"])


# -- training: gradients, determinism ----------------------------------------------------------------------------


def training_loss(model, outputs):
    """The head's loss; the base model, whose loss is contrastive only, also sums its fused outputs."""
    if isinstance(model, VTFusionModel):
        return outputs.loss + outputs.fused_pooler_output.sum() + outputs.fused_last_hidden_state.sum()
    return outputs.loss


@pytest.mark.parametrize("head, fusion_type", CASES)
def test_gradient_checkpointing_gives_every_trainable_parameter_its_gradient(head, fusion_type):
    inputs = head_inputs(head) | ({"return_loss": True, "skip_fusion": False} if head is VTFusionModel else {})
    gradients = {}
    for checkpointing in (False, True):
        model = build(head, fusion_type, modality_dropout=0.0).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(1)  # the same ITM negatives in both runs
        training_loss(model, model(**inputs)).backward()
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        assert not [name for name, p in trainable.items() if p.grad is None], "trainable but without gradient"
        gradients[checkpointing] = {name: p.grad for name, p in trainable.items()}
    for name, gradient in gradients[False].items():
        assert torch.allclose(gradients[True][name], gradient, atol=1e-5), name


def test_heads_freeze_only_what_none_of_their_outputs_reads_also_after_loading(tmp_path):
    alignment = {"vtfusion.visual_projection.weight", "vtfusion.text_projection.weight", "vtfusion.logit_scale"}
    gates = {
        f"vtfusion.fusion.{part}.{kind}"
        for part in ("text_transform", "image_transform", "gate")
        for kind in ("weight", "bias")
    }
    for head, frozen in (
        (VTFusionForSequenceClassification, alignment),
        (VTFusionForConditionalGeneration, alignment | gates),
    ):
        model = build(head, "weighted")
        model.save_pretrained(tmp_path / head.__name__)
        for candidate in (model, head.from_pretrained(tmp_path / head.__name__)):
            assert {name for name, p in candidate.named_parameters() if not p.requires_grad} == frozen, head


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_eval_outputs_are_deterministic(head):
    model, inputs = build(head).eval(), head_inputs(head)
    with torch.no_grad():
        first, second = model(**inputs), model(**inputs)
    assert_same_outputs(second, first, atol=0)


# -- vocabulary ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_resize_token_embeddings_resizes_every_layer_of_the_vocabulary(head):
    model = build(head)
    old = model.config.vocab_size
    embeddings = model.resize_token_embeddings(old + 7)
    assert embeddings is model.get_input_embeddings() and embeddings.num_embeddings == old + 7
    assert model.config.vocab_size == model.config.text_config.vocab_size == old + 7
    for name in ("text_decoder", "lm_head", "mlm_head"):
        if hasattr(model, name):
            layer = getattr(model, name)
            size = layer.embed_tokens.num_embeddings if name == "text_decoder" else layer.out_features
            assert size == old + 7, name
    if hasattr(model, "lm_head"):
        assert model.lm_head.weight is model.text_decoder.embed_tokens.weight  # still tied
    inputs = head_inputs(head)
    inputs["input_ids"][:, 1] = old + 6  # a new token
    model.eval()(**inputs)


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_input_embeddings_are_the_text_encoders_and_take_input_grad_hooks(head):
    model = build(head)
    assert model.get_input_embeddings() is model.base_model.text_model.get_input_embeddings()
    model.enable_input_require_grads()  # the path PEFT takes with gradient checkpointing
    model.requires_grad_(False)
    model.gradient_checkpointing_enable()
    inputs = head_inputs(head) | ({"return_loss": True} if head is VTFusionModel else {})
    outputs = model.train()(**inputs)
    assert outputs.loss.requires_grad  # gradients reach the frozen model's inputs, where adapters would sit


# -- generation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion_type", FUSION_TYPES)
def test_generate_returns_decoder_and_encoder_hidden_states_and_attentions(fusion_type):
    model = build(VTFusionForConditionalGeneration, fusion_type).eval()
    config = model.config
    out = model.generate(
        **random_batch(batch_size=2),
        max_new_tokens=3,
        min_new_tokens=3,
        return_dict_in_generate=True,
        output_hidden_states=True,
        output_attentions=True,
        output_scores=True,
    )
    assert len(out.scores) == len(out.decoder_hidden_states) == len(out.decoder_attentions) == 3
    step = out.decoder_hidden_states[0]
    assert len(step) == config.decoder_num_hidden_layers + 1 and step[-1].shape[-1] == config.decoder_hidden_size
    assert len(out.decoder_attentions[0]) == len(out.cross_attentions[0]) == config.decoder_num_hidden_layers
    assert out.encoder_hidden_states is not None and out.encoder_attentions is not None


def test_decoder_records_each_layers_input_and_its_causal_self_and_memory_attention():
    model, batch = build(VTFusionForConditionalGeneration, decoder_num_hidden_layers=2).eval(), random_batch()
    with torch.no_grad():
        out = model(
            **batch, decoder_input_ids=batch["input_ids"][:, :5], output_hidden_states=True, output_attentions=True
        )
        final_states_logits = model.lm_head(out.decoder_hidden_states[-1])
    assert len(out.decoder_hidden_states) == 3 and len(out.decoder_attentions) == len(out.cross_attentions) == 2
    torch.testing.assert_close(final_states_logits, out.logits)  # the last entry: the normed output
    for self_map, memory_map in zip(out.decoder_attentions, out.cross_attentions):
        assert self_map.shape[-2:] == (5, 5) and memory_map.shape[-2] == 5
        assert torch.all(self_map.triu(1) == 0)  # no token sees a later one
        torch.testing.assert_close(self_map.sum(-1), torch.ones_like(self_map.sum(-1)))
        torch.testing.assert_close(memory_map.sum(-1), torch.ones_like(memory_map.sum(-1)))


@pytest.mark.parametrize("task", ["captioning", "vqa"])
def test_assisted_decoding_gives_the_tokens_of_greedy_search(task):
    model = build(VTFusionForConditionalGeneration).eval()
    torch.manual_seed(1)  # a different draft model, so that some of its tokens are rejected
    assistant = VTFusionForConditionalGeneration(tiny_config()).eval()
    batch = random_batch(batch_size=1)
    inputs = {"pixel_values": batch["pixel_values"]} if task == "captioning" else batch
    greedy = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8)
    assisted = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, assistant_model=assistant)
    assert torch.equal(assisted, greedy)


def test_get_encoder_encodes_the_decoder_memory_without_owning_weights():
    model, batch = build(VTFusionForConditionalGeneration).eval(), random_batch()
    encoder = model.get_encoder()
    assert list(encoder.parameters()) == [] and encoder.forward.__name__ == "forward"
    with torch.no_grad():
        torch.testing.assert_close(encoder(**batch).last_hidden_state, model.encode(**batch).last_hidden_state)


def test_decoder_sizes_and_cache_setting_are_where_generation_utilities_read_them():
    config = tiny_config(decoder_hidden_size=48, decoder_num_attention_heads=4, decoder_num_hidden_layers=3)
    decoder = config.get_text_config(decoder=True)
    assert (decoder.hidden_size, decoder.num_attention_heads, decoder.num_hidden_layers) == (48, 4, 3)
    assert config.use_cache is True
    assert VTFusionConfig.from_dict(config.to_dict() | {"use_cache": False}).use_cache is False


def test_use_cache_defaults_to_the_config_and_labels_turn_it_off():
    model, batch = build(VTFusionForConditionalGeneration).eval(), random_batch()
    start = torch.full((4, 1), model.config.decoder_start_token_id)
    assert model(**batch, decoder_input_ids=start).past_key_values is not None
    assert model(**batch, labels=batch["input_ids"][:, 1:]).past_key_values is None
    model.config.use_cache = False
    assert model(**batch, decoder_input_ids=start).past_key_values is None


def test_logits_to_keep_returns_only_the_last_positions():
    model, batch = build(VTFusionForConditionalGeneration).eval(), random_batch()
    decoder_input_ids = batch["input_ids"][:, :6]
    with torch.no_grad():
        every = model(**batch, decoder_input_ids=decoder_input_ids).logits
        last = model(**batch, decoder_input_ids=decoder_input_ids, logits_to_keep=1).logits
    assert every.shape[1] == 6 and last.shape[1] == 1
    assert torch.allclose(last[:, 0], every[:, -1], atol=1e-6)


def test_the_caption_loss_divides_by_num_items_in_batch_as_trainer_passes_it():
    model, batch = build(VTFusionForConditionalGeneration).eval(), random_batch()
    labels = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    with torch.no_grad():
        mean = model(**batch, labels=labels).loss
        over_twice_the_tokens = model(**batch, labels=labels, num_items_in_batch=2 * (labels != -100).sum()).loss
    assert torch.allclose(over_twice_the_tokens, mean / 2)


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_a_training_forward_compiles_without_graph_breaks(head):
    model = build(head).train()
    explanation = torch._dynamo.explain(model)(**head_inputs(head))  # the last row is padded; VQA questions; MLM
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_the_mlm_loss_is_the_same_compiled():
    model, inputs = build(VTFusionForPreTraining).eval(), head_inputs(VTFusionForPreTraining)
    with torch.no_grad():
        eager = model(**inputs).mlm_loss
        compiled = torch.compile(model, backend="eager")(**inputs).mlm_loss
    torch.testing.assert_close(compiled, eager)


# -- arguments -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_a_misspelt_keyword_argument_fails_naming_it(head):
    with pytest.raises(TypeError, match="output_attention_maps"):
        build(head)(**head_inputs(head), output_attention_maps=True)


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_main_input_name_is_the_first_forward_argument(head):
    self_, first, *_ = inspect.signature(head.forward).parameters
    assert head.main_input_name == first


def test_feature_methods_honour_output_flags_and_return_dict():
    model, batch = build(VTFusionModel).eval(), random_batch()
    model.set_attn_implementation("eager")  # SDPA computes no attention weights
    text = model.get_text_features(batch["input_ids"], batch["attention_mask"], output_hidden_states=True)
    image = model.get_image_features(batch["pixel_values"], output_hidden_states=True, output_attentions=True)
    assert len(text.hidden_states) == TINY_TEXT["num_hidden_layers"] + 1
    assert len(image.hidden_states) == len(image.attentions) + 1
    as_tuple = model.get_image_features(batch["pixel_values"], return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], image.pooler_output)


# -- special token ids -----------------------------------------------------------------------------------------------


def test_special_token_ids_follow_the_text_config_never_bert_defaults():
    roberta_like = dict(TINY_TEXT, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    config = tiny_config(text_config=roberta_like, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (1, 0, 2)
    assert config.decoder_start_token_id == 0
    small_vocab = dict(TINY_TEXT, vocab_size=50)
    config = tiny_config(text_config=small_vocab, bos_token_id=None, eos_token_id=None)  # BERT: no bos / eos
    assert config.bos_token_id is None and config.eos_token_id is None


def test_a_special_token_id_outside_the_vocabulary_fails_in_the_config():
    with pytest.raises(ValueError, match="bos_token_id=101 is outside the vocabulary of 50 tokens"):
        tiny_config(text_config=dict(TINY_TEXT, vocab_size=50), bos_token_id=101)


def test_a_decoder_without_a_start_id_says_where_to_take_it_from():
    model = build(VTFusionForConditionalGeneration, bos_token_id=None, eos_token_id=None)
    batch = random_batch()
    with pytest.raises(ValueError, match="special_token_ids"):
        model(**batch, labels=batch["input_ids"][:, 1:])


def test_special_token_ids_come_from_the_tokenizer(tiny_tokenizer):
    ids = special_token_ids(tiny_tokenizer)
    assert ids == {
        "pad_token_id": tiny_tokenizer.pad_token_id,
        "bos_token_id": tiny_tokenizer.cls_token_id,
        "eos_token_id": tiny_tokenizer.sep_token_id,
    }


# -- processor -------------------------------------------------------------------------------------------------------


def test_processor_to_dict_is_the_same_before_a_save_after_it_and_after_loading(tiny_tokenizer, tmp_path):
    processor = VTFusionProcessor(image_processor=ViTImageProcessorPil(), tokenizer=tiny_tokenizer)
    before = processor.to_dict()
    processor.save_pretrained(tmp_path)
    assert processor.to_dict() == before == VTFusionProcessor.from_pretrained(tmp_path).to_dict()
    assert before["auto_map"] == {"AutoProcessor": "processing_vtfusion.VTFusionProcessor"}


# -- composition -----------------------------------------------------------------------------------------------------


def test_building_a_head_leaves_the_callers_config_as_it_was():
    config = tiny_config()
    before = config.to_dict()
    for head in HEADS:
        head(config)
    assert config.to_dict() == before  # no auto_map, custom_pipelines nor is_encoder_decoder written into it
    assert VTFusionForConditionalGeneration(config).config.is_encoder_decoder


def test_encoders_are_built_without_their_tanh_pooler():
    model = build(VTFusionModel)
    assert model.text_model.pooler is None and model.vision_model.pooler is None
    assert not [name for name in model.state_dict() if ".pooler." in name]


def test_towers_handed_to_init_are_used_as_they_are():
    reference = build(VTFusionModel)
    weights = {name: p.clone() for name, p in reference.text_model.named_parameters()}
    model = VTFusionModel(reference.config, vision_model=reference.vision_model, text_model=reference.text_model)
    assert model.vision_model is reference.vision_model and model.text_model is reference.text_model
    for name, parameter in model.text_model.named_parameters():
        assert torch.equal(parameter, weights[name]), name  # not initialised again
