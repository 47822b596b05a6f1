"""Sequence scores against a loop-by-loop transcription of SeqSLAM's diagonal sum, and
sequence matching inside evaluate() on the bundled Nordland route."""

import numpy as np
import pytest

from netvlad_tf.data import GeoDataset, read_csv_dataset
from netvlad_tf.decisions.sequences import sequence_similarities
from netvlad_tf.evaluation.evaluate import evaluate
from netvlad_tf.sample_data import nordland_csv


def transcribed_sequence_scores(similarities, length, speeds, query_segments, database_segments):
    """For each (i, j): the best over speeds v of the mean of S[i − k, j − round(v·k)] over the
    k < L where query frame i − k exists in frame i's recording; a database frame j − round(v·k)
    that does not exist in frame j's recording is replaced by the mean of row i − k."""
    num_queries, num_database = similarities.shape
    scores = np.zeros(similarities.shape)
    for i in range(num_queries):
        for j in range(num_database):
            best = -np.inf
            for speed in speeds:
                terms = []
                for k in range(length):
                    query, database = i - k, j - int(round(speed * k))
                    if query < 0 or query_segments[query] != query_segments[i]:
                        continue
                    if database < 0 or database_segments[database] != database_segments[j]:
                        terms.append(np.mean(similarities[query]))
                    else:
                        terms.append(similarities[query, database])
                best = max(best, np.mean(terms))
            scores[i, j] = best
    return scores


@pytest.mark.parametrize("length, speeds", [(1, (1.0,)), (4, (1.0,)), (5, (0.8, 1.0, 1.25)), (30, (1.0, 2.0))])
def test_scores_match_the_transcription_with_edges_and_recordings(length, speeds):
    rng = np.random.default_rng(length)
    similarities = rng.uniform(-1, 1, (17, 23)).astype(np.float32)
    query_segments = np.repeat([0, 1], [9, 8])
    database_segments = np.repeat([0, 1, 2], [7, 10, 6])
    scores = sequence_similarities(similarities, length, speeds, query_segments, database_segments)
    expected = transcribed_sequence_scores(similarities, length, speeds, query_segments, database_segments)
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_a_repeated_route_is_found_by_sequences_where_frames_are_ambiguous():
    # Frame-level similarity: the true diagonal is only slightly better than noise, and one
    # distractor column is strong for a single frame; ten frames together pick the diagonal.
    rng = np.random.default_rng(0)
    similarities = rng.uniform(0, 0.5, (40, 40)) + 0.25 * np.eye(40)
    similarities[:, 7] += 0.4
    single_correct = np.mean(similarities.argmax(1) == np.arange(40))
    sequence_correct = np.mean(sequence_similarities(similarities, 10).argmax(1)[10:] == np.arange(10, 40))
    assert single_correct < 0.3 and sequence_correct == 1.0


@pytest.mark.parametrize("arguments, message", [
    ((np.zeros((2, 2)), 0), "positive integer"),
    ((np.zeros(3), 2), "matrix"),
    ((np.zeros((2, 2)), 2, (0.0,)), "speeds"),
    ((np.zeros((2, 2)), 2, (1.0,), np.zeros(3)), "one label per frame"),
])
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        sequence_similarities(*arguments)


@pytest.mark.slow
def test_evaluate_follows_the_frame_column_not_the_row_order():
    route = read_csv_dataset(nordland_csv("test")).select(np.arange(80), np.arange(80))
    database_rows, query_rows = np.random.default_rng(0).permutation(80), np.random.default_rng(1).permutation(80)
    shuffled = GeoDataset(
        "shuffled", [route.database_paths[i] for i in database_rows], route.database_utm[database_rows],
        [route.query_paths[i] for i in query_rows], route.query_utm[query_rows],
        database_frames=database_rows, query_frames=query_rows,
    )
    in_order = evaluate(None, route, ns=(1, 5), baseline="pixels", sequence_lengths=[5], verbose=False)
    from_frames = evaluate(None, shuffled, ns=(1, 5), baseline="pixels", sequence_lengths=[5], verbose=False)
    assert from_frames.sequences[5].recall == in_order.sequences[5].recall
    assert in_order.sequences[5].recall[1] > in_order.recall[1]
    # Without the frame column the shuffled rows are taken as the stream and sequences fail.
    no_frames = GeoDataset("rows", shuffled.database_paths, shuffled.database_utm, shuffled.query_paths,
                           shuffled.query_utm)
    assert evaluate(None, no_frames, ns=(1,), baseline="pixels", sequence_lengths=[5],
                    verbose=False).sequences[5].recall[1] < in_order.sequences[5].recall[1]


def test_stream_order_by_recording_then_frame():
    dataset = GeoDataset("two drives", ["a", "b", "c", "d"], [[0, 0]] * 4, ["q"], [[0, 0]],
                         database_frames=[5, 1, 2, 0], database_sequences=["late", "early", "late", "early"])
    order, segments = dataset.stream_order("database")
    # "late" appears first in the rows, so it is recording 0.
    assert order.tolist() == [2, 0, 3, 1] and segments.tolist() == [0, 0, 1, 1]
