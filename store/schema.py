"""The index's tables, columns, meta keys and versions: one module, so the writer and the readers cannot drift.

Schema history (SCHEMA_VERSION):
  1  images, captions, meta
  2  images.relpath_bytes: the file name's bytes where they are not valid UTF-8 (NULL otherwise); relpath then
     holds a display form with the odd bytes written as \\xNN. Version 1 indexes gain the column in place.
  3  captions.caption_vector: each caption embedded a second time by a caption model (a text-to-text space,
     models/captioning.py), a column that exists only while the index has one (meta caption_model,
     caption_dim). Nothing changes in place; an older Glance, which would write captions without it, is refused.

Meta keys that change no column, so no schema version:
  vector_index  the kind of vector index on images.vector that `glance index --vector-index` asked for: auto
                (absent: IVF_SQ from VECTOR_INDEX_MIN_ROWS photos), flat (IVF_FLAT), sq (IVF_SQ) or pq (IVF_PQ),
                the explicit kinds built from VECTOR_INDEX_TRAIN_ROWS photos (store/vector_index.py). Later runs
                keep it; another value rebuilds the index from the stored vectors. An older Glance ignores it: at
                worst it rebuilds the index as IVF_FLAT when the table doubles, and the next run here puts it back.
"""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import pyarrow as pa

SCHEMA_VERSION = 3
IMAGES, CAPTIONS, META = "images", "captions", "meta"

# Meta keys (the search engine reads the model keys to load the same encoders the index was built with).
VISION_MODEL, TEXT_MODEL, MODEL_VERSION, DIM = "vision_model", "text_model", "model_version", "dim"
PREPROCESS_VERSION_KEY, SCHEMA_VERSION_KEY = "preprocess_version", "schema_version"
LAST_INDEXED, ROOTS = "last_indexed", "roots"
VECTOR_INDEX_ROWS = "vector_index_rows"  # table size when the vector index was last (re)built
VECTOR_INDEX = "vector_index"  # the kind asked for (VECTOR_INDEX_KINDS); absent means auto
VECTOR_INDEX_KINDS = ("auto", "flat", "sq", "pq")
SNAPSHOT = "snapshot"  # {"images": version, "captions": version}: the last consistent pair a writer published
CAPTION_MODEL, CAPTION_DIM = "caption_model", "caption_dim"  # the caption model, when the index has one
CAPTION_VECTOR = "caption_vector"  # its column in the captions table
TUNING = "tuning"  # the active tuning's name (a file in the index's extras/, store/extras.py), or null
# Every vector in an index comes from these; a different value for any of them means re-embedding everything.
MODEL_KEYS = (VISION_MODEL, TEXT_MODEL, MODEL_VERSION, DIM, PREPROCESS_VERSION_KEY)
# What a reader loads to embed queries: another value means opening the index afresh (search/live.py).
ENCODER_KEYS = (*MODEL_KEYS, CAPTION_MODEL, CAPTION_DIM, TUNING)

# Caption sources. Content captions come from inside the image file; the others from files beside it.
SOURCE_SIDECAR, SOURCE_EXIF, SOURCE_XMP, SOURCE_FILE = "sidecar", "exif", "xmp", "file"
CONTENT_SOURCES = (SOURCE_EXIF, SOURCE_XMP)

# Exact (unindexed) cosine search costs about 4 us per row on 2 cores: 80 ms at 20k rows, 400 ms at 100k,
# while IVF_FLAT answers in 6-18 ms with recall 1.0 up to 50k (bench/vector_index_threshold.py).
# Below 20k rows the index saves nothing a person would notice, and it is rebuilt when the table doubles.
VECTOR_INDEX_MIN_ROWS = 20_000
VECTOR_INDEX_REBUILD_GROWTH = 2.0
# An explicit kind is built once this many photos can train it. PQ's 8-bit codebooks hold 256 centroids per
# sub-vector: below 256 rows LanceDB 0.40 builds an empty PQ index (every row left unindexed, searched flat).
# LanceDB makes one IVF partition per ~8,192 rows, so 256 rows per partition is always met above this floor.
# SQ and IVF_FLAT would train on fewer, but SQ's per-component bounds learnt from a handful of photos clip the
# next ones, and an index over fewer photos than this saves no time: they wait for the same count.
VECTOR_INDEX_TRAIN_ROWS = 256
# Old table versions are kept this long after a compaction, so a reader holding one can finish.
KEEP_OLD_VERSIONS = timedelta(hours=1)


def image_id(root: str, relpath: str) -> str:
    """Stable row id for a file location (the name's bytes, whatever their encoding): a re-run after a crash
    upserts the same rows."""
    return hashlib.sha1(f"{root}\0{relpath}".encode("utf-8", "surrogateescape")).hexdigest()


def caption_id(image_id_: str, source: str, text: str) -> str:
    return hashlib.sha1(f"{image_id_}\0{source}\0{text}".encode("utf-8", "surrogateescape")).hexdigest()


def display_name(path: str) -> str:
    """A path as valid UTF-8 text: bytes that are not UTF-8 (surrogate-escaped by the OS layer) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_bytes(path: str) -> bytes | None:
    """The raw bytes of a name that is not valid UTF-8 (what relpath_bytes stores), else None."""
    try:
        path.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return os.fsencode(path)


def os_relpath(relpath: str, relpath_bytes: bytes | None) -> str:
    """The relpath as the operating system knows it (surrogate-escaped where the name is not UTF-8)."""
    return os.fsdecode(relpath_bytes) if relpath_bytes else relpath


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("root", pa.string(), nullable=False),  # absolute, symlinks resolved
        pa.field("relpath", pa.string(), nullable=False),  # POSIX-style, relative to root; display form
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),  # NULL for a moment while the photo's captions are written
        pa.field("sha256", pa.string()),
        pa.field("width", pa.int32()),  # upright (after EXIF orientation)
        pa.field("height", pa.int32()),
        pa.field("taken_at", pa.timestamp("s")),  # EXIF DateTimeOriginal, camera-local time
        pa.field("camera", pa.string()),
        pa.field("has_caption", pa.bool_()),
        pa.field("thumb", pa.binary()),  # ~256 px JPEG: the UI never opens originals to show results
        pa.field("indexed_at", pa.timestamp("s")),
        pa.field("vector", vector_type(dim)),
        pa.field("relpath_bytes", pa.binary()),  # schema 2: the name's bytes when not valid UTF-8, else NULL
    ])


def captions_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("image_id", pa.string()),  # "" for free-standing texts (a label vocabulary)
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string()),  # sidecar | exif | xmp | file
        pa.field("vector", vector_type(dim)),
    ])


META_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])
