"""Image retrieval mAP: the Oxford AP rule by hand, and miniatures of the benchmark layouts."""

import numpy as np
import pytest
import tensorflow as tf

from netvlad_tf import build_netvlad_model
from netvlad_tf.data.retrieval_benchmarks import read_holidays, read_oxford_paris
from netvlad_tf.evaluation.image_retrieval import average_precision, mean_average_precision
from tests.support.tiny_backbone import TINY_BACKBONE


def test_average_precision_hand_computed():
    # Ranking: relevant, junk (skipped), irrelevant, relevant.
    # Steps: r=1/2 p=1 → +1/2·(1+1)/2; r=1/2 p=1/2 → +0; r=1 p=2/3 → +1/2·(1/2+2/3)/2.
    expected = 0.5 + 0.5 * (0.5 + 2 / 3) / 2
    assert average_precision(np.array([4, 7, 2, 5]), np.array([4, 5]), np.array([7])) == pytest.approx(expected)
    assert average_precision(np.array([1, 2]), np.array([1, 2]), np.array([])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="relevant"):
        average_precision(np.array([1]), np.array([]), np.array([]))


def write_png(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def test_oxford_layout_and_map(tmp_path):
    # Two landmarks; relevant images are exact copies of their query, distractors are noise.
    for name, seed in [("a_000001", 1), ("a_000002", 1), ("a_000003", 1), ("b_000001", 2),
                       ("b_000002", 2), ("x_000001", 3), ("x_000002", 4)]:
        write_png(tmp_path / "images" / f"{name}.png", seed)
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "a_1_query.txt").write_text("oxc1_a_000001 0 0 64 48\n")
    (gt / "a_1_good.txt").write_text("a_000002\n")
    (gt / "a_1_ok.txt").write_text("a_000003\n")
    (gt / "a_1_junk.txt").write_text("a_000001\n")
    (gt / "b_1_query.txt").write_text("oxc1_b_000001 0 0 64 48\n")
    (gt / "b_1_good.txt").write_text("b_000002\n")
    (gt / "b_1_junk.txt").write_text("b_000001\n")
    benchmark = read_oxford_paris(tmp_path)
    assert len(benchmark.query_paths) == 2 and benchmark.query_boxes[0] == (0, 0, 64, 48)
    assert len(benchmark.relevant[0]) == 2
    result = mean_average_precision(build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac"), benchmark, verbose=False)
    assert result["map"] == pytest.approx(1.0)


def test_oxford_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="gt/"):
        read_oxford_paris(tmp_path)
    write_png(tmp_path / "images" / "a.png", 0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "q_1_query.txt").write_text("oxc1_missing 0 0 1 1\n")
    with pytest.raises(ValueError, match="'missing' is not under images/"):
        read_oxford_paris(tmp_path)


def test_holidays_layout(tmp_path):
    for number in (100000, 100001, 100002, 100100, 100101):
        write_png(tmp_path / f"{number}.png", number)
    benchmark = read_holidays(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in benchmark.query_paths] == ["100000.png", "100100.png"]
    assert benchmark.relevant[0].tolist() == [1, 2] and benchmark.junk[1].tolist() == [3]
