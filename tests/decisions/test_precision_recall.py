"""Precision–recall of best matches against a NumPy transcription of the VPR_Tutorial's
`createPR(S, GT, matching="single")` / `recallAt100precision`, evaluated at every distinct
similarity instead of 100 sampled thresholds, and a hand-computed case."""

import numpy as np
import pytest

from netvlad_tf.decisions.precision_recall import best_match_precision_recall


def transcribed_curve(best_similarity, best_is_correct, has_positive):
    """createPR (single matching): for each threshold t, B = S ≥ t, TP = |GT ∧ B|,
    FP = |¬GT ∧ B|, P = TP / (TP + FP), R = TP / GTP with GTP the queries that have a positive."""
    ground_truth_positives = np.count_nonzero(has_positive)
    thresholds, precision, recall = [], [], []
    for threshold in sorted(set(best_similarity.tolist()), reverse=True):
        accepted = best_similarity >= threshold
        true_positives = np.count_nonzero(best_is_correct & accepted)
        false_positives = np.count_nonzero(~best_is_correct & accepted)
        thresholds.append(threshold)
        precision.append(true_positives / (true_positives + false_positives))
        recall.append(true_positives / ground_truth_positives)
    return np.array(thresholds), np.array(precision), np.array(recall)


def transcribed_recall_at_100_precision(precision, recall):
    """recallAt100precision: the largest recall among the points of precision 1."""
    return recall[precision == 1].max() if np.any(precision == 1) else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_matches_the_transcription_with_ties_and_queries_without_positive(seed):
    rng = np.random.default_rng(seed)
    num_queries = 200
    similarity = np.round(rng.uniform(0, 1, num_queries), 2)  # rounding makes ties
    has_positive = rng.uniform(size=num_queries) < 0.8
    # Correct best matches are likelier at high similarity, as with a real model.
    best_is_correct = has_positive & (rng.uniform(size=num_queries) < similarity)
    curve = best_match_precision_recall(similarity, best_is_correct, has_positive)
    thresholds, precision, recall = transcribed_curve(similarity, best_is_correct, has_positive)
    np.testing.assert_allclose(curve.thresholds, thresholds)
    np.testing.assert_allclose(curve.precision, precision)
    np.testing.assert_allclose(curve.recall, recall)
    assert curve.num_without_positive == np.count_nonzero(~has_positive)
    assert curve.recall_at_precision(1.0) == pytest.approx(transcribed_recall_at_100_precision(precision, recall))
    step_area = sum((recall[i] - (recall[i - 1] if i else 0.0)) * precision[i] for i in range(len(recall)))
    assert curve.auc == pytest.approx(step_area)
    at_99 = [(r, t) for p, r, t in zip(precision, recall, thresholds) if p >= 0.99]
    expected_recall_99 = max((r for r, _ in at_99), default=0.0)
    assert curve.recall_at_precision(0.99) == pytest.approx(expected_recall_99)
    if at_99:
        # The highest threshold among those with that recall and precision ≥ 99 %.
        assert curve.threshold_at_precision(0.99) == max(t for r, t in at_99 if r == expected_recall_99)
    else:
        assert curve.threshold_at_precision(0.99) is None


def test_hand_computed_case_with_a_new_place():
    # Four queries; the last shows a place the database does not hold. Its best match (0.95)
    # is the most similar of all, so accepting it is the first false positive.
    curve = best_match_precision_recall(
        best_similarity=[0.95, 0.9, 0.8, 0.7],
        best_is_correct=[False, True, True, False],
        has_positive=[False, True, True, True],
    )
    # t = 0.95: 1 accepted, 0 TP; t = 0.9: 2 accepted, 1 TP; t = 0.8: 3, 2; t = 0.7: 4, 2.
    assert curve.precision.tolist() == [0.0, 0.5, 2 / 3, 0.5]
    assert curve.recall.tolist() == [0.0, 1 / 3, 2 / 3, 2 / 3]
    assert curve.auc == pytest.approx(1 / 3 * 0.5 + 1 / 3 * 2 / 3)
    assert curve.recall_at_precision(1.0) == 0.0 and curve.threshold_at_precision(0.99) is None
    assert curve.summary()["num_queries_without_positive"] == 1


def test_a_threshold_above_the_new_place_reaches_full_precision():
    curve = best_match_precision_recall([0.99, 0.9, 0.8, 0.7], [True, True, False, True], [True, True, False, True])
    assert curve.recall_at_precision(1.0) == pytest.approx(2 / 3)
    assert curve.threshold_at_precision(0.99) == 0.9  # accepting 0.8 would let the new place in


@pytest.mark.parametrize("arguments, message", [
    (([0.5], [True], [False]), "cannot have a correct best match"),
    (([0.5, 0.4], [False], [True]), "one entry per query"),
    (([np.nan], [False], [True]), "NaN"),
    (([0.5], [False], [False]), "No query has a positive"),
    (([], [], []), "No queries"),
])
def test_bad_inputs_are_one_line_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        best_match_precision_recall(*arguments)
