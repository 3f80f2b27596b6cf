"""What each kind of vector index costs: IVF_FLAT, IVF_SQ and IVF_PQ side by side in LanceDB, in one run.

It builds one LanceDB table of clustered, L2-normalized 768-d vectors, then for each kind builds the index
exactly as `glance index --vector-index KIND` does (store/vector_index.py: the same config, num_sub_vectors and
search tuning: nprobes, refine for the quantized kinds) and measures on this machine:
  - build time, and the index's size on disk as LanceDB reports it (bytes per photo, and per float32 vector),
  - the median time of one top-k query through the index, beside LanceDB's exact scan of every vector,
  - recall@k against the exact top k (numpy brute force over the same vectors).

Two kinds of data (--data): `skewed` (default) puts most of each photo's spread around its cluster in a few
directions, with the variance of component i falling as 1 / (1 + i / 16), as learned embeddings concentrate
theirs; `isotropic` is bench/vector_index_threshold.py's noise, equally strong in all 768 directions, the hardest
case for quantization (product quantization sees pure noise in every sub-vector).

Run from the repo root:
    python bench/vector_index_kinds.py                    # 20k vectors, flat / sq / pq (~1 minute on 2 cores)
    python bench/vector_index_kinds.py --rows 50000       # ~4 minutes: training PQ's codebooks takes 3 of them
    python bench/vector_index_kinds.py --data isotropic --json
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store.vector_index import bytes_per_photo, index_config, kind_name, tune, vector_index_of  # noqa: E402

CLUSTERS = 256


def vectors(n: int, dim: int, data: str, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """Photos around CLUSTERS centres: isotropic noise, or noise whose variance falls off with the component (in a
    random basis, so no sub-vector is special)."""
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    if data == "skewed":
        scale = (1 / np.sqrt(1 + np.arange(dim) / 16)).astype(np.float32)
        noise = (noise * scale * np.sqrt(dim / np.sum(scale ** 2))) @ rotation(dim, rng)
    points = centres[rng.integers(0, len(centres), n)] + 0.6 * noise
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q.astype(np.float32)


def exact_top(photos: np.ndarray, queries: np.ndarray, k: int) -> list[set]:
    scores = queries @ photos.T
    return [set(np.argpartition(-row, k)[:k].tolist()) for row in scores]


def timed_queries(table, queries: np.ndarray, k: int, index_type: str | None) -> tuple[float, list[set]]:
    """Median ms of one query, and each query's top k ids: through the index, or exact (index_type None)."""
    def ask(q):
        query = table.search(q).distance_type("cosine")
        query = query.bypass_vector_index() if index_type is None else tune(query, index_type, k, table.count_rows())
        return query.limit(k).select(["id"]).to_arrow()

    ask(queries[0])  # the first query opens the index files
    times, answers = [], []
    for q in queries:
        started = time.perf_counter()
        hits = ask(q)
        times.append(time.perf_counter() - started)
        answers.append(set(hits["id"].to_pylist()))
    return float(np.median(times) * 1000), answers


def recall(answers: list[set], truth: list[set], k: int) -> float:
    return float(np.mean([len(a & t) / k for a, t in zip(answers, truth)]))


def measure_kind(table, kind: str, dim: int, queries: np.ndarray, truth: list[set], k: int) -> dict:
    started = time.perf_counter()
    table.create_index("vector", config=index_config(kind, dim, table.count_rows()), replace=True)
    build_s = time.perf_counter() - started
    listed = vector_index_of(table)
    ms, answers = timed_queries(table, queries, k, listed.index_type)
    rows = table.count_rows()
    return {"kind": kind_name(listed.index_type), "build_s": round(build_s, 1), "ms_per_query": round(ms, 2),
            f"recall@{k}": round(recall(answers, truth, k), 3), "bytes_per_photo": bytes_per_photo(listed, dim),
            "index_bytes_per_photo": round(listed.size_bytes / rows, 1),
            "index_MB": round(listed.size_bytes / 1e6, 1)}


def run(rows: int, dim: int, n_queries: int, k: int, kinds: list[str], data: str, folder: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    photos = vectors(rows, dim, data, rng, centres)
    queries = vectors(n_queries, dim, data, rng, centres)
    truth = exact_top(photos, queries, k)
    column = pa.FixedSizeListArray.from_arrays(pa.array(photos.reshape(-1)), dim)
    table = lancedb.connect(str(folder)).create_table("images", pa.table({"id": pa.array(np.arange(rows)), "vector": column}))
    ms, answers = timed_queries(table, queries, k, None)
    results = [{"kind": "float32 exact", "build_s": 0.0, "ms_per_query": round(ms, 2),
                f"recall@{k}": round(recall(answers, truth, k), 3), "bytes_per_photo": 4 * dim,
                "index_bytes_per_photo": 0.0, "index_MB": 0.0}]
    for kind in kinds:
        results.append(measure_kind(table, kind, dim, queries, truth, k))
    for row in results:  # the ratios the table is read for
        row["bytes_vs_float32"] = round(row["bytes_per_photo"] / (4 * dim), 3)
        row["ms_vs_exact"] = round(row["ms_per_query"] / results[0]["ms_per_query"], 3)
    return results


def table_text(results: list[dict]) -> str:
    keys = list(results[0])
    widths = [max(len(key), *(len(str(r[key])) for r in results)) for key in keys]
    lines = ["  ".join(key.rjust(w) for key, w in zip(keys, widths))]
    lines += ["  ".join(str(r[key]).rjust(w) for key, w in zip(keys, widths)) for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("-k", type=int, default=10, help="results per query (recall@k)")
    parser.add_argument("--kinds", nargs="+", default=["flat", "sq", "pq"], choices=("flat", "sq", "pq"))
    parser.add_argument("--data", default="skewed", choices=("skewed", "isotropic"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.rows, args.dim, args.queries, args.k, args.kinds, args.data, Path(tmp))
    if args.json:
        print(json.dumps({"rows": args.rows, "dim": args.dim, "data": args.data, "results": results}))
    else:
        print(f"{args.rows} vectors of dim {args.dim} ({args.data}), {args.queries} queries, top {args.k}")
        print(table_text(results))


if __name__ == "__main__":
    main()
