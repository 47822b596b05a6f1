"""Recall of PCA whitening variants on the bundled Nordland data: `python benchmarks/bench_whitening.py
--model demo_output/model.keras`.

The model's pooled (pre-whitening) descriptors of the training stretch (places 400–1199) and the
test stretch (places 1250–1599) are computed once; whitenings are fitted on NumPy arrays and
searched by brute force. For each dimension and method it prints Recall@1/5/10 of winter queries
against summer images within 25 m on the test stretch and on the training stretch, beside the
full (unwhitened) descriptor measured in the same run. Two fitting sets: the training stretch's
database images (what the demo and `netvlad-tf pca` do) and those plus the test stretch's
database images (unsupervised: no query is used).
"""

from __future__ import annotations

import argparse

import numpy as np

DIMENSIONS = (64, 128, 256, 512, 1024)


def recall(database: np.ndarray, queries: np.ndarray, positives, ns=(1, 5, 10)) -> dict[int, float]:
    from netvlad_tf.evaluation.recall import recall_at_n
    from netvlad_tf.layers.normalization import l2_normalize_rows

    database, queries = l2_normalize_rows(database), l2_normalize_rows(queries)
    ranked = np.argsort(-(queries @ database.T), axis=1)[:, : max(ns)]
    return recall_at_n(ranked, positives, ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained .keras model (e.g. the demo's)")
    parser.add_argument("--image-size", default="128,256", help="HEIGHT,WIDTH (the demo's Lite0 size: 128,256)")
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMENSIONS))
    args = parser.parse_args()
    image_size = tuple(int(side) for side in args.image_size.split(","))

    from cpu_info import int8_capability

    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.layers.whitening import WHITENING_METHODS, fit_pca_whitening
    from netvlad_tf.models.model_files import open_model
    from netvlad_tf.sample_data import nordland_csv

    print(f"CPU: {int8_capability()}")
    model = open_model(args.model, netvlad=True)
    pooled = model.pooled_model
    stretches = {}
    for name in ("test", "train"):
        dataset = read_csv_dataset(nordland_csv(name))
        queries = dataset.queries_with_positives(25.0)
        stretches[name] = {
            "database": embed_images(pooled, dataset.database_paths, image_size, batch_size=32, verbose=False),
            "queries": embed_images(pooled, [dataset.query_paths[q] for q in queries], image_size,
                                    batch_size=32, verbose=False),
            "positives": [dataset.positives_within(25.0)[q] for q in queries],
        }
    fitting_sets = {
        "train db": stretches["train"]["database"],
        "train+test db": np.concatenate([stretches["train"]["database"], stretches["test"]["database"]]),
    }

    def row(label, transform):
        cells = []
        for name in ("test", "train"):
            stretch = stretches[name]
            values = recall(transform(stretch["database"]), transform(stretch["queries"]), stretch["positives"])
            cells.append(" ".join(f"{100 * values[n]:5.1f}" for n in (1, 5, 10)))
        print(f"{label:<38} {cells[0]:>17}   {cells[1]:>17}", flush=True)

    print(f"\n{'descriptor':<38} {'test R@1/5/10':>17}   {'train R@1/5/10':>17}")
    row(f"full {pooled.output.shape[-1]}-D", lambda x: x)
    for fit_name, fit_data in fitting_sets.items():
        for dim in args.dims:
            if dim >= len(fit_data):
                print(f"{dim:>5}-D: more dimensions than the {len(fit_data)} fitting images support")
                continue
            for method in WHITENING_METHODS:
                whitening = fit_pca_whitening(fit_data, dim, method=method)
                row(f"{dim:>5}-D {method:<10} (fit: {fit_name})", whitening.transform)


if __name__ == "__main__":
    main()
