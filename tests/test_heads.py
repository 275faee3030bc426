"""Task heads: retrieval (ITC + ITM with hard negatives, two-stage `rank`), classification, generation (captioning,
VQA) and pretraining. Each head trains on a tiny batch, freezes, checkpoints and round-trips through safetensors."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import random_batch, tiny_config
from transformers import BertConfig, BertForSequenceClassification

from modeling_vtfusion import (
    FUSION_TYPES,
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
    fusion,
)
from modeling_vtfusion import modeling_vtfusion as modeling
from modeling_vtfusion.modeling_vtfusion import caption_labels, sample_hard_negatives


HEADS = [
    VTFusionForImageTextRetrieval,
    VTFusionForSequenceClassification,
    VTFusionForConditionalGeneration,
    VTFusionForPreTraining,
]
HEAD_IDS = ["retrieval", "classification", "generation", "pretraining"]
NUM_LABELS = 3
SEP = 3  # the tiny vocabulary's [SEP], the decoder's end of sequence


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from 2 threads, and on 2 shared cores (`pytest -n 2`) extra threads cost ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(head, seed=0, **overrides):
    torch.manual_seed(seed)
    return head(tiny_config(num_labels=NUM_LABELS, **overrides))


def answers(batch_size: int, length: int = 3, seed: int = 1) -> torch.Tensor:
    """Short decoder targets ending with [SEP], as a VQA answer or a caption."""
    tokens = torch.randint(5, 300, (batch_size, length), generator=torch.Generator().manual_seed(seed))
    tokens[:, -1] = SEP
    return tokens


def head_inputs(head, batch_size: int = 4) -> dict:
    """A training batch for `head`: pairs, plus class labels (classification) or answers to a question (generation)."""
    batch = random_batch(batch_size)
    if head is VTFusionForSequenceClassification:
        return dict(batch, labels=torch.arange(batch_size) % NUM_LABELS)
    if head is VTFusionForConditionalGeneration:
        return dict(batch, labels=answers(batch_size))
    return batch


def forward(model, inputs):
    """Retrieval and pretraining draw random hard negatives: the same seed draws the same ones."""
    torch.manual_seed(1234)
    return model(**inputs)


def output_tensors(output) -> dict:
    return {name: value for name, value in output.items() if isinstance(value, torch.Tensor)}


def fit(model, inputs, max_steps: int, names=("loss",), lr: float = 2e-3, target: float = 0.3):
    """Train on one batch until every named loss is below `target` times its first value; returns first and last."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    first = None
    for _ in range(max_steps):
        out = model(**inputs)
        last = {name: out[name].item() for name in names}
        first = first or last
        if all(last[name] < target * first[name] for name in names):
            break
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return first, last


# -- every head trains on a tiny batch ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_retrieval():
    """A retrieval head overfitted on 2 pairs (the smallest batch with a negative): (model, batch, first, last)."""
    model, batch = build(VTFusionForImageTextRetrieval), random_batch(batch_size=2)
    first, last = fit(model, batch, max_steps=200, names=("itc_loss", "itm_loss"), lr=1e-3, target=0.2)
    return model.eval(), batch, first, last


def test_retrieval_head_overfits_with_both_itc_and_itm(trained_retrieval):
    _, _, first, last = trained_retrieval
    for name in ("itc_loss", "itm_loss"):
        assert last[name] < 0.2 * first[name], f"{name}: {first[name]:.3f} -> {last[name]:.3f}"


@pytest.mark.parametrize("fusion_type", FUSION_TYPES)
def test_classification_head_overfits_with_every_fusion_type(fusion_type):
    model = build(VTFusionForSequenceClassification, fusion_type=fusion_type)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    first, last = fit(model, dict(random_batch(batch_size=8), labels=labels), max_steps=150, target=0.25)
    assert last["loss"] < 0.25 * first["loss"], f"{fusion_type}: {first['loss']:.3f} -> {last['loss']:.3f}"


def test_generation_head_overfits_captions():
    batch = random_batch(batch_size=4)
    inputs = {
        "pixel_values": batch["pixel_values"],
        "labels": caption_labels(batch["input_ids"], batch["attention_mask"]),
    }
    first, last = fit(build(VTFusionForConditionalGeneration), inputs, max_steps=150, target=0.25)
    assert last["loss"] < 0.25 * first["loss"]


def test_generation_head_overfits_answers_to_questions():
    inputs = head_inputs(VTFusionForConditionalGeneration)
    first, last = fit(build(VTFusionForConditionalGeneration), inputs, max_steps=150, target=0.25)
    assert last["loss"] < 0.25 * first["loss"]


def test_pretraining_head_overfits_itc_itm_and_lm_together():
    names = ("itc_loss", "itm_loss", "lm_loss")
    first, last = fit(build(VTFusionForPreTraining), random_batch(batch_size=2), 200, names, lr=1e-3, target=0.3)
    for name in names:
        assert last[name] < 0.3 * first[name], f"{name}: {first[name]:.3f} -> {last[name]:.3f}"


# -- retrieval: hard negatives -----------------------------------------------------------------------------------


def test_hard_negatives_are_never_forbidden_columns():
    similarity = torch.randn(6, 6) + 20 * torch.eye(6)  # the positives are by far the most similar
    forbidden = torch.eye(6, dtype=torch.bool)
    forbidden[0, 1] = forbidden[1, 0] = True  # a duplicate of the positive
    torch.manual_seed(0)
    drawn = torch.stack([sample_hard_negatives(similarity, forbidden) for _ in range(500)])  # [500, 6]
    assert not forbidden[torch.arange(6), drawn].any()


def test_hard_negatives_are_drawn_with_softmax_probabilities_of_the_similarity():
    similarity = torch.tensor([[9.0, 0.0, torch.tensor(3.0).log().item()]])  # allowed columns weigh 1 : 3
    forbidden = torch.tensor([[True, False, False]])
    torch.manual_seed(0)
    drawn = torch.cat([sample_hard_negatives(similarity, forbidden) for _ in range(4000)])
    assert abs((drawn == 2).float().mean().item() - 0.75) < 0.03


def test_a_text_identical_to_the_positive_is_never_a_negative(monkeypatch):
    """Pairs 0 and 1 have the same text: neither text may serve as the other image's negative (nor image for text)."""
    draws = []

    def recording(similarity, forbidden, sample):
        negatives = sample_hard_negatives(similarity, forbidden, sample)
        draws.append((forbidden, negatives))
        return negatives

    monkeypatch.setattr(modeling, "sample_hard_negatives", recording)
    model = build(VTFusionForImageTextRetrieval).train()
    batch = random_batch(batch_size=4)
    batch["input_ids"][1], batch["attention_mask"][1] = batch["input_ids"][0], batch["attention_mask"][0]
    for seed in range(20):
        torch.manual_seed(seed)
        model(**batch)
    assert len(draws) == 40
    for forbidden, negatives in draws:
        assert forbidden[0, 1] and forbidden[1, 0]
        assert negatives[0] not in (0, 1) and negatives[1] not in (0, 1)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pairs_without_any_negative_train_itm_on_the_positive_alone(batch_size):
    """A batch of one pair, or of one text repeated, has no negative: ITM must not call the positive a non-match."""
    model = build(VTFusionForImageTextRetrieval).train()
    batch = random_batch(batch_size=batch_size)
    batch["input_ids"][:], batch["attention_mask"][:] = batch["input_ids"][0], batch["attention_mask"][0]
    out = forward(model, batch)
    torch.testing.assert_close(out.itm_loss, -out.itm_logits.log_softmax(-1)[:, 1].mean())


# -- retrieval: two-stage rank -----------------------------------------------------------------------------------


def test_rank_puts_the_trained_match_first_both_ways(trained_retrieval):
    model, batch, _, _ = trained_retrieval
    images = model.retrieval_features(pixel_values=batch["pixel_values"])
    texts = model.retrieval_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert model.rank(texts, images, top_k=2).indices[:, 0].tolist() == [0, 1]
    assert model.rank(images, texts, top_k=2).indices[:, 0].tolist() == [0, 1]


def test_itm_reranking_overrules_a_wrong_itc_order(trained_retrieval):
    """Swap the two images' ITC embeddings: ITC now ranks the wrong image first, ITM restores the right one."""
    model, batch, _, _ = trained_retrieval
    images = model.retrieval_features(pixel_values=batch["pixel_values"])
    images.embeds = images.embeds.flip(0)
    texts = model.retrieval_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ranking = model.rank(texts, images, top_k=2)
    assert ranking.itc_indices[:, 0].tolist() == [1, 0]
    assert ranking.indices[:, 0].tolist() == [0, 1]


def test_rank_candidates_are_the_itc_top_k():
    model, batch = build(VTFusionForImageTextRetrieval).eval(), random_batch(batch_size=6)
    images = model.retrieval_features(pixel_values=batch["pixel_values"])
    texts = model.retrieval_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ranking = model.rank(texts, images, top_k=3)
    with torch.no_grad():
        logits_per_text = model(**batch, return_loss=False).logits_per_text  # [texts, images]
    torch.testing.assert_close(ranking.itc_scores, logits_per_text.topk(3, dim=-1).values)
    assert torch.equal(ranking.itc_indices, logits_per_text.topk(3, dim=-1).indices)
    assert torch.equal(ranking.indices.sort(-1).values, ranking.itc_indices.sort(-1).values)


@pytest.mark.parametrize("queries", ["texts", "images"])
def test_rank_scores_are_the_itm_match_log_probabilities_best_first(queries):
    model, batch = build(VTFusionForImageTextRetrieval).eval(), random_batch(batch_size=5)
    images = model.retrieval_features(pixel_values=batch["pixel_values"])
    texts = model.retrieval_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ranking = model.rank(texts, images, top_k=4) if queries == "texts" else model.rank(images, texts, top_k=4)
    query_rows, gallery_rows = torch.arange(5).repeat_interleave(4), ranking.indices.flatten()
    text_rows, image_rows = (query_rows, gallery_rows) if queries == "texts" else (gallery_rows, query_rows)
    with torch.no_grad():
        itm_logits = model(
            input_ids=batch["input_ids"][text_rows],
            attention_mask=batch["attention_mask"][text_rows],
            pixel_values=batch["pixel_values"][image_rows],
            return_loss=False,
        ).itm_logits
    torch.testing.assert_close(ranking.scores, itm_logits.log_softmax(-1)[:, 1].view(5, 4))
    assert (ranking.scores[:, :-1] >= ranking.scores[:, 1:]).all()


def test_rank_in_chunks_equals_rank_in_one_pass():
    model, batch = build(VTFusionForImageTextRetrieval).eval(), random_batch(batch_size=7)
    whole = [
        model.retrieval_features(pixel_values=batch["pixel_values"]),
        model.retrieval_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]),
    ]
    chunked = [
        model.retrieval_features(pixel_values=batch["pixel_values"], batch_size=3),
        model.retrieval_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], batch_size=3),
    ]
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a.embeds, b.embeds)
        torch.testing.assert_close(a.tokens, b.tokens)
    one_pass, in_chunks = model.rank(whole[1], whole[0], top_k=5), model.rank(chunked[1], chunked[0], 5, batch_size=2)
    assert torch.equal(one_pass.indices, in_chunks.indices)
    torch.testing.assert_close(one_pass.scores, in_chunks.scores)


def test_rank_refuses_queries_and_gallery_of_the_same_modality():
    model, batch = build(VTFusionForImageTextRetrieval).eval(), random_batch()
    images = model.retrieval_features(pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="text queries with an image gallery"):
        model.rank(images, images)


# -- classification ----------------------------------------------------------------------------------------------


PROBLEMS = {  # num_labels, labels -> problem_type inferred as BertForSequenceClassification infers it, and its loss
    "single_label": (3, torch.tensor([0, 2, 1, 2]), "single_label_classification", F.cross_entropy),
    "multi_label": (
        3,
        torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]]),
        "multi_label_classification",
        F.binary_cross_entropy_with_logits,
    ),
    "regression": (
        1,
        torch.tensor([0.5, -1.0, 2.0, 0.0]),
        "regression",
        lambda logits, labels: F.mse_loss(logits.squeeze(-1), labels),
    ),
}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_problem_type_and_loss_follow_the_labels_as_in_bert(problem):
    num_labels, labels, problem_type, loss_function = PROBLEMS[problem]
    torch.manual_seed(0)
    model = VTFusionForSequenceClassification(tiny_config(num_labels=num_labels)).eval()
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=300,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=num_labels,
        )
    )
    batch = random_batch()
    out = model(**batch, labels=labels)
    bert(input_ids=batch["input_ids"], labels=labels)
    assert model.config.problem_type == bert.config.problem_type == problem_type
    assert out.logits.shape == (4, num_labels)
    torch.testing.assert_close(out.loss, loss_function(out.logits, labels))


def test_num_labels_id2label_and_label2id_survive_save_and_load(tmp_path):
    id2label = {0: "contradiction", 1: "neutral", 2: "entailment"}
    label2id = {label: i for i, label in id2label.items()}
    model = VTFusionForSequenceClassification(tiny_config(id2label=id2label, label2id=label2id)).eval()
    model.save_pretrained(tmp_path)
    loaded = VTFusionForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.config.num_labels == 3 and loaded.classifier.out_features == 3
    assert loaded.config.id2label == id2label and loaded.config.label2id == label2id


# -- generation --------------------------------------------------------------------------------------------------


def generation_inputs(task: str) -> dict:
    """Captioning: 3 images. VQA: 3 images with questions, the last question padded."""
    batch = random_batch(batch_size=3)
    return {"pixel_values": batch["pixel_values"]} if task == "captioning" else batch


@pytest.mark.parametrize("task", ["captioning", "vqa"])
@pytest.mark.parametrize("search", [{}, {"num_beams": 3}], ids=["greedy", "beam"])
def test_cached_and_uncached_generation_give_identical_tokens(task, search):
    model = build(VTFusionForConditionalGeneration).eval()
    inputs = generation_inputs(task)
    cached = model.generate(**inputs, max_new_tokens=8, use_cache=True, **search)
    uncached = model.generate(**inputs, max_new_tokens=8, use_cache=False, **search)
    assert cached.shape == (3, 9)
    assert torch.equal(cached, uncached)


def test_generated_sequences_start_with_the_decoder_start_token():
    model = build(VTFusionForConditionalGeneration).eval()
    tokens = model.generate(**generation_inputs("vqa"), max_new_tokens=4)
    assert (tokens[:, 0] == model.config.decoder_start_token_id).all()


def test_beam_search_returns_num_return_sequences_distinct_sequences():
    model = build(VTFusionForConditionalGeneration).eval()
    tokens = model.generate(**generation_inputs("captioning"), max_new_tokens=5, num_beams=4, num_return_sequences=3)
    assert tokens.shape == (9, 6)
    for image in range(3):
        assert len({tuple(row) for row in tokens[3 * image : 3 * image + 3].tolist()}) == 3


def test_sampling_is_reproducible_under_a_seed_and_varies_across_seeds():
    model = build(VTFusionForConditionalGeneration).eval()
    inputs = generation_inputs("captioning")

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(**inputs, max_new_tokens=6, do_sample=True, top_k=0)

    first = sample(0)
    assert first.shape == (3, 7) and (first < model.config.vocab_size).all()
    assert torch.equal(first, sample(0))
    assert not torch.equal(first, sample(1))


def test_label_positions_set_to_minus_100_do_not_count():
    """[a b c -100 -100] scores exactly like [a b c]: the decoder is causal and ignored positions add nothing."""
    model = build(VTFusionForConditionalGeneration).eval()
    inputs = head_inputs(VTFusionForConditionalGeneration)
    short = answers(4, length=3)
    padded = torch.cat([short, torch.full((4, 2), -100)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(**dict(inputs, labels=padded)).loss, model(**dict(inputs, labels=short)).loss)


def test_several_new_tokens_after_a_cache_decode_as_they_would_without_it():
    """Assisted decoding verifies a draft of several tokens in one call on top of the cache: causal for those tokens,
    with the cached ones all visible."""
    model = build(VTFusionForConditionalGeneration).eval()
    inputs = generation_inputs("vqa")
    tokens = answers(3, length=6)
    with torch.no_grad():
        whole = model(**inputs, decoder_input_ids=tokens).logits
        first = model(**inputs, decoder_input_ids=tokens[:, :2], use_cache=True)
        cache = first.past_key_values if first.past_key_values is not None else first.cache
        rest = model(**inputs, decoder_input_ids=tokens[:, 2:], past_key_values=cache).logits
    torch.testing.assert_close(rest, whole[:, 2:], atol=1e-5, rtol=1e-4)


def count_calls(module, calls: list):
    return module.register_forward_hook(lambda *_: calls.append(1))


def test_generate_encodes_the_image_and_question_once():
    model = build(VTFusionForConditionalGeneration).eval()
    vision_calls, text_calls = [], []
    hooks = [
        count_calls(model.vtfusion.vision_model, vision_calls),
        count_calls(model.vtfusion.text_model, text_calls),
    ]
    model.generate(**generation_inputs("vqa"), max_new_tokens=5, min_new_tokens=5)
    for hook in hooks:
        hook.remove()
    assert len(vision_calls) == len(text_calls) == 1


@pytest.mark.parametrize("search", [{}, {"num_beams": 2}], ids=["greedy", "beam"])
def test_memory_keys_and_values_are_computed_once_per_generate(search, monkeypatch):
    model = build(VTFusionForConditionalGeneration).eval()
    layer = model.text_decoder.layers[0]
    projected = []  # (the projections computed together, how many positions of each row they read)
    original = fusion.linear_products

    def recorded(states, *projections):
        projected.append((projections, states.shape[1]))
        return original(states, *projections)

    monkeypatch.setattr(fusion, "linear_products", recorded)
    model.generate(**generation_inputs("captioning"), max_new_tokens=5, min_new_tokens=5, **search)
    memory = [n for projections, n in projected if layer.cross_attn.k_proj in projections]
    own = [n for projections, n in projected if layer.self_attn.k_proj in projections]
    assert len(memory) == 1
    assert own == [1] * 5  # one decoder step per new token, each projecting only the newest token


# -- pretraining -------------------------------------------------------------------------------------------------


def test_pretraining_loss_is_the_config_weighted_sum_of_the_reported_losses():
    model = build(VTFusionForPreTraining, itc_loss_weight=0.5, itm_loss_weight=2.0, lm_loss_weight=0.25)
    out = forward(model, random_batch())
    assert all(out[name].item() > 0 for name in ("itc_loss", "itm_loss", "lm_loss"))
    torch.testing.assert_close(out.loss, 0.5 * out.itc_loss + 2.0 * out.itm_loss + 0.25 * out.lm_loss)


def masked_captions(batch: dict, positions: list[int]) -> dict:
    """The batch's captions with `positions` replaced by [MASK] (id 4), and MLM labels holding the masked words."""
    mlm_input_ids, mlm_labels = batch["input_ids"].clone(), torch.full_like(batch["input_ids"], -100)
    mlm_labels[:, positions] = batch["input_ids"][:, positions]
    mlm_input_ids[:, positions] = 4
    return {"mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels}


def test_pretraining_adds_mlm_when_masked_captions_are_given():
    model = build(VTFusionForPreTraining, mlm_loss_weight=0.5)
    batch = random_batch()
    plain = forward(model, batch)
    with_mlm = forward(model, batch | masked_captions(batch, [1, 2]))

    assert plain.mlm_loss is None
    assert with_mlm.mlm_loss.item() > 0
    torch.testing.assert_close(with_mlm.loss, plain.loss + 0.5 * with_mlm.mlm_loss)


def test_mlm_with_no_masked_word_is_zero_and_keeps_the_mlm_head_in_the_graph():
    model, batch = build(VTFusionForPreTraining).train(), random_batch()
    out = model(**batch, mlm_input_ids=batch["input_ids"], mlm_labels=torch.full_like(batch["input_ids"], -100))
    out.loss.backward()
    assert out.mlm_loss.item() == 0.0
    assert model.mlm_head.weight.grad is not None  # DDP needs every parameter in the graph


def test_mlm_trains_the_fusion_layers_and_overfits_masked_words():
    model = build(VTFusionForPreTraining, itc_loss_weight=0.0, itm_loss_weight=0.0, lm_loss_weight=0.0).train()
    batch = random_batch(batch_size=4)
    batch |= masked_captions(batch, [1, 2])
    model(**batch).loss.backward()

    fusion_grads = [p.grad for p in model.vtfusion.fusion.parameters() if p.grad is not None]
    assert fusion_grads and any(grad.abs().sum() > 0 for grad in fusion_grads)
    first, last = fit(build(VTFusionForPreTraining), batch, 150, ("mlm_loss",), lr=1e-3, target=0.2)
    assert last["mlm_loss"] < 0.2 * first["mlm_loss"]


# -- every head: freezing, gradient checkpointing, save and load -------------------------------------------------


def names_with_gradient(head, checkpointing=False, **overrides) -> set:
    model = build(head, **overrides).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    forward(model, head_inputs(head)).loss.backward()
    return {name for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_freezing_the_encoders_removes_exactly_their_gradients(head, checkpointing):
    """With or without checkpointing, frozen encoders get no gradient and every other trained parameter still does."""
    trained = names_with_gradient(head)
    frozen = names_with_gradient(head, checkpointing, freeze_vision_encoder=True, freeze_text_encoder=True)
    encoders = ("vtfusion.vision_model.", "vtfusion.text_model.")
    assert any(name.startswith(encoders) for name in trained)
    assert frozen == {name for name in trained if not name.startswith(encoders)}


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_gradient_checkpointing_gives_the_same_gradients(head):
    plain = build(head).train()
    checkpointed = build(head).train()
    checkpointed.activation_checkpointing_enable()
    checkpointed_layers = [m for m in checkpointed.modules() if getattr(m, "gradient_checkpointing", False)]
    assert len(checkpointed_layers) >= 5  # the encoders' layers and vtfusion's own
    inputs = head_inputs(head)
    for model in (plain, checkpointed):
        forward(model, inputs).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
def test_head_saves_as_safetensors_and_reloads_with_identical_outputs(head, tmp_path):
    model = build(head).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "modeling_vtfusion.py").exists()
    loaded = head.from_pretrained(tmp_path).eval()
    inputs = head_inputs(head)
    with torch.no_grad():
        expected, actual = output_tensors(forward(model, inputs)), output_tensors(forward(loaded, inputs))
    assert expected.keys() == actual.keys() and "loss" in expected
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=name)


@pytest.mark.parametrize("head", [VTFusionForConditionalGeneration, VTFusionForPreTraining], ids=HEAD_IDS[2:])
def test_reloaded_lm_head_stays_tied_to_the_decoder_embeddings(head, tmp_path):
    build(head).save_pretrained(tmp_path)
    loaded = head.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.text_decoder.embed_tokens.weight.data_ptr()
