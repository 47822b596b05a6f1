"""The database side at city scale: streaming, resumable embedding into Parquet descriptor
shards (in one process or on Ray Data), reading them back, and search indices built from them."""

from netvlad_tf.database.descriptor_folder import DescriptorFolder, DescriptorTable, iter_shards, read_descriptors
from netvlad_tf.database.embed import embed_database
from netvlad_tf.database.shards import DescriptorFolderError

__all__ = ["DescriptorFolder", "DescriptorFolderError", "DescriptorTable", "embed_database", "iter_shards",
           "read_descriptors"]
