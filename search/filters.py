"""Search filters: what the user asked for (Filters), checked and resolved into a store.PhotoFilter.

The SQL is written by the store (store/reading.py: photo_where), which escapes every value; here folders are
resolved against the indexed roots and dates into half-open ranges, so bad input is refused with one line
before any query runs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath

from core import location
from core.errors import UsageError
from store import FolderScope, PhotoFilter

_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?)?)?")
DateLike = date | datetime | str | None


@dataclass(frozen=True)
class Filters:
    """What to search in. Every field is optional; None means "no restriction".

    folder:      a folder relative to an indexed root (`2023/trip`, matched in every root), or an absolute
                 path (`/photos/2023/trip`, or an indexed root itself). Photos in that folder and its
                 subfolders match; `2023/trip` does not match `2023/trip-old`.
    date_from:   earliest taken-at (EXIF DateTimeOriginal, camera-local time): a date, a datetime, or text
                 `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]`.
    date_to:     latest taken-at, inclusive of the whole period written: `2023-07` runs to the end of July.
                 With either date set, photos without a taken-at date are left out.
    has_caption: True: only photos with a caption; False: only photos without one.
    """
    folder: str | None = None
    date_from: DateLike = None
    date_to: DateLike = None
    has_caption: bool | None = None

    def is_empty(self) -> bool:
        return (not self.folder or not self.folder.strip()) and self.date_from in (None, "") \
            and self.date_to in (None, "") and self.has_caption is None


def resolve(filters: Filters | None, roots: list[str] | tuple[str, ...] = (),
            exclude_ids: tuple[str, ...] = ()) -> PhotoFilter | None:
    """Filters (+ photo ids to leave out) -> the PhotoFilter the store compiles, or None for "every photo"."""
    filters = filters or Filters()
    for value in (filters.folder, *exclude_ids):
        if isinstance(value, str) and "\x00" in value:
            raise UsageError("invalid filter: text contains a NUL character")
    folders = _folders(filters.folder, roots) if filters.folder and filters.folder.strip() else None
    start, end = date_range(filters.date_from, filters.date_to)
    resolved = PhotoFilter(folders, start, end, filters.has_caption, tuple(exclude_ids))
    return None if resolved == PhotoFilter() else resolved


def _folders(folder: str, roots) -> tuple[FolderScope, ...] | None:
    if location.is_uri(folder.strip()):
        return _uri_folders(location.normalize(folder.strip()), roots)
    if folder.startswith(("/", "~")):
        return _absolute_folders(Path(folder).expanduser(), roots)
    relative = _relative_folder(folder)
    return None if relative is None else (FolderScope(None, relative),)  # None: the top of every root


def _relative_folder(folder: str) -> str | None:
    """`./a//b/` -> `a/b`; None for the library's top (`.`, `/`). `..` cannot climb out of a root."""
    parts = [p for p in PurePosixPath(folder).parts if p not in (".", "")]
    if ".." in parts:
        raise UsageError(f"folder {folder!r} must not contain '..'")
    return "/".join(parts) or None


def _absolute_folders(folder: Path, roots) -> tuple[FolderScope, ...]:
    folder = Path(os.path.normpath(folder))
    options = []
    for root in roots:
        root_path = Path(root)
        if folder == root_path or root_path.is_relative_to(folder):
            options.append(FolderScope(root, ""))
        elif folder.is_relative_to(root_path):
            options.append(FolderScope(root, folder.relative_to(root_path).as_posix()))
    if not options:
        listed = ", ".join(roots) or "none recorded"
        raise UsageError(f"folder {folder} is not inside an indexed folder (indexed: {listed})")
    return tuple(options)


def _uri_folders(folder: str, roots) -> tuple[FolderScope, ...]:
    """A folder given as a URI (a bucket root or a prefix below one): compared as names, like the roots."""
    options = []
    for root in roots:
        if folder == root or root.startswith(folder + "/"):
            options.append(FolderScope(root, ""))
        elif folder.startswith(root + "/"):
            options.append(FolderScope(root, folder[len(root) + 1:]))
    if not options:
        listed = ", ".join(roots) or "none recorded"
        raise UsageError(f"folder {location.display(folder)} is not inside an indexed folder (indexed: {listed})")
    return tuple(options)


def date_range(date_from: DateLike, date_to: DateLike) -> tuple[datetime | None, datetime | None]:
    """[start, end) in camera-local time; `date_to` covers the whole period it names."""
    start = parse_date(date_from, "from")[0] if date_from not in (None, "") else None
    end = parse_date(date_to, "to")[1] if date_to not in (None, "") else None
    if start and end and start >= end:
        raise UsageError(f"the date range is empty: {date_from} is after {date_to}")
    return start, end


def parse_date(value: DateLike, which: str) -> tuple[datetime, datetime]:
    """A date bound -> (first instant, instant after the period): `2023-07` -> (Jul 1, Aug 1)."""
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=None)  # taken-at is camera-local wall-clock time
        return moment, moment + timedelta(seconds=1)
    if isinstance(value, date):
        day = datetime(value.year, value.month, value.day)
        return day, day + timedelta(days=1)
    return _parse_date_text(str(value).strip(), which)


def _parse_date_text(text: str, which: str) -> tuple[datetime, datetime]:
    match = _DATE.fullmatch(text)
    if not match:
        raise UsageError(f"invalid {which} date {text[:40]!r}: use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DD HH:MM")
    year, month, day, hour, minute, second = (int(g) if g else None for g in match.groups())
    try:
        if month is None:
            return datetime(year, 1, 1), datetime(year + 1, 1, 1)
        if day is None:
            start = datetime(year, month, 1)
            return start, datetime(year + month // 12, month % 12 + 1, 1)
        if hour is None:
            start = datetime(year, month, day)
            return start, start + timedelta(days=1)
        start = datetime(year, month, day, hour, minute, second or 0)
        return start, start + (timedelta(seconds=1) if second is not None else timedelta(minutes=1))
    except (ValueError, OverflowError) as exc:
        raise UsageError(f"invalid {which} date {text!r}: {exc}") from None


def describe(filters: Filters | None) -> str:
    """Human summary for messages, e.g. `folder 2023/trip, taken 2023-07 to 2023-08, with captions`."""
    if not filters:
        return "no filters"
    parts = []
    if filters.folder and filters.folder.strip():
        parts.append(f"folder {filters.folder}")
    if filters.date_from not in (None, "") or filters.date_to not in (None, ""):
        parts.append(f"taken {filters.date_from or '…'} to {filters.date_to or '…'}")
    if filters.has_caption is not None:
        parts.append("with captions" if filters.has_caption else "without captions")
    return ", ".join(parts) or "no filters"
