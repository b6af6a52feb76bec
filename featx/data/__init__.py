"""What the images and labels are: sources (folders, CSV manifests, built-ins, arrays),
image decoding with its skip rules, and the seeded train/val/test splits every stage shares.
"""

from __future__ import annotations

from ._files import FoundFile, check_extension, load_image_file, safe_id, walk_files
from ._fingerprint import (
    HASH_BYTES,
    NO_STAT,
    UNREAD,
    ItemCheck,
    ItemRecord,
    check_items,
    content_hash,
    digest_of_hashes,
    file_stat,
    read_item_file,
)
from ._images import ALLOWED_FORMATS, ALPHA_BACKGROUND, IMAGE_EXTENSIONS, draft_decoding, load_image, to_rgb
from ._open import list_builtin_sources, open_source
from ._scale_sources import ParquetSource, WebDatasetSource, expand_braces
from ._sources import (
    SPLIT_NAMES,
    UNLABELLED,
    ArraySource,
    CsvSource,
    DigitsSource,
    ImageFolderSource,
    Item,
    Source,
)
from ._splits import SPLITS_FILE, assign_splits, few_shot_mask, load_splits, save_splits, splits_digest
from ._subset import SubsetSource, subset_indices, subset_record, subset_source

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "ALPHA_BACKGROUND",
    "load_image",
    "draft_decoding",
    "to_rgb",
    "Item",
    "Source",
    "ImageFolderSource",
    "CsvSource",
    "DigitsSource",
    "ArraySource",
    "WebDatasetSource",
    "ParquetSource",
    "expand_braces",
    "open_source",
    "list_builtin_sources",
    "SPLIT_NAMES",
    "UNLABELLED",
    "assign_splits",
    "few_shot_mask",
    "save_splits",
    "load_splits",
    "splits_digest",
    "SPLITS_FILE",
    "SubsetSource",
    "subset_indices",
    "subset_source",
    "subset_record",
    "FoundFile",
    "walk_files",
    "load_image_file",
    "check_extension",
    "safe_id",
    "ItemRecord",
    "ItemCheck",
    "check_items",
    "file_stat",
    "content_hash",
    "read_item_file",
    "digest_of_hashes",
    "NO_STAT",
    "HASH_BYTES",
    "UNREAD",
]
