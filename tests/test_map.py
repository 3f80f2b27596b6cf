"""The map of the collection (indexer/collection_map.py): made after indexing, UMAP from 500 photos on and PCA
below, kept in the index, made again only once the library has changed by more than a tenth; read back by the
engine, `glance map` and /map with similar photos near each other."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import store.reading as store_reading
from indexer import collection_map
from search.browser import Browser
from search.engine import Engine
from store import Store, images_schema
from tests.test_eval import unit_rows, write_index

CLUSTERS, PHOTOS, DIM = 6, 600, 64


def spread(points: dict[str, tuple[float, float]], groups: list[list[str]]) -> tuple[float, float]:
    """(mean distance within a group, mean distance between group centres)."""
    centres = [np.mean([points[i] for i in g], axis=0) for g in groups]
    within = np.mean([np.linalg.norm(np.subtract(points[i], centres[k])) for k, g in enumerate(groups) for i in g])
    between = np.mean([np.linalg.norm(a - b) for n, a in enumerate(centres) for b in centres[n + 1:]])
    return float(within), float(between)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(CLUSTERS, DIM))
    photos = unit_rows(centres[np.arange(PHOTOS) % CLUSTERS] + 0.6 * rng.normal(size=(PHOTOS, DIM)))
    db = tmp_path_factory.mktemp("map") / "index"
    return write_index(db, photos, []), photos


def add_photos(store: Store, vectors: np.ndarray, first: int) -> None:
    with store.writing():
        store.upsert_photos(pa.Table.from_pylist(
            [{"id": f"p{first + i}", "root": "/library", "relpath": f"{first + i}.jpg", "has_caption": False,
              "vector": v.tolist()} for i, v in enumerate(vectors)], schema=images_schema(DIM)))
        store.publish()


def test_a_large_library_gets_a_umap_that_keeps_clusters_apart(clustered):
    store, photos = clustered
    assert collection_map.refresh(store) == f"map of the collection: UMAP over {PHOTOS:,} photos"
    table, info = store.read_map()
    assert info == {"method": "UMAP", "photos": PHOTOS} and table.num_rows == PHOTOS
    xy = dict(zip(table["id"].to_pylist(), zip(table["x"].to_pylist(), table["y"].to_pylist())))
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in xy.values())
    groups = [[f"p{i}" for i in range(k, PHOTOS, CLUSTERS)] for k in range(CLUSTERS)]
    within, between = spread(xy, groups)
    assert within < 0.25 * between
    assert collection_map.refresh(store, changed=False) is None  # nothing changed: kept


def test_it_is_made_again_only_after_a_tenth_changed(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    photos = unit_rows(rng.normal(size=(100, DIM)))
    store = write_index(tmp_path / "index", photos, [])
    assert collection_map.refresh(store) == "map of the collection: PCA over 100 photos"  # small: PCA
    add_photos(store, unit_rows(rng.normal(size=(10, DIM))), 100)
    assert collection_map.refresh(store) is None  # 10 of 100: not yet
    on_map = Browser(Store(tmp_path / "index")).collection_map()  # a reader opened now sees the new photos
    assert (on_map.mapped, on_map.unmapped, len(on_map.points)) == (100, 10, 100)
    reader = Browser(Store(tmp_path / "index"))  # a long-lived reader, as the page's: its answer is kept
    assert reader.collection_map() == reader.collection_map() and reader.collection_map().unmapped == 10
    add_photos(store, unit_rows(rng.normal(size=(1, DIM))), 110)
    assert collection_map.refresh(store) == "map of the collection: PCA over 111 photos"
    monkeypatch.setattr(store_reading, "PAIR_TTL_S", 0.0)
    assert reader.collection_map().unmapped == 0 and reader.collection_map().mapped == 111  # a new snapshot


def test_the_indexer_maps_the_library_and_bursts_sit_together(bursts, tiny_encoders):
    root, db, expected, lone = bursts
    done = subprocess.run([sys.executable, "-m", "glance", "map", "--db", str(db), "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["method"] == "PCA" and answer["unmapped"] == 0
    by_relpath = {p["file"][len(str(root)) + 1:]: (p["x"], p["y"]) for p in answer["points"]}
    assert set(by_relpath) == set().union(*expected.values(), *lone.values())
    within, between = spread(by_relpath, [sorted(names) for names in expected.values()])
    assert within < between
    folder = Engine(db, precision="fp32").collection_map(filters=None)
    assert len(folder.points) == len(by_relpath) and folder.method == "PCA"
