"""The readers' queries (search/, `glance stats`): every query string a reader sends to LanceDB, as Store methods.

Readers see the two tables at one consistent moment: the writer publishes the pair of table versions it left
complete (Store.publish), and readers check out exactly that pair. `store.pinned()` freezes the pair for one
operation, so a search and the path lookups that follow it read the same moment.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import location

from . import schema
from .schema import CAPTIONS, IMAGES
from .sql import sql_in as _sql_in
from .sql import sql_string as _sql
from .vector_index import chosen_kind, min_rows, pending_note, tune

# LanceDB brute force costs ~3-4 ms per 1,000 rows on 2 cores (65 ms at 20k, ~450 ms at 100k), with or
# without a prefilter, while IVF_FLAT answers in ~10 ms with recall ~1.0, prefiltered too
# (bench/query_latency.py). So the vector index is used whenever there is one, except on tables this
# small, where brute force is as fast and exact (unless `glance index --vector-index` chose the kind).
EXACT_MAX_ROWS = 5_000
KEYWORD_SCAN_ROWS = 2000  # without a full-text index: captions read per keyword scan
INDEX_INFO_TTL_S = 30.0
PAIR_TTL_S = 1.0  # a reader looks for a newly published pair at most this often
# A row's address in this snapshot. A search can rank by it alone (nearest(..., [ROW_ID])) and read the columns of
# only the hits it shows (rows_at): a hit's columns are read row by row, 9 photo columns for a pool of 100 cost
# ~20 ms of a 45 ms search at 1M photos, and a page shows 24 of them.
ROW_ID = "_rowid"


@dataclass(frozen=True)
class FolderScope:
    """Photos under `prefix` (relative, POSIX, no trailing slash; "" for everything) in `root` (None: any root)."""
    root: str | None
    prefix: str


@dataclass(frozen=True)
class PhotoFilter:
    """Which photos a query may return; None/empty fields do not restrict. Built by search/filters.py."""
    folders: tuple[FolderScope, ...] | None = None  # any of these (None: all folders)
    taken_from: datetime | None = None  # inclusive
    taken_before: datetime | None = None  # exclusive
    has_caption: bool | None = None
    exclude_ids: tuple[str, ...] = ()


class ReadingQueries:
    """Mixed into store.Store; `self` is the Store."""

    # ----- the consistent pair ---------------------------------------------------------------------------
    def pinned(self):
        """This Store with the current published pair frozen: every read through it sees one moment."""
        view = copy.copy(self)
        view._pinned_pair = self._pair()
        return view

    def _pair(self):
        """(images, captions or None, meta) at the last published versions (latest where none was published)."""
        frozen = getattr(self, "_pinned_pair", None)
        if frozen is not None:
            return frozen
        cached = getattr(self, "_pair_cache", None)
        if cached and time.monotonic() - cached[0] < PAIR_TTL_S:
            return cached[1]
        meta = self.meta()
        pair = (*self._checkout(meta.get(schema.SNAPSHOT) or {}), meta)
        self._pair_cache = (time.monotonic(), pair)
        return pair

    def current_meta(self) -> dict:
        """The meta read with the current pair (roots, last indexed, models): fresh within PAIR_TTL_S."""
        return self._pair()[2]

    def _checkout(self, versions: dict):
        images = self.table(IMAGES)
        captions = self.table(CAPTIONS) if CAPTIONS in self.table_names() else None
        try:
            if versions.get(IMAGES) and captions is not None and versions.get(CAPTIONS):
                images.checkout(int(versions[IMAGES]))
                captions.checkout(int(versions[CAPTIONS]))
        except Exception:  # noqa: BLE001 - the pair was compacted away: the latest versions are the best we have
            images = self.table(IMAGES)
            captions = self.table(CAPTIONS) if captions is not None else None
        return images, captions

    @property
    def images(self):
        return self._pair()[0]

    @property
    def captions(self):
        return self._pair()[1]

    def pinned_table(self, table_name: str):
        """IMAGES or CAPTIONS at this snapshot's version (captions None before the table exists)."""
        return self.images if table_name == IMAGES else self.captions

    # ----- photos --------------------------------------------------------------------------------------
    def count_photos(self, where: PhotoFilter | None = None) -> int:
        sql = photo_where(where)
        return self.images.count_rows(sql) if sql else self.images.count_rows()

    def photo_row(self, photo_id: str, columns: list[str]) -> dict | None:
        rows = self.images.search().where(f"id = {_sql(photo_id)}").select(columns).limit(1).to_arrow()
        return rows.to_pylist()[0] if rows.num_rows else None

    def photo_paths(self, ids: list[str]) -> dict[str, dict]:
        """id -> {root, relpath, relpath_bytes} for the ids that are indexed."""
        if not ids:
            return {}
        rows = self.images.search().where(_sql_in("id", ids)).select(["id", "root", "relpath", "relpath_bytes"])
        return {r["id"]: r for r in rows.limit(len(ids)).to_arrow().to_pylist()}

    def photo_rows(self, ids: list[str], where: PhotoFilter | None, columns: list[str]) -> list[dict]:
        """The rows of these photos that pass the filter (in no particular order)."""
        if not ids:
            return []
        sql = " AND ".join(c for c in (_sql_in("id", ids), photo_where(where)) if c)
        return self.images.search().where(sql).select(columns).limit(len(ids)).to_arrow().to_pylist()

    def rows_at(self, table_name: str, row_ids: list[int], columns: list[str]) -> dict[int, dict]:
        """Row id (from nearest(..., [ROW_ID]) on this snapshot) -> the row's columns."""
        if not row_ids:
            return {}
        table = self.pinned_table(table_name)
        rows = table.take_row_ids(list(row_ids)).select(columns).with_row_id().to_arrow().to_pylist()
        return {row.pop(ROW_ID): row for row in rows}

    def photo_dates(self, where: PhotoFilter | None) -> pa.Table:
        """id, taken_at, mtime_ns of every photo that passes the filter: what browsing orders by date."""
        return self.photo_columns(where, ["id", "taken_at", "mtime_ns"])

    def photo_columns(self, where: PhotoFilter | None, columns: list[str]) -> pa.Table:
        """These columns of every photo that passes the filter (browsing's dates, the duplicates' vectors)."""
        query = self.images.search()
        sql = photo_where(where)
        if sql:
            query = query.where(sql)
        return query.select(columns).limit(None).to_arrow()

    def photo_roots(self) -> list[str]:
        """The indexed roots as recorded, else as found in the rows (an index from before roots were recorded)."""
        roots = self.current_meta().get(schema.ROOTS)
        if roots:
            return [str(r) for r in roots]
        column = self.images.search().select(["root"]).limit(None).to_arrow().column("root")
        return sorted(set(column.to_pylist()))

    # ----- captions ------------------------------------------------------------------------------------
    def captions_of(self, photo_id: str) -> list[tuple[str, str]]:
        if self.captions is None:
            return []
        found = self.captions.search().where(f"image_id = {_sql(photo_id)}").select(["text", "source"])
        return [(c["text"], c["source"] or "") for c in found.limit(1000).to_arrow().to_pylist()]

    def caption_texts(self, photo_ids: list[str]) -> dict[str, list[str]]:
        """The captions of these photos: id -> texts (an export's captions column)."""
        if self.captions is None or not photo_ids:
            return {}
        found: dict[str, list[str]] = {}
        rows = self.captions.search().where(_sql_in("image_id", photo_ids)).select(["image_id", "text"])
        for row in rows.limit(None).to_arrow().to_pylist():
            found.setdefault(row["image_id"], []).append(row["text"])
        return found

    def count_captions(self) -> int:
        return self.captions.count_rows() if self.captions is not None else 0

    def keyword_captions(self, words: list[str], limit: int, columns: list[str]) -> list[dict]:
        """Captions containing the words: the full-text index when there is one, else an escaped substring scan
        (case-insensitive, most words first)."""
        if self.captions is None or not words:
            return []
        if self.has_text_index():
            from lancedb.query import MatchQuery

            found = self.captions.search(MatchQuery(" ".join(words), "text"), query_type="fts")
            return found.limit(limit).select([*columns, "_score"]).to_arrow().to_pylist()
        where = " OR ".join(f"strpos(lower(text), {_sql(w)}) > 0" for w in words)
        rows = self.captions.search().where(where).select(columns).limit(KEYWORD_SCAN_ROWS).to_arrow().to_pylist()
        phrase = " ".join(words)

        def rank(row):
            lowered = row["text"].lower()
            return (-sum(w in lowered for w in words), phrase not in lowered, len(lowered))

        return sorted(rows, key=rank)[:limit]

    # ----- vectors -------------------------------------------------------------------------------------
    def nearest(self, table_name: str, vector: np.ndarray, where: PhotoFilter | None, limit: int,
                columns: list[str], column: str = "vector") -> tuple[pa.Table, str]:
        """Top `limit` rows by cosine, with a `score` column, and "exact" or "index": exact without a vector
        index or on tables of at most EXACT_MAX_ROWS rows. Filters apply before the top-k (prefilter).
        `column` may be the captions' caption_vector (rows without one are skipped)."""
        return self.nearest_many(table_name, [vector], where, limit, columns, column)[0]

    def nearest_many(self, table_name: str, vectors: list[np.ndarray], where: PhotoFilter | None, limit: int,
                     columns: list[str], column: str = "vector") -> list[tuple[pa.Table, str]]:
        """`nearest` for each vector, as one LanceDB search: the table is read once for all of them
        (16 exact searches of 5,000 rows: 51 ms together, 425 ms one by one)."""
        table = self.pinned_table(table_name)
        query = table.search(list(vectors), vector_column_name=column).distance_type("cosine")
        sql = photo_where(where)
        if sql:
            query = query.where(sql, prefilter=True)
        index = self.vector_index(table_name) if column == "vector" else None
        if index is None or (table.count_rows() <= EXACT_MAX_ROWS and not self._index_chosen(table_name)):
            query, mode = query.bypass_vector_index(), "exact"
        else:
            query, mode = tune(query, index, limit, self.built_rows()), "index"
        rows = query.limit(limit).select([*columns, "_distance"]).to_arrow()
        if len(vectors) == 1:  # one vector is a plain search: no query_index column
            return [(_scored(rows), mode)]
        which = rows.column("query_index").to_numpy(zero_copy_only=False)
        rows = rows.drop_columns(["query_index"])
        return [(_scored(rows.filter(pa.array(which == i))), mode) for i in range(len(vectors))]

    def _index_chosen(self, table_name: str) -> bool:
        """Whether `glance index --vector-index` named a kind: its index then answers whatever the table's size,
        so search returns what was asked for (and what `glance eval` measured)."""
        return table_name == IMAGES and chosen_kind(self.current_meta()) != "auto"

    def samples(self, table_name: str, column: str, count: int = 3) -> list[dict]:
        """A few rows with a non-empty `column`, and their vectors (to check that a model reproduces them)."""
        table = self.pinned_table(table_name)
        if table is None:
            return []
        where = f"{column} IS NOT NULL" + (" AND text != ''" if column == "text" else "")
        return table.search().where(where).select([column, "vector"]).limit(count).to_arrow().to_pylist()

    def photo_vectors(self) -> pa.Table:
        """id, vector of every photo that has a vector (`glance eval` ranks them all)."""
        return self.images.search().where("vector IS NOT NULL").select(["id", "vector"]).limit(None).to_arrow()

    def photo_caption_vectors(self) -> pa.Table:
        """image_id, text, source, vector of every caption that belongs to a photo (free-standing texts have
        image_id '') and has a vector, from any source."""
        if self.captions is None:
            return pa.table({"image_id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                             "source": pa.array([], pa.string()),
                             "vector": pa.array([], self.images.schema.field("vector").type)})
        query = self.captions.search().where("image_id != '' AND vector IS NOT NULL")
        return query.select(["image_id", "text", "source", "vector"]).limit(None).to_arrow()

    def vector_dim(self) -> int | None:
        return getattr(self.images.schema.field("vector").type, "list_size", None)

    def vector_index(self, table_name: str = IMAGES) -> str | None:
        """The vector index type on `vector` (e.g. 'IvfFlat'), re-read every INDEX_INFO_TTL_S seconds."""
        cache = self.__dict__.setdefault("_index_info", {})
        cached = cache.get(table_name)
        if cached and time.monotonic() - cached[0] < INDEX_INFO_TTL_S:
            return cached[1]
        table = self.pinned_table(table_name)
        found = None if table is None else next(
            (str(i.index_type) for i in table.list_indices()
             if "vector" in i.columns and str(i.index_type).lower().startswith("ivf")), None)
        cache[table_name] = (time.monotonic(), found)
        return found

    def has_caption_vectors(self) -> bool:
        """Whether this snapshot's captions carry the caption model's vectors (and meta names the model)."""
        return (self.captions is not None and bool(self.current_meta().get(schema.CAPTION_MODEL))
                and schema.CAPTION_VECTOR in self.captions.schema.names)

    def has_text_index(self) -> bool:
        return self.captions is not None and any(
            str(i.index_type).upper() == "FTS" and "text" in i.columns for i in self.captions.list_indices())

    # ----- what the index holds ------------------------------------------------------------------------
    def size_bytes(self) -> int:
        if self.remote:
            return location.tree_size(self.path, self.storage_options)
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def stats(self) -> dict:
        """What the index holds, with one set of keys for `glance stats`, `glance search --stats` and /stats."""
        view = self.pinned()
        meta = view.current_meta()
        rows = view.images.search().select(["root", "has_caption"]).limit(None).to_arrow()
        per_root = _value_counts(rows["root"])
        captions = (view.captions.search().select(["image_id", "source"]).limit(None).to_arrow()
                    if view.captions is not None else pa.table({"image_id": pa.array([], pa.string()),
                                                                 "source": pa.array([], pa.string())}))
        free = pc.or_(pc.is_null(captions["image_id"]), pc.equal(captions["image_id"], ""))
        texts = int(pc.sum(free).as_py() or 0) if captions.num_rows else 0
        return {
            "db": self.shown(),
            "size_bytes": self.size_bytes(),
            "schema_version": meta.get(schema.SCHEMA_VERSION_KEY),
            **{key: meta.get(key) for key in schema.ENCODER_KEYS},
            "photos": rows.num_rows,
            "photos_with_captions": int(pc.sum(rows["has_caption"]).as_py() or 0) if rows.num_rows else 0,
            "roots": {root: per_root.get(root, 0) for root in sorted(set(meta.get(schema.ROOTS) or []) | set(per_root))},
            "captions": captions.num_rows - texts,
            "captions_by_source": dict(sorted(_value_counts(captions.filter(pc.invert(free))["source"]).items())),
            "texts": texts,
            "last_indexed": meta.get(schema.LAST_INDEXED),
            "vector_index": view.vector_index(IMAGES),
            "vector_index_choice": chosen_kind(meta),
            "vector_index_min_rows": min_rows(chosen_kind(meta)),
            "vector_index_note": pending_note(chosen_kind(meta), rows.num_rows, view.vector_index(IMAGES) is not None),
            "text_index": view.has_text_index(),
        }


def _scored(rows: pa.Table) -> pa.Table:
    """Search rows with LanceDB's cosine distance as a `score` (1 - distance), best first."""
    rows = rows.sort_by([("_distance", "ascending")])
    scores = pa.array(1.0 - rows.column("_distance").to_numpy(zero_copy_only=False), pa.float32())
    return rows.drop_columns(["_distance"]).append_column("score", scores)


def photo_where(where: PhotoFilter | None) -> str | None:
    """A PhotoFilter as a LanceDB `where` on the images table, or None for "every photo".

    Every value reaches SQL through _sql, and only as an argument of `starts_with(...)`, `=` or a TIMESTAMP
    literal, so quotes, `%`, `_`, backslashes or SQL keywords in a folder name are matched literally and can
    neither break nor widen the query.
    """
    if where is None:
        return None
    clauses = []
    if where.folders is not None:
        clauses.append(_folders_clause(where.folders))
    if where.taken_from:
        clauses.append(f"taken_at >= TIMESTAMP {_sql(_sql_time(where.taken_from))}")
    if where.taken_before:
        clauses.append(f"taken_at < TIMESTAMP {_sql(_sql_time(where.taken_before))}")
    if where.has_caption is True:
        clauses.append("has_caption = true")
    elif where.has_caption is False:
        clauses.append("(has_caption = false OR has_caption IS NULL)")
    clauses.extend(f"id != {_sql(photo_id)}" for photo_id in where.exclude_ids)
    return " AND ".join(c for c in clauses if c) or None


def _folders_clause(folders: tuple[FolderScope, ...]) -> str:
    options = []
    for scope in folders:
        parts = []
        if scope.root is not None:
            parts.append(f"root = {_sql(scope.root)}")
        if scope.prefix:
            parts.append(f"starts_with(relpath, {_sql(scope.prefix + '/')})")
        if not parts:
            return ""  # one of the options is "everything"
        options.append(parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")")
    if not options:
        return "FALSE"
    return options[0] if len(options) == 1 else "(" + " OR ".join(options) + ")"


def _sql_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _value_counts(column) -> dict:
    if not len(column):
        return {}
    return {r["values"]: r["counts"] for r in pc.value_counts(column).to_pylist()}


def vector_matrix(column) -> np.ndarray:
    """An Arrow column of fixed-size vectors as a float32 matrix [rows, dim] (a read-only view where Arrow's
    buffer already is float32: no copy of a million vectors)."""
    array = column.combine_chunks()
    dim = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
