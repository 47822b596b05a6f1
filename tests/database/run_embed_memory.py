"""Peak memory of `embed_database` in its own process.

`python tests/database/run_embed_memory.py ROWS SHARD_SIZE` embeds ROWS bundled images (the
test route repeated) with the tiny backbone into 7168-D shards and prints the process's peak
resident memory in MB (Linux's VmHWM).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from netvlad_tf import build_netvlad_model, embed_database
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv
    from tests.support.tiny_backbone import TINY_BACKBONE

    rows, shard_size = int(sys.argv[1]), int(sys.argv[2])
    route = read_csv_dataset(nordland_csv("test"))
    repeats = -(-rows // route.num_database)
    paths = (route.database_paths * repeats)[:rows]
    coordinates = np.concatenate([route.database_utm] * repeats)[:rows]
    with tempfile.TemporaryDirectory() as work:
        model = Path(work) / "model.keras"
        build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=448).save(model)  # 448 × 16 = 7168-D
        embed_database(model, paths, coordinates, Path(work) / "db", image_size=(32, 64), shard_size=shard_size, verbose=False)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) / 1024)


if __name__ == "__main__":
    main()
