"""The Glance index on disk (LanceDB): location, version check, and every query string sent to LanceDB.

Every LanceDB write is one atomic commit (a new table version), so a reader always sees a consistent
snapshot and a killed writer leaves no half-written rows behind.
"""
from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from core import location
from core.errors import GlanceError

from . import schema
from .extras import ExtrasQueries
from .indexing import IndexingQueries
from .reading import ReadingQueries
from .vector_index import VectorIndexQueries
from .schema import (CAPTIONS, IMAGES, KEEP_OLD_VERSIONS, META, META_SCHEMA, PREPROCESS_VERSION_KEY, SCHEMA_VERSION,
                     SCHEMA_VERSION_KEY, captions_schema, images_schema)
from .sql import sql_in, sql_string  # noqa: F401 - store/indexing.py reaches them as db.sql_*

# LanceDB reports I/O trouble as RuntimeError("lance error: LanceError(IO): ... (os error 28) ...").
LANCE_ERROR = re.compile(r"^lance error: ")
OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")
LANCE_REASON = re.compile(r"LanceError\(\w+\): (.*?)(?:, /\S+:\d+:\d+)?$", re.S)  # the reason, not the Rust source
FILTER_COLUMNS = ("relpath", "taken_at")  # what search/filters.py filters photos on (store/reading.py photo_where)
# Lance's file format for new tables. A search reads its hits' columns row by row, and format 2.2 (LanceDB 0.40's
# default) decodes a column whose values repeat, as a photo library's root and has_caption do, in whole: taking 25
# rows of 9 photo columns from a 1M-row table cost 7.0 ms in 2.2 and 2.6 ms in 2.1, 100 rows 11.6 and 6.9 ms (one
# root, no captions, varied cameras and sizes), while scans, filters and disk size measured the same.
TABLE_FORMAT = "2.1"


class StoreError(GlanceError):
    """A problem with the index itself (missing, from another model, ...); the message is for the user."""


@contextlib.contextmanager
def lance_errors(path: Path | str, storage_options: dict | None = None):
    """LanceDB's errors about the files of the index at `path` (damaged, full disk, read-only; on object storage
    also denied credentials, an unreachable endpoint, a missing bucket) as one StoreError that names the index and
    the way out: the one place they are translated, for the writer and the readers."""
    try:
        yield
    except (RuntimeError, OSError, ValueError) as exc:
        if location.is_uri(str(path)) and location.looks_like_storage_error(str(exc)):
            raise StoreError(location.storage_error_message(exc, str(path), storage_options)) from None
        if not LANCE_ERROR.match(str(exc)):
            raise
        raise StoreError(lance_error_message(path, str(exc))) from None


def lance_error_message(path: Path | str, text: str) -> str:
    code = OS_ERROR_CODE.search(text)
    number = int(code.group(1)) if code else None
    if number in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk of the index {path}: free some disk space and run again"
    if number == errno.EROFS:
        return f"the index {path} is on a read-only file system: remount it read-write, or use another --db"
    if number in (errno.EACCES, errno.EPERM):
        return f"no permission to write the index {path}: check its permissions, or use another --db"
    found = LANCE_REASON.search(text)
    reason = " ".join((found.group(1) if found else text).split())[:160]
    return f"the index {path} is damaged ({reason}); rebuild it with `glance index --reindex PATH --db {path}`"


def build_command(path: Path) -> str:
    """The command that builds an index at `path`."""
    shown = location.display(str(path))
    return "glance index ~/Pictures" + ("" if str(path) == str(default_db_path()) else f" --db {shown}")


def no_index_message(path: Path) -> str:
    """The one "no index here" message, with the command that builds one."""
    return f"no Glance index at {location.display(str(path))}: build one with `{build_command(path)}`"


def newer_glance_message(path: Path, recorded: str, known: str) -> str:
    return (f"this index was written by a newer Glance ({recorded}; this Glance knows {known}): upgrade Glance, "
            f"or rebuild the index with `glance index --reindex PATH --db {path}`")


def check_preprocessing(meta: dict, code_version: int, path: Path) -> None:
    """Vectors are only comparable when made with the same preprocessing (models/preprocess.py versions it):
    an index from a newer Glance is refused, one from an older Glance needs its photos embedded again."""
    recorded = meta.get(PREPROCESS_VERSION_KEY)
    if recorded is None or int(recorded) == code_version:
        return
    if int(recorded) > code_version:
        raise StoreError(newer_glance_message(path, f"preprocessing {recorded}", f"preprocessing {code_version}"))
    raise StoreError(f"the index at {path} was embedded with preprocessing {recorded}; this Glance uses "
                     f"{code_version}, so new vectors would not match its photos. Rebuild it with "
                     f"`glance index --reindex PATH --db {path}`")


def default_db_path() -> Path | str:
    """$GLANCE_DB (a folder, or an object-storage URI), else $XDG_DATA_HOME/glance/index
    (~/.local/share/glance/index)."""
    if os.environ.get("GLANCE_DB"):
        return db_location(os.environ["GLANCE_DB"])
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "glance" / "index"


def db_location(given: str | Path | None) -> Path | str:
    """An index location as the Store keeps it: a normalized URI (str) for object storage, else an absolute Path."""
    if not given:
        return default_db_path()
    if location.is_uri(str(given)):
        return location.normalize(str(given))
    return Path(given).expanduser().absolute()


REST_CLIENT = "lance_namespace_urllib3_client"


def _defer_rest_client() -> None:
    """lancedb imports lance_namespace, which imports the models of the REST namespace client; that package's
    __init__ also builds every REST API class (~1 s) that a local index never uses. So the package is
    registered without running its __init__ (its submodules import as usual), and the first attribute asked of
    it runs the real __init__: only a REST namespace pays for it."""
    if REST_CLIENT in sys.modules:
        return
    spec = importlib.util.find_spec(REST_CLIENT)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)

    def load_all(name: str):
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = load_all
    sys.modules[REST_CLIENT] = package


class Store(IndexingQueries, ReadingQueries, VectorIndexQueries, ExtrasQueries):
    """An index directory, or a prefix in object storage. Tables are opened lazily; a missing index is not an
    error until it is used. `path` is a Path for a local index and the normalized URI (str) for one in a bucket
    (`remote`); `storage_options` are passed to LanceDB on top of the environment (core/location.py).

    This class owns every query string sent to LanceDB: the writer's in store/indexing.py, the readers' in
    store/reading.py, the vector index's in store/vector_index.py, the shared ones here. Nobody else writes SQL.
    """

    def __init__(self, path: str | Path | None = None, consistency: timedelta | None = timedelta(seconds=1),
                 storage_options: dict | None = None):
        self.path = db_location(path)
        self.remote = isinstance(self.path, str)
        self.storage_options = dict(storage_options or {})
        self._consistency = consistency
        self._db = None
        self._version_checked = False
        self._writing = False

    @property
    def db(self):
        """The LanceDB connection, made on first use: connecting creates the folder, so a reader that only
        asks whether an index exists (a mistyped --db) must not leave an empty folder behind."""
        if self._db is None:
            _defer_rest_client()
            import lancedb  # ~1 s to import: only commands that touch the index pay for it

            # A reader re-checks for new versions at most this often, so a running UI sees fresh indexing.
            extra = {"storage_options": location.lance_options(self.storage_options)} if self.remote else {}
            self._db = lancedb.connect(str(self.path), read_consistency_interval=self._consistency, **extra)
        return self._db

    def exists(self) -> bool:
        return IMAGES in self.table_names()

    def table_names(self) -> list[str]:
        if not self.remote:
            return list(self.db.list_tables().tables) if self.path.exists() else []
        with self.lance_errors():  # a bucket cannot be asked whether it exists without the same request
            return list(self.db.list_tables().tables)

    def table(self, name: str):
        if name not in self.table_names():
            raise StoreError(no_index_message(self.path))
        if not self._version_checked and name != META:
            self._version_checked = True
            self.check_version()
        return self.db.open_table(name)

    def lance_errors(self):
        return lance_errors(self.path, self.storage_options)

    def shown(self) -> str:
        """The index's location for people (no secrets: core/location.display)."""
        return location.display(str(self.path))

    @contextlib.contextmanager
    def writing(self):
        """Be the index's one writer (store/lock.py) for a while; nested calls hold the same lock."""
        if self._writing:
            yield
            return
        from .lock import remote_writer_lock, writer_lock

        with (remote_writer_lock(self.path, self.storage_options) if self.remote else writer_lock(self.path)):
            self._writing = True
            try:
                yield
            finally:
                self._writing = False

    def check_version(self) -> None:
        """Refuse an index from a newer Glance; bring one from an older Glance up to date in place. (The
        preprocessing version is the models' business: search/modelmatch.py and indexer/bookkeeping.py.)"""
        meta = self.meta()
        if not meta:
            return  # no record at all: the readers and the writer refuse it with their own message
        recorded = int(meta.get(SCHEMA_VERSION_KEY) or 1)
        if recorded > SCHEMA_VERSION:
            raise StoreError(newer_glance_message(self.path, f"schema {recorded}", f"schema {SCHEMA_VERSION}"))
        if recorded < SCHEMA_VERSION and IMAGES in self.table_names():
            with self.writing():  # a reader may migrate too, but never beside a writer
                if int(self.meta().get(SCHEMA_VERSION_KEY) or 1) < SCHEMA_VERSION:
                    self._migrate(recorded)

    def _migrate(self, recorded: int) -> None:
        """Schema 1 -> 2: images gains relpath_bytes (NULL: every name written by schema 1 was UTF-8).
        Schema 2 -> 3 changes nothing in place (caption_vector comes with a caption model)."""
        images = self.db.open_table(IMAGES)
        try:
            if "relpath_bytes" not in images.schema.names:
                images.add_columns(pa.field("relpath_bytes", pa.binary()))
            self.write_meta({SCHEMA_VERSION_KEY: SCHEMA_VERSION})
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"the index at {self.path} is from an older Glance (schema {recorded}) and could not "
                             f"be updated ({exc}); rebuild it with `glance index --reindex PATH --db {self.path}`") \
                from None

    def create_tables(self, dim: int) -> None:
        existing = self.table_names()
        for name, columns in ((IMAGES, images_schema(dim)), (CAPTIONS, captions_schema(dim)), (META, META_SCHEMA)):
            if name not in existing:
                self.db.create_table(name, schema=columns,
                                     storage_options={"new_table_data_storage_version": TABLE_FORMAT})

    def meta(self) -> dict:
        if META not in self.table_names():
            return {}
        try:
            table = self.db.open_table(META)
        except ValueError:  # listed, not yet committed: the first run is creating it at this moment
            return {}
        rows = table.to_arrow().to_pylist()
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def write_meta(self, values: dict) -> None:
        rows = pa.Table.from_pylist([{"key": k, "value": json.dumps(v)} for k, v in values.items()], schema=META_SCHEMA)
        upsert(self.table(META), rows, "key")

    def publish(self) -> None:
        """Record the tables' current versions as one consistent pair (after a complete batch or step):
        readers check out exactly this pair, so they never see a caption without its photo."""
        versions = {name: self.db.open_table(name).version for name in (IMAGES, CAPTIONS)}
        self.write_meta({schema.SNAPSHOT: versions})

    def drop_all(self) -> None:
        """Delete the whole index (for --reindex). Images and captions go first: a run killed midway leaves
        the old meta behind, so the next run still refuses to mix models."""
        for name in (IMAGES, CAPTIONS, META):
            if name in self.table_names():
                self.db.drop_table(name)
        self.drop_extras()  # tunings and reports of the old models

    def ensure_indexes(self) -> list[str]:
        """Compact small fragments and fold new rows into the indexes, then build or rebuild what is missing: the
        cosine vector index (store/vector_index.py), the filter indexes and the captions FTS index. Returns what
        was done, for the log.

        Compacting comes first: compacting fragments that an index covers rewrites (remaps) that index, and a
        remapped IVF index searches several times slower than one built over the merged fragments (100k photos,
        10 probes: 4.8 ms before, 11.6 ms after; 1M photos: 2.9 ms built after compacting, 33 ms remapped)."""
        self.compact()
        done = [what for what in (self.ensure_vector_index(), self.ensure_filter_indexes()) if what]
        captions = self.table(CAPTIONS)
        if captions.count_rows() and not any(ix.columns == ["text"] for ix in captions.list_indices()):
            from lancedb.index import FTS

            captions.create_index("text", config=FTS(), replace=True)
            done.append("built full-text index on captions")
        return done

    def ensure_filter_indexes(self) -> str | None:
        """B-tree indexes on the columns the search filters read (folder: relpath prefix, dates: taken_at), so a
        prefilter looks rows up instead of scanning every one: at 1M photos a folder filter took 78 ms and a date
        filter 53 ms per search without them, 17 and 22 ms with them (27 ms unfiltered), and both build in under a
        second (bench/scale.py). New rows are folded in by compact() like the vector index's."""
        from lancedb.index import BTree

        images = self.table(IMAGES)
        indexed = {tuple(ix.columns) for ix in images.list_indices()}
        missing = [column for column in FILTER_COLUMNS if (column,) not in indexed]
        for column in missing:
            images.create_index(column, config=BTree())
        return f"built filter indexes on {', '.join(missing)}" if missing else None

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


def delete_in(table, column: str, values, chunk: int = 500, extra: str = "") -> int:
    """Delete rows whose `column` is one of `values` (and `extra` SQL holds), a few hundred per commit so the
    SQL stays small. Returns how many rows were deleted."""
    values, deleted = list(values), 0
    for start in range(0, len(values), chunk):
        where = sql_in(column, values[start:start + chunk]) + (f" AND ({extra})" if extra else "")
        result = table.delete(where)
        deleted += int(getattr(result, "num_deleted_rows", 0) or 0)
    return deleted
