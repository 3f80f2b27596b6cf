"""The Glance index on disk (LanceDB): schema, location, model bookkeeping, and SQL escaping.

One module owns the schema, so the indexer (writer) and the search engine (reader) cannot drift apart.
Every LanceDB write is one atomic commit (a new table version), so a reader always sees a consistent
snapshot and a killed writer leaves no half-written rows behind.
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

SCHEMA_VERSION = 1
IMAGES, CAPTIONS, META = "images", "captions", "meta"

# Meta keys (the search engine reads the model keys to load the same encoders the index was built with).
VISION_MODEL, TEXT_MODEL, MODEL_VERSION, DIM = "vision_model", "text_model", "model_version", "dim"
PREPROCESS_VERSION_KEY, SCHEMA_VERSION_KEY = "preprocess_version", "schema_version"
LAST_INDEXED, ROOTS = "last_indexed", "roots"
VECTOR_INDEX_ROWS = "vector_index_rows"  # table size when the vector index was last (re)built
# Every vector in an index comes from these; a different value for any of them means re-embedding everything.
MODEL_KEYS = (VISION_MODEL, TEXT_MODEL, MODEL_VERSION, DIM, PREPROCESS_VERSION_KEY)

# Caption sources. Content captions come from inside the image file; the others from files beside it.
SOURCE_SIDECAR, SOURCE_EXIF, SOURCE_XMP, SOURCE_FILE = "sidecar", "exif", "xmp", "file"

# Exact (unindexed) cosine search costs about 4 us per row on 2 cores: 80 ms at 20k rows, 400 ms at 100k,
# while IVF_FLAT answers in 6-18 ms with recall 1.0 up to 50k (bench/vector_index_threshold.py).
# Below 20k rows the index saves nothing a person would notice, and it is rebuilt when the table doubles.
VECTOR_INDEX_MIN_ROWS = 20_000
VECTOR_INDEX_REBUILD_GROWTH = 2.0
# Old table versions are kept this long after a compaction, so a reader holding one can finish.
KEEP_OLD_VERSIONS = timedelta(hours=1)


class StoreError(Exception):
    """A problem with the index itself (missing, from another model, ...); the message is for the user."""


def default_db_path() -> Path:
    """$GLANCE_DB, else $XDG_DATA_HOME/glance/index (~/.local/share/glance/index)."""
    if os.environ.get("GLANCE_DB"):
        return Path(os.environ["GLANCE_DB"]).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "glance" / "index"


def image_id(root: str, relpath: str) -> str:
    """Stable row id for a file location: a re-run after a crash upserts the same rows."""
    return hashlib.sha1(f"{root}\0{relpath}".encode("utf-8", "surrogateescape")).hexdigest()


def caption_id(image_id_: str, source: str, text: str) -> str:
    return hashlib.sha1(f"{image_id_}\0{source}\0{text}".encode("utf-8", "surrogateescape")).hexdigest()


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("root", pa.string(), nullable=False),  # absolute, symlinks resolved
        pa.field("relpath", pa.string(), nullable=False),  # POSIX-style, relative to root
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


def sql_string(value: str) -> str:
    """A user value as a SQL string literal for a LanceDB `where`: the only way user text reaches SQL."""
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    return "'" + value.replace("'", "''") + "'"


class Store:
    """An index directory. Tables are opened lazily; a missing index is not an error until it is used."""

    def __init__(self, path: str | Path | None = None, consistency: timedelta | None = timedelta(seconds=1)):
        self.path = Path(path).expanduser() if path else default_db_path()
        self._consistency = consistency
        self._db = None

    @property
    def db(self):
        """The LanceDB connection, made on first use: connecting creates the folder, so a reader that only
        asks whether an index exists (a mistyped --db) must not leave an empty folder behind."""
        if self._db is None:
            import lancedb  # ~1 s to import: only commands that touch the index pay for it

            # A reader re-checks for new versions at most this often, so a running UI sees fresh indexing.
            self._db = lancedb.connect(str(self.path), read_consistency_interval=self._consistency)
        return self._db

    def exists(self) -> bool:
        return IMAGES in self.table_names()

    def table_names(self) -> list[str]:
        return list(self.db.list_tables().tables) if self.path.exists() else []

    def table(self, name: str):
        if name not in self.table_names():
            raise StoreError(f"no Glance index at {self.path} (build one with: python -m indexer PATH --db {self.path})")
        return self.db.open_table(name)

    def create_tables(self, dim: int) -> None:
        existing = self.table_names()
        for name, schema in ((IMAGES, images_schema(dim)), (CAPTIONS, captions_schema(dim)), (META, META_SCHEMA)):
            if name not in existing:
                self.db.create_table(name, schema=schema)

    def meta(self) -> dict:
        if META not in self.table_names():
            return {}
        rows = self.db.open_table(META).to_arrow().to_pylist()
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def write_meta(self, values: dict) -> None:
        rows = pa.Table.from_pylist([{"key": k, "value": json.dumps(v)} for k, v in values.items()], schema=META_SCHEMA)
        upsert(self.table(META), rows, "key")


    def drop_all(self) -> None:
        """Delete the whole index (for --reindex). Images and captions go first: a run killed midway leaves
        the old meta behind, so the next run still refuses to mix models."""
        for name in (IMAGES, CAPTIONS, META):
            if name in self.table_names():
                self.db.drop_table(name)

    def ensure_indexes(self) -> list[str]:
        """Build or refresh the cosine vector index (once images are many enough) and the captions FTS index,
        fold new rows into them, and compact small fragments. Returns what was (re)built, for the log."""
        built = []
        images, captions = self.table(IMAGES), self.table(CAPTIONS)
        rows = images.count_rows()
        indexed_at = int(self.meta().get(VECTOR_INDEX_ROWS) or 0)
        has_vector_index = any(ix.columns == ["vector"] for ix in images.list_indices())
        if rows >= VECTOR_INDEX_MIN_ROWS and (not has_vector_index or rows >= indexed_at * VECTOR_INDEX_REBUILD_GROWTH):
            from lancedb.index import IvfFlat

            images.create_index("vector", config=IvfFlat(distance_type="cosine"), replace=True)
            self.write_meta({VECTOR_INDEX_ROWS: rows})
            built.append(f"vector index (IVF_FLAT, cosine) over {rows} images")
        if captions.count_rows() and not any(ix.columns == ["text"] for ix in captions.list_indices()):
            from lancedb.index import FTS

            captions.create_index("text", config=FTS(), replace=True)
            built.append("full-text index on captions")
        self.compact()
        return built

    def compact(self) -> None:
        """Merge the small fragments that batch commits leave (each commit slows a little as they pile up),
        fold new rows into existing indexes, and drop table versions older than KEEP_OLD_VERSIONS."""
        for name in (IMAGES, CAPTIONS):
            self.table(name).optimize(cleanup_older_than=KEEP_OLD_VERSIONS)


def upsert(table, rows: pa.Table, on: str = "id") -> int:
    """Insert or replace rows by key in one atomic commit: re-running after a crash converges.
    Returns how many rows were new."""
    if not rows.num_rows:
        return 0
    result = table.merge_insert(on).when_matched_update_all().when_not_matched_insert_all().execute(rows)
    return int(getattr(result, "num_inserted_rows", 0) or 0)


def sql_in(column: str, values) -> str:
    """`column IN ('a', 'b')` with every value escaped by sql_string; FALSE for no values."""
    values = list(values)
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})" if values else "FALSE"


def delete_in(table, column: str, values, chunk: int = 500, extra: str = "") -> int:
    """Delete rows whose `column` is one of `values` (and `extra` SQL holds), a few hundred per commit so the
    SQL stays small. Returns how many rows were deleted."""
    values, deleted = list(values), 0
    for start in range(0, len(values), chunk):
        where = sql_in(column, values[start:start + chunk]) + (f" AND ({extra})" if extra else "")
        result = table.delete(where)
        deleted += int(getattr(result, "num_deleted_rows", 0) or 0)
    return deleted
