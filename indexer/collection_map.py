"""The map of the collection: every photo's vector projected to 2-D, so that the page can draw the library as a
scatter where similar photos sit together (search/engine.py `map`, the page's Map tab, /map, `glance map`).

It is computed after indexing and kept in the index (store/extras.py, map.arrow), and computed again only when
the library has changed by more than REFRESH_SHARE since: photos added or gone, counted against the photos on the
map. Photos indexed since then are left off the map until it is computed again; the map says how many.

The projection is UMAP (umap-learn: cosine distance, 15 neighbours, a fixed seed) from UMAP_MIN_PHOTOS photos on,
and PCA below that or where umap-learn is not installed: UMAP's neighbour graph means little for a few hundred
points, and PCA costs nothing. Coordinates are scaled into [0, 1] on both axes.

    refresh(store, changed, force=False) -> a line for the run's summary, or None when the map was still fresh
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from store import vector_matrix

REFRESH_SHARE = 0.10
UMAP_MIN_PHOTOS = 500
MIN_PHOTOS = 3  # fewer make no map
UMAP_NEIGHBOURS = 15
SEED = 0


def refresh(store, changed: bool = True, force: bool = False) -> str | None:
    """Compute the map again where it is missing or stale (`changed`: this run added, updated or removed photos;
    an unchanged run only makes a map that is missing)."""
    current = store.read_map()
    if not force and not changed and current is not None:
        return None
    ids = store.latest_photo_columns(["id"])["id"].to_pylist()
    if len(ids) < MIN_PHOTOS:
        return None
    if not force and not stale(current, ids):
        return None
    table = store.latest_photo_columns(["id", "vector"])
    xy, method = project(vector_matrix(table["vector"]))
    store.write_map(pa.table({"id": table["id"], "x": pa.array(xy[:, 0], pa.float32()),
                              "y": pa.array(xy[:, 1], pa.float32())}), {"method": method, "photos": len(ids)})
    return f"map of the collection: {method} over {len(ids):,} photos"


def stale(current: tuple[pa.Table, dict] | None, ids: list[str]) -> bool:
    """No map yet, or more than REFRESH_SHARE of the photos came or went since it was made."""
    if current is None:
        return True
    mapped = set(current[0]["id"].to_pylist())
    changed = len(mapped.symmetric_difference(ids))
    return changed > REFRESH_SHARE * max(len(mapped), 1)


def project(vectors: np.ndarray) -> tuple[np.ndarray, str]:
    """[N, dim] unit vectors -> ([N, 2] in [0, 1], "UMAP" | "PCA")."""
    method = "PCA"
    if len(vectors) >= UMAP_MIN_PHOTOS:
        try:
            import umap  # umap-learn: numba compiles its kernels on first use (seconds, once per process)
        except ImportError:
            umap = None
        if umap is not None:
            reducer = umap.UMAP(n_components=2, n_neighbors=UMAP_NEIGHBOURS, metric="cosine", random_state=SEED,
                                low_memory=True, n_jobs=1)  # a seed makes it single-threaded anyway
            xy, method = reducer.fit_transform(vectors), "UMAP"
    if method == "PCA":
        centred = vectors - vectors.mean(axis=0)
        _, _, axes = np.linalg.svd(centred, full_matrices=False)  # the two directions of widest spread
        xy = centred @ axes[:2].T
    return _unit_square(np.asarray(xy, np.float64)), method


def _unit_square(xy: np.ndarray) -> np.ndarray:
    low, span = xy.min(axis=0), np.ptp(xy, axis=0)
    return ((xy - low) / np.where(span > 0, span, 1.0)).astype(np.float32)
