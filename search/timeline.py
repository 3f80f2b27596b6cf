"""Photos in time: the order of browsing (newest first) and the day or month groups a result list is shown in.

A photo's date is its taken-at time (EXIF DateTimeOriginal, camera-local) and, for a photo without one, its
file's modification time (UTC). Both are read as wall-clock times, so a scan from 2009 without EXIF sorts
among the photos of the day it was scanned, as in a file manager.

    newest_first(view.photo_dates(where))   -> the ids (an Arrow array), newest first (ties: newer file, then id)
    by_date(hits)                           -> the hits newest first (a stable sort; undated last)
    groups(hits, "day" | "month")           -> [(label, hits)], in the order each group first appears
"""
from __future__ import annotations

from datetime import datetime, timezone

from core.errors import UsageError

SORTS = ("relevance", "date")
DATE_SORT_POOL = 500  # a query sorted by date: its best 500 matches (or what the cut-off kept), newest first
GROUPINGS = ("day", "month")
UNDATED = "date unknown"


def check_sort(sort) -> str:
    if sort not in SORTS:
        raise UsageError(f"sort must be one of: {', '.join(SORTS)}")
    return sort


def check_grouping(group) -> str:
    """"" (no groups), "day" or "month"; None counts as ""."""
    if group not in ("", None, *GROUPINGS):
        raise UsageError(f"the grouping must be one of: {', '.join(GROUPINGS)} (or none)")
    return group or ""


def photo_date(hit) -> datetime | None:
    return hit.taken_at or hit.file_time


def file_time(mtime_ns: int | None) -> datetime | None:
    """A file's modification time as a naive UTC datetime (taken-at times are naive too)."""
    if mtime_ns is None:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).replace(tzinfo=None)


def newest_first(rows):
    """The ids of rows (an Arrow table: id, taken_at, mtime_ns), newest first by date; photos with no date at all
    come last. An Arrow array: a million ids are 48 MB there, several times that as Python strings."""
    import numpy as np  # here: the CLI's output formatting imports this module, and its --help stays light
    import pyarrow as pa
    import pyarrow.compute as pc

    if rows.num_rows == 0:
        return pa.array([], pa.string())
    taken = pc.cast(rows["taken_at"], pa.int64()).to_numpy(zero_copy_only=False)  # seconds; NaN where NULL
    mtime = rows["mtime_ns"].to_numpy(zero_copy_only=False).astype(np.float64)  # NaN where NULL
    seconds = np.where(np.isnan(taken.astype(np.float64)), mtime / 1e9, taken)
    newest = -np.nan_to_num(seconds, nan=-np.inf)  # undated: +inf, last
    file_newest = -np.nan_to_num(mtime, nan=-np.inf)
    ids = rows["id"].to_numpy(zero_copy_only=False)
    order = np.lexsort((ids, file_newest, newest))  # the last key is the primary one
    return pc.take(rows["id"], pa.array(order)).combine_chunks()


def by_date(hits: list) -> list:
    """Hits newest first; hits of the same moment keep their relevance order, undated ones go last."""
    dated = [h for h in hits if photo_date(h) is not None]
    undated = [h for h in hits if photo_date(h) is None]
    return sorted(dated, key=photo_date, reverse=True) + undated


def group_label(moment: datetime | None, by: str) -> str:
    if moment is None:
        return UNDATED
    return moment.strftime("%Y-%m-%d") if by == "day" else moment.strftime("%B %Y")


def groups(hits: list, by: str) -> list[tuple[str, list]]:
    """The hits in day or month groups, each group where its first hit is: a date-ordered list becomes one
    divider per day or month, a relevance-ordered list keeps its best group first."""
    grouped: dict[str, list] = {}
    for hit in hits:
        grouped.setdefault(group_label(photo_date(hit), by), []).append(hit)
    return list(grouped.items())
