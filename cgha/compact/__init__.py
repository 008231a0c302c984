"""Compaction: k-means codebook quantisation of Gaussian attributes (Compact3D), the strategy that runs it during
training, and the compressed avatar file."""
from cgha.compact.codec import (FORMAT_VERSION, MAGIC, bits_for, encoded_sizes, is_compact_file, pack_bits,
                                read_compact, unpack_bits, write_compact)
from cgha.compact.kmeans import assign, cluster_means, init_centers, kmeans, update
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec, VectorQuantizer

__all__ = ["FORMAT_VERSION", "MAGIC", "bits_for", "encoded_sizes", "is_compact_file", "pack_bits", "read_compact",
           "unpack_bits", "write_compact", "assign", "cluster_means", "init_centers", "kmeans", "update",
           "GroupedQuantizer", "GroupSpec", "VectorQuantizer"]
