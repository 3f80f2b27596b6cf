"""Dynamic batching: concurrent callers share one forward pass, and one vector search.

A server with many clients used to embed their text queries one at a time, two at once at most: under 50
concurrent API clients that is a queue of forward passes, each ~50-190 ms of a full-size text tower for a few
tokens. One forward pass over 32 short queries costs little more than over one (the matmuls get wider, the
weights are read once), so concurrent queries are embedded together, as inference servers (BentoML, Triton) do.
Their searches then go to LanceDB together too: one search with 16 query vectors costs 51 ms where 16 searches
cost 425 ms (5,000 photos, exact: the table is read once instead of 16 times; bench/query_load.py's index), and so
do the reads of the hits they show.

    embedder = EmbedBatcher(lambda texts: model.embed(texts))  # any function texts -> [N, D] rows, in order
    vectors = embedder.embed(["red kite", "green meadow"])     # from many threads at once; each gets its rows
    searches = SearchBatcher()
    rows, mode = searches.nearest(view, IMAGES, vector, where, 100, columns)   # as view.nearest(...) answers
    reads = RowsBatcher()
    rows = reads.rows_at(view, IMAGES, row_ids, columns)                      # as view.rows_at(...) answers

No thread of its own (`Batcher`): the first caller to arrive while nobody leads becomes the leader. It waits
`wait_s` for company, and lingers while company keeps coming (until `linger_s` passes with no new caller,
`max_wait_s` in all, or `max_batch` items are pending). Then it runs every pending item in one call, hands each
caller its results, and passes the lead to the oldest caller still waiting, so that no caller's answer waits
behind more than one batch of others. A caller alone pays at most `wait_s`. An error in a batch is raised to
every caller in it.

Why linger: when a batch of 49 answers, its callers come back one by one over the next ~100 ms (their answers go
out, their clients send the next query). With a fixed 2 ms wait the first to return ran alone, and a forward pass
over one query costs nearly as much as over sixteen: under 50 clients the batches went 49, 1, 1, 49, 1, 1
(bench/query_load.py). Lingering while arrivals keep coming makes them one batch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

MAX_BATCH = 64  # items per call; more waiting callers go in the next one
WAIT_S = 0.002  # how long a leader waits for company: while a batch runs, the next one fills anyway
LINGER_S = 0.01  # ... and how long after the latest arrival: callers returning from a batch come ~2-5 ms apart
MAX_WAIT_S = 0.05  # at most, from the leader's start: a fraction of one forward pass (~40-190 ms for one query)


class _Request:
    __slots__ = ("items", "results", "error")

    def __init__(self, items: list):
        self.items = items
        self.results: list | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.results is not None or self.error is not None


class Batcher:
    """Runs `run_batch(items) -> one result per item, in order` over concurrent callers' items together."""

    def __init__(self, run_batch: Callable[[list], list], max_batch: int = MAX_BATCH, wait_s: float = WAIT_S,
                 linger_s: float = LINGER_S, max_wait_s: float = MAX_WAIT_S):
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.linger_s = linger_s
        self.max_wait_s = max(max_wait_s, wait_s)
        self._changed = threading.Condition()
        self._pending: list[_Request] = []
        self._leader: _Request | None = None
        self._last_arrival = 0.0  # time.monotonic() of the latest caller's arrival
        self.batches = 0  # calls run, and items in them: what batching saved
        self.items = 0

    def submit(self, items: list) -> list:
        """Results for `items`, in order, as `run_batch(items)` would give them (computed with other callers')."""
        request = _Request(list(items))
        if not request.items:
            return []
        with self._changed:
            self._pending.append(request)
            self._last_arrival = time.monotonic()
            if self._leader is None:
                self._leader = request
            self._changed.notify_all()
        while True:
            with self._changed:
                while not request.done and self._leader is not request:
                    self._changed.wait()
                if request.done:
                    break
            self._lead()
        if request.error is not None:
            raise request.error
        return request.results

    def _lead(self) -> None:
        batch = self._take()
        items = [item for r in batch for item in r.items]
        try:
            results = self._run_batch(items)
            outcomes, start = [], 0
            for request in batch:
                outcomes.append((results[start:start + len(request.items)], None))
                start += len(request.items)
        except BaseException as exc:  # every caller of the batch gets the error, the leader included
            outcomes = [(None, exc)] * len(batch)
        with self._changed:
            for request, (results, error) in zip(batch, outcomes):
                request.results, request.error = results, error
            self.batches += 1
            self.items += len(items)
            self._leader = self._pending[0] if self._pending else None
            self._changed.notify_all()

    def _take(self) -> list[_Request]:
        """The oldest pending requests, up to max_batch items (the leader's own, first, always goes)."""
        began = time.monotonic()
        with self._changed:
            while self._pending_items() < self.max_batch and (left := self._wait_until(began) - time.monotonic()) > 0:
                self._changed.wait(left)
            batch, count = [], 0
            for request in self._pending:
                if batch and count + len(request.items) > self.max_batch:
                    break
                batch.append(request)
                count += len(request.items)
            del self._pending[:len(batch)]
            return batch

    def _wait_until(self, began: float) -> float:
        """The leader's deadline: `wait_s`, longer while callers keep arriving, never past `max_wait_s`."""
        lingering = self._last_arrival + self.linger_s if self._last_arrival > began else began
        return min(began + self.max_wait_s, max(began + self.wait_s, lingering))

    def _pending_items(self) -> int:
        return sum(len(r.items) for r in self._pending)


class EmbedBatcher(Batcher):
    """Texts -> rows; a text that several callers ask for in one batch is embedded once."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], **limits):
        self._embed = embed
        super().__init__(self._embed_unique, **limits)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self._embed([])
        return np.stack(self.submit(texts))

    def _embed_unique(self, texts: list[str]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(texts))
        rows = dict(zip(unique, self._embed(unique)))
        return [rows[t] for t in texts]


@dataclass(frozen=True)
class _Search:
    view: object  # a pinned store.Store
    table_name: str
    vector: np.ndarray
    where: object  # store.PhotoFilter or None
    limit: int
    columns: tuple[str, ...]
    column: str

    def shared(self) -> tuple:
        """What searches must have in common to run as one: the same snapshot, table, filter, depth and columns."""
        return snapshot(self.view), self.table_name, self.where, self.limit, self.columns, self.column


def snapshot(view) -> tuple[int, int]:
    """A pinned view's snapshot: the pinned table objects themselves, which views of one moment share."""
    images, captions, _ = view._pair()
    return id(images), id(captions)


def by_snapshot(items: list, run_group: Callable[[list], list]) -> list:
    """One result per item, in order: `run_group(members)` answers each group of items that agree on `shared()`."""
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.shared(), []).append(i)
    results: list = [None] * len(items)
    for members in groups.values():
        for i, answer in zip(members, run_group([items[i] for i in members])):
            results[i] = answer
    return results


class SearchBatcher(Batcher):
    """Concurrent `view.nearest(...)` calls that agree on everything but the vector become one `nearest_many`."""

    def __init__(self, **limits):
        super().__init__(lambda searches: by_snapshot(searches, self._search_together), **limits)

    def nearest(self, view, table_name: str, vector: np.ndarray, where, limit: int, columns: list[str],
                column: str = "vector"):
        search = _Search(view, table_name, vector, where, limit, tuple(columns), column)
        return self.submit([search])[0]

    @staticmethod
    def _search_together(searches: list[_Search]) -> list:
        first = searches[0]
        return first.view.nearest_many(first.table_name, [s.vector for s in searches], first.where, first.limit,
                                       list(first.columns), first.column)


@dataclass(frozen=True)
class _Read:
    view: object  # a pinned store.Store
    table_name: str
    row_ids: tuple[int, ...]
    columns: tuple[str, ...]

    def shared(self) -> tuple:
        return snapshot(self.view), self.table_name, self.columns


class RowsBatcher(Batcher):
    """Concurrent `view.rows_at(...)` calls on one snapshot and columns become one: a batch of searches reads the
    hits of all its pages together (16 pages of 24 rows, 5,000 photos: 16 reads cost ~44 ms, one ~4 ms)."""

    def __init__(self, **limits):
        super().__init__(lambda reads: by_snapshot(reads, self._read_together), **limits)

    def rows_at(self, view, table_name: str, row_ids: list[int], columns: list[str]) -> dict[int, dict]:
        return self.submit([_Read(view, table_name, tuple(row_ids), tuple(columns))])[0]

    @staticmethod
    def _read_together(reads: list[_Read]) -> list:
        first = reads[0]
        rows = first.view.rows_at(first.table_name, list(dict.fromkeys(r for read in reads for r in read.row_ids)),
                                  list(first.columns))
        return [{r: rows[r] for r in read.row_ids if r in rows} for read in reads]
