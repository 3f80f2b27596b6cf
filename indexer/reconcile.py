"""End-of-run repairs that make the captions table exactly what the disk and the captions files say.

Each function recomputes the desired state and applies the difference, so it is safe to run after a crash and
does nothing when nothing changed.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import store as st
from store import CAPTIONS, IMAGES, delete_in, image_id, sql_string, upsert

from .captions import read_sidecar
from .decode import display_path
from .plan import Roots, in_scopes, indexed_rows
from .rows import caption, captions_table
from .scan import Problem


def captions(store: st.Store, roots: Roots, sidecars: pa.Table, file_captions: dict | None, free_texts: list[str],
             embed: Callable[[list[str]], np.ndarray]) -> tuple[int, int, list[Problem]]:
    """Sidecar captions of the photos in the folders walked, and (when --captions was given) all file captions.
    Returns (captions added, captions removed, problems)."""
    table = store.table(CAPTIONS)
    problems: list[Problem] = []
    desired, existing = _sidecar_state(store, roots, sidecars, problems)
    if file_captions is not None:
        file_desired, file_existing = _file_state(store, file_captions, free_texts, problems)
        desired.update(file_desired)
        existing |= file_existing
    stale = sorted(existing - desired.keys())
    new = [row for key, row in sorted(desired.items()) if key not in existing]
    added = 0
    if new:
        vectors = embed([row["text"] for row in new])
        added = upsert(table, captions_table(new, vectors, int(store.meta()[st.DIM])))
    removed = delete_in(table, "id", stale)
    return added, removed, problems


def _sidecar_state(store, roots: Roots, sidecars: pa.Table, problems: list[Problem]) -> tuple[dict, set]:
    images = store.table(IMAGES)
    scope_ids = []
    for root in sorted({s.root for s in roots.scopes}):
        rows = indexed_rows(images, root, ["id", "relpath"])
        rows = rows.filter(in_scopes(rows["relpath"], [s for s in roots.scopes if s.root == root]))
        scope_ids.append(rows["id"].combine_chunks() if rows.num_rows else pa.array([], pa.string()))
    scope_ids = pa.concat_arrays(scope_ids) if scope_ids else pa.array([], pa.string())
    desired = {}
    if sidecars.num_rows:
        rows = sidecars.to_pylist()
        ids = pa.array([image_id(r["root"], r["relpath"]) for r in rows], pa.string())
        present = pc.is_in(ids, value_set=scope_ids).to_pylist()
        for row, iid, keep in zip(rows, ids.to_pylist(), present):
            if not keep:
                continue  # the photo itself failed or was skipped: no captions for it
            path = os.path.join(row["root"], row["sidecar"])
            try:
                text = read_sidecar(path)
            except OSError as exc:
                problems.append(Problem(display_path(path), f"cannot read caption sidecar: {exc.strerror or exc}",
                                        "caption"))
                continue
            if text:
                entry = caption(iid, st.SOURCE_SIDECAR, text)
                desired[entry["id"]] = entry
    current = _captions_where(store, f"source = {sql_string(st.SOURCE_SIDECAR)}")
    current = current.filter(pc.is_in(current["image_id"], value_set=scope_ids))
    return desired, set(current["id"].to_pylist())


def _file_state(store, file_captions: dict, free_texts: list[str], problems: list[Problem]) -> tuple[dict, set]:
    all_ids = _column(store.table(IMAGES), "id")
    keys = sorted(file_captions)
    ids = pa.array([image_id(root, relpath) for root, relpath in keys], pa.string())
    present = pc.is_in(ids, value_set=all_ids).to_pylist() if keys else []
    desired = {}
    for (root, relpath), iid, keep in zip(keys, ids.to_pylist(), present):
        if not keep:
            problems.append(Problem(display_path(os.path.join(root, relpath)),
                                    "captions file names a photo that is not in the index", "caption"))
            continue
        for text in file_captions[(root, relpath)]:
            entry = caption(iid, st.SOURCE_FILE, text)
            desired[entry["id"]] = entry
    for text in free_texts:  # free-standing texts (a label vocabulary): no image
        entry = caption("", st.SOURCE_FILE, text)
        desired[entry["id"]] = entry
    current = _captions_where(store, f"source = {sql_string(st.SOURCE_FILE)}")
    return desired, set(current["id"].to_pylist())


def sweep(store: st.Store) -> int:
    """Drop captions whose photo is gone (left by a kill between commits), then make has_caption agree with
    the captions table. Returns how many captions were dropped."""
    images, table = store.table(IMAGES), store.table(CAPTIONS)
    all_ids = _column(images, "id")
    linked = _captions_where(store, "image_id != ''")
    orphans = linked.filter(pc.invert(pc.is_in(linked["image_id"], value_set=all_ids)))
    removed = delete_in(table, "id", orphans["id"].to_pylist())
    with_caption = pc.unique(linked.filter(pc.is_in(linked["image_id"], value_set=all_ids))["image_id"])
    flags = images.search().select(["id", "has_caption"]).limit(None).to_arrow()
    expected = pc.is_in(flags["id"], value_set=with_caption)
    wrong = flags.filter(pc.not_equal(pc.fill_null(flags["has_caption"], False), expected))
    for value in (True, False):
        ids = wrong.filter(pc.equal(pc.is_in(wrong["id"], value_set=with_caption), value))["id"].to_pylist()
        for start in range(0, len(ids), 500):
            images.update(where=st.sql_in("id", ids[start:start + 500]), values={"has_caption": value})
    return removed


def _captions_where(store, where: str) -> pa.Table:
    return store.table(CAPTIONS).search().where(where).select(["id", "image_id"]).limit(None).to_arrow()


def _column(table, name: str) -> pa.Array:
    values = table.search().select([name]).limit(None).to_arrow()[name]
    return values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
