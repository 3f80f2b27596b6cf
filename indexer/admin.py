"""`stats` and `remove`: look into an index, and take photos out of it (the files themselves are never touched)."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow.compute as pc

import store as st
from store import CAPTIONS, IMAGES, Store

from .lock import writer_lock
from .plan import inside


def stats(db: str | Path | None = None) -> dict:
    store = Store(db)
    if not store.exists():
        raise st.StoreError(f"no Glance index at {store.path} (build one with: python -m indexer PATH --db {store.path})")
    meta = store.meta()
    images, captions = store.table(IMAGES), store.table(CAPTIONS)
    rows = images.search().select(["root", "has_caption"]).limit(None).to_arrow()
    per_root = {r["values"]: r["counts"] for r in pc.value_counts(rows["root"]).to_pylist()} if rows.num_rows else {}
    caps = captions.search().select(["image_id", "source"]).limit(None).to_arrow()
    by_source = {r["values"]: r["counts"] for r in pc.value_counts(caps["source"]).to_pylist()} if caps.num_rows else {}
    vector_index = [ix.index_type for ix in images.list_indices() if ix.columns == ["vector"]]
    return {
        "db": str(store.path),
        "size_bytes": sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file()),
        "models": {key: meta.get(key) for key in st.MODEL_KEYS},
        "images": rows.num_rows,
        "images_with_captions": int(pc.sum(rows["has_caption"]).as_py() or 0) if rows.num_rows else 0,
        "roots": {root: per_root.get(root, 0) for root in sorted(set(meta.get(st.ROOTS) or []) | set(per_root))},
        "captions": caps.num_rows,
        "captions_by_source": dict(sorted(by_source.items())),
        "free_standing_texts": int(pc.sum(pc.equal(caps["image_id"], "")).as_py() or 0) if caps.num_rows else 0,
        "last_indexed": meta.get(st.LAST_INDEXED),
        "vector_index": vector_index[0] if vector_index else None,
        "vector_index_min_rows": st.VECTOR_INDEX_MIN_ROWS,
        "fts_index": any(ix.columns == ["text"] for ix in captions.list_indices()),
    }


def stats_text(s: dict) -> str:
    m = s["models"]
    lines = [
        f"index: {s['db']} ({s['size_bytes'] / 1e6:.1f} MB)",
        f"models: {m.get(st.VISION_MODEL)} + {m.get(st.TEXT_MODEL)} ({m.get(st.MODEL_VERSION)}, dim {m.get(st.DIM)}, "
        f"preprocessing v{m.get(st.PREPROCESS_VERSION_KEY)})",
        f"photos: {s['images']} ({s['images_with_captions']} with captions)",
        *(f"  {count:>8}  {root}" for root, count in s["roots"].items()),
        f"captions: {s['captions']}" + (" (" + ", ".join(f"{k} {v}" for k, v in s["captions_by_source"].items())
                                        + f"; {s['free_standing_texts']} free-standing)" if s["captions"] else ""),
        f"last indexed: {s['last_indexed'] or 'never'}",
        "vector index: " + (f"{s['vector_index']} (cosine)" if s["vector_index"] else
                            f"none, exact search (built automatically from {s['vector_index_min_rows']} photos)"),
        "full-text index on captions: " + ("yes" if s["fts_index"] else "no"),
    ]
    return "\n".join(lines)


def remove(paths: list[str], db: str | Path | None = None) -> dict:
    """Take every photo at or under each PATH out of the index (with its captions). PATH may no longer exist."""
    store = Store(db)
    if not store.exists():
        raise st.StoreError(f"no Glance index at {store.path}")
    removed, captions_removed, per_path = 0, 0, {}
    with writer_lock(store.path), store.lance_errors():
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
                    rel = st.display_name(os.path.relpath(target, root).replace(os.sep, "/"))
                    rows = store.rows_in_root(root, ["id", "relpath"])
                    mask = pc.or_(pc.equal(rows["relpath"], rel), pc.starts_with(rows["relpath"], rel + "/"))
                    ids += rows.filter(mask)["id"].to_pylist()
            captions_removed += store.delete_captions_of(ids)  # captions first: see pipeline.py
            count = store.delete_photos(ids)
            per_path[given] = count
            removed += count
        store.write_meta({st.ROOTS: sorted(kept_roots)})
        if removed:
            store.ensure_indexes()
        store.publish()
    return {"removed": removed, "captions_removed": captions_removed, "per_path": per_path, "db": str(store.path)}


def _absolute(given: str) -> str:
    """The path as the index knows it: symlinks resolved where it still exists, else as written."""
    path = os.path.abspath(os.path.expanduser(given))
    if os.path.exists(path):
        return os.path.realpath(path)
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent) and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return os.path.join(os.path.realpath(parent), os.path.relpath(path, parent))
