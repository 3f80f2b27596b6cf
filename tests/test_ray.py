"""`glance index --ray`: a real Ray cluster on 127.0.0.1 does the decoding and embedding, and the index it leaves
is row for row the one a local run leaves, through kills of its workers and incremental re-runs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests import ray_cluster, search_library
from tests.indexer_library import assert_same_rows, dump, make_library, pattern

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    running = ray_cluster.start(temp)
    yield running
    ray_cluster.stop(running)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def model_flags(tiny_model_dirs) -> list[str]:
    vision, text = tiny_model_dirs
    return ["--vision-model", str(vision), "--text-model", str(text), "--precision", "fp32"]


def driver_env(cluster=None, extra: dict | None = None) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
            **(cluster.env if cluster else {}), **(extra or {})}


def glance(*args, cluster=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glance", *map(str, args)], cwd=REPO,
                          env=driver_env(cluster, env), capture_output=True, text=True, timeout=timeout)


def index(library: Path | str, db: Path | str, model_flags, *extra, cluster=None, env=None) -> dict:
    result = glance("index", library, "--db", db, *model_flags, "--json", *extra, cluster=cluster, env=env)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


COUNTS = ("added", "updated", "moved", "unchanged", "removed", "failed")


def counts(summary: dict) -> dict:
    return {k: summary[k] for k in (*COUNTS, "images_total")} | {"captions": summary["captions"]["total"]}


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    """The indexer tests' library: every format, every caption source, and one of each bad file."""
    return make_library(tmp_path_factory.mktemp("ray-every-kind"))


def test_ray_run_on_a_cluster_gives_the_local_rows(every_kind, cluster, model_flags, tmp_path):
    local = index(every_kind.root, tmp_path / "local", model_flags)
    on_ray = index(every_kind.root, tmp_path / "ray", model_flags, "--ray", cluster.address, "--ray-workers", 2,
                   cluster=cluster)
    assert counts(on_ray) == counts(local)
    assert on_ray["added"] == len(every_kind.good) and on_ray["failed"] == len(every_kind.bad)
    assert_same_rows(dump(tmp_path / "ray"), dump(tmp_path / "local"))


def test_ray_alone_starts_a_local_instance(every_kind, model_flags, tmp_path):
    local = index(every_kind.root, tmp_path / "local", model_flags)
    on_ray = index(every_kind.root, tmp_path / "ray", model_flags, "--ray", "--ray-workers", 1)
    assert counts(on_ray) == counts(local)
    assert_same_rows(dump(tmp_path / "ray"), dump(tmp_path / "local"))


def test_a_bucket_indexed_on_ray_into_a_bucket_gives_the_rows_of_a_run_without_ray(s3, cluster, model_flags,
                                                                                   tmp_path):
    """Photos in one bucket of a local S3 server, the index in another; the Ray workers read the bucket with the
    driver's credentials (the job's runtime_env), never from files of their own."""
    root = tmp_path / "photos"
    search_library.paint_files(root)
    photos = s3.bucket("photos")
    s3.upload_tree(root, photos, "lib")
    uri, index_bucket = f"s3://{photos}/lib", s3.bucket("index")
    plain, on_ray = f"s3://{index_bucket}/plain", f"s3://{index_bucket}/ray"
    without = index(uri, plain, model_flags, env=s3.env)
    with_ray = index(uri, on_ray, model_flags, "--ray", cluster.address, "--ray-workers", 2, cluster=cluster,
                     env=s3.env)
    assert with_ray["added"] == len(search_library.LIBRARY) and with_ray["failed"] == 0
    assert counts(with_ray) == counts(without)
    assert_same_rows(dump(on_ray, s3.storage_options), dump(plain, s3.storage_options))
    again = index(uri, on_ray, model_flags, "--ray", cluster.address, cluster=cluster, env=s3.env)
    assert again["unchanged"] == len(search_library.LIBRARY) and again["added"] == 0


def test_incremental_rerun_on_ray_matches_local(tmp_path, cluster, model_flags):
    """Changed, deleted, moved and added files: the Ray re-run does what the local re-run does."""
    library = tmp_path / "photos"
    for i in range(12):
        path = library / f"day{i % 3}" / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pattern(100 + i).save(path)
    dbs = {"local": tmp_path / "local", "ray": tmp_path / "ray"}
    ray_flags = ("--ray", cluster.address, "--ray-workers", 2)
    index(library, dbs["local"], model_flags)
    index(library, dbs["ray"], model_flags, *ray_flags, cluster=cluster)
    pattern(999).save(library / "day0" / "p0.png")  # changed
    (library / "day1" / "p1.png").unlink()  # deleted
    (library / "day2" / "p2.png").rename(library / "day0" / "moved.png")  # moved
    pattern(500).save(library / "day1" / "new.png")  # added
    local = index(library, dbs["local"], model_flags)
    on_ray = index(library, dbs["ray"], model_flags, *ray_flags, cluster=cluster)
    assert counts(on_ray) == counts(local)
    # the move also removes its old path
    assert (local["added"], local["updated"], local["moved"], local["removed"]) == (1, 1, 1, 2)
    assert_same_rows(dump(dbs["ray"]), dump(dbs["local"]))
    unchanged = index(library, dbs["ray"], model_flags, *ray_flags, cluster=cluster)
    assert unchanged["unchanged"] == 12 and unchanged["added"] == unchanged["updated"] == 0


def test_killing_an_embedding_worker_mid_run_loses_nothing(tmp_path, cluster, model_flags):
    library = tmp_path / "photos"
    for i in range(160):
        path = library / f"roll{i % 4}" / f"p{i:03}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pattern(1000 + i, size=(96, 64)).save(path)
    local = index(library, tmp_path / "local", model_flags, "--batch-size", 4)
    db = tmp_path / "ray"
    env = driver_env(cluster)
    run = subprocess.Popen([sys.executable, "-m", "glance", "index", str(library), "--db", str(db), *model_flags,
                            "--json", "--batch-size", "4", "--ray", cluster.address, "--ray-workers", "2"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_an_actor_mid_batch(cluster, run)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert killed is not None, "the run finished before an embedding worker was seen at work"
    assert not killed.is_running()
    summary = json.loads(out)
    assert summary["images_total"] == 160 and summary["failed"] == 0
    assert counts(summary) == counts(local)
    assert_same_rows(dump(db), dump(tmp_path / "local"))


def _kill_an_actor_mid_batch(cluster, run: subprocess.Popen):
    """SIGKILL one embedding actor while it is embedding a batch (Ray titles the process `...Embedder)).submit`
    while a task runs in it)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        busy = [p for p in cluster.embedding_actors() if p.info["cmdline"][0].endswith(".submit")]
        if busy:
            os.kill(busy[0].pid, signal.SIGKILL)
            busy[0].wait(10)
            return busy[0]
        time.sleep(0.02)
    return None


def test_unreachable_cluster_is_one_line_and_exit_2(model_flags, tmp_path):
    library, db = tmp_path / "photos", tmp_path / "db"
    library.mkdir()
    pattern(1).save(library / "a.png")
    index(library, db, model_flags)
    before = dump(db)
    pattern(2).save(library / "b.png")
    port = ray_cluster.free_port()
    result = glance("index", library, "--db", db, *model_flags, "--ray", f"127.0.0.1:{port}", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster" in lines[0], result.stderr
    assert dump(db) == before
