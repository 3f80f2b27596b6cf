"""The library without a query: every photo that passes the filters, newest first (search/timeline.py).

It needs the store and nothing else, so `glance search --sort date` with no query loads no model. The Engine
keeps one Browser for the page and the API.

    Browser(store).browse(filters, top, offset) -> Results (mode "browse", sort "date", scores 0)
    Browser(store).collection_map(filters)       -> CollectionMap: the photos where the map of the collection
                                                    (indexer/collection_map.py) puts them
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from store import Store

from . import files, timeline
from .filters import Filters, describe, resolve
from .results import CollectionMap, Hit, MapPoint, Results, check_paging

MAX_BROWSE_OFFSET = 100_000_000  # browsing pages through the whole library, not a ranking's head
KEPT = 4  # date orders and maps kept (per snapshot and filter): a million ids are ~50 MB
PHOTO_COLUMNS = ["id", "root", "relpath", "taken_at", "camera", "width", "height", "has_caption", "mtime_ns"]


class Browser:
    def __init__(self, store: Store):
        self.store = store
        self._answers: OrderedDict = OrderedDict()  # date orders and maps, per snapshot and filter
        self._lock = threading.Lock()

    def browse(self, filters: Filters | None = None, top: int = 24, offset: int = 0) -> Results:
        top, offset = check_paging(top, offset, MAX_BROWSE_OFFSET)
        view = self.store.pinned()
        where = resolve(filters, view.photo_roots())
        order = self._date_order(view, where)
        if len(order) == 0:
            note = f"no photos match the filters ({describe(filters)})" if filters and not filters.is_empty() \
                else f"the index at {self.store.path} holds no photos yet"
            return Results([], offset, top, False, 0, note=note, mode="browse", sort="date")
        page = order.slice(offset, top).to_pylist()
        rows = {row["id"]: row for row in view.photo_rows(page, None, PHOTO_COLUMNS)}
        hits = [hit_from_row({**rows[i], "score": 0.0}) for i in page if i in rows]
        return Results(hits, offset, top, len(order) > offset + top, len(order), mode="browse", sort="date")

    def collection_map(self, filters: Filters | None = None) -> CollectionMap:
        """Kept per (table version, filter) like the date orders: the large view asks for it at every photo. The
        indexer writes a new map before it publishes the snapshot it belongs to (indexer/pipeline.py)."""
        view = self.store.pinned()
        where = resolve(filters, view.photo_roots())
        key = ("map", view.images.version, where)
        return self._kept(key, lambda: self._collection_map(view, where), keep=lambda found: found.method is not None)

    def _collection_map(self, view: Store, where) -> CollectionMap:
        found = view.read_map()
        if found is None:
            return CollectionMap([], None, 0, view.count_photos())
        table, info = found
        place = dict(zip(table["id"].to_pylist(), zip(table["x"].to_pylist(), table["y"].to_pylist())))
        rows = view.photo_columns(where, PHOTO_COLUMNS).to_pylist()
        points = [MapPoint(row["id"], *place[row["id"]], files.display_path(row["root"], row["relpath"]),
                           timeline.photo_date(hit_from_row({**row, "score": 0.0})))
                  for row in rows if row["id"] in place]
        unmapped = sum(1 for photo_id in view.photo_columns(None, ["id"])["id"].to_pylist() if photo_id not in place)
        return CollectionMap(points, info.get("method"), len(place), unmapped)

    def _date_order(self, view: Store, where):
        """The snapshot's photos newest first, kept per (table version, filter): "load more" pages through one
        order, and a new snapshot (new photos) orders afresh."""
        return self._kept((view.images.version, where), lambda: timeline.newest_first(view.photo_dates(where)))

    def _kept(self, key, compute, keep=lambda value: True):
        """compute(), kept under `key` (a snapshot's version in it) among the last KEPT answers."""
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        value = compute()
        if keep(value):
            with self._lock:
                self._answers[key] = value
                while len(self._answers) > KEPT:
                    self._answers.popitem(last=False)
        return value


def hit_from_row(row: dict) -> Hit:
    """A Hit from a photo row (PHOTO_COLUMNS plus its score)."""
    return Hit(row["id"], row["root"], row["relpath"], files.display_path(row["root"], row["relpath"]),
               float(row["score"]), row["taken_at"], row["camera"], row["width"], row["height"],
               bool(row["has_caption"]), timeline.file_time(row.get("mtime_ns")))
