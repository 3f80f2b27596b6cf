"""Query vectors: the encoders recorded in the index (or proven overrides), and embedding what a user asks.

Text terms are embedded once and kept in an LRU cache (paging and edits re-use them); the vision model loads
on the first image query. A short text query is ~3 GFLOP, one query image ~36. On an idle 2-core machine a
second thread saves a quarter (int8 text query: 20.8 -> 15.0 ms, Intel Xeon with AMX), but when the cores are
busy (indexing, other users) OpenMP threads wait on each other: a text query took 300-500 ms instead of ~50 ms,
an image 1.5-1.8 s instead of ~350 ms, measured here (bench/query_latency.py). So a query takes a second thread
only while no other query of this process is being embedded and no other process's thread wants a core
(`spare_cores`, from /proc at each query, ~0.3 ms), and one thread otherwise; `threads` given fixes the count.

With `batching` (a server under load), concurrent callers' texts are embedded together, one forward pass per
batch (search/batching.py); each caller still gets exactly its own terms' vectors, through the same cache. A
batch of WIDE_BATCH texts or more runs on all cores (up to WIDE_THREADS): under 50 clients that gave 15.8-16.0
queries/s against 12.2-13.4 on one thread (AMD EPYC, 2 cores, bench/query_load.py's server), once the searches
of a batch ran as one (before that, the second thread only spun while gradio waited for the GIL).
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from models import VisionEncoder, load
from models.factory import load_caption_model, resolve_caption_model
from store import CAPTION_MODEL, CAPTIONS, IMAGES, Store

from . import modelmatch, tuning
from .batching import EmbedBatcher
from .query import Term
from .uploads import open_query_image

QUERY_THREADS = 1  # while other threads want the cores
# What the text tower is held in when the process answers one query (`glance search`) and `auto` was asked: holding
# the weights in int8 costs ~0.45 s at load (quantizing and oneDNN's packing) to save ~60 ms on that one query
# (full-size Nomic text, Intel Xeon with AMX: load plus one query 0.10-0.13 s in fp32, 0.49-0.52 s in int8).
SINGLE_QUERY_TEXT_PRECISION = "fp32"
# What a starting server's text tower answers in until the precision asked for is ready (QueryVectors
# fast_start): the same ~0.4 s of int8 packing would otherwise come before the first answer, whose text query
# costs ~45 ms in fp32 against ~16 ms in int8 (full-size Nomic text, Intel Xeon with AMX).
FAST_START_TEXT_PRECISION = "fp32"
IDLE_QUERY_THREADS = 2  # while they do not: short texts give small matmuls, more threads only wait on each other
WIDE_BATCH = 8  # texts in one forward pass from which it runs on several threads
WIDE_THREADS = 4  # at most: measured on 2 cores only; short texts give small matmuls to split
TERM_CACHE = 512
LOADAVG = Path("/proc/loadavg")
TASKS = Path("/proc/self/task")


class QueryVectors:
    """`fast_start` (a server starting): the text model answers in fp32 at once, and `finish_loading()` later
    loads it in the precision asked for and swaps it in; see FAST_START_TEXT_PRECISION."""

    def __init__(self, store: Store, vision_model: str | None, text_model: str | None, precision: str,
                 threads: int | None, batching: bool = False, single_query: bool = False, fast_start: bool = False):
        if threads:
            torch.set_num_threads(threads)
        self.fixed_threads = threads
        self._in_flight = 0  # queries being embedded now (query_threads)
        self.wide_threads = threads or min(os.cpu_count() or 1, WIDE_THREADS)  # `threads` given: always that
        self.precision = modelmatch.check_precision(precision)
        self.store = store
        self.recorded = modelmatch.recorded_models(store.current_meta(), store.path)
        version = self.recorded.version
        self.vision_choice = modelmatch.choose("vision", self.recorded.vision, vision_model, version, store.path)
        self.text_choice = modelmatch.choose("text", self.recorded.text, text_model, version, store.path)
        text_precision = SINGLE_QUERY_TEXT_PRECISION if single_query and self.precision == "auto" else self.precision
        self._text_precision_later = None  # the precision finish_loading() loads the text model in
        if fast_start and text_precision != FAST_START_TEXT_PRECISION:
            self._text_precision_later, text_precision = text_precision, FAST_START_TEXT_PRECISION
        self.text = load(self.text_choice.model, text_precision)
        modelmatch.check_pair_and_dim(self.vision_choice, self.text_choice, self.text.dim, self.recorded, store.path)
        if self.text_choice.overridden:
            self._verify_text_model()
        self._vision: VisionEncoder | None = None
        self._vision_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._term_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        embedders = {"space": lambda texts: self._embed_queries(texts, tuned=False),
                     "tuned": lambda texts: self._embed_queries(texts, tuned=True),
                     "caption_model": self._embed_caption_model}
        self._embedders = {space: EmbedBatcher(embed).embed if batching else embed
                           for space, embed in embedders.items()}
        recorded_caption_model = store.current_meta().get(CAPTION_MODEL)
        # Found now (a missing model is reported when the index opens), loaded on the first caption query.
        self.caption_model = resolve_caption_model(recorded_caption_model) if recorded_caption_model else None
        self._caption_encoder = None
        if self.vision_choice.overridden:
            self.vision()  # prove the override matches before serving anything
        self.tuning, self.tuning_problem = tuning.active(store, store.current_meta())
        self._add_lora(self.text)  # after the check above, which compares the base model with the index

    def _add_lora(self, text) -> None:
        """The active LoRA tuning's adapters into `text`, where there is one."""
        if self.tuning is not None and self.tuning.method == "lora":
            from models.lora import load_lora

            load_lora(text, self.tuning.tensors)

    def finish_loading(self) -> None:
        """After a fast start: the text model in the precision asked for replaces the fp32 one, which answers
        until then (a query being embedded keeps the model it began with). Nothing to do otherwise."""
        if self._text_precision_later is None:
            return
        held = load(self.text_choice.model, self._text_precision_later)
        self._add_lora(held)
        self.text, self._text_precision_later = held, None

    @property
    def dim(self) -> int:
        return self.recorded.dim

    def terms(self, terms: list[Term]) -> list[np.ndarray]:
        """Term embeddings in the image-text space (with the family's query prefix), cached: the base model's,
        as the captions were embedded."""
        return self._cached("space", terms)

    def photo_terms(self, terms: list[Term], tuned: bool = True) -> list[np.ndarray]:
        """Term embeddings for photo search: through the active tuning unless `tuned` is False."""
        if not tuned or self.tuning is None:
            return self.terms(terms)
        if self.tuning.method == "adapter":
            return self.tuning.map_queries(self.terms(terms))
        return self._cached("tuned", terms)

    def query_threads(self) -> int:
        """Threads for the query being embedded (see the module docstring); call it inside `embedding()`."""
        if self.fixed_threads:
            return self.fixed_threads
        alone = self._in_flight == 1  # no other query of this process is being embedded
        return IDLE_QUERY_THREADS if alone and spare_cores() >= IDLE_QUERY_THREADS - 1 else QUERY_THREADS

    @contextlib.contextmanager
    def embedding(self):
        """One query being embedded, on as many threads as query_threads() says."""
        with self._cache_lock:
            self._in_flight += 1
        try:
            with torch_threads(self.query_threads()):
                yield
        finally:
            with self._cache_lock:
                self._in_flight -= 1

    def _embed_queries(self, texts: list[str], tuned: bool) -> np.ndarray:
        text = self.text  # one model for the whole call: finish_loading may swap it meanwhile
        with torch_threads(self.wide_threads) if len(texts) >= WIDE_BATCH else self.embedding():
            if self.tuning is None or self.tuning.method != "lora":
                return text.embed_queries(texts, dim=self.dim).numpy()
            from models.lora import adapters_enabled

            with adapters_enabled(text, tuned):
                return text.embed_queries(texts, dim=self.dim).numpy()

    def caption_terms(self, terms: list[Term]) -> list[np.ndarray] | None:
        """Term embeddings in the caption model's space, cached; None when the index has no caption model."""
        if self.caption_model is None:
            return None
        return self._cached("caption_model", terms)

    def _embed_caption_model(self, texts: list[str]) -> np.ndarray:
        encoder = self.caption_encoder()
        with self.embedding():
            return encoder.embed(texts)

    def caption_encoder(self):
        with self._vision_lock:
            if self._caption_encoder is None:
                self._caption_encoder = load_caption_model(self.caption_model)
            return self._caption_encoder

    def _cached(self, space: str, terms: list[Term]) -> list[np.ndarray]:
        """Embeddings by (space, normalized text). One QueryVectors serves one index's models (another model or
        tuning means a new engine, search/live.py), so the space and the text are the whole key."""
        texts = [normalized(t.text) for t in terms]
        with self._cache_lock:
            known = {text: self._term_cache[space, text] for text in texts if (space, text) in self._term_cache}
            for text in known:
                self._term_cache.move_to_end((space, text))  # least recently used goes first
        missing = list(dict.fromkeys(text for text in texts if text not in known))
        if missing:
            fresh = self._embedders[space](missing)
            known.update(zip(missing, fresh))
            with self._cache_lock:
                self._term_cache.update(((space, text), vector) for text, vector in zip(missing, fresh))
                while len(self._term_cache) > TERM_CACHE:
                    self._term_cache.popitem(last=False)
        return [known[text] for text in texts]

    def image(self, image) -> np.ndarray:
        """A query image (path, bytes or PIL image; checked by search/uploads.py) as a vector."""
        decoded = open_query_image(image)
        vision = self.vision()
        with self.embedding():
            return vision.embed_images([decoded], dim=self.dim)[0].numpy()

    def vision(self) -> VisionEncoder:
        with self._vision_lock:
            if self._vision is None:
                vision = load(self.vision_choice.model, self.precision)
                if self.vision_choice.overridden:
                    self._verify_vision_model(vision)
                self._vision = vision
            return self._vision

    def _verify_text_model(self) -> None:
        samples = self.store.samples(CAPTIONS, "text")
        embedded = stored = None
        if samples:
            embedded = self.text.embed_queries([s["text"] for s in samples], dim=self.dim).numpy()
            stored = np.asarray([s["vector"] for s in samples], dtype=np.float32)
        modelmatch.verify("text", self.text_choice, self.recorded.text, embedded, stored, self.store.path)

    def _verify_vision_model(self, vision: VisionEncoder) -> None:
        samples = self.store.samples(IMAGES, "thumb")
        images = modelmatch.thumbnails_as_images([s["thumb"] for s in samples])
        embedded = stored = None
        if images and len(images) == len(samples):
            embedded = vision.embed_images(images, dim=self.dim).numpy()
            stored = np.asarray([s["vector"] for s in samples], dtype=np.float32)
        modelmatch.verify("vision", self.vision_choice, self.recorded.vision, embedded, stored, self.store.path)


def normalized(text: str) -> str:
    """A term as the tokenizers see it: runs of whitespace are one space (every family's tokenizer splits on
    whitespace, so `dog  on` and `dog on` embed alike). Case is kept: a cased tokenizer (xlm-roberta) tells them
    apart."""
    return " ".join(text.split())


def running_elsewhere() -> int | None:
    """Threads of other processes running at this moment: /proc/loadavg's running count (its fourth field,
    "running/total"; ~10 us to read) less this process's running threads, since its own OpenMP workers spin for a
    moment after each operation and count as running (read only when needed: ~0.2 ms for 40 threads). None where
    that cannot be read (not Linux)."""
    try:
        running = int(LOADAVG.read_text().split()[3].split("/")[0])
        if running <= 1:
            return 0  # the caller itself
        tasks = os.listdir(TASKS)
    except (OSError, ValueError, IndexError):
        return None
    own = 0
    for task in tasks:
        try:
            with open(TASKS / task / "stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # a thread that ended meanwhile
        own += stat[stat.rindex(b")") + 2:][:1] == b"R"  # the state follows the command name, which may hold ")"
    return max(running - own, 0)


def spare_cores(samples: int = 3) -> int:
    """Cores this process may use that no other process's thread wants now, besides the one the caller runs on.
    The fewest of up to `samples` readings: a kernel thread runs for microseconds, a busy indexer's threads all the
    time."""
    fewest = None
    for _ in range(samples):
        elsewhere = running_elsewhere()
        if elsewhere is None:
            return 0  # unknown: assume busy, the safe count
        fewest = elsewhere if fewest is None else min(fewest, elsewhere)
        if fewest == 0:
            break
    return max(len(os.sched_getaffinity(0)) - 1 - fewest, 0)


@contextlib.contextmanager
def torch_threads(count: int):
    """Run torch on `count` threads for a moment (process-wide: a concurrent call may see it; speed only)."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != before:
            torch.set_num_threads(before)
