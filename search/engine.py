"""The Glance search engine: one object over an index, used by `glance search` and by the page (app.py).

    engine = Engine()                                   # $GLANCE_DB or ~/.local/share/glance/index
    results = engine.search("beach -people +sunset 2:dog", filters=Filters(folder="2023"), top=24)
    for hit in results.hits:
        print(f"{hit.score:.3f}", hit.path)
    more = engine.search("beach -people +sunset 2:dog", filters=..., top=24, offset=24)  # next page

Public API (everything else is private):

  Engine(db=None, vision_model=None, text_model=None, precision="auto", threads=None, batching=False,
         fast_start=False)
      Opens the index and loads the text model recorded in it (a few seconds with cached models); the
      vision model loads on the first image query, or call `load_vision()` ahead (e.g. in a thread).
      `vision_model` / `text_model` override the recorded ones and are refused (StoreError) unless they
      reproduce the index's vectors (see search/modelmatch.py). Raises StoreError (no index, another
      model), ModelUnavailable (model not cached and offline), UsageError (bad argument). `batching` (servers):
      concurrent calls embed their text queries together, one forward pass per batch, and run their vector
      searches together, one LanceDB search per batch (search/batching.py). `fast_start` (a server starting):
      the text model answers in fp32 until `finish_loading()` has loaded it in the precision asked for.
  search(text="", image=None, like=None, filters=None, top=24, offset=0, cutoff=False, image_weight=1.0)
      -> Results. Photos for a query in the grammar of search/query.py, a query image (file path, bytes
      or PIL image; never a URL), and/or `like` = an indexed photo's id or path ("more like this": that
      photo is left out of its own results). All parts are combined into one vector. `filters` is a Filters.
      Pages: `offset` + `top`; `Results.has_more` says whether a next page exists. With `cutoff=True`
      the adaptive cut-off (search/cutoff.py) hides the clearly irrelevant tail; pages stay consistent.
      Text terms reach the photos through the active tuning (search/tuning.py) unless `tuning=False`.
      `sort="date"` orders the best matches newest first instead (search/timeline.py).
      A text query on an index with a caption model also takes a caption route: photos whose captions the
      caption model finds close to the query, fused with the direct ranking (each hit's `routes`).
  browse(filters=None, top=24, offset=0) -> Results
      Every photo that passes the filters, newest first: by taken-at date, else by file time (search/timeline.py).
      The library as it is, before any query; `Results.sort` is "date" and hits carry no score (0.0).
  image_to_text(image=None, top=10, like=None) -> list[TextHit]
      Nearest captions and free-standing texts for an image (path/bytes/PIL) or an indexed photo id.
  caption_search(text, top=10) -> list[TextHit]
      Captions and free-standing texts for a text: keyword matches (the full-text index when the indexer
      built one, else an escaped substring scan), the image-text space and, when the index has one, the
      caption model, fused by reciprocal-rank fusion; each hit carries its rank in every route (`routes`).
  photo(photo_id) -> PhotoDetails          everything known about one photo, captions included
  thumbnail(photo_id) -> bytes             its stored JPEG thumbnail (~256 px)
  file_path(photo) -> Path                 the original file, for an id or a path, strictly inside an
                                           indexed root after resolving symlinks; else NotServable
  check_image(upload) -> PIL.Image         a query image checked against the upload limits (search/uploads.py)
  stats() -> dict                          what the index holds (store.Store.stats: one set of keys)
  tuning_problem -> str | None             why the index's active tuning is not used (another model), if so
  load_vision() -> None                    load the vision model now instead of on first use
  finish_loading() -> None                 after a fast start: the text model in the precision asked for
  warm_up(vision=False) -> None            one embedding + one search, so a server's first query is fast

Every user mistake raises a core.errors.GlanceError with a one-line message; the engine never prints. Engine
methods may be called from several threads at once. Each call reads one consistent snapshot of the index
(store.Store.pinned), and sees new roots, photos and captions within a second of the indexer publishing them.

The concerns live in their own modules: query vectors (search/vectors.py), caption search and fusion
(search/captions.py), file access (search/files.py), result types (search/results.py); vector search and every
query string are the store's (store/reading.py).
"""
from __future__ import annotations

import functools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.errors import UsageError
from store import CAPTION_VECTOR, CAPTIONS, IMAGES, ROW_ID, Store, StoreError, no_index_message, vector_matrix

from . import captions, duplicates, files, timeline
from .batching import RowsBatcher, SearchBatcher
from .browser import PHOTO_COLUMNS, Browser, hit_from_row
from .consistency import CaptionReport, check_captions
from .cutoff import WINDOW, adaptive_cutoff
from .filters import Filters, resolve
from .filters import describe as describe_filters
from .query import Term, combine, no_query, parse_query
from .timeline import DATE_SORT_POOL
from .saved import SavedSearches
from .results import MAX_TOP, CollectionMap, Hit, NotServable, PhotoDetails, Results, TextHit, check_paging  # noqa: F401 - types
from .uploads import open_query_image
from .vectors import QueryVectors

# Rocchio's weights (the query itself counts 1): the usual choice for a few judged results, where what was liked
# says more than what was not (Manning et al., Introduction to Information Retrieval, 9.1.1).
ROCCHIO_LIKED = 0.75
ROCCHIO_DISLIKED = 0.15
MAX_JUDGED = 100
COLLAPSE_POOL_FACTOR = 4  # collapsing needs a deeper pool: a page of groups holds several photos each
POOL_BLOCK = 100  # candidates are fetched in blocks, so consecutive pages come from the same ranking
CAPTION_ROUTE_DEPTH = 50  # captions the caption route reads


def _index_errors(method):
    """A damaged index or an I/O error under it becomes one StoreError naming the folder and the way out."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.store.lance_errors():
            return method(self, *args, **kwargs)
    return run


class Engine:
    def __init__(self, db: str | Path | None = None, vision_model: str | None = None, text_model: str | None = None,
                 precision: str = "auto", threads: int | None = None, batching: bool = False,
                 single_query: bool = False, fast_start: bool = False):
        """`single_query`: this process answers one query and ends (`glance search`), so the text model loads
        in the precision that costs least for one query (search/vectors.py SINGLE_QUERY_TEXT_PRECISION)."""
        self.store = Store(db)
        with self.store.lance_errors():
            self._open(vision_model, text_model, precision, threads, batching, single_query, fast_start)

    def _open(self, vision_model, text_model, precision, threads, batching, single_query, fast_start) -> None:
        if not self.store.exists():
            raise StoreError(no_index_message(self.store.path))
        self._check_vector_dim()
        self.vectors = QueryVectors(self.store, vision_model, text_model, precision, threads, batching,
                                    single_query, fast_start)
        self._searches = SearchBatcher() if batching else None
        self._reads = RowsBatcher() if batching else None
        self.browser = Browser(self.store)
        self._threshold: duplicates.Threshold | None = None

    @property
    def tuning_problem(self) -> str | None:
        return self.vectors.tuning_problem

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(self.store.photo_roots())

    # ----------------------------------------------------------------------------------------- queries

    @_index_errors
    def search(self, text: str = "", image=None, like: str | None = None, filters: Filters | None = None,
               top: int = 24, offset: int = 0, cutoff: bool = False, image_weight: float = 1.0,
               tuning: bool = True, sort: str = "relevance", collapse: bool = False, liked=(), disliked=()) -> Results:
        """Photos for text (grammar), an image and/or an indexed photo, best first. See the module docstring.

        `image_weight` scales the query image in the sum (negative subtracts it); `like` counts once.
        `tuning=False` leaves the active tuning (glance tune) out of this query.
        `sort="date"`: the best DATE_SORT_POOL matches (with `cutoff`, those it kept), newest first.
        `liked`/`disliked` (indexed photos: ids or paths) refine the query, Rocchio's way: query + ROCCHIO_LIKED x
        mean(liked) - ROCCHIO_DISLIKED x mean(disliked); disliked photos are left out. Liked photos alone are
        "more like these" (and, being the query, are left out too).
        `collapse`: near-duplicates (search/duplicates.py) become one hit, the best, carrying the others in its
        `duplicates`; paging counts groups.
        Cheap checks (paging, grammar, filters) run before anything is embedded.
        """
        top, offset = check_paging(top, offset)
        timeline.check_sort(sort)
        terms = parse_query(text)
        view = self.store.pinned()
        roots = view.photo_roots()
        user_filter = resolve(filters, roots)
        if no_query(text, image, like, liked):
            raise UsageError("empty query: type some words (weights above 0), or give an image")
        tuned = self.vectors.tuning.name if tuning and terms and self.vectors.tuning else None
        parts, exclude = self._query_parts(view, terms, image, like, image_weight, bool(tuned))
        feedback, left_out = self._feedback(view, liked, disliked, alone=not parts)
        parts, exclude = parts + feedback, exclude + left_out
        where = resolve(filters, roots, exclude_ids=tuple(exclude))
        population = view.count_photos(where) if user_filter else max(view.count_photos() - len(exclude), 0)
        if population == 0:
            return Results([], offset, top, False, 0, note=self._nothing_note(filters), query=terms)
        vector = combine(parts)
        needed = DATE_SORT_POOL if sort == "date" else offset + top + 1  # a fixed pool: date pages stay consistent
        if collapse:
            needed = min(needed * COLLAPSE_POOL_FACTOR, MAX_TOP * COLLAPSE_POOL_FACTOR)
        rows, mode = self._nearest(view, IMAGES, vector, where, _pool_size(needed, cutoff), [ROW_ID])
        ranked = rows.to_pylist()  # {_rowid, score}, best first
        decision = adaptive_cutoff([r["score"] for r in ranked], population) if cutoff else None
        ranked = ranked[:decision.keep] if decision and decision.cut else ranked
        caption_vector = self._caption_route_vector(view, terms) if image is None and not like else None
        if caption_vector is None and not collapse and sort == "relevance":  # the page is a slice of the ranking
            kept, page = len(ranked), self._hits(view, ranked[offset:offset + top])
        else:  # the whole pool is fused, grouped or reordered before it is paged
            hits = self._hits(view, ranked)
            if caption_vector is not None:
                hits = self._with_caption_route(view, caption_vector, vector, where, hits)
            if collapse:
                hits = self._collapse(view, hits)
            if sort == "date":
                hits = timeline.by_date(hits[:DATE_SORT_POOL])
            kept, page = len(hits), hits[offset:offset + top]
        dropped = max(population - kept, 0) if decision and decision.cut else 0
        return Results(page, offset, top, kept > offset + top, population,
                       decision, dropped, mode, query=terms, tuning=tuned, sort=sort)

    def _hits(self, view: Store, ranked: list[dict]) -> list[Hit]:
        """Hits for ranked {_rowid, score} rows: their photo columns are read here, for these rows only (together
        with concurrent callers' when batching)."""
        rows = self._rows_at(view, IMAGES, [r[ROW_ID] for r in ranked], PHOTO_COLUMNS)
        return [hit_from_row({**rows[r[ROW_ID]], "score": r["score"]}) for r in ranked if r[ROW_ID] in rows]

    @_index_errors
    def duplicates(self, filters: Filters | None = None) -> list[Hit]:
        """Near-duplicate groups across the photos that pass the filters (search/duplicates.py), each as the
        photo to keep (the most pixels, then the newest) carrying the others in `duplicates`; groups of 2+ only,
        biggest first. The vectors of every photo are compared with every other's, in blocks: seconds for 10k
        photos, minutes for 100k."""
        view = self.store.pinned()
        where = resolve(filters, view.photo_roots())
        table = view.photo_columns(where, [*PHOTO_COLUMNS, "vector", "thumb"])
        if table.num_rows < 2:
            return []
        rows = table.drop_columns(["vector", "thumb"]).to_pylist()
        hits = [hit_from_row({**row, "score": 0.0}) for row in rows]
        order = sorted(range(len(hits)), key=lambda i: (-(hits[i].width or 0) * (hits[i].height or 0),
                                                         -_timestamp(timeline.photo_date(hits[i])), hits[i].id))
        layouts = [duplicates.layout(thumb) for thumb in table["thumb"].to_pylist()]
        groups = self._groups(hits, vector_matrix(table["vector"]), layouts, order)
        return sorted((g for g in groups if g.duplicates), key=lambda g: (-len(g.duplicates), g.path))

    def duplicate_threshold(self) -> duplicates.Threshold:
        """The vision model's near-duplicate thresholds (measured once per model: the vision model loads)."""
        if self._threshold is None:
            self._threshold = duplicates.threshold_for(self.vectors.vision())
        return self._threshold

    def _collapse(self, view: Store, hits: list[Hit]) -> list[Hit]:
        rows = {row["id"]: row for row in view.photo_rows([h.id for h in hits], None, ["id", "vector", "thumb"])}
        hits = [h for h in hits if h.id in rows]
        if not hits:
            return hits
        vectors = np.stack([np.asarray(rows[h.id]["vector"], np.float32) for h in hits])
        return self._groups(hits, vectors, [duplicates.layout(rows[h.id]["thumb"]) for h in hits],
                            range(len(hits)))

    def _groups(self, hits: list[Hit], vectors: np.ndarray, layouts: list, order) -> list[Hit]:
        pairs = duplicates.near_pairs(vectors, np.stack(layouts) if layouts else np.zeros((0, 1)),
                                      [h.taken_at for h in hits], self.duplicate_threshold())
        return [replace(hits[group[0]], duplicates=tuple(hits[i] for i in group[1:]))
                for group in duplicates.cluster(list(order), pairs)]

    @_index_errors
    def collection_map(self, filters: Filters | None = None) -> CollectionMap:
        """The photos that pass the filters, where the map of the collection puts them (search/browser.py)."""
        return self.browser.collection_map(filters)

    @_index_errors
    def check_captions(self, top: int = 50) -> CaptionReport:
        """The captions that match their own photo worse than most (search/consistency.py)."""
        top, _ = check_paging(top, 0)
        return check_captions(self.store.pinned(), top)

    @_index_errors
    def check_filters(self, filters: Filters | None) -> None:
        """Raise UsageError for filters a search would refuse (bad dates, a folder outside the roots)."""
        resolve(filters, self.store.pinned().photo_roots())

    @property
    def saved(self) -> SavedSearches:
        return SavedSearches(self.store)

    @_index_errors
    def run_saved(self, name: str, top: int = 24, offset: int = 0) -> Results:
        """A saved search (search/saved.py) run on the index as it is now."""
        saved = self.saved.get(name)
        image = self.saved.image_bytes(saved)
        if no_query(saved.query, image, None, saved.liked):
            return self.browse(saved.filters, top, offset)
        return self.search(saved.query, image=image, liked=saved.liked, disliked=saved.disliked,
                           filters=saved.filters, top=top, offset=offset, sort=saved.sort)

    @_index_errors
    def browse(self, filters: Filters | None = None, top: int = 24, offset: int = 0) -> Results:
        """Every photo that passes the filters, newest first (search/browser.py): the library without a query."""
        return self.browser.browse(filters, top, offset)

    @_index_errors
    def image_to_text(self, image=None, top: int = 10, like: str | None = None) -> list[TextHit]:
        """Captions and free-standing texts nearest to an image or to an indexed photo (cosine, best first)."""
        top, _ = check_paging(top, 0)
        if (image is None) == (like is None):
            raise UsageError("give exactly one of: a query image, or an indexed photo id")
        view = self.store.pinned()
        vector = self.vectors.image(image) if image is not None else self._stored_vector(view, like)
        return captions.nearest_texts(view, vector, top)

    @_index_errors
    def caption_search(self, text: str, top: int = 10) -> list[TextHit]:
        """Captions and texts matching `text` by keyword and by meaning (see search/captions.py)."""
        top, _ = check_paging(top, 0)
        terms = parse_query(text)
        if not terms:
            raise UsageError("empty query: type some words to look for in captions")
        view = self.store.pinned()
        if view.count_captions() == 0:
            return []
        vector = combine([(v, t.weight) for t, v in zip(terms, self.vectors.terms(terms))])
        return captions.matching_texts(view, terms, vector, self._caption_query(view, terms), top)

    # ------------------------------------------------------------------------------------- photos/files

    @_index_errors
    def caption_texts(self, photo_ids: list[str]) -> dict[str, list[str]]:
        """The captions of these photos, id -> texts (what an export lists beside each photo)."""
        return self.store.pinned().caption_texts(photo_ids)

    @_index_errors
    def photo(self, photo_id: str) -> PhotoDetails:
        return files.details(self.store.pinned(), photo_id)

    @_index_errors
    def exif(self, photo_id: str) -> list[tuple[str, str]]:
        """The original's EXIF fields worth showing (search/files.py EXIF_SHOWN), as (label, text)."""
        return files.exif_details(self.store.pinned(), photo_id)

    @_index_errors
    def thumbnail(self, photo_id: str) -> bytes:
        return files.thumbnail(self.store.pinned(), photo_id)

    @_index_errors
    def file_path(self, photo: str | Path) -> Path:
        return files.original(self.store.pinned(), photo)

    def check_image(self, upload):
        """A query image from a user (path, bytes or PIL image) checked against the limits, or UsageError."""
        return open_query_image(upload)

    @_index_errors
    def stats(self) -> dict:
        return self.store.stats()

    def load_vision(self) -> None:
        self.vectors.vision()

    def finish_loading(self) -> None:
        self.vectors.finish_loading()

    def warm_up(self, vision: bool = False) -> None:
        """Run one text embedding and one vector search so the first user query does not pay for cold
        caches (LanceDB loads index partitions on first touch: ~0.2-1 s once). For servers; the CLI skips it."""
        vector = self.vectors.terms([Term("warm up")])[0]
        view = self.store.pinned()
        ranked, _ = view.nearest(IMAGES, vector, None, POOL_BLOCK, [ROW_ID])  # ranked as search ranks, then read
        self._hits(view, ranked.to_pylist())
        self.vectors.caption_terms([Term("warm up")])
        if vision:
            self.load_vision()

    # ------------------------------------------------------------------------------------ query vectors

    def _query_parts(self, view: Store, terms: list[Term], image, like, image_weight: float, tuned: bool):
        parts = [(vector, term.weight) for term, vector in zip(terms, self.vectors.photo_terms(terms, tuned))]
        exclude = []
        if image is not None:
            if not (isinstance(image_weight, (int, float)) and math.isfinite(image_weight)):
                raise UsageError("the image weight must be a number")
            parts.append((self.vectors.image(image), float(image_weight)))
            exclude += self._indexed_ids_for(view, image)
        if like:
            like_id = files.photo_id_for(view, like)
            parts.append((self._stored_vector(view, like_id), 1.0))
            exclude.append(like_id)
        return parts, exclude

    def _feedback(self, view: Store, liked, disliked, alone: bool) -> tuple[list, list[str]]:
        """Rocchio's parts for the 👍 and 👎 photos, and the photos to leave out (the disliked, and the liked
        when they are the whole query)."""
        liked, disliked = (self._judged(view, photos, name) for photos, name in ((liked, "liked"),
                                                                                 (disliked, "disliked")))
        parts = []
        if liked:
            mean = np.mean([self._stored_vector(view, i) for i in liked], axis=0)
            parts.append((mean, 1.0 if alone else ROCCHIO_LIKED))
        if disliked:
            parts.append((np.mean([self._stored_vector(view, i) for i in disliked], axis=0), -ROCCHIO_DISLIKED))
        return parts, [*disliked, *(liked if alone else [])]

    @staticmethod
    def _judged(view: Store, photos, name: str) -> list[str]:
        if isinstance(photos, str) or not all(isinstance(p, str) for p in photos):
            raise UsageError(f"the {name} photos must be a list of photo ids")
        if len(photos) > MAX_JUDGED:
            raise UsageError(f"at most {MAX_JUDGED} {name} photos")
        return list(dict.fromkeys(files.photo_id_for(view, p) for p in photos))

    def _caption_query(self, view: Store, terms: list[Term]) -> np.ndarray | None:
        """The query in the caption model's space, when this snapshot's captions have its vectors."""
        vectors = self.vectors.caption_terms(terms) if view.has_caption_vectors() else None
        if vectors is None:  # no caption model, or one added since this engine opened (search/live.py reopens)
            return None
        return combine([(v, t.weight) for t, v in zip(terms, vectors)])

    def _caption_route_vector(self, view: Store, terms: list[Term]) -> np.ndarray | None:
        """The text in the caption model's space, when a search fuses in the caption route (_with_caption_route)."""
        return self._caption_query(view, terms) if any(t.weight > 0 for t in terms) else None

    def _with_caption_route(self, view: Store, caption_vector: np.ndarray, vector: np.ndarray, where,
                            direct: list[Hit]) -> list[Hit]:
        """The direct hits fused (reciprocal rank) with the photos whose captions match the text in the caption
        model's space. Only captions at least `match_cosine` close count: without that gate, every query would
        lift the few captioned photos of a mostly uncaptioned library."""
        rows, _ = self._nearest(view, CAPTIONS, caption_vector, None, CAPTION_ROUTE_DEPTH, ["image_id"],
                                column=CAPTION_VECTOR)
        gate = self.vectors.caption_model.match_cosine
        matched = [r["image_id"] for r in rows.to_pylist() if r["image_id"] and r["score"] >= gate]
        if not matched:
            return direct
        known = {h.id: h for h in direct}
        extra = [i for i in dict.fromkeys(matched) if i not in known]
        for row in view.photo_rows(extra, where, [*PHOTO_COLUMNS, "vector"]):
            row["score"] = float(np.dot(np.asarray(row.pop("vector"), np.float32), vector))
            known[row["id"]] = hit_from_row(row)
        found = [i for i in dict.fromkeys(matched) if i in known]  # photos the filters let through
        fused = captions.rank_fusion({"space": [h.id for h in direct], "caption": found})
        return [replace(known[key], routes={"space": ranks.get("space"), "caption": ranks.get("caption")})
                for key, _, ranks in fused]

    def _nearest(self, view: Store, *search, **options):
        """view.nearest, shared with concurrent callers' searches when batching."""
        if self._searches is None:
            return view.nearest(*search, **options)
        return self._searches.nearest(view, *search, **options)

    def _rows_at(self, view: Store, *read):
        """view.rows_at, shared with concurrent callers' reads when batching."""
        if self._reads is None:
            return view.rows_at(*read)
        return self._reads.rows_at(view, *read)

    @staticmethod
    def _stored_vector(view: Store, photo: str) -> np.ndarray:
        photo_id = files.photo_id_for(view, photo)
        return np.asarray(files.photo_row(view, photo_id, ["vector"])["vector"], dtype=np.float32)

    @staticmethod
    def _indexed_ids_for(view: Store, image) -> list[str]:
        """A query image that is itself an indexed photo is left out of its own results (as rclip does)."""
        if not isinstance(image, (str, Path)):
            return []
        try:
            return [files.row_for_path(view, Path(image))["id"]]
        except NotServable:
            return []

    def _check_vector_dim(self) -> None:
        recorded = self.store.current_meta().get("dim")
        stored = self.store.vector_dim()
        if stored and recorded and stored != int(recorded):
            raise StoreError(f"the index at {self.store.path} is inconsistent: meta says {recorded}-d vectors, the "
                             f"images table holds {stored}-d; rebuild it with `glance index --reindex PATH`")

    def _nothing_note(self, filters: Filters | None) -> str:
        if filters and not filters.is_empty():
            return f"no photos match the filters ({describe_filters(filters)})"
        return f"the index at {self.store.path} holds no other photos"


# ------------------------------------------------------------------------------------------ helpers


def _timestamp(moment) -> float:
    return moment.timestamp() if moment is not None else float("-inf")


def _pool_size(needed: int, cutoff: bool) -> int:
    """Round up to whole POOL_BLOCKs: every page within a block comes from one and the same ranking."""
    blocks = -(-needed // POOL_BLOCK)
    return max(blocks * POOL_BLOCK, WINDOW if cutoff else 0)
