"""A 1M-photo index on this CPU: vector-index build time, search with and without filters, disk size, the memory of
a running `glance serve`, and an unchanged re-index of 10,000 photos.

The photos are bench/query_latency.py's: clustered 768-d vectors in Glance's images schema (97 folders, ten years
of dates), written through the store in chunks, with the full-size Nomic v1.5 architecture (random weights) recorded
as the index's models. `--cache DIR` generates them once and reuses them (the same folder query_latency.py --cache
uses). It prints:

  * the vector index the indexer builds (Store.ensure_vector_index, kind auto) and its build time;
  * Store.nearest as the engine calls it (a pool of 100): p50/p95 without a filter, with a folder filter (~1% of the
    photos) and a date filter (one year, ~10%), and recall@10 against the exact top 10;
  * the index's size on disk: the whole folder, and the vector index alone;
  * `glance serve` on it (127.0.0.1, a free port, a real process): seconds until ready, its RSS after a few text
    queries through the API (/search_text), each of them new;
  * `glance index` over 10,000 unchanged photos (tiny files whose rows are written through the store with their
    size and mtime, so nothing is embedded): wall time of the whole command, models never loaded.

    python bench/scale.py --cache DIR [--size 1000000] [--json]      # 1M: ~6 GB, ~5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.device import cpu_name  # noqa: E402
from bench.query_latency import QUERIES, glance_index, library, write_models  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SERVE_QUERIES = 10
UNCHANGED_PHOTOS = 10_000


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def serve_memory(db: Path, logs: Path) -> dict:
    """A real `glance serve` on the index: time to ready, RSS after SERVE_QUERIES new text queries."""
    from gradio_client import Client

    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GLANCE_AUTH", None)
    started = time.monotonic()
    with (logs / "stdout.txt").open("wb") as out, (logs / "stderr.txt").open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "glance", "serve", "--db", str(db), "--port", str(port)],
                                   cwd=REPO, env=env, stdout=out, stderr=err)
    try:
        while "Glance: ready" not in (logs / "stdout.txt").read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"glance serve did not start: {(logs / 'stderr.txt').read_text()[-2000:]}")
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        rss_ready = rss_bytes(process.pid)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        times = []
        for i in range(SERVE_QUERIES):
            asked = time.perf_counter()
            answer = client.predict(f"{QUERIES[i % len(QUERIES)]} {i}", api_name="/search_text")
            times.append(time.perf_counter() - asked)
            assert answer["hits"], answer
        return {"ready_s": ready_s, "rss_ready_bytes": rss_ready, "rss_after_queries_bytes": rss_bytes(process.pid),
                "api_query_ms_median": sorted(times)[len(times) // 2] * 1000, "queries": SERVE_QUERIES}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def unchanged_reindex(work: Path, text_dir: Path, vision_dir: Path) -> dict:
    """`glance index` over UNCHANGED_PHOTOS photos that the index already holds as they are on disk."""
    import numpy as np
    import pyarrow as pa

    import store
    from bench.query_latency import DIM, images_rows, write_meta

    photos = work / "unchanged-photos"
    folders = [photos / f"{i:02d}" for i in range(97)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d7"
                        "63f8cfc000000301010018dd8db00000000049454e44ae426082")  # a valid 1x1 PNG
    relpaths = [f"{i % 97:02d}/img{i}.png" for i in range(UNCHANGED_PHOTOS)]
    for relpath in relpaths:
        (photos / relpath).write_bytes(png)
    db = work / "unchanged-index"
    st = store.Store(db)
    st.create_tables(DIM)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((UNCHANGED_PHOTOS, DIM)).astype(np.float32)
    rows = images_rows(0, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), DIM)
    root = str(photos.resolve())
    stats = [(photos / r).stat() for r in relpaths]
    rows = rows.set_column(rows.schema.get_field_index("root"), "root", pa.array([root] * len(relpaths)))
    rows = rows.set_column(rows.schema.get_field_index("relpath"), "relpath", pa.array(relpaths))
    as_on_disk = {"id": pa.array([store.image_id(root, r) for r in relpaths]),
                  "size": pa.array([s.st_size for s in stats], pa.int64()),
                  "mtime_ns": pa.array([s.st_mtime_ns for s in stats], pa.int64())}
    for name, column in as_on_disk.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    st.table(store.IMAGES).add(rows)
    write_meta(st, text_dir, vision_dir)
    st.write_meta({"roots": [root]})
    st.publish()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "glance", "index", root, "--db", str(db), "--json"], cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    summary = json.loads(done.stdout) if done.returncode in (0, 1) and done.stdout.strip() else {}
    return {"photos": UNCHANGED_PHOTOS, "wall_s": seconds, "index_seconds": summary.get("seconds"),
            "unchanged": summary.get("unchanged"), "added": summary.get("added"), "exit": done.returncode,
            "stderr": done.stderr.strip()[-300:] if done.returncode not in (0, 1) else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="photos (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=50, help="searches per measurement (default: %(default)s)")
    parser.add_argument("--cache", help="generate the photos into this folder once and reuse them")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    args = parser.parse_args()
    if args.cache and not Path(args.cache).is_dir():
        parser.error(f"--cache {args.cache} is not a folder (create it first)")
    work = Path(tempfile.mkdtemp(prefix="glance-scale-"))
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    try:
        base = Path(args.cache) if args.cache else work
        text_dir, vision_dir = write_models(base)
        folder = base / f"db{args.size}"
        started = time.perf_counter()
        st, _, queries, truth = library(args.size, args.queries, text_dir, vision_dir, folder)
        report = {"cpu": cpu_name(), "size": args.size, "ready_s": time.perf_counter() - started}
        report.update(glance_index(st, queries, truth, args.queries))
        listed = next(ix for ix in st.table("images").list_indices() if ix.columns == ["vector"])
        report["disk_bytes"] = folder_bytes(folder)
        report["vector_index_bytes"] = int(getattr(listed, "size_bytes", 0) or 0)
        print(f"  on disk: {report['disk_bytes'] / 1e9:.2f} GB, of which the vector index "
              f"{report['vector_index_bytes'] / 1e9:.2f} GB", flush=True)
        report["serve"] = serve_memory(folder, work / "serve-logs")
        serve = report["serve"]
        print(f"  glance serve: ready in {serve['ready_s']:.1f} s, RSS {serve['rss_ready_bytes'] / 1e9:.2f} GB, after "
              f"{SERVE_QUERIES} new text queries {serve['rss_after_queries_bytes'] / 1e9:.2f} GB "
              f"(API round trip median {serve['api_query_ms_median']:.0f} ms)", flush=True)
        report["unchanged_reindex"] = unchanged_reindex(work, text_dir, vision_dir)
        again = report["unchanged_reindex"]
        print(f"  glance index over {again['photos']:,} unchanged photos: {again['wall_s']:.2f} s for the whole "
              f"command, {again['index_seconds']} s indexing ({again['unchanged']} unchanged, {again['added']} added, "
              f"exit {again['exit']}) {again['stderr']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
