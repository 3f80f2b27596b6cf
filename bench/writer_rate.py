"""How many photos a second the one writer commits: the part of `glance index --ray` that stays on the driver.

Writes batches of synthetic photo rows (768-d vectors, 20 kB thumbnails) into a fresh index exactly as a batch
commit does (indexer/pipeline.py: the rows marked unfinished, then finished, then the version pair published;
a compaction every 50 batches), at the local pipeline's batch (32) and at the Ray driver's (256), side by side.

    python bench/writer_rate.py [--batches 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import store as st  # noqa: E402
from indexer.ray_index import COMMIT_BATCH  # noqa: E402
from indexer.rows import images_table, now  # noqa: E402
from models.device import cpu_name  # noqa: E402

DIM = 768


def rows(batch: int, size: int, rng) -> pa.Table:
    photos = [{"id": f"{batch}-{i}", "root": "/photos", "relpath": f"roll/{batch}-{i}.jpg", "relpath_bytes": None,
               "size": 3_000_000, "mtime_ns": 1, "sha256": os.urandom(32).hex(), "width": 4000, "height": 3000,
               "taken_at": None, "camera": "BenchCam", "has_caption": False, "thumb": os.urandom(20_000),
               "indexed_at": now()} for i in range(size)]
    return images_table(photos, rng.standard_normal((size, DIM)).astype(np.float32), DIM)


def photos_per_second(size: int, batches: int) -> float:
    folder = tempfile.mkdtemp(prefix="glance-writer-")
    try:
        store, rng = st.Store(folder), np.random.default_rng(0)
        store.create_tables(DIM)
        started = time.perf_counter()
        for k in range(batches):
            finished = rows(k, size, rng)
            column = finished.schema.get_field_index("mtime_ns")
            store.upsert_photos(finished.set_column(column, "mtime_ns", pa.nulls(size, pa.int64())))
            store.upsert_photos(finished)
            store.publish()
            if (k + 1) % 50 == 0:
                store.compact()
        return size * batches / (time.perf_counter() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    local = photos_per_second(32, args.batches * COMMIT_BATCH // 32)
    ray = photos_per_second(COMMIT_BATCH, args.batches)
    report = {"cpu": cpu_name(), "cores": os.cpu_count(), "local_batch_photos_per_s": round(local, 1),
              "ray_batch_photos_per_s": round(ray, 1), "ray_commit_batch": COMMIT_BATCH}
    if args.json:
        print(json.dumps(report))
        return
    print(f"one writer, {report['cpu']}, {report['cores']} cores: {local:.0f} photos/s in batches of 32, "
          f"{ray:.0f} photos/s in batches of {COMMIT_BATCH} (the Ray driver's)")


if __name__ == "__main__":
    main()
