"""Cold start: how soon a fresh `glance serve` answers, and what one `glance search` costs from a fresh process.

With the full-size Nomic v1.5 models cached on disk (random weights, bench/serving_index.py) and an index of
`--rows` synthetic photos, one run measures, each from a fresh process:

  page_s          `python app.py` (what `glance serve` runs) until GET / answers 200 (the page, models loading);
  first_answer_s  the same start until the first /search_text answer (gradio_client, retried from the start);
  cli_search_s    one `glance search "cat"` with no server running (imports, text model, one search), wall time;
  cli_search_via_server_s  the same while that server runs: it answers over loopback (search/loopback.py);
  imports_s       the floor under first_answer_s: a fresh `python -c "import gradio, torch, lancedb"`, what the
                  server must import before it can answer (one after the other: under the GIL, importing them
                  from two threads took no less), and first_answer_over_imports, the ratio of the two.

Each figure is the median of `--rounds` runs. Run from the repo root:
    python bench/cold_start.py
    python bench/cold_start.py --rounds 3 --json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from bench.serving_index import build_index, cpu_name  # noqa: E402
from tests.app_server import AppServer  # noqa: E402

POLL_S = 0.05


def serve_start(db: Path, logs: Path, runtime: Path) -> tuple[AppServer, float, float]:
    """A fresh server: seconds until the page answers, and until the first search answers."""
    from gradio_client import Client

    server = AppServer(["--db", str(db)], logs, env={"XDG_RUNTIME_DIR": str(runtime)}).start()
    page_s = None
    while page_s is None:
        try:
            if httpx.get(server.url, timeout=5).status_code == 200:
                page_s = time.monotonic() - server.started_at
        except httpx.HTTPError:
            assert server.process.poll() is None, server.stderr()
            time.sleep(POLL_S)
    client = Client(server.url, verbose=False)
    while True:
        try:
            client.predict("cat", api_name="/search_text")
            break
        except Exception:  # noqa: BLE001 - "the models are still loading": ask again
            assert server.process.poll() is None, server.stderr()
            time.sleep(POLL_S)
    first_answer_s = time.monotonic() - server.started_at
    client.close()
    return server, page_s, first_answer_s


def cli_search(db: Path, runtime: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(runtime)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "glance", "search", "cat", "--db", str(db)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - began
    assert done.returncode == 0, done.stderr
    return elapsed


def imports() -> float:
    """Seconds for a fresh interpreter to import what the server needs before its first answer."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio, torch, lancedb"], cwd=REPO, check=True, timeout=300)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="photo rows in the index (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measurement (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glance-cold-"))
    figures: dict[str, list[float]] = {"page_s": [], "first_answer_s": [], "cli_search_s": [],
                                       "cli_search_via_server_s": [], "imports_s": []}
    try:
        db = build_index(work / "index", args.rows)
        alone, shared = work / "runtime-alone", work / "runtime-shared"
        alone.mkdir()
        shared.mkdir()
        cli_search(db, alone)  # the OS file cache holds the models from here on: "cached" as for any user
        for round_ in range(args.rounds):
            figures["cli_search_s"].append(cli_search(db, alone))
            figures["imports_s"].append(imports())
            server, page_s, first_s = serve_start(db, work / f"logs-{round_}", shared)
            try:
                wait_announced(server, shared)
                figures["cli_search_via_server_s"].append(cli_search(db, shared))
            finally:
                server.stop()
            figures["page_s"].append(page_s)
            figures["first_answer_s"].append(first_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {name: round(statistics.median(values), 2) for name, values in figures.items()}
    report["first_answer_over_imports"] = round(report["first_answer_s"] / report["imports_s"], 2)
    report |= {"runs": {name: [round(v, 2) for v in values] for name, values in figures.items()},
               "rows": args.rows, "cpu": cpu_name()}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"cold start, full-size models cached, {args.rows:,} photos; {report['cpu']}; median of {args.rounds}")
    for name in figures:
        print(f"  {name:<26} {report[name]:>6.2f} s   {report['runs'][name]}")
    print(f"  first answer / imports     {report['first_answer_over_imports']:>6.2f}")


def wait_announced(server: AppServer, runtime: Path, timeout: float = 60) -> None:
    """Until the server has written its discovery file (it does once the models are loaded)."""
    deadline = time.monotonic() + timeout
    while not any((runtime / "glance").glob("serve-*.json")):
        assert time.monotonic() < deadline and server.process.poll() is None, server.stderr()
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
