"""`netvlad-tf embed --hloc_features` and `netvlad-tf pairs` against a NumPy transcription of
hloc's `pairs_from_retrieval` (cvg/Hierarchical-Localization, `hloc/pairs_from_retrieval.py`
and `hloc/utils/io.py::list_h5_names`) reading our `.h5`."""

import h5py
import numpy as np
import pytest

from netvlad_tf import build_netvlad_model
from netvlad_tf.cli import main
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.decisions.image_pairs import merged_pairs, retrieval_pairs, sequential_pairs
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE


def hloc_names_in(path):
    """list_h5_names: the parent group of every dataset in the file, as a set."""
    names = []
    with h5py.File(str(path), "r", libver="latest") as features:
        features.visititems(lambda _, item: names.append(item.parent.name.strip("/"))
                            if isinstance(item, h5py.Dataset) else None)
    return list(set(names))


def hloc_pairs(path, num_matched, query_prefix=None, db_prefix=None):
    """pairs_from_retrieval.main: names by prefix (all without one), similarity = einsum of
    global descriptors, self pairs and scores below min_score=0 invalid, top-k per query."""
    all_names = hloc_names_in(path)
    database = [n for n in all_names if n.startswith(db_prefix)] if db_prefix else all_names
    queries = [n for n in all_names if n.startswith(query_prefix)] if query_prefix else all_names
    with h5py.File(str(path), "r", libver="latest") as features:
        database_descriptors = np.stack([features[n]["global_descriptor"].__array__() for n in database])
        query_descriptors = np.stack([features[n]["global_descriptor"].__array__() for n in queries])
    scores = np.einsum("id,jd->ij", query_descriptors, database_descriptors)
    invalid = (np.array(queries)[:, None] == np.array(database)[None]) | (scores < 0)
    scores[invalid] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :num_matched]
    found = {}
    for query, row in enumerate(top):
        found[queries[query]] = [database[j] for j in row if np.isfinite(scores[query, j])]
    return found


def by_query(pairs_text):
    found = {}
    for line in pairs_text.strip().splitlines():
        query, database = line.split(" ")
        found.setdefault(query, []).append(database)
    return found


@pytest.fixture(scope="module")
def stretch(tmp_path_factory):
    """40 summer and 40 winter frames of the bundled route, embedded with --hloc_features."""
    root = tmp_path_factory.mktemp("sfm")
    dataset = read_csv_dataset(nordland_csv("test"))
    csv_path = root / "images.csv"
    rows = [("database", p) for p in dataset.database_paths[:40]] + [("database", p) for p in dataset.query_paths[:40]]
    csv_path.write_text("split,image_path,easting,northing\n" + "".join(f"{s},{p},0,0\n" for s, p in rows))
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    model.save(root / "model.keras")
    assert main(["netvlad-tf", "embed", f"--model={root / 'model.keras'}", f"--dataset={csv_path}",
                 "--image_size=32,64", f"--output={root / 'descriptors'}",
                 f"--hloc_features={root / 'global-feats.h5'}"]) == 0
    return root


def test_the_h5_has_hlocs_layout(stretch):
    with h5py.File(stretch / "global-feats.h5", "r") as features:
        group = features["summer/images-12510.png"]
        assert group["global_descriptor"].dtype == np.float32 and group["global_descriptor"].shape == (16,)
        assert group["image_size"][:].tolist() == [64, 32]  # width, height of the bundled 64×32 frames
    assert len(hloc_names_in(stretch / "global-feats.h5")) == 80


@pytest.mark.parametrize("flags, prefixes", [
    ([], {}),
    (["--query_prefix=winter/", "--db_prefix=summer/"], {"query_prefix": "winter/", "db_prefix": "summer/"}),
])
def test_pairs_equal_hlocs_pairs_from_retrieval_on_our_h5(stretch, flags, prefixes, tmp_path):
    output = tmp_path / "pairs.txt"
    assert main(["netvlad-tf", "pairs", f"--descriptors={stretch / 'descriptors'}", "--num_matched=5",
                 f"--output={output}", *flags]) == 0
    ours = by_query(output.read_text())
    theirs = hloc_pairs(stretch / "global-feats.h5", 5, **prefixes)
    assert ours == {query: found for query, found in theirs.items() if found}
    assert all(query not in found for query, found in ours.items())


def test_negative_similarities_and_self_pairs_are_left_out():
    names = ["a", "b", "c"]
    descriptors = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    assert retrieval_pairs(names, descriptors, names, descriptors, 5) == [("a", "b"), ("b", "a")]


def test_sequential_pairs_are_added_once(stretch, tmp_path):
    output = tmp_path / "pairs.txt"
    assert main(["netvlad-tf", "pairs", f"--descriptors={stretch / 'descriptors'}", "--num_matched=1",
                 "--sequential=2", f"--output={output}"]) == 0
    pairs = [tuple(line.split(" ")) for line in output.read_text().splitlines()]
    unordered = [frozenset(pair) for pair in pairs[80:]]
    assert len(set(unordered)) == len(unordered)
    assert {frozenset(pair) for pair in pairs} >= {frozenset(("summer/images-12510.png", "summer/images-12520.png"))}
    assert merged_pairs([("a", "b")], sequential_pairs(["a", "b", "c"], 2)) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_bad_prefix_and_existing_output_are_one_line_errors(stretch, tmp_path, capsys):
    arguments = ["netvlad-tf", "pairs", f"--descriptors={stretch / 'descriptors'}", "--num_matched=1",
                 f"--output={tmp_path / 'pairs.txt'}"]
    assert main([*arguments, "--query_prefix=autumn/"]) == 1
    assert "autumn/" in capsys.readouterr().err
    assert main(arguments) == 0 and main(arguments) == 1
    assert "--overwrite" in capsys.readouterr().err
