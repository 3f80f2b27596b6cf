"""The writer's queries (indexer/): every query string the indexer sends to LanceDB, as methods of Store.

"""
from __future__ import annotations

import pyarrow as pa

# store.db imports this module to build Store, so its helpers are looked up at call time (db.upsert), not
# imported by name here.
from . import db
from .schema import CAPTION_VECTOR, CAPTIONS, CONTENT_SOURCES, IMAGES, vector_type

FINISHED = "mtime_ns IS NOT NULL"  # a row without mtime was killed before its captions: not a source to copy
SET_CHUNK = 500  # ids per UPDATE, so the SQL stays small



class IndexingQueries:
    """Mixed into store.Store; `self` is the Store (self.table(name), self.meta(), ...)."""

    # ----- reading what is indexed ---------------------------------------------------------------------------
    def rows_in_root(self, root: str, columns: list[str]) -> pa.Table:
        return self._select(IMAGES, columns, f"root = {db.sql_string(root)}")

    def indexed_roots(self) -> list[str]:
        """Roots that hold rows (meta's root list aside): a root dropped from meta may still have photos."""
        return sorted(self._select(IMAGES, ["root"])["root"].unique().to_pylist())

    def photo_ids(self) -> pa.Array:
        values = self._select(IMAGES, ["id"])["id"]
        return values.combine_chunks() if values.num_chunks else pa.array([], pa.string())

    def caption_flags(self) -> pa.Table:
        return self._select(IMAGES, ["id", "has_caption"])

    def finished_hashes(self) -> list[str]:
        return self._select(IMAGES, ["sha256"], FINISHED)["sha256"].to_pylist()

    def finished_rows_with_hashes(self, shas: list[str], columns: list[str]) -> pa.Table:
        return self._select(IMAGES, columns, f"{db.sql_in('sha256', shas)} AND {FINISHED}")

    def has_rows(self) -> bool:
        return any(self.table(name).count_rows() for name in (IMAGES, CAPTIONS) if name in self.table_names())

    def latest_photo_columns(self, columns: list[str]) -> pa.Table:
        """These columns of every photo in the latest version (the writer's view, not the published pair)."""
        return self._select(IMAGES, columns)

    def photo_count(self) -> int:
        return self.table(IMAGES).count_rows()

    def caption_count(self) -> int:
        return self.table(CAPTIONS).count_rows()

    def content_captions_of(self, image_ids: list[str]) -> pa.Table:
        """image_id, source, text, vector of the captions read from inside these photos (EXIF, XMP)."""
        where = f"{db.sql_in('image_id', image_ids)} AND {db.sql_in('source', CONTENT_SOURCES)}"
        return self._select(CAPTIONS, ["image_id", "source", "text", "vector"], where)

    def captions_from(self, source: str) -> pa.Table:
        """id, image_id of every caption from one source (sidecar, file, ...)."""
        return self._select(CAPTIONS, ["id", "image_id"], f"source = {db.sql_string(source)}")

    def photo_captions(self) -> pa.Table:
        """id, image_id of every caption that belongs to a photo (free-standing texts have image_id '')."""
        return self._select(CAPTIONS, ["id", "image_id"], "image_id != ''")

    # ----- writing -------------------------------------------------------------------------------------------
    def upsert_photos(self, rows: pa.Table) -> int:
        return db.upsert(self.table(IMAGES), rows)

    def upsert_captions(self, rows: pa.Table) -> int:
        return db.upsert(self.table(CAPTIONS), rows)

    def delete_photos(self, ids: list[str]) -> int:
        return db.delete_in(self.table(IMAGES), "id", ids)

    def delete_captions(self, ids: list[str]) -> int:
        return db.delete_in(self.table(CAPTIONS), "id", ids)

    def delete_captions_of(self, image_ids: list[str], sources: tuple[str, ...] | None = None) -> int:
        """The captions of these photos (only those from `sources`, when given)."""
        extra = db.sql_in("source", sources) if sources else ""
        return db.delete_in(self.table(CAPTIONS), "image_id", image_ids, extra=extra)

    def set_has_caption(self, ids: list[str], value: bool) -> None:
        images = self.table(IMAGES)
        for start in range(0, len(ids), SET_CHUNK):
            images.update(where=db.sql_in("id", ids[start:start + SET_CHUNK]), values={"has_caption": value})

    # ----- the caption model's column ------------------------------------------------------------------------
    def caption_vector_dim(self) -> int | None:
        """The size of the caption_vector column, or None while the index has no caption model."""
        schema = self.table(CAPTIONS).schema
        return schema.field(CAPTION_VECTOR).type.list_size if CAPTION_VECTOR in schema.names else None

    def add_caption_vectors(self, dim: int) -> None:
        """An empty caption_vector column (every caption NULL, to be embedded)."""
        self.table(CAPTIONS).add_columns(pa.field(CAPTION_VECTOR, vector_type(dim)))

    def drop_caption_vectors(self) -> None:
        if self.caption_vector_dim() is not None:
            self.table(CAPTIONS).drop_columns([CAPTION_VECTOR])

    def captions_without_caption_vector(self, limit: int) -> pa.Table:
        """id, text of captions the caption model has not embedded yet."""
        query = self.table(CAPTIONS).search().where(f"{CAPTION_VECTOR} IS NULL").select(["id", "text"])
        return query.limit(limit).to_arrow()

    def set_caption_vectors(self, ids: list[str], vectors: pa.FixedSizeListArray) -> None:
        """Write caption vectors in place (one commit); the other columns of those rows stay as they are."""
        rows = pa.table({"id": pa.array(ids, pa.string()), CAPTION_VECTOR: vectors})
        self.table(CAPTIONS).merge_insert("id").when_matched_update_all().execute(rows)

    # ----- helpers -------------------------------------------------------------------------------------------
    def _select(self, table: str, columns: list[str], where: str | None = None) -> pa.Table:
        query = self.table(table).search()
        if where is not None:
            query = query.where(where)
        return query.select(columns).limit(None).to_arrow()
