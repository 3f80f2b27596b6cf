"""The Engine of a long-running server: opened in the background, re-opened when the index changes.

A server outlives indexing runs: photos are added, folders indexed, the index rebuilt with other models, or it
does not exist yet when the server starts. `Library.engine()` follows all of that: a missing index raises
IndexMissing (whose message says how to build one) and is looked for again on the next request. New photos,
roots and `last_indexed` need nothing here: the Engine reads them from each published snapshot. Only when the
index is rebuilt with other models, gains another caption model (ENCODER_KEYS) or disappears does a fresh
Engine replace the open one; the check reads only the small meta table, at most every RECHECK_S seconds.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from core.errors import UsageError
from store import ENCODER_KEYS, Store, build_command, db_location, no_index_message

STARTUP_WAIT_S = 180  # a request that arrives while the models load waits this long at most
STOP_WAIT_S = 120  # a server asked to stop while a model loads lets the load finish (seconds, once cached)
RECHECK_S = 10  # how often a request looks whether the index changed under the open Engine

log = logging.getLogger("glance.live")


class IndexMissing(UsageError):
    """No index at the database path yet: the page explains how to build one."""


class Library:
    """The Engine behind a server, opened in the background by `start_loading` and followed by `engine()`.
    `stop` waits for the loading threads: torch must not be torn down under a thread that is inside it (the
    interpreter would then abort instead of exiting when a service manager stops the server)."""

    def __init__(self, db: str | Path | None, vision_model: str | None = None, text_model: str | None = None,
                 precision: str = "auto", batching: bool = True):
        self.db = db_location(db)  # a Path, or a normalized object-storage URI
        self.batching = batching  # concurrent requests share forward passes (search/batching.py)
        self.overrides = {"vision_model": vision_model, "text_model": text_model, "precision": precision,
                          "batching": batching}
        self.startup_error: BaseException | None = None
        self._store = Store(self.db)
        self._engine = None
        self._opened_models: dict | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loaders: list[threading.Thread] = []

    def start_loading(self) -> None:
        self._in_background(self.start, "glance-open-index")

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        for thread in list(self._loaders):
            thread.join(timeout)

    def start(self) -> None:
        """Open the index if there is one; a user error here is kept for the main thread to report."""
        try:
            if self._store.exists():
                with self._lock:
                    self._open()
        except BaseException as exc:  # handed to the main thread, which ends the app with it
            self.startup_error = exc
        finally:
            self._started.set()
        self._in_background(self._finish_loading, "glance-finish-loading")

    def wait_started(self) -> BaseException | None:
        self._started.wait()
        return self.startup_error

    def engine(self):
        """The open Engine; raises IndexMissing (how to build one) or a user error that explains the problem."""
        if not self._started.wait(STARTUP_WAIT_S):
            raise UsageError("the models are still loading; try again in a moment")
        with self._lock:
            if self._engine is not None and self._index_changed():
                log.info("the index at %s changed; re-opening it", self.db)
                self._engine = None
            if self._engine is None:
                self._open()
                self._in_background(self._finish_loading, "glance-finish-loading")
            return self._engine

    def _in_background(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._loaders = [t for t in self._loaders if t.is_alive()] + [thread]
        thread.start()

    def build_command(self) -> str:
        return build_command(self.db)

    def _open(self) -> None:
        from search.engine import Engine  # torch: seconds, so not before the page is up

        if not self._store.exists():
            raise IndexMissing(no_index_message(self.db))
        models = _models(self._store.meta())  # read first: a change made while the Engine opens is seen next time
        self._engine = Engine(self.db, **self.overrides, fast_start=True)  # answers first, then finish_loading
        self._opened_models = models
        self._checked_at = time.monotonic()

    def _index_changed(self) -> bool:
        if time.monotonic() - self._checked_at < RECHECK_S:
            return False
        self._checked_at = time.monotonic()
        return not self._store.exists() or _models(self._store.meta()) != self._opened_models

    def _finish_loading(self) -> None:
        """Once the engine answers, in a thread of its own: the text model in the precision asked for, then the
        vision model, so the first image query does not wait for it."""
        engine = self._engine
        if engine is None:
            return
        try:
            engine.finish_loading()
        except Exception:  # the fp32 text model it started with goes on answering
            log.warning("the text model did not load in the precision asked for", exc_info=True)
        try:
            engine.load_vision()
        except Exception:  # the first image query reports it to the user
            log.warning("the vision model did not load in advance", exc_info=True)


def _models(meta: dict) -> dict:
    return {key: meta.get(key) for key in ENCODER_KEYS}
