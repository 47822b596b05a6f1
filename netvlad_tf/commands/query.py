"""`netvlad-tf query`: where was this photo taken?"""

from __future__ import annotations

import json
from dataclasses import asdict

from absl import flags

from netvlad_tf.commands.shared_flags import NO_RERANK, define_rerank_flags, require_flags
from netvlad_tf.database.place_index import PATCH_SOURCES, PlaceIndex
from netvlad_tf.inference.precision import PRECISIONS

SUMMARY = "Find the indexed places nearest to photos: their images, coordinates and distances."
EXAMPLE = ("netvlad-tf query --place_index=index_dir photo.jpg --top_k=5\n"
           "  netvlad-tf query --place_index=index_dir photo.jpg --rerank=speed --rerank_top_k=100")
TAKES_ARGUMENTS = True


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("place_index", None, "Folder made by `netvlad-tf index` (required).", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "Places to list per photo.", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print JSON instead of a table.", flag_values=fv)
    flags.DEFINE_enum("precision", None, list(PRECISIONS), "Embed the photos in this precision (default: the one "
                      "the index's database was embedded in).", flag_values=fv)
    define_rerank_flags(fv)
    flags.DEFINE_enum("patches", "auto", list(PATCH_SOURCES), "With --rerank, where the candidates' patch features "
                      "come from: stored (embed --patch_features), computed from their images now (slower), or auto.",
                      flag_values=fv)


def run(fv: flags.FlagValues, photos: list[str]) -> int:
    """Prints the places nearest to each photo in `photos`; returns the exit status."""
    require_flags(fv, "place_index")
    if not photos:
        raise ValueError("Give one or more photo paths after the flags.")
    if fv.top_k < 1:
        raise ValueError("--top_k must be at least 1.")
    places = PlaceIndex.load(fv.place_index)
    rerank = None if fv.rerank == NO_RERANK else fv.rerank
    if rerank is not None and not fv.json:
        stored = fv.patches != "computed" and places.stored_patches_fit(rerank)
        print(f"Re-ranking the top {fv.rerank_top_k} candidates by patch matching ({rerank}), their patch features "
              + ("read from the index." if stored else "computed from their images (slower; embed with "
                 f"--patch_features={rerank} to store them)."), flush=True)
    matches = places.query(photos, fv.top_k, fv.precision, rerank=rerank, rerank_top_k=fv.rerank_top_k,
                           patches=fv.patches)
    if fv.json:
        print(json.dumps({photo: [asdict(m) for m in found] for photo, found in zip(photos, matches)}, indent=2))
        return 0
    for photo, found in zip(photos, matches):
        print(photo)
        checked = f"  {'verified':>8}" if rerank else ""
        print(f"  {'rank':>4}  {'easting':>12}  {'northing':>12}  {'distance':>9}{checked}  image")
        for match in found:
            easting, northing = (f"{value:12.1f}" if value is not None else f"{'unknown':>12}"
                                 for value in (match.easting, match.northing))
            score = "" if not rerank else (f"  {match.verification:8.3f}" if match.verification is not None
                                           else f"  {'-':>8}")
            print(f"  {match.rank:>4}  {easting}  {northing}  {match.distance:9.4f}{score}  {match.image_path}")
    return 0
