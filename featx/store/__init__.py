"""Stage 1's output: the HDF5 feature store, in its two layouts (one file, or a directory of
shards with a manifest), its writers, its reader, verification, export, the writer lock and
the progress file. Nothing here runs a model: extraction writes stores, heads read them.
"""

from __future__ import annotations

from ._export import EXPORT_FORMATS, export_store
from ._lock import lock_holder, lock_path, writer_lock
from ._progress import ProgressFile, progress_path, read_progress
from ._shards import (
    ITEMS,
    MANIFEST,
    ShardedFeatureStore,
    ShardedWriter,
    is_sharded_store,
    shard_name,
    verify_sharded,
    write_shard,
)
from ._store import (
    FORMAT_VERSION,
    STATUS_DONE,
    STATUS_PENDING,
    STATUS_SKIPPED,
    FeatureStore,
    StoreWriter,
    check_existing,
    check_store_items,
    damaged_error,
    diff_configs,
)
from ._verify import VerifyReport, verify_store

__all__ = [
    "FeatureStore",
    "ShardedFeatureStore",
    "StoreWriter",
    "ShardedWriter",
    "write_shard",
    "shard_name",
    "is_sharded_store",
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
    "ProgressFile",
    "progress_path",
    "read_progress",
]
