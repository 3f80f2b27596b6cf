"""Photos and the index in object storage, on a real S3 server (moto, 127.0.0.1, authentication on).

A bucket of painted photos (tests/search_library.py) is indexed into another bucket by the `glance index` command,
and the rows must be those of a local run over the same photos. Then: incremental runs after objects change, go
and move; search, stats and the web app over the index in the bucket; bad credentials and an unreachable endpoint
end with one line and exit 2, leaving the index as it was.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import store as st
from indexer.pipeline import IndexOptions, index
from search.files import original
from search.results import NotServable
from store.lock import LOCK_NAME
from tests import search_library
from tests.app_server import REPO, free_port, start_app

PREFIX = "lib"
CAPTIONED = "plain/purple.png"  # captioned through a captions file, by a path relative to the root


@pytest.fixture(scope="module")
def model_flags(tiny_model_dirs) -> list[str]:
    vision, text = tiny_model_dirs
    return ["--vision-model", str(vision), "--text-model", str(text), "--precision", "fp32"]


def glance(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `glance` command as a user runs it, with the AWS_* variables of `env` and none of ours."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**base, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "glance", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, words: str, secret: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and secret not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error:") and words in lines[0], result.stderr


def paint(base: Path) -> tuple[Path, Path]:
    """The painted library under base/photos (plus a hidden photo the indexer skips) and a captions file."""
    root = base / "photos"
    search_library.paint_files(root)
    (root / ".private").mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / ".private" / "hidden.png")
    captions = base / "captions.csv"
    captions.write_text(f"path,caption\n{CAPTIONED},a purple square\n,receipt\n,mountain lake at dawn\n")
    return root, captions


@dataclass
class Indexed:
    photos: str  # s3://bucket/lib
    db: str  # s3://bucket/glance
    index_bucket: str
    local_db: Path
    root: Path
    run: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def indexed(s3, tmp_path_factory, tiny_encoders, model_flags) -> Indexed:
    base = tmp_path_factory.mktemp("s3-library")
    root, captions = paint(base)
    photos, index_bucket = s3.bucket("photos"), s3.bucket("index")
    s3.upload_tree(root, photos, PREFIX)
    local_db = base / "local-index"
    local = index(IndexOptions(paths=[str(root)], db=local_db, captions=[str(captions)], encoders=tiny_encoders,
                               precision="fp32", workers=1))
    assert local.exit_status == 0, local.text()
    uri, db = f"s3://{photos}/{PREFIX}/", f"s3://{index_bucket}/glance"  # a trailing slash is normalized away
    run = glance("index", uri, "--db", db, "--captions", captions, "--json", "-q", *model_flags, env=s3.env)
    assert run.returncode == 0, run.stderr
    return Indexed(f"s3://{photos}/{PREFIX}", db, index_bucket, local_db, root, run)


def rows_by_relpath(store: st.Store) -> tuple[dict, dict]:
    """Photos by relpath and captions by (relpath, source, text): what must not depend on where the photos are."""
    images = store.table(st.IMAGES).to_arrow().to_pylist()
    relpath = {row["id"]: row["relpath"] for row in images}
    captions = store.table(st.CAPTIONS).to_arrow().to_pylist()
    return ({row["relpath"]: row for row in images},
            {(relpath.get(row["image_id"]), row["source"], row["text"]): row for row in captions})


def test_a_bucket_indexed_into_a_bucket_holds_the_rows_of_a_local_run(s3, indexed):
    summary = json.loads(indexed.run.stdout)
    assert summary["added"] == len(search_library.LIBRARY) and summary["failed"] == 0
    assert summary["db"] == indexed.db
    bucket = st.Store(indexed.db, storage_options=s3.storage_options)
    assert bucket.remote and bucket.meta()[st.ROOTS] == [indexed.photos]
    got_images, got_captions = rows_by_relpath(bucket)
    want_images, want_captions = rows_by_relpath(st.Store(indexed.local_db))
    assert set(got_images) == {spec.relpath for spec in search_library.LIBRARY} == set(want_images)
    for relpath, row in got_images.items():
        want = want_images[relpath]
        assert row["root"] == indexed.photos and row["id"] == st.image_id(indexed.photos, relpath)
        assert np.allclose(row["vector"], want["vector"], atol=1e-5), relpath
        for column in ("sha256", "size", "width", "height", "taken_at", "camera", "thumb", "has_caption"):
            assert row[column] == want[column], (relpath, column)
    assert set(got_captions) == set(want_captions)
    assert (CAPTIONED, st.SOURCE_FILE, "a purple square") in got_captions  # a captions-file path in a bucket root
    assert (None, st.SOURCE_FILE, "receipt") in got_captions
    for key, row in got_captions.items():
        assert np.allclose(row["vector"], want_captions[key]["vector"], atol=1e-5), key


def test_nothing_secret_is_stored_and_no_lease_is_left(s3, indexed):
    client = s3.client()
    keys = s3.keys(indexed.index_bucket)
    assert keys and not any(key.endswith(LOCK_NAME) for key in keys)
    for key in keys:
        body = client.get_object(Bucket=indexed.index_bucket, Key=key)["Body"].read()
        assert s3.secret.encode() not in body and s3.key_id.encode() not in body, key


def test_search_and_stats_over_an_index_in_a_bucket(s3, indexed, aws_env, capsys):
    found = glance("search", "a red square", "--db", indexed.db, "--top", "50", "--json", env=s3.env)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert {h["relpath"] for h in hits} == {spec.relpath for spec in search_library.LIBRARY}
    assert all(h["file"] == f"{indexed.photos}/{h['relpath']}" for h in hits)
    stats = in_process("stats", "--db", indexed.db, "--json", "--storage-option", f"aws_endpoint={s3.endpoint}",
                       *[f"--storage-option=aws_{k}={v}" for k, v in (("access_key_id", s3.key_id),
                                                                      ("secret_access_key", s3.secret))],
                       capsys=capsys)
    assert stats.returncode == 0, stats.stderr
    numbers = json.loads(stats.stdout)
    assert numbers["db"] == indexed.db and numbers["photos"] == len(search_library.LIBRARY)
    assert numbers["roots"] == {indexed.photos: len(search_library.LIBRARY)} and numbers["size_bytes"] > 0
    assert numbers["texts"] == 2


def test_an_original_in_a_bucket_is_never_served(s3, indexed):
    bucket = st.Store(indexed.db, storage_options=s3.storage_options)
    photo = st.image_id(indexed.photos, "plain/red.jpg")
    with pytest.raises(NotServable) as refused:
        original(bucket, photo)
    assert refused.value.status == 403 and "only its thumbnail" in str(refused.value)
    with pytest.raises(NotServable):
        original(bucket, f"{indexed.photos}/plain/red.jpg")  # by its URI: the same refusal


def test_the_app_answers_over_an_index_in_a_bucket(s3, indexed, tmp_path_factory):
    from gradio_client import Client

    server = start_app(tmp_path_factory, "--db", indexed.db, env=s3.env)
    try:
        server.wait_ready()
        client = Client(server.url, verbose=False)
        hits = client.predict("a red square", top=50, api_name="/search_text")["hits"]
        assert {h["relpath"] for h in hits} == {spec.relpath for spec in search_library.LIBRARY}
        assert all(h["file"].startswith(indexed.photos + "/") for h in hits)
        details = client.predict(st.image_id(indexed.photos, "plain/red.jpg"), api_name="/photo")
        assert details["captions"] == [{"text": "a red square", "source": "sidecar"}]
    finally:
        server.stop()


def in_process(*args, capsys) -> subprocess.CompletedProcess:
    """`glance ARGS` in this process (argparse, the error style, the exit status), without a new Python's imports."""
    from glance.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_.value.code, out.out, out.err)


@pytest.fixture
def aws_env(monkeypatch):
    """Set AWS_* variables for in-process commands; --storage-option's process-wide options are reset after."""
    from core import location

    def set_env(values: dict) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    yield set_env
    location.configure(None)


def test_bad_credentials_or_no_endpoint_one_line_exit_2_index_untouched(s3, indexed, model_flags, aws_env, capsys):
    before = s3.keys(indexed.index_bucket)
    wrong_secret = "not-the-secret-key-0123456789"
    bad_key = {**s3.env, "AWS_SECRET_ACCESS_KEY": wrong_secret}
    # one real process: what a user sees, with nothing of this test's process in between
    assert_one_line_error(glance("index", indexed.photos, "--db", indexed.db, *model_flags, env=bad_key),
                          "access denied", wrong_secret)
    aws_env(bad_key)
    assert_one_line_error(in_process("stats", "--db", indexed.db, capsys=capsys), "access denied", wrong_secret)
    aws_env({**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    for args in (("index", indexed.photos, "--db", indexed.db, *model_flags), ("search", "red", "--db", indexed.db)):
        assert_one_line_error(in_process(*args, capsys=capsys), "cannot reach the object store", s3.secret)
    # --storage-option wins over the environment; a missing bucket is named as such
    missing = in_process("stats", "--db", "s3://no-such-bucket-here/glance", "--storage-option",
                         f"aws_endpoint={s3.endpoint}", capsys=capsys)
    assert_one_line_error(missing, "no such bucket", s3.secret)
    assert s3.keys(indexed.index_bucket) == before
    malformed = in_process("stats", "--db", indexed.db, "--storage-option", "aws_region", capsys=capsys)
    assert_one_line_error(malformed, "--storage-option must be KEY=VALUE", s3.secret)


def test_incremental_runs_after_objects_change_go_and_move(s3, tmp_path, tiny_encoders):
    root, _ = paint(tmp_path)
    photos, index_bucket = s3.bucket("photos"), s3.bucket("index")
    s3.upload_tree(root, photos, PREFIX)
    uri, db = f"s3://{photos}/{PREFIX}", f"s3://{index_bucket}/glance"

    def run() -> dict:  # in this process, with explicit storage options (no AWS_* variables here)
        summary = index(IndexOptions(paths=[uri], db=db, storage_options=s3.storage_options, encoders=tiny_encoders,
                                     precision="fp32", workers=1))
        assert summary.exit_status == 0, summary.text()
        return summary.as_dict()

    count = len(search_library.LIBRARY)
    assert run()["added"] == count
    changed = tmp_path / "changed.jpg"
    Image.new("RGB", (120, 80), (10, 200, 90)).save(changed, quality=90)
    s3.put(photos, f"{PREFIX}/plain/red.jpg", changed)  # new content under the same key
    s3.delete(photos, f"{PREFIX}/axb/white.png")
    s3.move(photos, f"{PREFIX}/a_b/yellow.png", f"{PREFIX}/moved/yellow.png")
    s3.move(photos, f"{PREFIX}/a_b/yellow.png.txt", f"{PREFIX}/moved/yellow.png.txt")
    after = run()
    assert (after["updated"], after["moved"], after["added"], after["removed"]) == (1, 1, 0, 2), after
    assert after["unchanged"] == count - 3 and after["images_total"] == count - 1
    bucket = st.Store(db, storage_options=s3.storage_options)
    images, captions = rows_by_relpath(bucket)
    assert "moved/yellow.png" in images and "a_b/yellow.png" not in images and "axb/white.png" not in images
    assert images["plain/red.jpg"]["width"] == 120
    assert ("moved/yellow.png", st.SOURCE_SIDECAR, "yellow sun") in captions
    last = run()
    assert (last["unchanged"], last["added"], last["updated"], last["removed"]) == (count - 1, 0, 0, 0)


def test_one_writer_per_bucket_index_and_a_dead_writers_lease_is_taken_over(s3):
    import time

    from store.lock import LEASE_STALE_S, remote_writer_lock

    db = f"s3://{s3.bucket('lease')}/glance"
    with remote_writer_lock(db, s3.storage_options):
        lease = json.loads(s3.get(db.split("/")[2], f"glance/{LOCK_NAME}"))
        assert lease["pid"] == os.getpid() and s3.secret not in json.dumps(lease)
        with pytest.raises(st.StoreError, match=f"another indexer \\(pid {os.getpid()} "):
            with st.Store(db, storage_options=s3.storage_options).writing():
                pass
    assert LOCK_NAME not in str(s3.keys(db.split("/")[2]))  # released
    stale = {"pid": 1, "host": "gone", "token": "x", "renewed": time.time() - LEASE_STALE_S - 1}
    s3.put(db.split("/")[2], f"glance/{LOCK_NAME}", json.dumps(stale).encode())  # a killed writer's lease
    with st.Store(db, storage_options=s3.storage_options).writing():
        assert json.loads(s3.get(db.split("/")[2], f"glance/{LOCK_NAME}"))["pid"] == os.getpid()
    assert set(s3.keys(db.split("/")[2])) <= {"glance/"}  # at most the empty folder marker pyarrow keeps
