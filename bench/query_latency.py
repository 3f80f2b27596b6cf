"""Search latency on this CPU: text-query embedding, the vector index Glance builds, and the engine end to end.

For each size N (default 100,000 and 1,000,000) it writes N clustered 768-d unit vectors (1,000 gaussian
clusters: every vector is normalize(centre + noise), within-cluster cosine ~0.5, like photo embeddings
with near-duplicates and themes) into a LanceDB table with Glance's images schema, in chunks, to a
temporary folder deleted at the end (or `--cache DIR`: generated once, reused by later runs and by
bench/scale.py). Photos sit in 97 folders and over ten years of dates. Queries: a third photo-like (inside a
cluster), a third between two clusters, a third text-like (weakly aligned, far from every cluster centre). It prints:

  * the text model (full-size Nomic text v1.5 architecture, random weights): load time, one short query on 1
    thread and on all; then side by side on one thread (bench/query_embed.py) the path `auto` chooses
    (query_embed_ms_p50: int8 where the CPU has VNNI/AMX), held bf16 weights, bf16 autocast over fp32 weights
    (query_embed_autocast_ms_p50, the path before) and fp32, with each one's cosine to fp32;
  * exact search (LanceDB brute force): p50/p95 and its recall@10 against the numpy ground truth (a check);
  * the index Glance builds (Store.ensure_vector_index: kind auto), its build time, and Store.nearest as the engine
    calls it (a pool of 100, ranked by row id): search_ms_p50, and recall_at_10 over `--recall-queries` queries
    (300), with a folder filter (~1%) and a date filter (~10%);
  * end to end: Engine.search("<query>") through the real engine (embedding a new text + count + indexed search of a
    100-candidate pool + the columns of the 24 hits shown), first query after opening, then p50/p95 after Engine.warm_up(), without and with
    filters, and a repeated text (its embedding cached);
  * with --compare, IVF_FLAT with lancedb's default partitions (what Glance built before); with --hnsw, IVF_HNSW_SQ.

Latency is per single query (one thread issuing queries, as one user does), after two warm-up queries.
--json prints one object: the headline keys (query_embed_ms_p50, query_embed_autocast_ms_p50, and per size
search_ms_p50, recall_at_10, end_to_end_ms_p50, ...) and `details`.

Run from the repo root:
    python bench/query_latency.py --json                     # 100k and 1M (~10 minutes on 2 cores)
    python bench/query_latency.py --sizes 100000 --cache DIR # one size, generated once into DIR
    python bench/query_latency.py --quick                    # 20k vectors, fewer queries (about 1 minute)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
# Random-weight models are written in the official layout of the tiny fixture (configs, tokenizer).
TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nomic-tiny"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the network

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from bench.query_embed import bench_query_embed  # noqa: E402
from models.device import cpu_name  # noqa: E402

DIM = 768
CLUSTERS = 1000
NOISE = 1.0  # |noise| relative to the unit centre: cosine(member, centre) ~0.7, between members ~0.5
CHUNK = 50_000
K = 10
FIRST_DAY = datetime(2015, 1, 1)  # photos are spread over ten years, so a one-year filter keeps ~10% of them
POOL = 100  # what the engine asks the store for (search/engine.py POOL_BLOCK)
QUERIES = ["dog", "sunset at the beach", "my passport", "birthday cake with candles", "snow on mountains",
           "a red car", "whiteboard notes", "cat sleeping on a sofa", "receipt", "kids playing football",
           "fireworks over the river", "a bowl of ramen", "old family photo", "the eiffel tower at night",
           "a foggy forest path in autumn", "screenshot of a chat", "wedding", "bicycle", "pizza", "selfie"]


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def timed(fn, repeats: int, warmup: int = 2) -> tuple[list[float], list]:
    for w in range(warmup):
        fn(-1 - w)  # negative indices: warm-up inputs differ from the measured ones (no cache hits)
    times, outputs = [], []
    for i in range(repeats):
        start = time.perf_counter()
        outputs.append(fn(i))
        times.append(time.perf_counter() - start)
    return times, outputs


def clustered(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    picks = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, DIM), dtype=np.float32) * (NOISE / math.sqrt(DIM))
    vectors = centres[picks] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


CAMERAS = ["Canon EOS R6", "iPhone 13", "Pixel 7", "NIKON D750", None, "iPhone 15 Pro", "ILCE-7M3"]  # None: no EXIF
SIZES = [(4032, 3024), (3024, 4032), (6000, 4000), (1920, 1080), (4000, 3000)]


def photo_id(i: int) -> str:
    """The i-th photo's id: 40 hex digits that look random, as Glance's content hashes do (a bijection on i)."""
    return f"{(i * 0x9E3779B97F4A7C15F39CC0605CEDC8341082276B) % (1 << 160):040x}"


def images_rows(start: int, vectors: np.ndarray, dim: int) -> pa.Table:
    """Rows in Glance's images schema. The vector is what is measured; the metadata looks like one library's (one
    root, no captions, a few cameras and sizes, varied dates and times), because how Lance encodes a column, and
    so what reading a hit's columns costs, depends on how its values repeat."""
    import store

    n = len(vectors)
    index = range(start, start + n)
    sizes = [SIZES[i * 7 // 3 % len(SIZES)] for i in index]
    numbers = np.arange(start, start + n, dtype=np.int64)
    columns = {
        "id": [photo_id(i) for i in index], "root": ["/photos"] * n,
        "relpath": [f"{i % 97:02d}/img{i}.jpg" for i in index],
        "size": (1_500_000 + numbers * 7919 % 3_000_000).tolist(),
        "mtime_ns": (1_420_000_000_000_000_000 + numbers * 315_569_260_000).tolist(),
        "sha256": [None] * n, "width": [w for w, _ in sizes], "height": [h for _, h in sizes],
        "taken_at": [FIRST_DAY + timedelta(days=i % 3650, seconds=i * 7 % 86400) for i in index],
        "camera": [CAMERAS[i * 5 // 7 % len(CAMERAS)] for i in index],
        "has_caption": [False] * n, "thumb": [None] * n, "indexed_at": [datetime(2024, 1, 1)] * n,
        "relpath_bytes": [None] * n,
    }
    vector = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
    schema = store.images_schema(dim)
    arrays = [vector if f.name == "vector" else pa.array(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def query_vectors(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    """A third each: photo-like (inside a cluster), between two clusters (a query mixing two themes), and
    text-like (only weakly aligned, cosine ~0.15-0.3 to its best matches, as text->image queries are).
    The last two are what makes an IVF index miss neighbours: they sit far from every partition centre."""
    third = -(-count // 3)
    inside = clustered(rng, centres, third)
    pairs = rng.integers(0, len(centres), (third, 2))
    between = centres[pairs[:, 0]] + centres[pairs[:, 1]] + rng.standard_normal((third, DIM)) * (NOISE / math.sqrt(DIM))
    weak = 0.3 * centres[rng.integers(0, len(centres), third)] + rng.standard_normal((third, DIM)) / math.sqrt(DIM)
    mixed = np.concatenate([inside, between, weak])
    order = rng.permutation(len(mixed))[:count]  # interleave kinds, so short runs still see all three
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True))[order].astype(np.float32)


def build_table(db_path: Path, n: int, queries: np.ndarray, centres: np.ndarray, seed: int):
    """Write n vectors in chunks; keep a running exact top-K per query (numpy) as ground truth."""
    import store

    st = store.Store(db_path)
    st.create_tables(DIM)
    table = st.table(store.IMAGES)
    rng = np.random.default_rng(seed)
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, n, CHUNK):
        vectors = clustered(rng, centres, min(CHUNK, n - start)).astype(np.float32)
        table.add(images_rows(start, vectors, DIM))
        scores = queries @ vectors.T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.arange(start, start + len(vectors))[None].repeat(len(queries), 0)], 1)
        order = np.argsort(-merged_scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_ids = np.take_along_axis(merged_ids, order, 1)
    return st, table, [{photo_id(int(i)) for i in row} for row in best_ids]


def library(n: int, queries_count: int, text_dir: Path, vision_dir: Path, folder: Path):
    """(store, images table, queries, exact top-K ids): n photos generated into `folder` once, then reused (the
    queries and their ground truth saved beside them). The meta names these model folders on every call."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = query_vectors(np.random.default_rng(1), centres, queries_count)
    done = folder / f"bench-{queries_count}-queries.json"
    if done.is_file():
        import store

        st = store.Store(folder)
        truth = [set(ids) for ids in json.loads(done.read_text())]
        print(f"  reusing the {n:,} generated photos in {folder}", flush=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        st, _, truth = build_table(folder, n, queries, centres, seed=2)
        done.write_text(json.dumps([sorted(ids) for ids in truth]))
    write_meta(st, text_dir, vision_dir)
    return st, st.table("images"), queries, truth


def recall(results: list[list[str]], truth: list[set[str]]) -> float:
    return float(np.mean([len(set(r) & t) / K for r, t in zip(results, truth)]))


def search_fn(table, queries, configure):
    def run(i):
        query = table.search(queries[i % len(queries)], vector_column_name="vector").distance_type("cosine")
        rows = configure(query).limit(K).select(["id", "_distance"]).to_arrow()
        return rows.column("id").to_pylist()
    return run


def measure(label: str, table, queries, truth, configure, repeats: int) -> dict:
    times, outputs = timed(search_fn(table, queries, configure), repeats)
    row = {"method": label, "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95),
           "recall@10": recall(outputs, truth[:repeats]) if repeats <= len(truth) else None, "queries": repeats}
    print(f"    {label:<44} p50 {row['p50_ms']:8.1f} ms   p95 {row['p95_ms']:8.1f} ms   "
          f"recall@10 {row['recall@10']:.3f}   ({repeats} queries)", flush=True)
    return row


def build_index(table, label: str, config) -> float:
    start = time.perf_counter()
    table.create_index("vector", config=config, replace=True)
    seconds = time.perf_counter() - start
    print(f"  {label}: built in {seconds:.1f} s", flush=True)
    return seconds


def bench_size(n: int, args, text_dir: Path, vision_dir: Path, work: Path) -> dict:
    from lancedb.index import HnswSq, IvfFlat

    print(f"\n== {n:,} vectors ({DIM}-d, {CLUSTERS} clusters)", flush=True)
    start = time.perf_counter()
    folder = (Path(args.cache) if args.cache else work) / f"db{n}"
    st, table, queries, truth = library(n, max(args.queries, args.recall_queries), text_dir, vision_dir, folder)
    out = {"size": n, "write_s": time.perf_counter() - start, "rows": []}
    print(f"  ready in {out['write_s']:.1f} s", flush=True)
    exact_queries = max(3, min(args.queries, int(args.queries * 100_000 / n)))
    out["rows"].append(measure("exact (brute force)", table, queries, truth, lambda q: q.bypass_vector_index(),
                               exact_queries))
    out.update(glance_index(st, queries, truth, args.queries))
    out["end_to_end"] = end_to_end(folder, args)
    if args.compare:
        out["ivf_flat_default_build_s"] = build_index(
            table, "IVF_FLAT, lancedb default partitions (what Glance built before)", IvfFlat(distance_type="cosine"))
        out["rows"].append(measure("IVF_FLAT default, nprobes 20", table, queries, truth, lambda q: q.nprobes(20),
                                   args.queries))
    if args.hnsw and n <= args.hnsw_max_size:
        parts = max(1, n // 100_000)
        out["hnsw_build_s"] = build_index(table, f"IVF_HNSW_SQ, {parts} partition(s), m 16, ef_construction 100",
                                          HnswSq(distance_type="cosine", num_partitions=parts, m=16, ef_construction=100))
        for ef, refine in ((100, None), (200, 5)):
            def configure(q, ef=ef, refine=refine):
                q = q.nprobes(parts).ef(ef)
                return q.refine_factor(refine) if refine else q
            label = f"IVF_HNSW_SQ ef {ef}" + (f", refine x{refine}" if refine else "")
            out["rows"].append(measure(label, table, queries, truth, configure, args.queries))
    if args.compare or args.hnsw:  # the folder keeps the index Glance builds, for the next run
        out["rebuild_s"] = rebuild(st)
    if not args.cache:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def rebuild(st) -> float:
    """Drop whatever vector index the table has and build the one Glance builds (Store.ensure_vector_index), and
    the filter indexes the indexer builds beside it (Store.ensure_filter_indexes, kept when there), after
    compacting the table's fragments first, as the end of an indexer run does (Store.ensure_indexes)."""
    from store.vector_index import vector_index_of

    images = st.table("images")
    listed = vector_index_of(images)
    if listed is not None:
        images.drop_index(listed.name)
    with st.writing():
        st.compact()  # not timed: the index build is
    started = time.perf_counter()
    with st.writing():
        done = st.ensure_vector_index()
        seconds = time.perf_counter() - started
        st.ensure_filter_indexes()
        st.publish()
    print(f"  Glance's index: {done} in {seconds:.1f} s", flush=True)
    return seconds


def glance_index(st, queries, truth, repeats: int) -> dict:
    """The index the indexer builds, searched as the engine searches it: Store.nearest for a pool of POOL
    photos (recall@10 on its first 10), without and with a folder filter (~1%) and a date filter (one year, ~10%)."""
    from store.reading import ROW_ID, FolderScope, PhotoFilter
    from store.vector_index import nprobes, partitions

    out = {"index_build_s": rebuild(st)}
    view = st.pinned()
    out["index_type"], built = view.vector_index(), view.built_rows()
    out["partitions"], out["nprobes"] = partitions(built), nprobes(built)
    filters = {"": None, "_folder": PhotoFilter(folders=(FolderScope(None, "42"),)),
               "_date": PhotoFilter(taken_from=datetime(2020, 1, 1), taken_before=datetime(2021, 1, 1))}
    for suffix, where in filters.items():
        def ask(i, where=where):  # ranked by row id, as Engine.search ranks its pool
            rows, mode = view.nearest("images", queries[i % len(queries)], where, POOL, [ROW_ID])
            assert mode == "index", mode
            return rows.column(ROW_ID).to_pylist()[:K]
        times, outputs = timed(ask, repeats)
        out[f"search{suffix}_ms_p50"] = percentile_ms(times, 50)
        out[f"search{suffix}_ms_p95"] = percentile_ms(times, 95)
        if not suffix:  # over every query with a ground truth: one hard query in 50 moves recall by 0.02
            outputs += [ask(i) for i in range(repeats, len(truth))]
            ids = view.rows_at("images", [r for top in outputs for r in top], ["id"])
            out["recall_at_10"] = recall([[ids[r]["id"] for r in top] for top in outputs], truth)
            out["recall_queries"] = len(truth)
    print(f"    {out['index_type']} ({out['partitions']} partitions, {out['nprobes']} probes), Store.nearest of "
          f"{POOL}: p50 {out['search_ms_p50']:.1f} ms (folder filter {out['search_folder_ms_p50']:.1f}, date filter "
          f"{out['search_date_ms_p50']:.1f})   recall@10 {out['recall_at_10']:.3f} over {len(truth)} queries", flush=True)
    return out


def write_meta(st, text_dir: Path, vision_dir: Path) -> None:
    import store
    from models import PREPROCESS_VERSION

    st.write_meta({"vision_model": str(vision_dir), "text_model": str(text_dir), "model_version": "v1.5", "dim": DIM,
                   "preprocess_version": PREPROCESS_VERSION, "schema_version": store.SCHEMA_VERSION,
                   "last_indexed": datetime.now().isoformat(timespec="seconds"), "roots": ["/photos"]})


def end_to_end(db_path: Path, args) -> dict:
    """The real engine: Engine.search(text) = embed + count + indexed search of a 100-candidate pool + the columns
    of the 24 hits shown."""
    from search.engine import Engine
    from search.filters import Filters

    engine = Engine(db_path, precision="auto")
    start = time.perf_counter()
    engine.search("the very first query")
    result = {"first_query_ms": (time.perf_counter() - start) * 1000, "precision": engine.vectors.text.precision.path}
    print(f"    Engine.search(text), first query after opening (cold caches): {result['first_query_ms']:.0f} ms", flush=True)
    engine.warm_up()
    cases = (("no filter", None), ("folder filter (~1% of photos)", Filters(folder="42")),
             ("date filter (one year, ~10%)", Filters(date_from="2020-01-01", date_to="2020-12-31")))
    for run, (label, filters) in enumerate(cases):
        times, outputs = timed(lambda i, f=filters, r=run: engine.search(f"{QUERIES[i % len(QUERIES)]} {r}.{i}", filters=f,
                                                                         top=24), args.queries)
        result[label] = {"p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95),
                         "mode": outputs[-1].mode, "hits": len(outputs[-1].hits)}
        print(f"    Engine.search(text), {label:<30} p50 {result[label]['p50_ms']:8.1f} ms   "
              f"p95 {result[label]['p95_ms']:8.1f} ms   ({outputs[-1].mode}; each query text is new, so it is embedded)",
              flush=True)
    times, _ = timed(lambda i: engine.search("a query asked again"), args.queries)
    result["repeated query"] = {"p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95)}
    print(f"    Engine.search(text), the same text again (its embedding cached)  p50 "
          f"{result['repeated query']['p50_ms']:8.1f} ms", flush=True)
    return result


def bench_text_model(text_dir: Path, args) -> dict:
    """Load time, then one short query at a time on 1 thread (the engine on a busy machine) and on all threads (the
    engine while no other thread wants a core, up to search/vectors.py IDLE_QUERY_THREADS)."""
    import torch

    from models import TextEmbedder

    start = time.perf_counter()
    embedder = TextEmbedder(str(text_dir), precision="auto")
    row = {"load_s": time.perf_counter() - start, "precision": embedder.precision.name}
    print(f"\n== text query embedding (full-size text v1.5, random weights, precision auto -> {row['precision']})\n"
          f"  load {row['load_s']:.1f} s", flush=True)
    all_threads = torch.get_num_threads()
    for threads in dict.fromkeys((1, all_threads)):
        torch.set_num_threads(threads)
        times, _ = timed(lambda i, t=threads: embedder.embed_queries([f"{QUERIES[i % len(QUERIES)]} {t}.{i}"]),
                         max(args.queries, len(QUERIES)))
        row[f"{threads}_threads"] = {"p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95)}
        print(f"  one short query on {threads} thread(s): p50 {row[f'{threads}_threads']['p50_ms']:.1f} ms   "
              f"p95 {row[f'{threads}_threads']['p95_ms']:.1f} ms", flush=True)
    torch.set_num_threads(all_threads)
    embedder = None  # noqa: F841 - freed: the side-by-side run below loads its own copies
    row.update(bench_query_embed(text_dir, max(args.queries, len(QUERIES))))
    return row


def write_models(work: Path) -> tuple[Path, Path]:
    import torch

    from models.synthetic import write_text, write_vision

    text_dir = write_text(work / "models" / "nomic-embed-text-v1.5", size="full", dtype=torch.float32, template=TEMPLATE)
    # The engine resolves the recorded vision model but loads it only for image queries.
    vision_dir = write_vision(work / "models" / "nomic-embed-vision-v1.5", size="full", dtype=torch.float16, template=TEMPLATE)
    return text_dir, vision_dir


def summary(report: dict) -> dict:
    """The headline figures: query embedding side by side, then per size (keys are the sizes) the index's search
    p50 and recall@10 and the engine's end-to-end p50."""
    text = report["text_model"]
    out = {"cpu": cpu_name(), "query_embed_ms_p50": text["query_embed_ms_p50"],
           "query_embed_path": text["auto_path"], "query_embed_autocast_ms_p50": text["query_embed_autocast_ms_p50"],
           "query_embed_autocast_over_default": text["autocast_over_auto"],
           "query_embed_cosine_to_fp32_min": text["auto_cosine_to_fp32_min"]}
    for key, pick in (("search_ms_p50", lambda s: s["search_ms_p50"]), ("recall_at_10", lambda s: s["recall_at_10"]),
                      ("search_folder_ms_p50", lambda s: s["search_folder_ms_p50"]),
                      ("search_date_ms_p50", lambda s: s["search_date_ms_p50"]),
                      ("end_to_end_ms_p50", lambda s: s["end_to_end"]["no filter"]["p50_ms"]),
                      ("end_to_end_folder_ms_p50",
                       lambda s: s["end_to_end"]["folder filter (~1% of photos)"]["p50_ms"]),
                      ("index_build_s", lambda s: s["index_build_s"])):
        out[key] = {str(size["size"]): pick(size) for size in report["sizes"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated table sizes (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=50, help="queries per measurement (default: %(default)s)")
    parser.add_argument("--recall-queries", type=int, default=300,
                        help="queries Glance's index is scored on for recall@10 (default: %(default)s)")
    parser.add_argument("--compare", action="store_true",
                        help="also IVF_FLAT with lancedb's default partitions (the index Glance built before)")
    parser.add_argument("--hnsw", action="store_true", help="also IVF_HNSW_SQ (its build is the slowest)")
    parser.add_argument("--hnsw-max-size", type=int, default=200_000,
                        help="build IVF_HNSW_SQ only up to this many vectors (default: %(default)s; it takes ~50-120 s "
                             "per 100k vectors on 2 cores)")
    parser.add_argument("--cache", help="keep the generated photos in this folder and reuse them on later runs "
                                        "(1M photos: ~6 GB with the index, ~70 s to write)")
    parser.add_argument("--quick", action="store_true", help="20k vectors, 20 queries: a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object (`summary`: "
                                                            "the headline keys)")
    parser.add_argument("--tmp", help="where to put the temporary databases (default: the system temp folder)")
    args = parser.parse_args()
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        args.queries, args.recall_queries, args.hnsw = 20, 20, False
    for folder in (args.tmp, args.cache):
        if folder and not Path(folder).is_dir():
            parser.error(f"{folder} is not a folder (create it first)")
    work = Path(tempfile.mkdtemp(prefix="glance-bench-", dir=args.tmp))
    started = time.perf_counter()
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          "(other processes skew latency)")
    try:
        text_dir, vision_dir = write_models(Path(args.cache) if args.cache else work)
        report = {"text_model": bench_text_model(text_dir, args), "sizes": []}
        for n in sizes:
            report["sizes"].append(bench_size(n, args, text_dir, vision_dir, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["summary"] = summary(report)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    if args.json:
        print(json.dumps(report["summary"] | {"details": report}, indent=1))


if __name__ == "__main__":
    main()
