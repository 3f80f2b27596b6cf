"""Before any photo is opened: which roots the folders belong to, and what changed since the last run.

Change detection compares the walk with the index as two Arrow tables (matched on the row id, which is never
null and hashes the name's raw bytes), so a re-run over a large unchanged library costs one stat per file and no
Python object per row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from core import location
from core.errors import UsageError
from store import Store, display_name

from .scan import Scan, Scope, is_utf8

INDEXED_COLUMNS = ["id", "relpath", "size", "mtime_ns", "sha256"]
TODO_COLUMNS = ["id", "root", "relpath", "relpath_bytes", "size", "mtime_ns", "sidecars", "old_id", "old_sha"]


@dataclass
class Roots:
    scopes: list[Scope]  # folders to walk, each inside its root
    added: list[str]  # roots new to the index
    absorbed: list[str]  # known roots inside a new root: their rows move to the enclosing root

    def all(self, known: list[str]) -> list[str]:
        return sorted(r for r in {*known, *self.added} if r not in self.absorbed)


@dataclass
class Plan:
    todo: pa.Table  # TODO_COLUMNS: files to read, sorted by (root, relpath)
    unchanged: int  # same size and mtime: skipped without opening
    vanished: list[str]  # ids of indexed rows in scope that are no longer on disk
    held: dict[Scope, int]  # photos the index holds in each scope (absorbed roots included)


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan_roots(paths: list[str], known_roots: list[str], storage_options: dict | None = None) -> Roots:
    """Each folder joins the outermost known root that holds it, so rows never get two ids; a folder holding
    known roots becomes the new root of their rows (found again through their content hash: nothing re-embedded).
    A folder may be an object-storage prefix (`s3://bucket/prefix`): its root is the normalized URI."""
    folders = []
    for given in paths:
        real = folder_of(given, storage_options)
        folders.append(real)
    folders = sorted(f for f in set(folders) if not any(f != g and inside(f, g) for g in folders))
    scopes, added = [], []
    for folder in folders:
        holders = [r for r in known_roots if inside(folder, r)]
        if holders:
            root = min(holders, key=len)
            scopes.append(Scope(root, relative_to(folder, root) if folder != root else ""))
        elif not is_utf8(folder):  # the root column is text; names below a root may be anything
            raise UsageError(f"folder path is not valid UTF-8: {display_name(folder)} (index a folder above it)")
        else:
            scopes.append(Scope(folder, ""))
            added.append(folder)
    absorbed = [r for r in known_roots if r not in added and any(inside(r, f) and r != s.root
                                                                  for s in scopes for f in [s.folder])]
    return Roots(scopes, added, absorbed)


def folder_of(given: str, storage_options: dict | None = None) -> str:
    """A PATH argument as the index records it: symlinks resolved, or the normalized URI. Checks that it is a
    folder; a bucket that refuses us or cannot be reached stops the run here, before anything is written."""
    if location.is_uri(given):
        uri = location.normalize(given)
        found = location.kind(uri, storage_options)
        if found is None:
            raise UsageError(f"no such folder: {location.display(given)} (nothing stored under that prefix)")
        if found == "file":
            raise UsageError(f"not a folder: {location.display(given)} (give the prefix that holds it)")
        return uri
    real = os.path.realpath(os.path.expanduser(given))
    if not os.path.exists(real):
        raise UsageError(f"no such folder: {given}")
    if not os.path.isdir(real):
        raise UsageError(f"not a folder: {given} (give the folder that holds it)")
    return real


def relative_to(folder: str, root: str) -> str:
    """`folder` (at or below `root`) relative to it, POSIX: a key's tail for a bucket root, relpath on disk."""
    if location.is_uri(root):
        return folder[len(root.rstrip("/")) + 1:]
    return os.path.relpath(folder, root).replace(os.sep, "/")


def in_scopes(relpaths: pa.ChunkedArray, scopes: list[Scope]) -> pa.ChunkedArray:
    if any(not s.prefix for s in scopes):
        return pc.is_valid(relpaths)
    masks = [pc.starts_with(relpaths, display_name(s.prefix) + "/") for s in scopes]
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.or_(mask, other)
    return mask


def classify(store: Store, roots: Roots, found: Scan) -> Plan:
    """Split the walk into unchanged / to read, and list the indexed rows that vanished."""
    todo_parts, vanished, unchanged, held, files = [], [], 0, {}, found.files
    for root in sorted({s.root for s in roots.scopes}):
        scopes = [s for s in roots.scopes if s.root == root]
        scanned = files.filter(pc.equal(files["root"], root))
        indexed = store.rows_in_root(root, INDEXED_COLUMNS)
        for scope in scopes:
            held[scope] = pc.sum(in_scopes(indexed["relpath"], [scope])).as_py() or 0
        indexed = indexed.filter(in_scopes(indexed["relpath"], scopes))
        # each scanned file's indexed row (a left join by id; null where the file is new)
        old = indexed.take(pc.index_in(scanned["id"], value_set=indexed["id"]))
        same = pc.fill_null(pc.and_(pc.equal(scanned["size"], old["size"]),
                                    pc.equal(scanned["mtime_ns"], old["mtime_ns"])), False)
        unchanged += pc.sum(same).as_py() or 0
        joined = scanned.append_column("old_id", old["id"]).append_column("old_sha", old["sha256"])
        todo_parts.append(joined.filter(pc.invert(same)).select(TODO_COLUMNS))
        gone = indexed.filter(pc.invert(pc.is_in(indexed["id"], value_set=scanned["id"])))
        for unlisted_root, prefix in found.unlisted_below:  # unseen is not gone
            if unlisted_root == root:
                gone = gone.filter(pc.invert(pc.starts_with(gone["relpath"], prefix)))
        vanished += gone["id"].to_pylist()
    for root in roots.absorbed:  # every row of an absorbed root is re-keyed under its new root
        ids = store.rows_in_root(root, ["id"])["id"].to_pylist()
        vanished += ids
        for scope in roots.scopes:
            if inside(root, scope.folder):
                held[scope] = held.get(scope, 0) + len(ids)
    todo = pa.concat_tables(todo_parts) if todo_parts else _empty_todo(files.schema)
    todo = todo.sort_by([("root", "ascending"), ("relpath", "ascending")])
    return Plan(todo, unchanged, sorted(vanished), held)


def refuse_emptied(plan: Plan, found: Scan) -> None:
    """A folder that is now empty or unreadable while the index holds photos from it is most likely a drive
    that is not mounted: refuse, rather than take every photo out of the index (--prune does)."""
    for scope, held in plan.held.items():
        if not held:
            continue
        folder = display_name(scope.folder)
        advice = "is the drive mounted? If the photos are really gone, add --prune"
        if scope in found.unlisted:
            raise UsageError(f"cannot list {folder} ({found.unlisted[scope]}) but the index holds {held} photos "
                             f"from it; {advice}")
        if not found.found.get(scope):
            raise UsageError(f"{folder} is empty but the index holds {held} photos from it; {advice}")


def _empty_todo(files_schema: pa.Schema) -> pa.Table:
    schema = pa.schema([*files_schema, ("old_id", pa.string()), ("old_sha", pa.string())])
    return schema.empty_table().select(TODO_COLUMNS)
