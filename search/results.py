"""What the engine answers with: hits, pages of results, caption hits, photo details, and NotServable."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.errors import UsageError

from .cutoff import Cutoff
from .query import Term

MAX_TOP = 500
MAX_OFFSET = 10_000


def check_paging(top, offset, max_offset: int = MAX_OFFSET) -> tuple[int, int]:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        raise UsageError(f"top must be a whole number from 1 to {MAX_TOP}")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= max_offset:
        raise UsageError(f"offset must be a whole number from 0 to {max_offset:,}")
    return top, offset


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
    file_time: datetime | None = None  # the file's modification time (UTC): its date when it has no taken_at
    duplicates: tuple = ()  # with collapse: the near-duplicate hits shown under this one (search/duplicates.py)
    # Its rank (1 = best) in each route of a text query before fusion, None where a route missed it: "space"
    # (the photo's own vector) and "caption" (one of its captions matched). {} when there was one route.
    routes: dict = field(default_factory=dict)


@dataclass
class Results:
    """A page of hits, best first.

    total_considered: photos that passed the filters (the population that was ranked).
    has_more:         a next page exists (call search again with offset + top).
    cutoff:           the cut-off decision (None when cutoff=False); `dropped` photos fell below it.
    mode:             "exact" (brute force), "index" (LanceDB vector index) or "browse" (no query: by date).
    note:             a human sentence when there is nothing to show (e.g. the filters match no photo).
    query:            the parsed text terms, for showing the query back.
    tuning:           the name of the tuning that mapped the text terms (search/tuning.py), or None.
    sort:             "relevance" (best first) or "date" (newest first, search/timeline.py).
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
    tuning: str | None = None
    sort: str = "relevance"


@dataclass(frozen=True)
class TextHit:
    """A caption (image_id = its photo) or a free-standing text (image_id = "").

    score: cosine for image_to_text; reciprocal-rank-fusion score for caption_search (rank-based, ~0.05 max).
    cosine: the cosine in the image-text space when that route found the text, else None.
    routes: the text's rank (1 = best) in each route before fusion, None where that route did not find it:
            "keyword", "space" (the image-text space) and "caption_model" (search/captions.py).
    """
    text: str
    score: float
    image_id: str
    source: str
    id: str = ""
    cosine: float | None = None
    routes: dict = field(default_factory=dict)
    path: str = ""  # the photo's root/relpath for a caption, "" for a free-standing text

    @property
    def matched(self) -> str:
        """The routes that found it, as a short label ("keyword+caption_model")."""
        return "+".join(route for route, rank in self.routes.items() if rank is not None)


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


@dataclass(frozen=True)
class MapPoint:
    """A photo on the map of the collection: x, y in [0, 1] (indexer/collection_map.py)."""
    id: str
    x: float
    y: float
    path: str
    date: datetime | None


@dataclass(frozen=True)
class CollectionMap:
    points: list[MapPoint]  # those that pass the filters
    method: str | None  # "UMAP" or "PCA"; None: no map yet
    mapped: int  # photos on the map (when it was made)
    unmapped: int  # photos indexed since (they join when the map is made again)

