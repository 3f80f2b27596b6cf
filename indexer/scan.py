"""Walking photo folders: which image files exist, with size and mtime, and which caption sidecars sit beside them.

The walk only stats files; nothing is opened here. Results are kept as Arrow columns rather than Python
objects, so a library of a million photos costs tens of megabytes, not gigabytes.

Names are the operating system's (str, with bytes that are not UTF-8 surrogate-escaped) until they reach Arrow,
whose strings must be UTF-8: there a name is stored as its display form plus its raw bytes (store.schema), and
rows are matched by id (which hashes the raw bytes) rather than by name.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from core import location
from store import display_name, image_id, name_bytes

from .decode import display_path, file_kind

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib",
                              ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif"})
# Thumbnail caches and system folders of NAS boxes and Windows drives; folders starting with "." too.
SKIPPED_FOLDERS = frozenset({"@eaDir", "#recycle", "$RECYCLE.BIN", "System Volume Information", "lost+found"})
SIDECAR_SUFFIXES = (".txt", ".TXT")

FILES_SCHEMA = pa.schema([
    ("id", pa.string()),  # store.image_id(root, relpath): never null, so joins match every row
    ("root", pa.string()),
    ("relpath", pa.string()),  # display form (store.display_name)
    ("relpath_bytes", pa.binary()),  # the name's bytes where they are not UTF-8, else null
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("sidecars", pa.list_(pa.binary())),  # caption sidecars beside the file: relpaths as bytes (os.fsencode)
])


@dataclass
class Problem:
    """Something skipped, with the reason; the run goes on."""
    path: str  # for people (non-UTF-8 bytes shown as \xNN)
    reason: str
    kind: str = "file"  # file | folder | caption

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "kind": self.kind}


@dataclass(frozen=True)
class Scope:
    """One folder to walk, inside the index root that its rows belong to."""
    root: str  # absolute, symlinks resolved, or a normalized URI (core/location.py): the `root` column
    prefix: str  # the folder relative to root, POSIX, "" for the root itself

    @property
    def folder(self) -> str:
        return os.path.join(self.root, self.prefix) if self.prefix else self.root

    def covers(self, relpath: str) -> bool:
        return not self.prefix or relpath.startswith(self.prefix + "/")


@dataclass
class Scan:
    files: pa.Table  # FILES_SCHEMA, one row per readable-looking image file
    problems: list[Problem] = field(default_factory=list)
    found: dict[Scope, int] = field(default_factory=dict)  # image files found in each scope
    unlisted: dict[Scope, str] = field(default_factory=dict)  # scopes whose own folder could not be listed: why
    # (root, display relpath prefix ending in "/") of folders below that could not be listed: what the index
    # holds there is unknown, not gone
    unlisted_below: list[tuple[str, str]] = field(default_factory=list)


class Columns:
    """Append rows, stored as Arrow record batches every `chunk` rows."""

    def __init__(self, schema: pa.Schema, chunk: int = 65536):
        self.schema, self.chunk = schema, chunk
        self.rows: list[tuple] = []
        self.batches: list[pa.RecordBatch] = []

    def add(self, *row) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            columns = list(zip(*self.rows))
            self.batches.append(pa.record_batch([pa.array(c, type=f.type) for c, f in zip(columns, self.schema)],
                                                schema=self.schema))
            self.rows = []

    def table(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self.batches, schema=self.schema)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_utf8(name: str) -> bool:
    return name_bytes(name) is None  # undecodable bytes arrive as lone surrogates (surrogateescape)


def sidecar_names(image_name: str) -> list[str]:
    """`IMG_1.jpg.txt` and `IMG_1.txt` (either suffix case)."""
    stem = os.path.splitext(image_name)[0]
    return [base + suffix for base in (image_name, stem) for suffix in SIDECAR_SUFFIXES]


def scan(scopes: list[Scope], progress: Callable[[int], None] | None = None,
         storage_options: dict | None = None) -> Scan:
    files, result = Columns(FILES_SCHEMA), Scan(FILES_SCHEMA.empty_table())
    for scope in scopes:
        if location.is_uri(scope.root):
            result.found[scope] = _list_objects(scope, files, result, progress, storage_options)
        else:
            result.found[scope] = _walk(scope, files, result, progress)
    result.files = files.table()
    return result


def _list_objects(scope: Scope, files: Columns, result: Scan, progress, storage_options: dict | None) -> int:
    """A bucket prefix in one recursive listing. The same rules as on disk (hidden and system folders skipped,
    sidecars beside their photo); the object's last-modified time stands in for mtime, so an object rewritten
    with the same size within the same second of its last write is not seen as changed."""
    try:
        objects = location.list_files(scope.folder, storage_options)
    except location.StorageError as exc:
        result.problems.append(Problem(display_name(scope.folder), f"cannot list folder: {exc}", "folder"))
        result.unlisted[scope] = str(exc)
        return 0
    rel = scope.prefix + "/" if scope.prefix else ""
    kept = [(name, size, mtime) for name, size, mtime in objects
            if not any(part.startswith(".") or part in SKIPPED_FOLDERS for part in name.split("/"))]
    names = {name for name, _, _ in kept}
    count = 0
    for name, size, mtime_ns in kept:
        if not is_image_name(name):
            continue
        folder, _, base = name.rpartition("/")
        beside = folder + "/" if folder else ""
        sidecars = [os.fsencode(rel + beside + s) for s in sidecar_names(base) if beside + s in names]
        relpath = rel + name
        files.add(image_id(scope.root, relpath), scope.root, display_name(relpath), name_bytes(relpath),
                  size, mtime_ns, sidecars)
        count += 1
        if progress:
            progress(1)
    return count


def _walk(scope: Scope, files: Columns, result: Scan, progress) -> int:
    """Add the scope's image files to `files`; returns how many."""
    problems, count = result.problems, 0
    start = os.stat(scope.folder)
    visited = {(start.st_dev, start.st_ino)}
    # Each entry: absolute folder, its relpath prefix ("" or "a/b/"), and the folders above it (loop check).
    stack = [(scope.folder, scope.prefix + "/" if scope.prefix else "", ((start.st_dev, start.st_ino),))]
    while stack:
        folder, rel, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(Problem(display_path(folder), f"cannot list folder: {exc.strerror or exc}", "folder"))
            if folder == scope.folder:
                result.unlisted[scope] = exc.strerror or str(exc)
            else:
                result.unlisted_below.append((scope.root, display_name(rel)))
            continue
        names = {entry.name for entry in entries}
        subfolders = []
        for entry in entries:
            found = _visit(entry, rel, ancestors, visited, problems)
            if found is None:
                continue
            if found == "dir":
                info = entry.stat()
                key = (info.st_dev, info.st_ino)
                subfolders.append((entry.path, rel + entry.name + "/", ancestors + (key,)))
                continue
            relpath, (size, mtime_ns) = rel + entry.name, found
            sidecars = [os.fsencode(rel + name) for name in sidecar_names(entry.name) if name in names]
            files.add(image_id(scope.root, relpath), scope.root, display_name(relpath), name_bytes(relpath),
                      size, mtime_ns, sidecars)
            count += 1
            if progress:
                progress(1)
        stack.extend(reversed(subfolders))  # depth-first in name order: deterministic
    return count


def _visit(entry: os.DirEntry, rel: str, ancestors: tuple, visited: set, problems: list[Problem]):
    """'dir' for a folder to enter, (size, mtime_ns) for an image file, None to skip (maybe with a Problem)."""
    name, path = entry.name, entry.path
    if name.startswith(".") or name in SKIPPED_FOLDERS:
        return None
    image = is_image_name(name)
    try:
        info = entry.stat()  # follows symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problems.append(Problem(display_path(path), "symlink loop"))
        elif image and entry.is_symlink():
            problems.append(Problem(display_path(path), f"broken symlink (points to {_link_target(path)})"))
        elif image:
            problems.append(Problem(display_path(path), f"cannot read: {exc.strerror or exc}"))
        return None
    if stat.S_ISDIR(info.st_mode):
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            problems.append(Problem(display_path(path), "symlink loop: leads back to a folder above it", "folder"))
            return None
        if key in visited:  # the same folder reached again through another symlink: index it once
            return None
        visited.add(key)
        return "dir"
    if not image:
        return None
    if not stat.S_ISREG(info.st_mode):
        problems.append(Problem(display_path(path), f"not a regular file ({file_kind(info.st_mode)})"))
        return None
    return info.st_size, info.st_mtime_ns


def _link_target(path: str) -> str:
    try:
        return display_path(os.readlink(path))
    except OSError:
        return "?"
