"""Dynamic batching of query embeddings: concurrent callers share one forward pass.

A server with many clients used to embed their text queries one at a time, two at once at most: under 50
concurrent API clients that is a queue of forward passes, each ~50 ms of a full-size text tower for a few tokens.
One forward pass over 32 short queries costs little more than over one (the matmuls get wider, the weights are
read once), so concurrent queries are embedded together, as inference servers (BentoML, Triton) do.

    batcher = EmbedBatcher(lambda texts: model.embed(texts))   # any function texts -> [N, D] rows, in order
    vectors = batcher.embed(["red kite", "green meadow"])      # from many threads at once; each gets its rows

No thread of its own: the first caller to arrive while nobody leads becomes the leader. It waits up to `wait_s`
for company (or until `max_batch` texts are pending), embeds every pending text in one call, hands each caller
its rows, and passes the lead to the oldest caller still waiting, so that no caller's answer waits behind more
than one batch of others. A caller alone pays at most `wait_s`. An error in a batch is raised to every caller in it.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

MAX_BATCH = 64  # texts per forward pass; more waiting callers go in the next one
WAIT_S = 0.002  # how long a leader waits for company: while a forward pass runs, the next batch fills anyway


class _Request:
    __slots__ = ("texts", "vectors", "error")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.vectors is not None or self.error is not None


class EmbedBatcher:
    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_batch: int = MAX_BATCH, wait_s: float = WAIT_S):
        self._embed = embed
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._changed = threading.Condition()
        self._pending: list[_Request] = []
        self._leader: _Request | None = None
        self.batches = 0  # forward passes run, and texts embedded in them: what batching saved, for the log
        self.texts = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        """Rows for `texts`, in order, as `embed(texts)` would give them (computed along with other callers')."""
        request = _Request(list(texts))
        if not request.texts:
            return self._embed([])
        with self._changed:
            self._pending.append(request)
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
        return request.vectors

    def _lead(self) -> None:
        batch = self._take()
        texts = list(dict.fromkeys(t for r in batch for t in r.texts))  # a text asked twice is embedded once
        try:
            rows = dict(zip(texts, self._embed(texts)))
            results = [(np.stack([rows[t] for t in r.texts]), None) for r in batch]
        except BaseException as exc:  # every caller of the batch gets the error, the leader included
            results = [(None, exc)] * len(batch)
        with self._changed:
            for request, (vectors, error) in zip(batch, results):
                request.vectors, request.error = vectors, error
            self.batches += 1
            self.texts += len(texts)
            self._leader = self._pending[0] if self._pending else None
            self._changed.notify_all()

    def _take(self) -> list[_Request]:
        """The oldest pending requests, up to max_batch texts (the leader's own, first, always goes)."""
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while self._pending_texts() < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            batch, count = [], 0
            for request in self._pending:
                if batch and count + len(request.texts) > self.max_batch:
                    break
                batch.append(request)
                count += len(request.texts)
            del self._pending[:len(batch)]
            return batch

    def _pending_texts(self) -> int:
        return sum(len(r.texts) for r in self._pending)
