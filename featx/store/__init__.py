"""Stage 1's output: the HDF5 feature store, in its two layouts (one file, or a directory of
shards with a manifest), its writers, its reader, verification, export, the writer lock and
the progress file. Nothing here runs a model: extraction writes stores, heads read them.
"""

from __future__ import annotations

from ._export import EXPORT_FORMATS, export_store
from ._import import IMPORT_FORMATS, IMPORTED, imported_identity, read_import_source, write_store
from ._lock import lock_holder, lock_path, writer_lock
from ._place import NEW_SUFFIX, build_target, check_apart, is_featx_store, remove_temporaries, swap_in
from ._progress import ProgressFile, progress_path, read_progress
from ._store import (
    FORMAT_VERSION,
    ITEMS,
    MANIFEST,
    STATUS_DONE,
    STATUS_PENDING,
    STATUS_SKIPPED,
    FeatureStore,
    ShardedFeatureStore,
    check_existing,
    check_store_items,
    damaged_error,
    diff_configs,
    iter_verified_shards,
    manifest_digest,
    read_shard_fields,
    shard_name,
    verify_sharded,
)
from ._stream import BatchReader, verified_shard
from ._verify import VerifyReport, verify_store
from ._writer import ShardedWriter, StoreWriter, write_shard

__all__ = [
    "FeatureStore",
    "ShardedFeatureStore",
    "StoreWriter",
    "ShardedWriter",
    "write_shard",
    "iter_verified_shards",
    "read_shard_fields",
    "manifest_digest",
    "shard_name",
    "MANIFEST",
    "ITEMS",
    "FORMAT_VERSION",
    "STATUS_PENDING",
    "STATUS_DONE",
    "STATUS_SKIPPED",
    "check_existing",
    "check_store_items",
    "damaged_error",
    "diff_configs",
    "export_store",
    "EXPORT_FORMATS",
    "verify_store",
    "verify_sharded",
    "VerifyReport",
    "writer_lock",
    "lock_path",
    "lock_holder",
    "is_featx_store",
    "check_apart",
    "build_target",
    "swap_in",
    "remove_temporaries",
    "NEW_SUFFIX",
    "ProgressFile",
    "progress_path",
    "read_progress",
    "write_store",
    "read_import_source",
    "imported_identity",
    "IMPORTED",
    "IMPORT_FORMATS",
    "BatchReader",
    "verified_shard",
]
