"""Scale-out throughput: a local run against `glance index --ray` with 1 and 2 workers, on the same photos.

Uses bench/index_throughput.py's 12-megapixel JPEGs and its full-size random-weight Nomic Embed Vision v1.5
checkpoint (speed does not depend on the weights). Starts one Ray head on 127.0.0.1 (tests/ray_cluster.py) with
one logical CPU per core plus one, as `--ray` alone would, and then runs the real command line three times, each
into a fresh index:
  local:      glance index PHOTOS                            (decoding threads + the model on every core)
  ray, 1:     glance index PHOTOS --ray ADDRESS --ray-workers 1 --threads T
  ray, 2:     glance index PHOTOS --ray ADDRESS --ray-workers 2 --threads T
Photos/s is the run's own figure (photos embedded / the run's seconds, from --json): the scan, Ray Data's
start-up, the actors loading the model, decoding, embedding, commits and index maintenance are all in it; the
Python start of the command is not. On one 2-core machine Ray cannot beat the local run: the same cores do the
same work, plus Ray's scheduling, serialization and one model per actor. What matters is that overhead, and the
per-worker rate, which is what a cluster multiplies (README, "Beyond one machine").

Run from the repo root:
    python bench/scale_out.py                 # 96 images
    python bench/scale_out.py --images 48 --json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.index_throughput import CACHE, photos, write_checkpoints  # noqa: E402
from models.device import cpu_name  # noqa: E402
from tests import ray_cluster  # noqa: E402


def run_index(folder: Path, db: Path, vision: Path, text: Path, extra: list[str], env: dict) -> dict:
    command = [sys.executable, "-m", "glance", "index", str(folder), "--db", str(db), "--vision-model", str(vision),
               "--text-model", str(text), "--json", "--quiet", *extra]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scale_out: {' '.join(extra) or 'local'} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    embedded = summary["added"] + summary["updated"]
    return {"photos": embedded, "seconds": summary["seconds"], "command_seconds": round(time.monotonic() - started, 2),
            "ips": round(embedded / summary["seconds"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per Ray actor (its CPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = photos(args.images, CACHE)
    work = Path(tempfile.mkdtemp(prefix="glance-scale-out-"))
    vision, text = write_checkpoints(work / "models")
    ray_temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    cores = os.cpu_count() or 1
    started = time.monotonic()
    cluster = ray_cluster.start(ray_temp, cpus=cores + 1)
    head_seconds = time.monotonic() - started
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **cluster.env}
    try:
        results = {"local": run_index(folder, work / "local", vision, text, [], env)}
        for workers in (1, 2):
            flags = ["--ray", cluster.address, "--ray-workers", str(workers), "--threads", str(args.threads)]
            results[f"ray_{workers}"] = run_index(folder, work / f"ray{workers}", vision, text, flags, env)
    finally:
        ray_cluster.stop(cluster)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_temp, ignore_errors=True)

    local, one, two = results["local"]["ips"], results["ray_1"]["ips"], results["ray_2"]["ips"]
    report = {
        "cpu": cpu_name(), "cores": cores, "images": args.images, "threads_per_worker": args.threads,
        "local_ips": local, "ray_1_worker_ips": one, "ray_2_workers_ips": two,
        "ray_2_over_local": round(two / local, 3), "ray_2_over_ray_1": round(two / one, 3),
        "ray_head_start_s": round(head_seconds, 1), "runs": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.images} 12-MP JPEGs, Nomic v1.5 (full size), {report['cpu']}, {cores} cores")
    for name, label in (("local", "local run"), ("ray_1", "--ray, 1 worker"), ("ray_2", "--ray, 2 workers")):
        r = results[name]
        print(f"  {label:<18} {r['ips']:6.2f} photos/s   ({r['seconds']:.1f} s in the run, "
              f"{r['command_seconds']:.1f} s the whole command)")
    print(f"  ray 2 workers / local: {report['ray_2_over_local']:.2f}   2 workers / 1 worker: "
          f"{report['ray_2_over_ray_1']:.2f}   (Ray head start: {report['ray_head_start_s']} s, once per cluster)")


if __name__ == "__main__":
    main()
