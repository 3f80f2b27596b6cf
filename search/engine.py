"""The Glance search engine: one object over an index, used by `python -m search` and by app.py.

    engine = Engine()                                   # $GLANCE_DB or ~/.local/share/glance/index
    results = engine.search("beach -people +sunset 2:dog", filters=Filters(folder="2023"), top=24)
    for hit in results.hits:
        print(f"{hit.score:.3f}", hit.path)
    more = engine.search("beach -people +sunset 2:dog", filters=..., top=24, offset=24)  # next page

Public API (everything else is private):

  Engine(db=None, vision_model=None, text_model=None, precision="auto", threads=None)
      Opens the index and loads the text model recorded in it (a few seconds with cached models); the
      vision model loads on the first image query, or call `load_vision()` ahead (e.g. in a thread).
      `vision_model` / `text_model` override the recorded ones and are refused (StoreError) unless they
      reproduce the index's vectors (see search/modelmatch.py). Raises StoreError (no index, another
      model), ModelUnavailable (model not cached and offline), UsageError (bad argument).
  search(text="", image=None, like=None, filters=None, top=24, offset=0, cutoff=False, image_weight=1.0)
      -> Results. Photos for a query in the grammar of search/query.py, a query image (file path, bytes
      or PIL image; never a URL), and/or `like` = an indexed photo id ("more like this": that photo is
      left out of its own results). All parts are combined into one vector. `filters` is a Filters.
      Pages: `offset` + `top`; `Results.has_more` says whether a next page exists. With `cutoff=True`
      the adaptive cut-off (search/cutoff.py) hides the clearly irrelevant tail; pages stay consistent.
  image_to_text(image=None, top=10, like=None) -> list[TextHit]
      Nearest captions and free-standing texts for an image (path/bytes/PIL) or an indexed photo id.
  caption_search(text, top=10) -> list[TextHit]
      Captions and free-standing texts for a text: keyword matches (the full-text index when the indexer
      built one, else an escaped substring scan) and semantic matches, fused by reciprocal-rank fusion.
  photo(photo_id) -> PhotoDetails          everything known about one photo, captions included
  thumbnail(photo_id) -> bytes             its stored JPEG thumbnail (~256 px)
  file_path(photo) -> Path                 the original file, for an id or a path, strictly inside an
                                           indexed root after resolving symlinks; else NotServable
  check_image(upload) -> PIL.Image         the one place for query-image limits (bytes, pixels, no URLs)
  stats() -> dict                          counts, models, dimension, roots, last indexed, db path
  load_vision() -> None                    load the vision model now instead of on first use
  warm_up(vision=False) -> None            one embedding + one search, so a server's first query is fast

Every user mistake raises an exception from search.errors.USER_ERRORS with a one-line message; the engine
never prints. Engine methods may be called from several threads at once.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from models import TextEmbedder, VisionEncoder

from . import modelmatch
from .cutoff import WINDOW, Cutoff, adaptive_cutoff
from core.errors import UsageError
from .filters import Filters, compile_where, describe as describe_filters
from .query import Term, combine, parse_query
from store import CAPTIONS, IMAGES, Store, StoreError, sql_string
from .uploads import open_query_image

MAX_TOP = 500
MAX_OFFSET = 10_000
POOL_BLOCK = 100  # candidates are fetched in blocks, so consecutive pages come from the same ranking
# LanceDB brute force costs ~3-4 ms per 1,000 rows on 2 cores (65 ms at 20k, ~450 ms at 100k), with or
# without a prefilter, while IVF_FLAT answers in ~10 ms with recall ~1.0, prefiltered too
# (bench/query_latency.py). So the vector index is used whenever there is one, except on tables this
# small, where brute force is as fast and exact.
EXACT_MAX_ROWS = 5_000
NPROBES = 20  # IVF partitions probed (with ~sqrt(N) partitions); see bench/query_latency.py
REFINE_FACTOR = 5  # quantized indexes (SQ, PQ, RQ) re-rank this many times `limit` candidates exactly
HNSW_EF = 200
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al.): score = sum of 1 / (RRF_K + rank)
KEYWORD_SCAN_ROWS = 2000  # without a full-text index: captions read per keyword scan
MAX_KEYWORDS = 8
TERM_CACHE = 512
# A short text query is ~3 GFLOP, one query image ~36. On an idle 2-core machine a second thread saves
# ~10 ms per text, but when the cores are busy (indexing, other users) OpenMP threads wait on each other:
# a text query took 300-500 ms instead of ~50 ms, an image 1.5-1.8 s instead of ~350 ms, measured here
# (bench/query_latency.py). So queries are embedded on one thread, unless the Engine was given `threads`.
QUERY_THREADS = 1
INDEX_INFO_TTL_S = 30.0
PHOTO_COLUMNS = ["id", "root", "relpath", "taken_at", "camera", "width", "height", "has_caption"]
TEXT_COLUMNS = ["id", "image_id", "text", "source"]


class NotServable(UsageError):
    """A file or thumbnail that may not (403) or cannot (404) be served; `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Hit:
    """One photo in a result list. `path` is root/relpath as indexed; serve files via Engine.file_path."""
    id: str
    root: str
    relpath: str
    path: str
    score: float  # cosine similarity to the query vector, -1..1 (text->image is typically 0.0-0.1)
    taken_at: datetime | None
    camera: str | None
    width: int | None
    height: int | None
    has_caption: bool


@dataclass
class Results:
    """A page of hits, best first.

    total_considered: photos that passed the filters (the population that was ranked).
    has_more:         a next page exists (call search again with offset + top).
    cutoff:           the cut-off decision (None when cutoff=False); `dropped` photos fell below it.
    mode:             "exact" (brute force) or "index" (LanceDB vector index).
    note:             a human sentence when there is nothing to show (e.g. the filters match no photo).
    query:            the parsed text terms, for showing the query back.
    """
    hits: list[Hit]
    offset: int
    top: int
    has_more: bool
    total_considered: int
    cutoff: Cutoff | None = None
    dropped: int = 0
    mode: str = "exact"
    note: str = ""
    query: list[Term] = field(default_factory=list)


@dataclass(frozen=True)
class TextHit:
    """A caption (image_id = its photo) or a free-standing text (image_id = "").

    score: cosine for image_to_text; reciprocal-rank-fusion score for caption_search (rank-based, ~0.03 max).
    cosine: the semantic cosine when the text was found semantically, else None.
    matched: "semantic", "keyword" or "both".
    """
    text: str
    score: float
    image_id: str
    source: str
    id: str = ""
    cosine: float | None = None
    matched: str = "semantic"
    path: str = ""  # the photo's root/relpath for a caption, "" for a free-standing text


@dataclass(frozen=True)
class PhotoDetails:
    id: str
    root: str
    relpath: str
    path: str
    size: int | None
    mtime: datetime | None
    sha256: str | None
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera: str | None
    has_caption: bool
    indexed_at: datetime | None
    captions: list[tuple[str, str]]  # (text, source)


class Engine:
    def __init__(self, db: str | Path | None = None, vision_model: str | None = None, text_model: str | None = None,
                 precision: str = "auto", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self._query_threads = threads or QUERY_THREADS
        self.precision = modelmatch.check_precision(precision)
        self.store = Store(db)
        self.images = self.store.table(IMAGES)
        self.captions = self.store.table(CAPTIONS) if CAPTIONS in self.store.table_names() else None
        self.meta = self.store.meta()
        self.recorded = modelmatch.recorded_models(self.meta, self.store.path)
        self._check_vector_dim()
        self.roots = self._indexed_roots()
        version = self.recorded.version
        self._vision_choice = modelmatch.choose("vision", self.recorded.vision, vision_model, version, self.store.path)
        self._text_choice = modelmatch.choose("text", self.recorded.text, text_model, version, self.store.path)
        self.text = TextEmbedder(self._text_choice.spec, self.precision)
        modelmatch.check_pair_and_dim(self._vision_choice, self._text_choice, self.text.dim, self.recorded,
                                      self.store.path)
        if self._text_choice.overridden:
            self._verify_text_model()
        self._vision: VisionEncoder | None = None
        self._vision_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._term_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._index_info: dict[str, tuple[float, str | None]] = {}
        if self._vision_choice.overridden:
            self.load_vision()  # prove the override matches before serving anything

    # ----------------------------------------------------------------------------------------- queries

    def search(self, text: str = "", image=None, like: str | None = None, filters: Filters | None = None,
               top: int = 24, offset: int = 0, cutoff: bool = False, image_weight: float = 1.0) -> Results:
        """Photos for text (grammar), an image and/or an indexed photo, best first. See the module docstring.

        `image_weight` scales the query image in the sum (negative subtracts it); `like` counts once.
        Cheap checks (paging, grammar, filters) run before anything is embedded.
        """
        top, offset = _check_paging(top, offset)
        terms = parse_query(text)
        user_where = compile_where(filters, self.roots)
        if not terms and image is None and not like:
            raise UsageError("empty query: type some words (weights above 0), or give an image")
        parts, exclude = self._query_parts(terms, image, like, image_weight)
        vector = combine(parts)
        where = compile_where(filters, self.roots, exclude_ids=tuple(exclude))
        population = self._population(user_where, where, len(exclude))
        if population == 0:
            return Results([], offset, top, False, 0, note=self._nothing_note(filters), query=terms)
        pool = _pool_size(offset + top + 1, cutoff)
        rows, mode = self._nearest(self.images, vector, where, pool, PHOTO_COLUMNS)
        hits = [_hit(row) for row in rows.to_pylist()]
        decision = adaptive_cutoff([h.score for h in hits], population) if cutoff else None
        kept = hits[:decision.keep] if decision and decision.cut else hits
        dropped = population - len(kept) if decision and decision.cut else 0
        return Results(kept[offset:offset + top], offset, top, len(kept) > offset + top, population,
                       decision, dropped, mode, query=terms)

    def image_to_text(self, image=None, top: int = 10, like: str | None = None) -> list[TextHit]:
        """Captions and free-standing texts nearest to an image or to an indexed photo (cosine, best first)."""
        top, _ = _check_paging(top, 0)
        if (image is None) == (like is None):
            raise UsageError("give exactly one of: a query image, or an indexed photo id")
        vector = self._image_vector(image) if image is not None else self._stored_vector(like)
        if self.captions is None:
            return []
        rows, _ = self._nearest(self.captions, vector, None, top, TEXT_COLUMNS)
        return self._with_paths([_text_hit(row, row["score"], row["score"], "semantic") for row in rows.to_pylist()])

    def caption_search(self, text: str, top: int = 10) -> list[TextHit]:
        """Captions and texts matching `text` by keyword and by meaning, fused by reciprocal-rank fusion.

        The semantic half uses the whole grammar (weights, negatives); the keyword half looks for the words
        of the added terms. Each half contributes 1 / (RRF_K + rank) for the items it ranks.
        """
        top, _ = _check_paging(top, 0)
        terms = parse_query(text)
        if not terms:
            raise UsageError("empty query: type some words to look for in captions")
        if self.captions is None or self.captions.count_rows() == 0:
            return []
        vector = combine([(v, t.weight) for t, v in zip(terms, self._embed_terms(terms))])
        depth = max(3 * top, 30)
        semantic, _ = self._nearest(self.captions, vector, None, depth, TEXT_COLUMNS)
        keyword = self._keyword_captions(terms, depth)
        return self._with_paths(_fuse(semantic.to_pylist(), keyword, top))

    # ------------------------------------------------------------------------------------- photos/files

    def photo(self, photo_id: str) -> PhotoDetails:
        row = self._photo_row(photo_id, ["id", "root", "relpath", "size", "mtime_ns", "sha256", "width", "height",
                                         "taken_at", "camera", "has_caption", "indexed_at"])
        captions = []
        if self.captions is not None:
            found = self.captions.search().where(f"image_id = {sql_string(row['id'])}").select(["text", "source"])
            captions = [(c["text"], c["source"] or "") for c in found.limit(1000).to_arrow().to_pylist()]
        mtime = datetime.fromtimestamp(row["mtime_ns"] / 1e9) if row.get("mtime_ns") is not None else None
        return PhotoDetails(row["id"], row["root"], row["relpath"], _join(row["root"], row["relpath"]), row["size"],
                            mtime, row["sha256"], row["width"], row["height"], row["taken_at"], row["camera"],
                            bool(row["has_caption"]), row["indexed_at"], captions)

    def thumbnail(self, photo_id: str) -> bytes:
        row = self._photo_row(photo_id, ["thumb"])
        if not row["thumb"]:
            raise NotServable(f"photo {photo_id} has no thumbnail", 404)
        return row["thumb"]

    def file_path(self, photo: str | Path) -> Path:
        """The original file of an indexed photo, by id or by path, strictly inside an indexed root.

        Symlinks are resolved first, so a link (or `..`) that leads out of the root is refused (403);
        an unknown id, a path that is not an indexed photo, or a missing file is a 404. Both raise NotServable.
        """
        text = str(photo)
        if isinstance(photo, Path) or "/" in text:
            row = self._row_for_path(Path(text))
        else:
            row = self._photo_row(text, ["root", "relpath"])
        return self._inside_root(row["root"], row["relpath"])

    def check_image(self, upload) -> Image.Image:
        """A query image from a user (path, bytes or PIL image) checked against the limits, or UsageError."""
        return open_query_image(upload)

    def stats(self) -> dict:
        texts = self._count(self.captions, "image_id = '' OR image_id IS NULL") if self.captions is not None else 0
        total_texts = self.captions.count_rows() if self.captions is not None else 0
        return {
            "photos": self.images.count_rows(),
            "captions": total_texts - texts,
            "texts": texts,
            "vision_model": self._vision_choice.spec,
            "text_model": self._text_choice.spec,
            "model_version": self._text_choice.version,
            "dim": self.recorded.dim,
            "last_indexed": self.meta.get("last_indexed"),
            "roots": list(self.roots),
            "db": str(self.store.path),
            "vector_index": self._vector_index(self.images),
            "text_index": self.captions is not None and self._has_text_index(),
            "vision_loaded": self._vision is not None,
        }

    def load_vision(self) -> None:
        self._vision_model()

    def warm_up(self, vision: bool = False) -> None:
        """Run one text embedding and one vector search so the first user query does not pay for cold
        caches (LanceDB loads index partitions on first touch: ~0.2-1 s once). For servers; the CLI skips it."""
        vector = self._embed_terms([Term("warm up")])[0]
        self._nearest(self.images, vector, None, POOL_BLOCK, PHOTO_COLUMNS)
        if vision:
            self.load_vision()

    # ------------------------------------------------------------------------------------ query vectors

    def _query_parts(self, terms: list[Term], image, like, image_weight: float):
        parts = [(vector, term.weight) for term, vector in zip(terms, self._embed_terms(terms))]
        exclude = []
        if image is not None:
            if not (isinstance(image_weight, (int, float)) and math.isfinite(image_weight)):
                raise UsageError("the image weight must be a number")
            parts.append((self._image_vector(image), float(image_weight)))
            exclude += self._indexed_ids_for(image)
        if like:
            parts.append((self._stored_vector(like), 1.0))
            exclude.append(like)
        return parts, exclude

    def _embed_terms(self, terms: list[Term]) -> list[np.ndarray]:
        """Term embeddings (`search_query: ` + text), cached: paging and edits re-use them."""
        with self._cache_lock:
            known = {t.text: self._term_cache[t.text] for t in terms if t.text in self._term_cache}
            for text in known:
                self._term_cache.move_to_end(text)  # least recently used goes first
        missing = list(dict.fromkeys(t.text for t in terms if t.text not in known))
        if missing:
            with _torch_threads(self._query_threads):
                fresh = self.text.embed_queries(missing, dim=self.recorded.dim).numpy()
            known.update(zip(missing, fresh))
            with self._cache_lock:
                self._term_cache.update(zip(missing, fresh))
                while len(self._term_cache) > TERM_CACHE:
                    self._term_cache.popitem(last=False)
        return [known[t.text] for t in terms]

    def _image_vector(self, image) -> np.ndarray:
        decoded = self.check_image(image)
        vision = self._vision_model()
        with _torch_threads(self._query_threads):
            return vision.embed_images([decoded], dim=self.recorded.dim)[0].numpy()

    def _stored_vector(self, photo_id: str) -> np.ndarray:
        return np.asarray(self._photo_row(photo_id, ["vector"])["vector"], dtype=np.float32)

    def _indexed_ids_for(self, image) -> list[str]:
        """A query image that is itself an indexed photo is left out of its own results (as rclip does)."""
        if not isinstance(image, (str, Path)):
            return []
        try:
            return [self._row_for_path(Path(image))["id"]]
        except NotServable:
            return []

    def _vision_model(self) -> VisionEncoder:
        with self._vision_lock:
            if self._vision is None:
                vision = VisionEncoder(self._vision_choice.spec, self.precision)
                if self._vision_choice.overridden:
                    self._verify_vision_model(vision)
                self._vision = vision
            return self._vision

    # ------------------------------------------------------------------------------------ model checks

    def _verify_text_model(self) -> None:
        samples = []
        if self.captions is not None:
            samples = self._samples(self.captions, "text", "text IS NOT NULL AND text != ''")
        embedded = stored = None
        if samples:
            embedded = self.text.embed_queries([s["text"] for s in samples], dim=self.recorded.dim).numpy()
            stored = np.asarray([s["vector"] for s in samples], dtype=np.float32)
        modelmatch.verify("text", self._text_choice, self.recorded.text, embedded, stored, self.store.path)

    def _verify_vision_model(self, vision: VisionEncoder) -> None:
        samples = self._samples(self.images, "thumb", "thumb IS NOT NULL")
        images = modelmatch.thumbnails_as_images([s["thumb"] for s in samples])
        embedded = stored = None
        if images and len(images) == len(samples):
            embedded = vision.embed_images(images, dim=self.recorded.dim).numpy()
            stored = np.asarray([s["vector"] for s in samples], dtype=np.float32)
        modelmatch.verify("vision", self._vision_choice, self.recorded.vision, embedded, stored, self.store.path)

    @staticmethod
    def _samples(table, column: str, where: str, count: int = 3) -> list[dict]:
        return table.search().where(where).select([column, "vector"]).limit(count).to_arrow().to_pylist()

    def _check_vector_dim(self) -> None:
        vector_type = self.images.schema.field("vector").type
        stored = getattr(vector_type, "list_size", None)
        if stored and stored != self.recorded.dim:
            raise StoreError(f"the index at {self.store.path} is inconsistent: meta says {self.recorded.dim}-d "
                                        f"vectors, the images table holds {stored}-d; rebuild it")

    # ---------------------------------------------------------------------------------- vector search

    def _nearest(self, table, vector: np.ndarray, where: str | None, limit: int,
                 columns: list[str]) -> tuple[pa.Table, str]:
        """Top `limit` rows by cosine, with a `score` column: exact without a vector index or on tables of at
        most EXACT_MAX_ROWS rows, else through the index. Filters apply before the top-k (prefilter)."""
        query = table.search(vector, vector_column_name="vector").distance_type("cosine")
        if where:
            query = query.where(where, prefilter=True)
        index = self._vector_index(table)
        if index is None or table.count_rows() <= EXACT_MAX_ROWS:
            query, mode = query.bypass_vector_index(), "exact"
        else:
            query, mode = _tune(query, index, limit), "index"
        rows = query.limit(limit).select([*columns, "_distance"]).to_arrow()
        scores = pa.array(1.0 - rows.column("_distance").to_numpy(zero_copy_only=False), pa.float32())
        return rows.drop_columns(["_distance"]).append_column("score", scores), mode

    def _vector_index(self, table) -> str | None:
        """The vector index type on `vector` (e.g. 'IvfFlat'), re-read every INDEX_INFO_TTL_S seconds."""
        key = table.name
        cached = self._index_info.get(key)
        if cached and time.monotonic() - cached[0] < INDEX_INFO_TTL_S:
            return cached[1]
        found = next((str(i.index_type) for i in table.list_indices()
                      if "vector" in i.columns and str(i.index_type).lower().startswith("ivf")), None)
        self._index_info[key] = (time.monotonic(), found)
        return found

    def _has_text_index(self) -> bool:
        return any(str(i.index_type).upper() == "FTS" and "text" in i.columns for i in self.captions.list_indices())

    def _population(self, user_where: str | None, where: str | None, excluded: int) -> int:
        if user_where is None:
            return max(self.images.count_rows() - excluded, 0)
        return self._count(self.images, where)

    @staticmethod
    def _count(table, where: str | None) -> int:
        return table.count_rows(where) if where else table.count_rows()

    def _nothing_note(self, filters: Filters | None) -> str:
        if filters and not filters.is_empty():
            return f"no photos match the filters ({describe_filters(filters)})"
        return f"the index at {self.store.path} holds no other photos"

    # --------------------------------------------------------------------------------- keyword search

    def _keyword_captions(self, terms: list[Term], depth: int) -> list[dict]:
        words = _keywords(terms)
        if not words:
            return []
        if self._has_text_index():
            from lancedb.query import MatchQuery

            found = self.captions.search(MatchQuery(" ".join(words), "text"), query_type="fts")
            return found.limit(depth).select([*TEXT_COLUMNS, "_score"]).to_arrow().to_pylist()
        return self._keyword_scan(words, depth)

    def _keyword_scan(self, words: list[str], depth: int) -> list[dict]:
        """Without a full-text index: captions containing any word (case-insensitive), most words first."""
        where = " OR ".join(f"strpos(lower(text), {sql_string(w)}) > 0" for w in words)
        rows = self.captions.search().where(where).select(TEXT_COLUMNS).limit(KEYWORD_SCAN_ROWS).to_arrow().to_pylist()
        phrase = " ".join(words)

        def rank(row):
            lowered = row["text"].lower()
            return (-sum(w in lowered for w in words), phrase not in lowered, len(lowered))

        return sorted(rows, key=rank)[:depth]

    # ------------------------------------------------------------------------------------ row lookups

    def _with_paths(self, hits: list[TextHit]) -> list[TextHit]:
        ids = sorted({h.image_id for h in hits if h.image_id})
        if not ids:
            return hits
        where = f"id IN ({', '.join(sql_string(i) for i in ids)})"
        rows = self.images.search().where(where).select(["id", "root", "relpath"]).limit(len(ids)).to_arrow()
        paths = {r["id"]: _join(r["root"], r["relpath"]) for r in rows.to_pylist()}
        return [replace(h, path=paths.get(h.image_id, "")) for h in hits]

    def _photo_row(self, photo_id: str, columns: list[str]) -> dict:
        if not isinstance(photo_id, str) or not photo_id or "\x00" in photo_id or len(photo_id) > 128:
            raise NotServable(f"no photo with id {str(photo_id)[:80]!r} in the index", 404)
        rows = self.images.search().where(f"id = {sql_string(photo_id)}").select(columns).limit(1).to_arrow()
        if rows.num_rows == 0:
            raise NotServable(f"no photo with id {photo_id!r} in the index", 404)
        return rows.to_pylist()[0]

    def _row_for_path(self, path: Path) -> dict:
        """The indexed photo at `path` (absolute, or relative to the working directory), else NotServable."""
        absolute = Path(os.path.abspath(path.expanduser()))
        for candidate in dict.fromkeys([absolute, _resolved(absolute)]):  # as written, and through symlinks
            for root in self.roots:
                if candidate.is_relative_to(root) and candidate != Path(root):
                    relpath = candidate.relative_to(root).as_posix()
                    where = f"root = {sql_string(root)} AND relpath = {sql_string(relpath)}"
                    rows = self.images.search().where(where).select(["id", "root", "relpath"]).limit(1).to_arrow()
                    if rows.num_rows:
                        return rows.to_pylist()[0]
        raise NotServable(f"{path} is not an indexed photo", 404)

    def _inside_root(self, root: str, relpath: str) -> Path:
        if root not in self.roots:
            raise NotServable(f"{root} is not an indexed folder", 403)
        try:
            real_root = Path(root).resolve(strict=True)
            target = (real_root / relpath).resolve(strict=True)
        except (OSError, RuntimeError):  # missing file, symlink loop
            raise NotServable(f"{_join(root, relpath)} no longer exists", 404) from None
        if not target.is_relative_to(real_root) or target == real_root:
            raise NotServable(f"{_join(root, relpath)} leads outside its indexed folder", 403)
        if not target.is_file():
            raise NotServable(f"{_join(root, relpath)} is not a file", 404)
        return target

    def _indexed_roots(self) -> tuple[str, ...]:
        roots = self.meta.get("roots")
        if roots:
            return tuple(str(r) for r in roots)
        column = self.images.search().select(["root"]).limit(self.images.count_rows() or 1).to_arrow().column("root")
        return tuple(sorted(set(column.to_pylist())))


# ------------------------------------------------------------------------------------------ helpers

def _check_paging(top, offset) -> tuple[int, int]:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        raise UsageError(f"top must be a whole number from 1 to {MAX_TOP}")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise UsageError(f"offset must be a whole number from 0 to {MAX_OFFSET:,}")
    return top, offset


def _pool_size(needed: int, cutoff: bool) -> int:
    """Round up to whole POOL_BLOCKs: every page within a block comes from one and the same ranking."""
    blocks = -(-needed // POOL_BLOCK)
    return max(blocks * POOL_BLOCK, WINDOW if cutoff else 0)


def _tune(query, index_type: str, limit: int):
    kind = index_type.lower()
    query = query.nprobes(NPROBES)
    if "hnsw" in kind:
        query = query.ef(max(HNSW_EF, limit))
    if any(q in kind for q in ("pq", "sq", "rq")):
        query = query.refine_factor(REFINE_FACTOR)
    return query


@contextlib.contextmanager
def _torch_threads(count: int):
    """Run torch on `count` threads for a moment (process-wide: a concurrent call may see it; speed only)."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != before:
            torch.set_num_threads(before)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path


def _join(root: str, relpath: str) -> str:
    return os.path.join(root, *relpath.split("/"))


def _hit(row: dict) -> Hit:
    return Hit(row["id"], row["root"], row["relpath"], _join(row["root"], row["relpath"]), float(row["score"]),
               row["taken_at"], row["camera"], row["width"], row["height"], bool(row["has_caption"]))


def _text_hit(row: dict, score: float, cosine: float | None, matched: str) -> TextHit:
    return TextHit(row["text"], float(score), row["image_id"] or "", row["source"] or "", row["id"],
                   None if cosine is None else float(cosine), matched)


def _keywords(terms: list[Term]) -> list[str]:
    """Distinct lower-case words (2+ characters) of the added terms, at most MAX_KEYWORDS."""
    words = [w for t in terms if t.weight > 0 for w in re.findall(r"\w+", t.text.lower()) if len(w) > 1]
    return list(dict.fromkeys(words))[:MAX_KEYWORDS]


def _fuse(semantic: list[dict], keyword: list[dict], top: int) -> list[TextHit]:
    """Reciprocal-rank fusion of two best-first lists of caption rows."""
    fused: dict[str, dict] = {}
    for source, rows in (("semantic", semantic), ("keyword", keyword)):
        for rank, row in enumerate(rows, start=1):
            entry = fused.setdefault(row["id"], {"row": row, "score": 0.0, "by": set(), "cosine": None})
            entry["score"] += 1.0 / (RRF_K + rank)
            entry["by"].add(source)
            if source == "semantic":
                entry["cosine"] = row["score"]
    ranked = sorted(fused.values(), key=lambda e: -e["score"])[:top]
    return [_text_hit(e["row"], e["score"], e["cosine"], "both" if len(e["by"]) == 2 else next(iter(e["by"])))
            for e in ranked]
