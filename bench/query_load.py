"""Serving under load: many concurrent API clients against a running `glance serve`, batching on and off.

One run starts the real server (app.py, as `glance serve` runs it) twice over the same temporary index: with
dynamic batching (the default: concurrent text queries share one forward pass, search/batching.py) and with
`--no-batching` (each request embeds its own query, two requests at a time: the path before batching). Each
time, `--clients` gradio_client clients (threads of this process, one Client each, logged in like any API user)
send `--queries` distinct text queries each to /search_text, back to back, all at once. Every query string is new
to the server (no cache hits), and both servers get the same strings. Printed side by side: queries/s (all
answers / wall time) and each query's latency p50/p95, and the ratio batched/unbatched.

Models: the full-size Nomic v1.5 architectures with random weights, cached on disk (bench/serving_index.py);
the index: `--rows` synthetic photo rows. The clients run on the same cores as the server, in both modes.

Run from the repo root (the first run writes the models, ~30 s; then ~2 minutes):
    python bench/query_load.py
    python bench/query_load.py --clients 50 --queries 6 --json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.serving_index import build_index, cpu_name  # noqa: E402
from tests.app_server import AUTH, AppServer  # noqa: E402  (the tests' real-server harness: start, ready, stop)

ADJECTIVES = ["red", "old", "tiny", "snowy", "golden", "blurry", "happy", "quiet", "wet", "bright", "dark", "wooden"]
THINGS = ["dog", "bicycle", "cake", "mountain", "receipt", "boat", "cat", "kite", "car", "tree", "bridge", "lamp"]
PLACES = ["on the beach", "in the kitchen", "at night", "in the snow", "by the river", "in the city", "at dawn",
          "in the garden", "on a table", "in the rain", "at the market", "under a tree"]


def distinct_queries(count: int) -> list[str]:
    """`count` different short queries ("golden kite by the river"), the same list on every run."""
    combos = itertools.product(ADJECTIVES, THINGS, PLACES)
    return [" ".join(c) for c in itertools.islice(combos, count)]


def start_server(db: Path, logs: Path, batching: bool) -> AppServer:
    args = ["--db", str(db), "--auth", ":".join(AUTH)] + ([] if batching else ["--no-batching"])
    server = AppServer(args, logs, env={"TOKENIZERS_PARALLELISM": "false"}).start().wait_ready(timeout=300)
    wait_idle(server.process.pid)
    return server


def wait_idle(pid: int, timeout: float = 120.0) -> None:
    """Until the server stops working on its own: after "ready" it loads the vision model in the background,
    which is not what is measured."""
    ticks = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid, ticks)
        time.sleep(1.0)
        if cpu_seconds(pid, ticks) - before < 0.05:
            return


def cpu_seconds(pid: int, ticks: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def drive(url: str, clients: int, per_client: list[list[str]]) -> dict:
    """Every client sends its queries back to back, all clients at once; latency of each answer, and the wall."""
    from gradio_client import Client

    # gradio_client opens a new httpx client for every request, and each loads the CA bundle again (~10 ms of
    # CPU, even over http://) unless it is handed a context: the clients share the server's two cores.
    tls = ssl.create_default_context()
    connected = [Client(url, auth=AUTH, verbose=False, ssl_verify=tls) for _ in range(clients)]
    for client in connected[:2]:  # the server's first searches (LanceDB caches) are not what is measured
        client.predict("warm up", api_name="/search_text")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def run(client, queries):
        start.wait()
        for query in queries:
            began = time.perf_counter()
            try:
                client.predict(query, api_name="/search_text")
            except Exception as exc:  # noqa: BLE001 - counted and shown: a failed answer is not a fast one
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=run, args=(c, q)) for c, q in zip(connected, per_client)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for client in connected:
        client.close()
    ms = sorted(x * 1000 for x in latencies)
    return {"answers": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 2), "qps": round(len(latencies) / wall, 2),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1) if ms else None}


def measure(db: Path, work: Path, batching: bool, clients: int, queries: list[str]) -> dict:
    per_client = [queries[i::clients] for i in range(clients)]
    server = start_server(db, work / ("logs-batched" if batching else "logs-unbatched"), batching)
    try:
        figures = drive(server.url, clients, per_client)
    finally:
        server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=6, help="queries per client (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=5000, help="photo rows in the index (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glance-load-"))
    queries = distinct_queries(args.clients * args.queries)
    try:
        db = build_index(work / "index", args.rows)
        load_before = os.getloadavg()[0]
        batched = measure(db, work, True, args.clients, queries)
        unbatched = measure(db, work, False, args.clients, queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"batched_qps": batched["qps"], "unbatched_qps": unbatched["qps"], "p95_ms": batched["p95_ms"],
              "speedup": round(batched["qps"] / unbatched["qps"], 2) if unbatched["qps"] else None,
              "batched": batched, "unbatched": unbatched, "clients": args.clients, "queries": len(queries),
              "rows": args.rows, "cpu": cpu_name(), "load_average_at_start": round(load_before, 2)}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.clients} clients x {args.queries} distinct text queries on /search_text, {args.rows:,} photos, "
          f"full-size models; {report['cpu']}")
    print(f"{'':<11} {'queries/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}")
    for name, figures in (("batched", batched), ("unbatched", unbatched)):
        print(f"{name:<11} {figures['qps']:>10.2f} {figures['p50_ms']:>8} {figures['p95_ms']:>8} "
              f"{figures['errors']:>7}")
    print(f"batched / unbatched queries/s: {report['speedup']}x")


if __name__ == "__main__":
    main()
