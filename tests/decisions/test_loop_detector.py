"""LoopDetector against a brute-force reading of the same rule (every searchable frame scored by
`sequence_similarities`), the frame gap, save/load, and `netvlad-tf loops` on the bundled route."""

import csv

import numpy as np
import pytest

from netvlad_tf import LoopDetector, build_netvlad_model
from netvlad_tf.cli import main
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.decisions.sequences import sequence_similarities
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE, clustered_tiny_model


def revisiting_stream(seed=0, places=30, dim=16, noise=0.35):
    """A route of `places` frames driven twice: noisy descriptors of the same places."""
    rng = np.random.default_rng(seed)
    route = rng.normal(size=(places, dim))
    stream = np.concatenate([route, route]) + noise * rng.normal(size=(2 * places, dim))
    return (stream / np.linalg.norm(stream, axis=1, keepdims=True)).astype(np.float32)


def brute_force_loops(stream, threshold, gap, length):
    """For each frame i: score every frame j ≤ i − gap with sequence_similarities over the last
    `length` frames (rows) and the searchable frames (columns); the best is a loop if ≥ threshold."""
    loops = []
    for i in range(len(stream)):
        searchable = i - gap + 1
        if searchable <= 0:
            loops.append(None)
            continue
        rows = stream[max(0, i - length + 1): i + 1]
        scores = sequence_similarities(rows @ stream[:searchable].T, length)[-1]
        best = int(np.argmax(scores))
        loops.append((i, best, float(scores[best])) if scores[best] >= threshold else None)
    return loops


@pytest.mark.parametrize("length", [1, 3, 6])
def test_detector_equals_the_brute_force_rule(length):
    stream = revisiting_stream()
    detector = LoopDetector(None, threshold=0.5, min_frame_gap=5, sequence_length=length,
                            num_candidates=len(stream))  # every frame a candidate: exact
    found = [None if loop is None else (loop.frame, loop.matched_frame, loop.similarity)
             for loop in detector.add_descriptors(stream)]
    expected = brute_force_loops(stream, 0.5, 5, length)
    assert [f and f[:2] for f in found] == [e and e[:2] for e in expected]
    np.testing.assert_allclose([f[2] for f in found if f], [e[2] for e in expected if e], atol=1e-5)
    assert sum(loop is not None for loop in found) >= 20  # the second drive closes loops


def test_never_matches_within_the_frame_gap():
    # A robot standing still: every frame equals the previous ones.
    still = np.tile(np.eye(8, dtype=np.float32)[:1], (30, 1))
    detector = LoopDetector(None, threshold=0.99, min_frame_gap=10)
    answers = detector.add_descriptors(still)
    assert answers[:10] == [None] * 10
    assert all(loop.frame - loop.matched_frame >= 10 for loop in answers[10:])


def test_frames_one_at_a_time_equal_a_batch_and_a_saved_detector_continues(tmp_path):
    stream = revisiting_stream(seed=1)
    batch = LoopDetector(None, 0.5, 5, sequence_length=3).add_descriptors(stream)
    first = LoopDetector(None, 0.5, 5, sequence_length=3)
    answers = [first.add_descriptors(row)[0] for row in stream[:33]]
    first.save(tmp_path / "detector")
    again = LoopDetector.load(tmp_path / "detector")
    answers += again.add_descriptors(stream[33:])
    assert answers == batch
    with pytest.raises(FileExistsError):
        first.save(tmp_path / "detector")


def test_damaged_or_mismatched_saves_are_one_line_errors(tmp_path):
    detector = LoopDetector(None, 0.5, 2)
    detector.add_descriptors(revisiting_stream()[:6])
    detector.save(tmp_path / "detector")
    np.save(tmp_path / "detector" / "descriptors.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(ValueError, match="holds 3 frames"):
        LoopDetector.load(tmp_path / "detector")
    with pytest.raises(FileNotFoundError, match="not a saved loop detector"):
        LoopDetector.load(tmp_path)
    with pytest.raises(ValueError, match="IVF kinds"):
        LoopDetector(None, 0.5, 2, index_kind="ivfpq")
    with pytest.raises(ValueError, match="min_frame_gap"):
        LoopDetector(None, 0.5, 0)


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [(32, 64), (24, 40)])  # the images' own size, and a resize
def test_add_an_image_array_or_file_equals_the_batched_path(image_size):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    paths = read_csv_dataset(nordland_csv("test")).database_paths[:3]
    batched = LoopDetector(model, 0.0, 1, image_size=image_size)
    batched.add_images(paths, verbose=False)
    single = LoopDetector(model, 0.0, 1, image_size=image_size)
    assert single.add(paths[0]) is None
    assert single.add(paths[1]).matched_frame == 0
    from netvlad_tf.data.images import load_image
    single.add(load_image(paths[2]).numpy())  # an array, resized by the detector's policy
    np.testing.assert_allclose(single.descriptors, batched.descriptors, atol=1e-5)


def test_loops_command_finds_the_revisits_of_the_route(tmp_path, capsys):
    # The bundled test stretch as a stream: 60 summer frames, then the same 60 places in winter.
    dataset = read_csv_dataset(nordland_csv("test"))
    stream_csv = tmp_path / "stream.csv"
    with open(stream_csv, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image_path"])
        writer.writerows([path] for path in dataset.database_paths[:60] + dataset.query_paths[:60])
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    model.save(tmp_path / "model.keras")
    arguments = ["netvlad-tf", "loops", f"--model={tmp_path / 'model.keras'}", f"--images={stream_csv}",
                 "--threshold=-1", "--min_frame_gap=30", "--image_size=32,64", f"--output={tmp_path / 'loops.csv'}"]
    assert main(arguments) == 0
    with open(tmp_path / "loops.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["frame", "matched_frame", "similarity"]
    # With every match accepted, each frame from 30 on has one, never within the gap.
    assert [int(row["frame"]) for row in rows] == list(range(30, 120))
    assert all(int(row["frame"]) - int(row["matched_frame"]) >= 30 for row in rows)
    assert main(arguments) == 1 and "--overwrite" in capsys.readouterr().err


def test_a_verifying_detector_accepts_the_revisit_and_rejects_a_stranger(tmp_path):
    """With any global similarity accepted (threshold −1), only the spatial check decides: the
    same place seen again 32 px to the side passes it, a new place does not."""
    model = clustered_tiny_model()
    rng = np.random.default_rng(1)
    places = rng.uniform(0, 255, (6, 128, 192, 3)).astype(np.float32)
    revisit = np.roll(places[1], 32, axis=1)
    verifying = LoopDetector(model, threshold=-1.0, min_frame_gap=2, verify="storage", verify_threshold=0.5)
    trusting = LoopDetector(model, threshold=-1.0, min_frame_gap=2)
    for place in places[:5]:
        verifying.add(place), trusting.add(place)
    loop = verifying.add(revisit)
    assert (loop.frame, loop.matched_frame) == (5, 1) and loop.verification >= 0.5
    assert trusting.add(revisit) is not None
    assert trusting.add(places[5]) is not None, "without the check any best match is a loop at threshold −1"
    verifying.save(tmp_path / "detector")
    again = LoopDetector.load(tmp_path / "detector")
    assert verifying.add(places[5]) is None and again.add(places[5]) is None
    with pytest.raises(ValueError, match="add frames as images"):
        verifying.add_descriptors(np.ones((1, 64), np.float32))


@pytest.mark.parametrize("threshold", [2.5, -1.5, float("nan")])
def test_a_threshold_outside_the_cosine_range_is_refused(threshold):
    with pytest.raises(ValueError, match=r"cosine similarity in \[-1, 1\]"):
        LoopDetector(None, threshold=threshold, min_frame_gap=1)
