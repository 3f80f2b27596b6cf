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
from store import image_id

from .captions import read_sidecar
from .decode import display_path
from .plan import Roots, in_scopes
from .rows import caption, captions_table
from .scan import Problem


def captions(store: st.Store, roots: Roots, files: pa.Table, file_captions: dict | None, free_texts: list[str],
             embed: Callable[[list[str]], np.ndarray], storage_options: dict | None = None
             ) -> tuple[int, int, list[Problem]]:
    """Sidecar captions of the photos in the folders walked (`files`: the scan), and (when --captions was given)
    all file captions. Returns (captions added, captions removed, problems). `storage_options`: for sidecars in
    bucket roots (core/location.py)."""
    problems: list[Problem] = []
    desired, existing = _sidecar_state(store, roots, files, problems, storage_options)
    if file_captions is not None:
        file_desired, file_existing = _file_state(store, file_captions, free_texts, problems)
        desired.update(file_desired)
        existing |= file_existing
    stale = sorted(existing - desired.keys())
    new = [row for key, row in sorted(desired.items()) if key not in existing]
    added = 0
    if new:
        vectors = embed([row["text"] for row in new])
        added = store.upsert_captions(captions_table(new, vectors, int(store.meta()[st.DIM])))
    removed = store.delete_captions(stale)
    return added, removed, problems


def _sidecar_state(store, roots: Roots, files: pa.Table, problems: list[Problem],
                   storage_options: dict | None = None) -> tuple[dict, set]:
    scope_ids = []
    for root in sorted({s.root for s in roots.scopes}):
        rows = store.rows_in_root(root, ["id", "relpath"])
        rows = rows.filter(in_scopes(rows["relpath"], [s for s in roots.scopes if s.root == root]))
        scope_ids.append(rows["id"].combine_chunks() if rows.num_rows else pa.array([], pa.string()))
    scope_ids = pa.concat_arrays(scope_ids) if scope_ids else pa.array([], pa.string())
    desired = {}
    with_sidecars = files.filter(pc.greater(pc.list_value_length(files["sidecars"]), 0))
    present = pc.is_in(with_sidecars["id"], value_set=scope_ids)
    for row in with_sidecars.filter(present).select(["id", "root", "sidecars"]).to_pylist():
        for sidecar in row["sidecars"]:  # a photo that failed or was skipped has no row: no captions for it
            path = os.path.join(row["root"], os.fsdecode(sidecar))
            try:
                text = read_sidecar(path, storage_options)
            except OSError as exc:
                problems.append(Problem(display_path(path), f"cannot read caption sidecar: {exc.strerror or exc}",
                                        "caption"))
                continue
            if text:
                entry = caption(row["id"], st.SOURCE_SIDECAR, text)
                desired[entry["id"]] = entry
    current = store.captions_from(st.SOURCE_SIDECAR)
    current = current.filter(pc.is_in(current["image_id"], value_set=scope_ids))
    return desired, set(current["id"].to_pylist())


def _file_state(store, file_captions: dict, free_texts: list[str], problems: list[Problem]) -> tuple[dict, set]:
    all_ids = store.photo_ids()
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
    current = store.captions_from(st.SOURCE_FILE)
    return desired, set(current["id"].to_pylist())


def sweep(store: st.Store) -> int:
    """Drop captions whose photo is gone (left by a kill between commits), then make has_caption agree with
    the captions table. Returns how many captions were dropped."""
    all_ids = store.photo_ids()
    linked = store.photo_captions()
    orphans = linked.filter(pc.invert(pc.is_in(linked["image_id"], value_set=all_ids)))
    removed = store.delete_captions(orphans["id"].to_pylist())
    with_caption = pc.unique(linked.filter(pc.is_in(linked["image_id"], value_set=all_ids))["image_id"])
    flags = store.caption_flags()
    expected = pc.is_in(flags["id"], value_set=with_caption)
    wrong = flags.filter(pc.not_equal(pc.fill_null(flags["has_caption"], False), expected))
    for value in (True, False):
        ids = wrong.filter(pc.equal(pc.is_in(wrong["id"], value_set=with_caption), value))["id"].to_pylist()
        store.set_has_caption(ids, value)
    return removed
