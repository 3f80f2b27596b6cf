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

import lancedb
import pyarrow as pa

SCHEMA_VERSION = 1
IMAGES, CAPTIONS, META = "images", "captions", "meta"


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
        pa.field("mtime_ns", pa.int64()),
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
        # A reader re-checks for new versions at most this often, so a running UI sees fresh indexing.
        self.db = lancedb.connect(str(self.path), read_consistency_interval=consistency)

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


def upsert(table, rows: pa.Table, on: str = "id") -> None:
    """Insert or replace rows by key in one atomic commit: re-running after a crash converges."""
    if rows.num_rows:
        table.merge_insert(on).when_matched_update_all().when_not_matched_insert_all().execute(rows)
