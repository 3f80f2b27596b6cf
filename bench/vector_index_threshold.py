"""Where does a vector index start to pay off? Exact (unindexed) vs IVF_FLAT cosine search in LanceDB.

For each table size N it builds a LanceDB table of clustered, L2-normalized 768-d vectors (uniform random
vectors make every index look bad, see docs/install.md), then measures on this machine:
  - exact search latency (no index: LanceDB scans every vector),
  - IVF_FLAT (cosine) build time, indexed search latency, and recall@k against the exact answer.
The indexer builds the index once the table reaches `store.VECTOR_INDEX_MIN_ROWS`; this script is how
that number was chosen: the smallest size where exact search gets slow enough for a person to notice
(about 100 ms) while the index answers several times faster with recall near 1.

Run from the repo root:
    python bench/vector_index_threshold.py                     # sizes 2k..100k (a few minutes on 2 cores)
    python bench/vector_index_threshold.py --sizes 5000 20000 --queries 10
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import IvfFlat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, clusters: int = 256) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def latency(table, queries: np.ndarray, k: int) -> tuple[float, list[set]]:
    table.search(queries[0]).distance_type("cosine").limit(k).to_arrow()  # warm caches
    answers, start = [], time.perf_counter()
    for q in queries:
        hits = table.search(q).distance_type("cosine").limit(k).select(["id", "_distance"]).to_arrow()
        answers.append(set(hits["id"].to_pylist()))
    return (time.perf_counter() - start) / len(queries), answers


def measure(n: int, dim: int, n_queries: int, k: int, folder: Path) -> dict:
    rng = np.random.default_rng(n)
    vectors = clustered_vectors(n, dim, rng)
    data = pa.table({"id": pa.array(np.arange(n)),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)})
    table = lancedb.connect(str(folder)).create_table(f"t{n}", data)
    queries = clustered_vectors(n_queries, dim, rng)
    exact_s, exact = latency(table, queries, k)
    start = time.perf_counter()
    table.create_index("vector", config=IvfFlat(distance_type="cosine"))
    build_s = time.perf_counter() - start
    indexed_s, approx = latency(table, queries, k)
    recall = float(np.mean([len(a & e) / k for a, e in zip(approx, exact)]))
    return {"rows": n, "exact_ms": round(exact_s * 1000, 1), "ivf_flat_ms": round(indexed_s * 1000, 1),
            "build_s": round(build_s, 2), f"recall@{k}": round(recall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000, 50000, 100000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("-k", type=int, default=50, help="results per query (a page of the UI)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            rows.append(measure(n, args.dim, args.queries, args.k, Path(tmp)))
            if not args.json:
                print("  ".join(f"{key}={value}" for key, value in rows[-1].items()), flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
