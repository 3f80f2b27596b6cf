"""`remove`: take photos out of an index (the files themselves are never touched)."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow.compute as pc

import store as st
from core import location
from store import Store

from .plan import inside, relative_to


def remove(paths: list[str], db: str | Path | None = None, storage_options: dict | None = None) -> dict:
    """Take every photo at or under each PATH out of the index (with its captions). PATH may no longer exist;
    it may be an object-storage URI (`s3://bucket/prefix/photo.jpg`), as the index records bucket roots."""
    store = Store(db, storage_options=storage_options)
    if not store.exists():
        raise st.StoreError(st.no_index_message(store.path))
    removed, captions_removed, per_path = 0, 0, {}
    with store.writing(), store.lance_errors():
        meta = store.meta()
        roots = sorted(set(meta.get(st.ROOTS) or []) | set(store.indexed_roots()))
        kept_roots = list(meta.get(st.ROOTS) or [])
        for given in paths:
            target = _absolute(given)
            ids = []
            for root in roots:
                if inside(root, target):  # the whole root goes, and stops being a root
                    ids += store.rows_in_root(root, ["id"])["id"].to_pylist()
                    kept_roots = [r for r in kept_roots if r != root]
                elif inside(target, root):
                    rel = st.display_name(relative_to(target, root))
                    rows = store.rows_in_root(root, ["id", "relpath"])
                    mask = pc.or_(pc.equal(rows["relpath"], rel), pc.starts_with(rows["relpath"], rel + "/"))
                    ids += rows.filter(mask)["id"].to_pylist()
            captions_removed += store.delete_captions_of(ids)  # captions first: see pipeline.py
            count = store.delete_photos(ids)
            per_path[st.display_name(given)] = count  # as people read it: odd bytes as \xNN
            removed += count
        store.write_meta({st.ROOTS: sorted(kept_roots)})
        if removed:
            store.ensure_indexes()
        store.publish()
    return {"removed": removed, "captions_removed": captions_removed, "per_path": per_path, "db": store.shown()}


def _absolute(given: str) -> str:
    """The path as the index knows it: symlinks resolved where it still exists, else as written."""
    if location.is_uri(given):
        return location.normalize(given)
    path = os.path.abspath(os.path.expanduser(given))
    if os.path.exists(path):
        return os.path.realpath(path)
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent) and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return os.path.join(os.path.realpath(parent), os.path.relpath(path, parent))
