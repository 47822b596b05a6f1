"""Run in its own process: embed bundled images on a local two-node Ray cluster where one actor
exits on its first attempt at a shard, build an IVF index from Ray tasks; write what came out.

`python -m tests.distributed.run_ray_embed MODEL.keras WORK_DIR` writes `WORK_DIR/result.json`.
"""

import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from netvlad_tf import embed_database, read_descriptors  # noqa: E402
from netvlad_tf.data import read_csv_dataset  # noqa: E402
from netvlad_tf.database.descriptor_folder import iter_shards  # noqa: E402
from netvlad_tf.database.index_build import build_index_from_shards  # noqa: E402
from netvlad_tf.sample_data import nordland_csv  # noqa: E402
from tests.support.descriptor_folders import random_descriptor_folder  # noqa: E402


def exit_on_first_attempt(shard: int, crash_marker: Path) -> None:
    """Kills the actor the first time any actor starts shard 1 (the marker survives the restart)."""
    if shard == 1 and not crash_marker.exists():
        crash_marker.touch()
        os._exit(1)


def main(model_path: str, work: Path) -> None:
    crash_marker = work / "crashed"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        dataset = read_csv_dataset(nordland_csv("test"))
        folder = embed_database(model_path, dataset.database_paths[:23], dataset.database_utm[:23],
                                work / "db", image_size=(32, 64), shard_size=5, num_workers=2,
                                on_shard_start=functools.partial(exit_on_first_attempt, crash_marker=crash_marker),
                                verbose=False)
        table = read_descriptors(folder)
        row_ids = np.concatenate([shard.row_ids for shard in iter_shards(folder)])
        np.save(work / "descriptors.npy", table.descriptors)
        random_folder = work / "random"
        descriptors = random_descriptor_folder(random_folder)
        (work / "index_work").mkdir()
        index = build_index_from_shards(random_folder, "ivfsq8", work / "index_work", num_workers=2,
                                        verbose=False, num_lists=8)
        np.save(work / "random.npy", descriptors)
        distances, indices = index.search(descriptors[::7] + 0.01, 10)
        np.save(work / "ray_index_result.npy", indices)
        nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        (work / "result.json").write_text(json.dumps({
            "rows": len(table.image_paths), "unique_ids": len(set(row_ids.tolist())),
            "paths_in_order": table.image_paths == dataset.database_paths[:23],
            "crashed": crash_marker.exists(), "nodes": len(nodes),
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
