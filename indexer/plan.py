"""Before any photo is opened: which roots the folders belong to, and what changed since the last run.

Change detection compares the walk with the index as two Arrow tables (a join on relpath), so a re-run over a
large unchanged library costs one stat per file and no Python object per row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from core.errors import UsageError
from store import sql_string

from .scan import Scope, is_utf8

INDEXED_COLUMNS = ["id", "relpath", "size", "mtime_ns", "sha256"]


@dataclass
class Roots:
    scopes: list[Scope]  # folders to walk, each inside its root
    added: list[str]  # roots new to the index
    absorbed: list[str]  # known roots inside a new root: their rows move to the enclosing root

    def all(self, known: list[str]) -> list[str]:
        return sorted(r for r in {*known, *self.added} if r not in self.absorbed)


@dataclass
class Plan:
    todo: pa.Table  # root, relpath, size, mtime_ns, old_id, old_sha: files to read, sorted by (root, relpath)
    unchanged: int  # same size and mtime: skipped without opening
    vanished: list[str]  # ids of indexed rows in scope that are no longer on disk


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan_roots(paths: list[str], known_roots: list[str]) -> Roots:
    """Each folder joins the outermost known root that holds it, so rows never get two ids; a folder holding
    known roots becomes the new root of their rows (found again through their content hash: nothing re-embedded)."""
    folders = []
    for given in paths:
        real = os.path.realpath(os.path.expanduser(given))
        if not os.path.exists(real):
            raise UsageError(f"no such folder: {given}")
        if not os.path.isdir(real):
            raise UsageError(f"not a folder: {given} (give the folder that holds it)")
        if not is_utf8(real):
            raise UsageError(f"folder path is not valid UTF-8: {os.fsencode(real).decode('utf-8', 'backslashreplace')}")
        folders.append(real)
    folders = sorted(f for f in set(folders) if not any(f != g and inside(f, g) for g in folders))
    scopes, added = [], []
    for folder in folders:
        holders = [r for r in known_roots if inside(folder, r)]
        if holders:
            root = min(holders, key=len)
            scopes.append(Scope(root, os.path.relpath(folder, root).replace(os.sep, "/") if folder != root else ""))
        else:
            scopes.append(Scope(folder, ""))
            added.append(folder)
    absorbed = [r for r in known_roots if r not in added and any(inside(r, f) and r != s.root
                                                                  for s in scopes for f in [s.folder])]
    return Roots(scopes, added, absorbed)


def indexed_rows(images, root: str, columns=INDEXED_COLUMNS) -> pa.Table:
    return images.search().where(f"root = {sql_string(root)}").select(columns).limit(None).to_arrow()


def in_scopes(relpaths: pa.ChunkedArray, scopes: list[Scope]) -> pa.ChunkedArray:
    if any(not s.prefix for s in scopes):
        return pc.is_valid(relpaths)
    masks = [pc.starts_with(relpaths, s.prefix + "/") for s in scopes]
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.or_(mask, other)
    return mask


def classify(images, roots: Roots, files: pa.Table) -> Plan:
    """Split the walk into unchanged / to read, and list the indexed rows that vanished."""
    todo_parts, vanished, unchanged = [], [], 0
    for root in sorted({s.root for s in roots.scopes}):
        scopes = [s for s in roots.scopes if s.root == root]
        scanned = files.filter(pc.equal(files["root"], root))
        indexed = indexed_rows(images, root) if images is not None else _empty_indexed()
        indexed = indexed.filter(in_scopes(indexed["relpath"], scopes))
        old = indexed.rename_columns(["old_id", "relpath", "old_size", "old_mtime", "old_sha"])
        joined = scanned.join(old, keys="relpath", join_type="left outer")
        same = pc.fill_null(pc.and_(pc.equal(joined["size"], joined["old_size"]),
                                    pc.equal(joined["mtime_ns"], joined["old_mtime"])), False)
        unchanged += pc.sum(same).as_py() or 0
        todo_parts.append(joined.filter(pc.invert(same)).select(
            ["root", "relpath", "size", "mtime_ns", "old_id", "old_sha"]))
        gone = indexed.join(scanned.select(["relpath"]), keys="relpath", join_type="left anti")
        vanished += gone["id"].to_pylist()
    for root in roots.absorbed:  # every row of an absorbed root is re-keyed under its new root
        if images is not None:
            vanished += indexed_rows(images, root, ["id"])["id"].to_pylist()
    todo = pa.concat_tables(todo_parts) if todo_parts else _empty_todo()
    todo = todo.sort_by([("root", "ascending"), ("relpath", "ascending")])
    return Plan(todo, unchanged, sorted(vanished))


def _empty_indexed() -> pa.Table:
    return pa.table({"id": pa.array([], pa.string()), "relpath": pa.array([], pa.string()),
                     "size": pa.array([], pa.int64()), "mtime_ns": pa.array([], pa.int64()),
                     "sha256": pa.array([], pa.string())})


def _empty_todo() -> pa.Table:
    return pa.table({"root": pa.array([], pa.string()), "relpath": pa.array([], pa.string()),
                     "size": pa.array([], pa.int64()), "mtime_ns": pa.array([], pa.int64()),
                     "old_id": pa.array([], pa.string()), "old_sha": pa.array([], pa.string())})
