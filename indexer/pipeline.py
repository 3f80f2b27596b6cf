"""Indexing a set of folders: scan, decide, decode in worker threads ahead of the model, commit in batches.

Crash safety comes from the order of atomic commits (each LanceDB write is one new table version):
  1. meta (models, roots) before any row, so a half-built index still refuses other models;
  2. per batch: the image rows without their mtime (complete rows a reader can show, marked unfinished),
     then stale content captions deleted, then the batch's captions, then the image rows again with size and
     mtime. That last write is the "done" marker: a file whose row is missing, stale or unfinished is simply
     processed again by the next run, and every write is an upsert keyed by a stable id. A reader never sees
     a caption whose photo is missing. (Batches without captions skip straight to the last write.)
  3. after all batches: rows of vanished files (captions first), then caption reconciliation, then a sweep of
     orphaned captions and has_caption flags. Each step recomputes its work from disk and the table, so a run
     killed at any point converges on re-run to the same rows as an uninterrupted run.
After each batch's last write, the removals, the caption repairs and the index maintenance, Store.publish()
records the tables' versions as one pair in meta: readers check out that pair, never a half-done step.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

import store as st
from core import location
from core.errors import UsageError
from models import load, preprocess_of, vision_shape
from models.device import available_memory, check_device
from models.preprocess import Preprocess
from store import Store

from . import caption_space, collection_map, reconcile
from .bookkeeping import ModelChoice, check_compatible, choose_models
from .captions import Entry, load_caption_files, read_sidecar
from .decode import DEFAULT_MAX_MEGAPIXELS, BadFile, Decoded, FileBytes, decode, display_path, read_file
from .plan import Roots, classify, inside, plan_roots, refuse_emptied, relative_to
from .report import Summary
from .scan import Problem, scan

# On the CPU a batch holds at most MAX_CPU_BATCH images and about CPU_TOKEN_ROWS token rows (images x tokens per
# image), measured side by side on 2 cores (Intel Xeon with AMX, bf16). Nomic's 197 tokens, model alone, compiled:
# 42.1-43.0 images/s in batches of 16 against 39.3-40.7 in batches of 32 (bench/index_throughput.py; eager, in
# separate processes, 35.7-37.2 against 31.6-35.1). open_clip ViT-B-32-256's 65 tokens: 128 images/s at 32 against
# 114 at 49 (bench/peer_rclip.py). On AMD EPYC (AVX512-BF16, no AMX), Nomic end to end: 8.07-8.14 images/s at 16,
# 6.96-7.49 at 32, 6.81-8.18 at 8. Smaller batches also lose less work to a kill.
CPU_TOKEN_ROWS = 3200
MAX_CPU_BATCH = 32
# Photos per commit at least, whatever the model's batch. Each commit costs ~70 ms of one core (a merge-insert and
# a published version), taken from the decoding threads: committing 64 at a time indexed 25.9-26.1 images/s end
# to end against 24.8-25.2 committing each batch of 16 (bench/index_throughput.py, 300 12-MP JPEGs, Intel Xeon
# with AMX). A kill loses at most this many photos' work.
COMMIT_PHOTOS = 64
MAX_GPU_BATCH = 256  # a GPU keeps gaining up to a few hundred images per call
# Photos to embed from which `--compile auto` compiles the vision model (models/compiled.py): ~5 s with inductor's
# cache warm, saving ~7 ms a photo (full-size Nomic, bf16, Intel Xeon with AMX), so it gains from ~700 photos on;
# the first compile on a machine (~30 s) is paid back over the next runs.
COMPILE_FROM = 2000
COMPACT_EVERY = 100  # batches; a compaction takes well under a second, 100 batches take minutes
TEXT_BATCH = 64
REUSE_COLUMNS = ["id", "sha256", "width", "height", "taken_at", "camera", "thumb", "vector"]


@dataclass
class IndexOptions:
    paths: list[str]  # folders, or object-storage prefixes (s3://bucket/prefix; core/location.py)
    db: str | Path | None = None  # a folder or a URI; default: $GLANCE_DB or ~/.local/share/glance/index
    # LanceDB storage options (aws_endpoint, aws_region, ...) on top of the environment, for the index and the photo
    # roots alike; a plain dict of strings, so it can travel to other processes
    storage_options: dict[str, str] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)  # --captions files (CSV, JSONL, TXT)
    vision_model: str | None = None  # default: what the index was built with, else Nomic v1.5
    text_model: str | None = None
    caption_model: str | None = None  # a second space for captions (default: the index's; "none" drops it)
    dim: int | None = None  # store vectors at this Matryoshka size (default: the index's, else the model's full)
    vector_index: str | None = None  # auto | flat | sq | pq (default: the index's, else auto); store/vector_index.py
    reindex: bool = False
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    batch_size: int | None = None  # images per model call; default: auto_batch_size (memory and the model's tokens)
    commit_every: int | None = None  # photos per commit; default: the batch, at least COMMIT_PHOTOS
    workers: int | None = None  # decoding threads; default: one per core (they take turns with the model)
    threads: int | None = None  # torch threads; default: all cores
    precision: str = "auto"
    device: str = "auto"  # auto | cpu | cuda, for the vision model (models/device.py); decoding stays on the CPU
    compile: str = "auto"  # on | off | auto (from COMPILE_FROM photos to embed): torch.compile the vision model
    progress: bool = False  # tqdm bar on stderr
    prune: bool = False  # a folder found empty or unreadable loses its photos (else: refused, a drive not mounted?)
    on_problem: Callable[[Problem], None] | None = None  # called as each problem is found
    encoders: tuple | None = None  # preloaded (VisionEncoder, TextEmbedder); either may be None (loaded if needed)
    ray: str | None = None  # decode and embed on a Ray cluster: "local", "auto" or an address (indexer/ray_index.py)
    ray_workers: int | None = None  # embedding actors on the cluster (default: one per GPU, else most CPUs)


@dataclass
class Todo:
    image_id: str
    root: str
    relpath: str  # as the OS knows it (surrogate-escaped where the name is not UTF-8)
    size: int
    mtime_ns: int
    old_id: str | None
    old_sha: str | None
    sidecars: list[str]  # relpaths, as the OS knows them

    @property
    def path(self) -> str:
        """The file's path, or its URI for a bucket root (s3://bucket/prefix/relpath)."""
        return os.path.join(self.root, self.relpath)


@dataclass
class Prepared:
    todo: Todo
    file: FileBytes
    decoded: Decoded | None  # None: the content is already indexed somewhere, reuse its vector
    sidecar_texts: list[str]
    vector: np.ndarray | None = None  # embedded elsewhere already (a Ray actor: indexer/ray_index.py)


def index(options: IndexOptions) -> Summary:
    return Indexer(options).run()


def choose_vector_index(meta: dict, flag: str | None) -> str:
    """The flag wins; otherwise the index keeps the kind it records (--reindex too); otherwise auto."""
    if flag is not None and flag not in st.VECTOR_INDEX_KINDS:
        raise UsageError(f"--vector-index {flag}: choose one of " + ", ".join(st.VECTOR_INDEX_KINDS))
    return flag or meta.get(st.VECTOR_INDEX) or "auto"


def default_workers() -> int:
    """One decoding thread per core: decoding and inference take turns (Indexer._model_running), each with all
    cores. A 12-MP JPEG costs ~30 ms to read, hash and decode in draft mode; the vision model from ~25 ms
    (ViT-B-32-256) to ~260 ms (Nomic v1.5) of CPU time per image. On AMD EPYC, 2 cores, Nomic end to end: two
    threads 8.07-8.14 images/s, one 6.39-7.03 (bench/index_throughput.py --workers 1)."""
    return max(1, os.cpu_count() or 2)


def wants_compile(mode: str, photos: int) -> bool:
    """Whether `--compile MODE` compiles the vision model for a run that embeds `photos` photos."""
    return mode == "on" or (mode == "auto" and photos >= COMPILE_FROM)


def auto_batch_size(preprocess: Preprocess, hidden: int, heads: int, patch: int = 16, device=None) -> int:
    """Images per forward pass so that activations stay within a quarter of the host's available memory, or
    half of a GPU's free memory (nothing else of ours lives there)."""
    tokens = (preprocess.input_size[0] // patch) * (preprocess.input_size[1] // patch) + 1
    per_image = 4 * tokens * (8 * hidden + heads * tokens) * 2  # one block's fp32 activations, 2x headroom
    on_gpu = device is not None and device.type == "cuda"
    share, most = (2, MAX_GPU_BATCH) if on_gpu else (4, max(1, min(MAX_CPU_BATCH, CPU_TOKEN_ROWS // tokens)))
    return int(max(1, min(most, available_memory(device) // share // per_image)))


class ShaSet:
    """Content hashes of finished rows, as sorted 64-bit prefixes: 8 bytes per row, thread-safe to read."""

    def __init__(self, shas: list[str]):
        self.keys = np.unique(np.array([int(s[:16], 16) for s in shas if s], dtype=np.uint64))

    def __contains__(self, sha: str) -> bool:
        key = np.uint64(int(sha[:16], 16))
        i = int(np.searchsorted(self.keys, key))
        return i < len(self.keys) and self.keys[i] == key


class Indexer:
    def __init__(self, options: IndexOptions):
        self.o = options
        self.db_path = st.db_location(options.db)  # a Path, or a normalized URI
        self.storage = dict(options.storage_options or {})
        self.store: Store | None = None  # connected after the checks: connecting creates the folder
        self.max_pixels = int(options.max_megapixels * 1_000_000)
        self.summary = Summary(db=location.display(str(self.db_path)))
        self.file_captions: dict[tuple[str, str], list[str]] = {}
        self._vision, self._text = options.encoders or (None, None)
        self._to_embed = 0  # photos this run reads and embeds (the compile decision)
        self._compile_decided = False
        self._bar_for_files = None  # the files' progress bar, while _process runs
        self.commits = 0
        self._model_idle = threading.Event()  # decoding threads start a file only while the model is not running
        self._model_idle.set()

    # ----- the run -------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        started = time.monotonic()
        if self.max_pixels < 1:
            raise UsageError("--max-megapixels must be positive")
        self._refuse_db_inside(self.o.paths)
        check_device(self.o.device)  # --device cuda without a GPU is refused now, not after the scan
        entries = load_caption_files(list(self.o.captions))
        _quiet_pillow()
        self.store = Store(self.db_path, storage_options=self.storage)
        with self.store.writing(), self.store.lance_errors():
            choice, roots, known = self._prepare_index()
            self.choice = choice
            self.preprocess = preprocess_of(choice.vision_model)
            self.batch_size = self.o.batch_size or self._auto_batch(choice)
            found = scan(roots.scopes, self._scan_progress(), self.storage)
            self._close_bar()
            for problem in found.problems:
                self._problem(problem)
            plan = classify(self.store, roots, found)
            if not self.o.prune:
                refuse_emptied(plan, found)
            self.summary.unchanged = plan.unchanged
            self.file_captions, free_texts = self._resolve_entries(entries, roots.all(known))
            self.known = ShaSet(self.store.finished_hashes())
            self._process(plan.todo)
            self.summary.removed = self._remove(plan.vanished)
            added, removed, problems = reconcile.captions(
                self.store, roots, found.files, self.file_captions if entries else None, free_texts,
                self._embed_texts, self.storage)
            for problem in problems:
                self._problem(problem)
            self.summary.captions_added += added
            self.summary.captions_removed += removed + reconcile.sweep(self.store)
            self.summary.captions_embedded = caption_space.fill(self.store, self.caption_choice)
            changed = self.summary.added + self.summary.updated + self.summary.moved + self.summary.removed
            mapped = collection_map.refresh(self.store, changed=bool(changed))  # before readers see the new photos
            self.store.publish()
            self.store.write_meta({st.LAST_INDEXED: _iso_now(), st.ROOTS: roots.all(known)})
            self.summary.maintenance = self.store.ensure_indexes() + ([mapped] if mapped else [])
            self.summary.vector_index_note = self.store.vector_index_note()
            self.store.publish()
            self.summary.images_total = self.store.photo_count()
            self.summary.captions_total = self.store.caption_count()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _refuse_db_inside(self, paths: list[str]) -> None:
        """Local folders compare with symlinks resolved; URIs compare as normalized names (a bucket has no links)."""
        remote = isinstance(self.db_path, str)
        db = self.db_path if remote else os.path.realpath(self.db_path)
        for given in paths:
            if location.is_uri(given) != remote:
                continue  # one on disk, one in a bucket: never inside each other
            folder = location.normalize(given) if remote else os.path.realpath(os.path.expanduser(given))
            if inside(db, folder):
                raise UsageError(f"the index {location.display(str(self.db_path))} is inside the photo folder "
                                 f"{location.display(given)}; the indexer never writes into a photo library: choose "
                                 f"another --db")

    def _prepare_index(self) -> tuple[ModelChoice, Roots, list[str]]:
        """Models checked, roots planned, tables and meta written: all before the first row."""
        meta = self._recorded_meta()
        vision, text = self.o.vision_model, self.o.text_model
        # preloaded encoders name their own models
        vision = vision or (self._vision.spec if self._vision is not None else None)
        text = text or (self._text.spec if self._text is not None else None)
        choice = choose_models(meta, vision, text, self.o.dim)  # --reindex without flags: the same models again
        self.caption_choice = caption_space.choose(meta, self.o.caption_model)
        vector_index = choose_vector_index(meta, self.o.vector_index)
        if self.o.reindex:
            self.store.drop_all()
            meta = {}
        has_rows = self.store.exists() and self.store.has_rows()
        check_compatible(meta, has_rows, choice, self.store.path)
        if not has_rows and self.store.exists() and meta.get(st.DIM) not in (None, choice.dim):
            self.store.drop_all()  # an empty index from other models: its tables have the wrong vector size
            meta = {}
        known = list(meta.get(st.ROOTS) or [])
        roots = plan_roots(self.o.paths, known, self.storage)
        _check_preloaded((self._vision, self._text), choice)
        self.store.create_tables(choice.dim)
        self.store.write_meta({**choice.meta(), st.SCHEMA_VERSION_KEY: st.SCHEMA_VERSION,
                               st.ROOTS: sorted({*known, *roots.added}), st.VECTOR_INDEX: vector_index})
        caption_space.apply(self.store, self.caption_choice)
        return choice, roots, known

    def _recorded_meta(self) -> dict:
        """The index's meta; with --reindex an unreadable one counts as none: rebuilding a damaged index is
        what --reindex is for (its models then come from the flags, or the defaults)."""
        if not self.o.reindex:
            return self.store.meta()
        try:
            return self.store.meta()
        except RuntimeError:
            return {}

    def _auto_batch(self, choice: ModelChoice, device=None) -> int:
        return auto_batch_size(self.preprocess, *vision_shape(choice.vision_model), device=device)

    # ----- captions files ------------------------------------------------------------------------------------
    def _resolve_entries(self, entries: list[Entry], roots: list[str]):
        """Captions-file paths -> (root, relpath); free-standing texts apart. Unplaceable entries are problems."""
        from .captions import candidate_paths

        by_image: dict[tuple[str, str], list[str]] = {}
        free: list[str] = []
        for entry in entries:
            if entry.path is None:
                free.append(entry.text)
                continue
            key = _place(candidate_paths(entry.path, entry.file, roots), roots)
            if key is None:
                self._problem(Problem(entry.path, f"not inside an indexed folder ({entry.origin})", "caption"))
                continue
            texts = by_image.setdefault(key, [])
            if entry.text not in texts:
                texts.append(entry.text)
        return by_image, list(dict.fromkeys(free))

    # ----- files to read -------------------------------------------------------------------------------------
    def _process(self, todo: pa.Table) -> None:
        self._to_embed = todo.num_rows
        if self.o.ray is not None:
            from .ray_index import process_on_ray

            return process_on_ray(self, todo)
        bar = self._bar_for_files = self._bar(todo.num_rows)
        try:
            with ThreadPoolExecutor(self.o.workers or default_workers(), thread_name_prefix="glance-decode") as pool, \
                    closing(self._decoded(pool, _iter_todo(todo))) as results:
                self.commit_in_batches(results, bar, COMMIT_PHOTOS)
        finally:
            bar.close()
            self._bar_for_files = None

    def _decoded(self, pool: ThreadPoolExecutor, items: Iterator[Todo]) -> Iterator[Prepared | Problem]:
        """The files prepared by the pool, in order. Decoding runs at most two commits ahead of the model, so
        memory stays bounded on any library; closing the generator cancels what has not started."""
        window: deque = deque()

        def fill():
            while len(window) < 2 * self.commit_size(COMMIT_PHOTOS) and (item := next(items, None)) is not None:
                window.append(pool.submit(self._prepare, item))
        try:
            fill()
            while window:
                result = window.popleft().result()
                fill()
                yield result
        finally:
            for future in window:
                future.cancel()

    def commit_size(self, least: int) -> int:
        """Photos per commit: as asked, else the model's batch and at least `least`."""
        return self.o.commit_every or max(least, self.batch_size)

    def commit_in_batches(self, results: Iterable[Prepared | Problem], bar, least: int) -> None:
        """Commit prepared files `commit_size(least)` at a time (problems are reported as they come); the local
        pipeline's decoding threads and the Ray path (indexer/ray_index.py) both feed it. The size is read again
        after each commit: the model's batch grows once the model has landed on a GPU."""
        pending: list[Prepared] = []
        for result in results:
            if isinstance(result, Problem):
                self._problem(result)
                bar.update(1)
                continue
            pending.append(result)
            if len(pending) >= self.commit_size(least):
                self._commit(pending)
                bar.update(len(pending))
                pending = []
        if pending:
            self._commit(pending)
            bar.update(len(pending))

    def _prepare(self, todo: Todo) -> Prepared | Problem:
        """Worker thread: waits while the model runs (Indexer._model_running), then prepares one file."""
        self._model_idle.wait()
        return prepare(todo, self.known, self.preprocess, self.max_pixels, self.storage)

    def _commit(self, batch: list[Prepared]) -> None:
        """Embed what is new, reuse what is known, and write the batch (captions first, image rows last)."""
        sources, copied_captions = self._reuse_sources([p for p in batch if p.decoded is None])
        batch = [p for p in batch if p.decoded is not None or p.file.sha256 in sources or self._decode_now(p)]
        decoded = [p for p in batch if p.decoded is not None and p.vector is None]
        vectors = dict(zip(map(id, decoded), self._embed_images([p.decoded.pixels for p in decoded])))
        vectors.update((id(p), p.vector) for p in batch if p.vector is not None)
        caption_rows, caption_vectors, image_rows, image_vectors = [], [], [], []
        for p in batch:
            if p.decoded is not None:
                row, vector = self._image_row(p, p.decoded), vectors[id(p)]
                texts = [(source, text, None) for source, text in p.decoded.descriptions]
            else:
                source = sources[p.file.sha256]
                row, vector = self._reused_row(p, source), source["vector"]
                texts = copied_captions.get(source["id"], [])  # with their vectors
            texts = texts + [(st.SOURCE_SIDECAR, t, None) for t in p.sidecar_texts] + \
                [(st.SOURCE_FILE, t, None) for t in self.file_captions.get((p.todo.root, p.todo.relpath), [])]
            for source_name, text, text_vector in texts:
                caption_rows.append(_caption(p.todo.image_id, source_name, text))
                caption_vectors.append(text_vector)
            row["has_caption"] = bool(texts)
            image_rows.append(row)
            image_vectors.append(np.asarray(vector, dtype=np.float32))
            self._count(p)
        self._embed_missing(caption_rows, caption_vectors)
        self._write(batch, caption_rows, caption_vectors, image_rows, image_vectors)

    def _write(self, batch, caption_rows, caption_vectors, image_rows, image_vectors) -> None:
        from .rows import captions_table, images_table

        dim = self.choice.dim
        finished = images_table(image_rows, np.stack(image_vectors), dim) if image_rows else None
        unique = {row["id"]: (row, vector) for row, vector in zip(caption_rows, caption_vectors)}
        if unique and finished is not None:  # photos first, so no caption ever points at a missing photo
            column = finished.schema.get_field_index("mtime_ns")
            self.store.upsert_photos(
                finished.set_column(column, "mtime_ns", pa.nulls(finished.num_rows, pa.int64())))
        replaced = [p.todo.image_id for p in batch if p.todo.old_id is not None]
        if replaced:  # content captions of the old content must not outlive it
            self.summary.captions_removed += self.store.delete_captions_of(replaced, st.CONTENT_SOURCES)
        if unique:
            rows, vecs = zip(*unique.values())
            self.summary.captions_added += self.store.upsert_captions(captions_table(list(rows), np.stack(vecs), dim))
        if finished is not None:
            self.store.upsert_photos(finished)
            self.store.publish()
        self.commits += 1
        if self.commits % COMPACT_EVERY == 0:
            self.store.compact()

    def _count(self, p: Prepared) -> None:
        s = self.summary
        if p.todo.old_id is None:
            if p.decoded is None:
                s.moved += 1
            else:
                s.added += 1
        elif p.file.sha256 == p.todo.old_sha:
            s.unchanged += 1  # touched (mtime changed), same bytes: only size/mtime refreshed
        else:
            s.updated += 1

    def _image_row(self, p: Prepared, d: Decoded) -> dict:
        return {**self._file_columns(p), "width": d.width, "height": d.height, "taken_at": d.taken_at,
                "camera": d.camera, "thumb": d.thumb}

    def _reused_row(self, p: Prepared, source: dict) -> dict:
        return {**self._file_columns(p), **{k: source[k] for k in ("width", "height", "taken_at", "camera", "thumb")}}

    def _file_columns(self, p: Prepared) -> dict:
        from .rows import now

        t = p.todo
        return {"id": t.image_id, "root": t.root, "relpath": st.display_name(t.relpath),
                "relpath_bytes": st.name_bytes(t.relpath), "size": p.file.size,
                "mtime_ns": p.file.mtime_ns, "sha256": p.file.sha256, "indexed_at": now()}

    def _reuse_sources(self, reuse: list[Prepared]):
        """Rows already holding these contents (one per hash, lowest id: deterministic), and their content captions."""
        if not reuse:
            return {}, {}
        shas = sorted({p.file.sha256 for p in reuse})
        rows = self.store.finished_rows_with_hashes(shas, REUSE_COLUMNS)
        sources: dict[str, dict] = {}
        for row in sorted(rows.to_pylist(), key=lambda r: r["id"]):
            sources.setdefault(row["sha256"], row)
        copied: dict[str, list] = {}
        source_ids = [r["id"] for r in sources.values()]
        if source_ids:
            found = self.store.content_captions_of(source_ids)
            for row in sorted(found.to_pylist(), key=lambda r: (r["source"], r["text"])):
                copied.setdefault(row["image_id"], []).append((row["source"], row["text"], row["vector"]))
        return sources, copied

    def _decode_now(self, p: Prepared) -> bool:
        """The content's row vanished since the hash lookup (overwritten earlier in this run): decode after all."""
        try:
            file = read_file(p.todo.path, self.storage)
            p.decoded = decode(p.todo.path, file.data, self.preprocess, self.max_pixels, self.storage)
            p.file = FileBytes(file.size, file.mtime_ns, file.sha256, None)
            return True
        except BadFile as exc:
            self._problem(Problem(display_path(p.todo.path), str(exc)))
            return False

    # ----- models --------------------------------------------------------------------------------------------
    @property
    def vision(self):
        """Loaded on first use: a re-run over an unchanged library never pays for the model (nor imports torch)."""
        if self._vision is None:
            _set_threads(self.o.threads)
            self._vision = load(self.choice.vision_model, self.o.precision, self.o.device)
            if not self.o.batch_size:  # sized again for where the model landed (a GPU's memory, not the host's)
                self.batch_size = self._auto_batch(self.choice, self._vision.device)
        if not self._compile_decided:
            self._compile_decided = True
            if wants_compile(self.o.compile, self._to_embed):
                self._compile_vision()
        return self._vision

    def _compile_vision(self) -> None:
        """The bar says why it stands still: seconds, or half a minute the first time on a machine."""
        bar = self._bar_for_files
        if bar is not None:
            bar.set_description_str("compiling the model")
        self._vision.compile(self.batch_size)
        if bar is not None:
            bar.set_description_str("indexing")

    @property
    def text(self):
        """Loaded only when there are captions to embed (it brings transformers and ~0.5 GB of weights)."""
        if self._text is None:
            _set_threads(self.o.threads)
            self._text = load(self.choice.text_model, self.o.precision)
        return self._text

    def _embed_images(self, pixels: list[Image.Image]) -> np.ndarray:
        if not pixels:
            return np.zeros((0, self.choice.dim), np.float32)
        with self._model_running():
            vision = self.vision  # loaded here the first time, and the batch then sized for where it landed
            size = self.batch_size
            return np.concatenate([
                vision.embed_pixels(self.preprocess.to_tensor(pixels[start:start + size]), self.choice.dim)
                .float().numpy() for start in range(0, len(pixels), size)])

    @contextmanager
    def _model_running(self):
        """Decoding and inference take turns, each with every core. torch splits an operation across all cores and
        waits for its slowest thread, so a decoding thread that takes a core mid-operation stalls the whole forward
        pass: on 2 cores, ViT-B-32-256 indexed 22 images/s overlapped with one decoding thread, 31 in turns with
        two (bench/peer_rclip.py; the model alone: 75)."""
        self._model_idle.clear()
        try:
            yield
        finally:
            self._model_idle.set()

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        """Captions are embedded as the model family embeds them (Nomic: `search_query: <caption>`)."""
        if not texts:
            return np.zeros((0, self.choice.dim), np.float32)
        parts = [self.text.embed_captions(texts[i:i + TEXT_BATCH], self.choice.dim).float().numpy()
                 for i in range(0, len(texts), TEXT_BATCH)]
        return np.concatenate(parts)

    def _embed_missing(self, rows: list[dict], vectors: list) -> None:
        missing = [i for i, v in enumerate(vectors) if v is None]
        for i, vector in zip(missing, self._embed_texts([rows[i]["text"] for i in missing])):
            vectors[i] = vector
        for i, vector in enumerate(vectors):
            vectors[i] = np.asarray(vector, dtype=np.float32)

    # ----- removal -------------------------------------------------------------------------------------------
    def _remove(self, vanished: list[str]) -> int:
        """Captions first: a kill in between leaves image rows that the next run still sees as vanished."""
        if not vanished:
            return 0
        self.summary.captions_removed += self.store.delete_captions_of(vanished)
        removed = self.store.delete_photos(vanished)
        self.store.publish()
        return removed

    # ----- reporting -----------------------------------------------------------------------------------------
    def _problem(self, problem: Problem) -> None:
        self.summary.problems.append(problem)
        if self.o.on_problem:
            self.o.on_problem(problem)

    def _bar(self, total: int):
        from tqdm import tqdm

        return tqdm(total=total, unit="file", desc="indexing", file=sys.stderr, disable=not self.o.progress,
                    dynamic_ncols=True, mininterval=0.5, smoothing=0.05)

    def _scan_progress(self):
        if not self.o.progress:
            return None
        from tqdm import tqdm

        self._scan_bar = tqdm(unit=" files", desc="scanning", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        return self._scan_bar.update

    def _close_bar(self) -> None:
        if getattr(self, "_scan_bar", None) is not None:
            self._scan_bar.close()


def prepare(todo: Todo, known: ShaSet, preprocess: Preprocess, max_pixels: int,
            storage_options: dict | None = None) -> Prepared | Problem:
    """Read and hash one file; decode it only if its content is not in the index yet (`known`). Runs in a
    decoding thread, or in a Ray task (indexer/ray_index.py); `storage_options` (core/location.py) reach a
    bucket from either."""
    try:
        file = read_file(todo.path, storage_options)
        decoded = None if file.sha256 in known else decode(todo.path, file.data, preprocess, max_pixels,
                                                           storage_options)
    except BadFile as exc:
        return Problem(display_path(todo.path), str(exc))
    file.data = None
    texts = []
    for sidecar in todo.sidecars:
        try:
            text = read_sidecar(os.path.join(todo.root, sidecar), storage_options)
        except OSError:
            continue  # reported once, by the caption reconciliation at the end of the run
        if text and text not in texts:
            texts.append(text)
    return Prepared(todo, file, decoded, texts)


def _caption(iid: str, source: str, text: str) -> dict:
    from .rows import caption

    return caption(iid, source, text)


def _iter_todo(todo: pa.Table) -> Iterator[Todo]:
    for batch in todo.to_batches(max_chunksize=2048):
        yield from map(todo_of, batch.to_pylist())


def todo_of(row: dict) -> Todo:
    """A row of the plan's todo table (indexer/plan.py) as the file to process."""
    return Todo(row["id"], row["root"], st.os_relpath(row["relpath"], row["relpath_bytes"]), row["size"],
                row["mtime_ns"], row["old_id"], row["old_sha"], [os.fsdecode(b) for b in row["sidecars"]])


def _place(candidates: list[str], roots: list[str]) -> tuple[str, str] | None:
    """(root, relpath) for the first candidate inside a root, preferring ones that exist on disk."""
    options = []
    for path in candidates:
        if location.is_uri(path):  # a key below a bucket root: no links to resolve; whether it exists, the
            for root in sorted(roots, key=len):  # captions reconciliation finds out (the photo must be indexed)
                if path != root and inside(path, root):
                    options.append((False, root, relative_to(path, root)))
                    break
            continue
        real_dir = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        for variant in dict.fromkeys((path, real_dir)):
            for root in sorted(roots, key=len):
                if variant != root and inside(variant, root):
                    options.append((os.path.exists(variant), root, os.path.relpath(variant, root).replace(os.sep, "/")))
                    break
    existing = [o for o in options if o[0]] or options
    return (existing[0][1], existing[0][2]) if existing else None


def _check_preloaded(encoders, choice: ModelChoice) -> None:
    for encoder, wanted in zip(encoders, (choice.vision, choice.text)):
        if encoder is not None and encoder.spec != wanted:  # both as the factory records them
            raise ValueError(f"preloaded encoder {encoder.spec} is not the index's model {wanted}")


def _quiet_pillow() -> None:
    """Metadata of a photo that decoded fine is read best-effort; Pillow's warnings about it are noise."""
    warnings.filterwarnings("ignore", module=r"PIL\..*")  # "corrupt EXIF" and friends: the file still indexes


def _iso_now() -> str:
    from .rows import now

    return now().isoformat() + "Z"


def _set_threads(threads: int | None) -> None:
    from models.encoders import set_threads  # torch: only once a model is really needed

    set_threads(threads)
