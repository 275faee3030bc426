"""The `evaluate` metric modules of `training/metrics`, checked against values computed by hand on small cases.

BLEU, ROUGE-L and CIDEr-D were also checked, outside the test suite, to agree with nltk's `corpus_bleu` and
pycocoevalcap's `Bleu`, `Rouge` (beta=1.2, one reference) and `Cider` on SynthShapes captions to 1e-12.
"""

import math

import pytest

from training.metrics import METRIC_NAMES, load_metric


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name) for name in METRIC_NAMES}


def test_load_metric_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("accuracy")


# classification


def test_classification_accuracy_and_macro_f1(metrics):
    # accuracy: 4 of 6 right. F1 = 2 TP / (#predicted + #actual) per class:
    # class 0: 2*1 / (2 + 2) = 1/2, class 1: 2*1 / (1 + 2) = 2/3, class 2: 2*2 / (3 + 2) = 4/5; mean = 0.65556
    result = metrics["classification"].compute(predictions=[0, 0, 1, 2, 2, 2], references=[0, 1, 1, 2, 2, 0])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)


def test_classification_macro_f1_counts_given_labels_never_seen_as_zero(metrics):
    # class 3 neither predicted nor referenced: F1 = 0, so the mean is over 4 classes
    result = metrics["classification"].compute(
        predictions=[0, 0, 1, 2, 2, 2], references=[0, 1, 1, 2, 2, 0], labels=[0, 1, 2, 3]
    )
    assert result["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 4)


def test_classification_recall_is_per_class_in_label_order(metrics):
    # class 0: 1 of 2 found, class 1: 1 of 2, class 2: 2 of 2, class 3: never referenced
    result = metrics["classification"].compute(
        predictions=[0, 0, 1, 2, 2, 2], references=[0, 1, 1, 2, 2, 0], labels=[0, 1, 2, 3]
    )
    assert result["recall"] == pytest.approx([1 / 2, 1 / 2, 1.0, 0.0])


# retrieval_recall

# rows: texts, columns: images; text i describes image i.
SIMILARITY = [
    [0.9, 0.5, 0.1],  # text 0: its image scores best -> rank 0
    [0.8, 0.3, 0.6],  # text 1: 0.8 and 0.6 beat 0.3 -> rank 2
    [0.95, 0.7, 0.4],  # text 2: 0.95 and 0.7 beat 0.4 -> rank 2
]
# columns as image queries: image 0 [0.9, 0.8, 0.95] -> rank 1; image 1 [0.5, 0.3, 0.7] -> rank 2;
# image 2 [0.1, 0.6, 0.4] -> rank 1


def test_retrieval_recall_at_k_both_directions_on_a_3x3_matrix(metrics):
    result = metrics["retrieval_recall"].compute(predictions=SIMILARITY, references=[0, 1, 2], k_values=(1, 2, 3))
    assert result["text_to_image_recall@1"] == pytest.approx(1 / 3)  # ranks 0, 2, 2
    assert result["text_to_image_recall@2"] == pytest.approx(1 / 3)
    assert result["text_to_image_recall@3"] == 1.0
    assert result["image_to_text_recall@1"] == 0.0  # ranks 1, 2, 1
    assert result["image_to_text_recall@2"] == pytest.approx(2 / 3)
    assert result["image_to_text_recall@3"] == 1.0
    assert result["mean_recall"] == pytest.approx((1 / 3 + 1 / 3 + 1 + 0 + 2 / 3 + 1) / 6)


def test_retrieval_recall_counts_any_image_with_the_same_id_as_a_hit(metrics):
    # images 0 and 2 read the same ("a"): text 2's best image (0, score 0.95) is now a hit; image 0 is answered by
    # texts 0 and 2 (best 0.95, rank 0); image 2 by texts 0 and 2 (best 0.4; 0.6 of text 1 beats it, rank 1)
    result = metrics["retrieval_recall"].compute(
        predictions=SIMILARITY, references=["a", "b", "a"], image_ids=["a", "b", "a"], k_values=(1,)
    )
    assert result["text_to_image_recall@1"] == pytest.approx(2 / 3)
    assert result["image_to_text_recall@1"] == pytest.approx(1 / 3)


def test_retrieval_recall_counts_ties_against_the_query(metrics):
    # every score alike: both wrong items tie with the right one, so its rank is 2
    result = metrics["retrieval_recall"].compute(predictions=[[0.5] * 3] * 3, references=[0, 1, 2], k_values=(1, 3))
    assert result["text_to_image_recall@1"] == result["image_to_text_recall@1"] == 0.0
    assert result["text_to_image_recall@3"] == result["image_to_text_recall@3"] == 1.0


def test_retrieval_recall_with_several_texts_per_image(metrics):
    # 4 texts, 2 images; texts 0 and 1 describe image 0. Image 1 is queried: texts 2 (0.2) and 3 (0.9); best 0.9
    # beats all -> rank 0. Image 0: best of texts 0, 1 is 0.7; text 3 scores 0.8 on it -> rank 1.
    scores = [[0.7, 0.1], [0.6, 0.3], [0.5, 0.2], [0.8, 0.9]]
    result = metrics["retrieval_recall"].compute(predictions=scores, references=[0, 0, 1, 1], k_values=(1,))
    assert result["text_to_image_recall@1"] == pytest.approx(3 / 4)  # text 2 prefers image 0
    assert result["image_to_text_recall@1"] == pytest.approx(1 / 2)


def test_retrieval_recall_rows_added_in_batches_equal_one_compute(metrics):
    metric = metrics["retrieval_recall"]
    metric.add_batch(predictions=SIMILARITY[:2], references=[0, 1])
    metric.add_batch(predictions=SIMILARITY[2:], references=[2])
    assert metric.compute(k_values=(1, 2)) == metric.compute(
        predictions=SIMILARITY, references=[0, 1, 2], k_values=(1, 2)
    )


def test_retrieval_recall_rejects_a_text_without_a_correct_image(metrics):
    with pytest.raises(ValueError, match="at least one correct item"):
        metrics["retrieval_recall"].compute(predictions=SIMILARITY, references=[0, 1, 7])


# vqa_accuracy


def test_vqa_accuracy_with_one_reference_is_exact_match_after_normalisation(metrics):
    # "Two" -> "2"; "The circle." -> "circle"; "red" != "blue"
    result = metrics["vqa_accuracy"].compute(
        predictions=["Two", "The circle.", "red"], references=[["2"], ["circle"], ["blue"]]
    )
    assert result["vqa_accuracy"] == pytest.approx(2 / 3)


def test_vqa_accuracy_is_min_of_matching_annotators_over_three_and_one(metrics):
    annotators = ["red"] * 2 + ["orange"] * 8
    # "red": min(2 / 3, 1); "orange": min(8 / 3, 1) = 1; "blue": 0
    result = metrics["vqa_accuracy"].compute(predictions=["red", "orange", "blue"], references=[annotators] * 3)
    assert result["vqa_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_vqa_accuracy_takes_plain_string_references_and_reports_each_question_type(metrics):
    result = metrics["vqa_accuracy"].compute(
        predictions=["yes", "no", "red"],
        references=["yes", "yes", "red"],
        question_types=["exists", "exists", "color"],
    )
    assert result == pytest.approx({"vqa_accuracy": 2 / 3, "vqa_accuracy_color": 1.0, "vqa_accuracy_exists": 0.5})


# bleu


def test_bleu_of_a_prediction_equal_to_its_reference_is_one(metrics):
    result = metrics["bleu"].compute(
        predictions=["a red circle at the top left"], references=[["a red circle at the top left"]]
    )
    assert result["bleu"] == pytest.approx(1.0)
    assert result["brevity_penalty"] == 1.0


def test_bleu_four_of_a_one_word_substitution(metrics):
    # "a red circle on the right" vs "a red circle on the left", 6 words each (BP = 1):
    # p1 = 5/6, p2 = 4/5, p3 = 3/4, p4 = 2/3 (every n-gram holding "right" misses); product = 1/3
    result = metrics["bleu"].compute(
        predictions=["a red circle on the right"], references=[["a red circle on the left"]]
    )
    assert result["precisions"] == pytest.approx([5 / 6, 4 / 5, 3 / 4, 2 / 3])
    assert result["bleu"] == pytest.approx((1 / 3) ** (1 / 4))


def test_bleu_clips_each_word_to_its_count_in_a_reference(metrics):
    # Papineni et al.'s example: "the" is 7 times in the prediction, at most 2 times in one reference: p1 = 2/7
    result = metrics["bleu"].compute(
        predictions=["the the the the the the the"],
        references=[["the cat is on the mat", "there is a cat on the mat"]],
        max_order=1,
    )
    assert result["bleu"] == pytest.approx(2 / 7)


def test_bleu_brevity_penalty_uses_the_closest_reference_length(metrics):
    # 3 words against a 6-word reference: BP = exp(1 - 6/3) = 1/e; with a 3-word reference too, r = 3 and BP = 1
    short = metrics["bleu"].compute(
        predictions=["a red circle"], references=[["a red circle on the left"]], max_order=3
    )
    assert short["brevity_penalty"] == pytest.approx(math.exp(-1))
    assert short["bleu"] == pytest.approx(math.exp(-1))
    closest = metrics["bleu"].compute(
        predictions=["a red circle"], references=[["a red circle on the left", "a red circle"]], max_order=3
    )
    assert closest["bleu"] == pytest.approx(1.0)


def test_bleu_sums_counts_over_the_corpus_before_dividing(metrics):
    # p1 = (2 + 1) / (2 + 4) = 1/2, not the mean of the sentence precisions (1 + 1/4) / 2
    result = metrics["bleu"].compute(predictions=["a b", "c d e f"], references=[["a b"], ["c x y z"]], max_order=1)
    assert result["bleu"] == pytest.approx(1 / 2)


def test_bleu_without_smoothing_is_zero_when_an_order_has_no_match_and_add_one_smoothing_lifts_it(metrics):
    # "red circle left top" vs "red circle top left": matches / candidates per order 4/4, 1/3, 0/2, 0/1
    # add-one: 5/5, 2/4, 1/3, 1/2 -> (1/12) ** (1/4)
    inputs = {"predictions": ["red circle left top"], "references": [["red circle top left"]]}
    assert metrics["bleu"].compute(**inputs)["bleu"] == 0.0
    assert metrics["bleu"].compute(**inputs, smooth=True)["bleu"] == pytest.approx((1 / 12) ** (1 / 4))


# rouge_l


def test_rouge_l_is_the_f_measure_of_the_longest_common_subsequence(metrics):
    # LCS("red circle top", "a red circle at the top") = "red circle top" = 3: P = 3/3, R = 3/6, F1 = 2/3
    result = metrics["rouge_l"].compute(predictions=["red circle top"], references=[["a red circle at the top"]])
    assert result["rouge_l"] == pytest.approx(2 / 3)


def test_rouge_l_depends_on_word_order(metrics):
    # reversed: the LCS is one word: P = R = 1/6
    result = metrics["rouge_l"].compute(
        predictions=["top the at circle red a"], references=["a red circle at the top"]
    )
    assert result["rouge_l"] == pytest.approx(1 / 6)


def test_rouge_l_takes_the_best_reference_and_the_corpus_mean(metrics):
    # first prediction: max(0, 2/3); second: no common word, 0
    result = metrics["rouge_l"].compute(
        predictions=["red circle top", "blue square"],
        references=[["blue square", "a red circle at the top"], ["yellow triangle"]],
    )
    assert result["rouge_l"] == pytest.approx((2 / 3 + 0) / 2)


def test_rouge_l_beta_weighs_recall(metrics):
    # P = 1, R = 1/2, beta = 1.2: (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1) = 1.22 / 1.94
    result = metrics["rouge_l"].compute(
        predictions=["red circle top"], references=["a red circle at the top"], beta=1.2
    )
    assert result["rouge_l"] == pytest.approx(1.22 / 1.94)


# cider


def test_cider_on_a_two_item_corpus(metrics):
    # Every n-gram is in the references of one item of two: idf = log 2 - log 1 = log 2 for all.
    # Item 1, "a b" vs "a b": orders 1 and 2 have cosine 1, orders 3 and 4 are empty: 10 * (1 + 1 + 0 + 0) / 4 = 5.
    # Item 2, "c" vs "c d": unigrams (c: log2) . (c: log2, d: log2) / (log2 * sqrt(2) log2) = 1/sqrt(2), other
    # orders 0; length penalty exp(-(1 - 2)^2 / (2 * 6^2)) = exp(-1/72): 10 * (1/sqrt(2) / 4) * exp(-1/72) = 1.7434.
    result = metrics["cider"].compute(predictions=["a b", "c"], references=[["a b"], ["c d"]])
    item_2 = 10 * (1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert result["cider"] == pytest.approx((5 + item_2) / 2)


def test_cider_gives_no_weight_to_words_in_every_items_references(metrics):
    # "a" is in the references of both items: idf 0. Item 1 then shares nothing weighted with its reference;
    # item 2, "a y" vs "a y": unigram and bigram cosines 1 -> 10 * 2 / 4 = 5.
    result = metrics["cider"].compute(predictions=["a z", "a y"], references=[["a x"], ["a y"]])
    assert result["cider"] == pytest.approx((0 + 5) / 2)


def test_cider_clips_repeated_words(metrics):
    # item 1, "b b" vs "b c": unigram vectors (b: 2 log2) and (b: log2, c: log2);
    # clipped dot min(2 log2, log2) * log2 = log2^2, norms 2 log2 * sqrt(2) log2 -> 1 / (2 sqrt(2)); no common bigram.
    # Item 2, "d" vs "d": unigram cosine 1 -> 10 / 4 = 2.5.
    result = metrics["cider"].compute(predictions=["b b", "d"], references=[["b c"], ["d"]])
    item_1 = 10 * (1 / (2 * math.sqrt(2))) / 4
    assert result["cider"] == pytest.approx((item_1 + 2.5) / 2)


def test_cider_of_a_one_item_corpus_is_zero(metrics):
    # idf = log 1 - log 1 = 0 for every n-gram, as in pycocoevalcap
    assert metrics["cider"].compute(predictions=["a red circle"], references=[["a red circle"]])["cider"] == 0.0
