"""Readers see the two tables at one consistent moment, and a long-running reader follows new folders.

1. While a real indexer subprocess (`glance index`, tiny models, --batch-size 2: many commits) adds photos with
   sidecar captions, the test process takes `Store(DB).pinned()` views as fast as it can (fresh Stores and one
   long-lived Store) and runs `Engine.caption_search`: in every view, every caption that names a photo has that
   photo, and every caption hit that names a photo has its path. The views must have seen more than one
   published pair, or the test proved nothing.
2. An Engine opened on an index of folder A, and an app server started on it, find folder B's photos (folder
   filter, file_path, /search_text, /photo) within seconds of B being indexed into the same index by another
   process: the Engine reads the roots from each published snapshot (the server re-opens only on model changes).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests import app_server
from tests.app_server import AUTH, REPO

FIRST, TOTAL = 10, 60  # photos indexed before the run, photos in the library at the end
SIZE = (40, 32)
FRESH_S = 2.5  # PAIR_TTL_S (1 s) + LanceDB's read_consistency_interval (1 s), and a little slack
INDEXER_TIMEOUT_S = 300


def caption_of(n: int) -> str:
    return f"a kite over the sea, photo number {n}"


def paint(root: Path, numbers, prefix: str = "img", captions: bool = True) -> list[str]:
    relpaths = []
    for n in numbers:
        target = root / f"{prefix}{n:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        app_server.blocks(1000 + n)(SIZE).save(target, quality=90)
        if captions:
            Path(f"{target}.txt").write_text(caption_of(n) + "\n")
        relpaths.append(target.name)
    return relpaths


def index_here(root: Path, db: Path, encoders, model_dirs) -> None:
    """The real indexer, in this process, with the already loaded tiny encoders."""
    from indexer.pipeline import IndexOptions, index

    vision, text = model_dirs
    summary = index(IndexOptions(paths=[str(root)], db=db, vision_model=str(vision), text_model=str(text),
                                 precision="fp32", encoders=encoders, workers=1))
    assert summary.exit_status == 0, summary.text()


def indexer_process(root: Path, db: Path, model_dirs, *extra: str) -> subprocess.Popen:
    vision, text = model_dirs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "glance", "index", str(root), "--db", str(db),
                             "--vision-model", str(vision), "--text-model", str(text), "--precision", "fp32",
                             "-q", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=INDEXER_TIMEOUT_S)
    assert process.returncode == 0, f"indexer exited with {process.returncode}:\n{out}\n{err}"


# ------------------------------------------------------------------------------- 1. one consistent moment

@pytest.fixture(scope="module")
def growing(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    """(root, db): the first FIRST photos indexed; the rest painted afterwards, waiting for the indexer."""
    base = tmp_path_factory.mktemp("consistency")
    root, db = (base / "photos").resolve(), base / "index"
    paint(root, range(FIRST))
    index_here(root, db, tiny_encoders, tiny_model_dirs)
    paint(root, range(FIRST, TOTAL))
    return root, db


def check_view(view) -> tuple:
    """One pinned view: it is the published pair (no old versions are cleaned up during the run), and every
    caption's photo is in it. Returns the view's (images, captions) versions."""
    ids = view.captions.search().select(["image_id"]).limit(None).to_arrow().column("image_id").to_pylist()
    named = sorted({i for i in ids if i})
    found = view.photo_paths(named)
    missing = [i for i in named if i not in found]
    pair = (view.images.version, view.captions.version)
    published = view.current_meta().get("snapshot")
    assert published and pair == (published["images"], published["captions"]), (pair, published)
    assert not missing, f"captions without their photo in the view at {pair}: {missing[:5]} ({len(missing)})"
    return pair


def test_readers_never_see_a_caption_without_its_photo(growing, tiny_model_dirs):
    from search.engine import Engine
    from store import Store

    root, db = growing
    engine = Engine(db)
    long_lived = Store(db)
    pairs, views, searches = set(), 0, 0
    indexer = indexer_process(root, db, tiny_model_dirs, "--batch-size", "2", "--commit-every", "2")
    try:
        while indexer.poll() is None or views < 5:
            for store in (Store(db), long_lived):
                pairs.add(check_view(store.pinned()))
                views += 1
            if views % 10 == 0:
                hits = engine.caption_search("kite over the sea", top=50)
                searches += 1
                broken = [h for h in hits if h.image_id and not h.path]
                assert not broken, f"caption hits without their photo's path: {broken[:3]}"
    finally:
        if indexer.poll() is None:
            indexer.kill()
        finish(indexer)
    print(f"{views} views, {searches} caption searches, {len(pairs)} distinct published pairs")
    assert searches >= 3
    assert len(pairs) > 1, f"every view saw the same pair {pairs}: the test proved nothing"

    final = Store(db)
    stats = final.stats()
    assert stats["photos"] == TOTAL and stats["captions"] == TOTAL and stats["photos_with_captions"] == TOTAL
    check_view(final.pinned())
    time.sleep(FRESH_S)  # the long-lived engine sees the last commit within this bound, not at once
    hits = engine.caption_search("kite over the sea", top=TOTAL)
    assert len(hits) == TOTAL and all(h.path and Path(h.path).parent == root for h in hits)


# ------------------------------------------------------------------------------- 2. new folders are seen

@pytest.fixture(scope="module")
def two_folders(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    """(a, b, db): folder A indexed; folder B painted beside it (not inside), not yet indexed."""
    base = tmp_path_factory.mktemp("two-folders")
    a, b, db = (base / "a").resolve(), (base / "b").resolve(), base / "index"
    paint(a, range(6), prefix="a")
    paint(b, range(5), prefix="b", captions=False)
    index_here(a, db, tiny_encoders, tiny_model_dirs)
    return a, b, db


def b_ids(b: Path) -> dict[str, str]:
    from store import image_id

    return {image_id(str(b), p.name): p.name for p in sorted(b.glob("*.jpg"))}


def eventually(check, seconds: float):
    """check()'s value once it stops raising (AssertionError or a GlanceError), else its last error."""
    from core.errors import GlanceError

    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, GlanceError, AppError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_running_engine_and_app_pick_up_a_folder_indexed_meanwhile(two_folders, tiny_model_dirs,
                                                                       tmp_path_factory):
    from core.errors import UsageError
    from search.engine import Engine
    from search.filters import Filters

    a, b, db = two_folders
    engine = Engine(db)
    server = app_server.logged_in_server(tmp_path_factory, app_server.Library(db.parent, a, db, a, a))
    with server as running:
        client = Client(running.url, auth=AUTH, verbose=False)
        # the controls: before B is indexed, both refuse its folder
        with pytest.raises(UsageError, match="not inside an indexed folder"):
            engine.search("kite", filters=Filters(folder=str(b)))
        with pytest.raises(AppError, match="not inside an indexed folder"):
            client.predict("kite", folder=str(b), api_name="/search_text")
        assert len(engine.search("kite", top=50).hits) == 6

        finish(indexer_process(b, db, tiny_model_dirs))
        indexed_at = time.monotonic()
        expected = b_ids(b)

        def engine_sees_b():
            hits = engine.search("kite", filters=Filters(folder=str(b)), top=50).hits
            assert sorted(h.id for h in hits) == sorted(expected)
            return hits

        hits = eventually(engine_sees_b, FRESH_S)
        engine_s = time.monotonic() - indexed_at
        assert all(Path(h.path).parent == b for h in hits)
        some_id, some_name = next(iter(expected.items()))
        assert engine.file_path(some_id) == b / some_name
        assert len(engine.search("kite", top=50).hits) == 6 + len(expected)

        def server_sees_b():
            found = client.predict("kite", folder=str(b), top=50, api_name="/search_text")
            assert sorted(h["id"] for h in found["hits"]) == sorted(expected)
            return found

        eventually(server_sees_b, FRESH_S)
        server_s = time.monotonic() - indexed_at
        photo = client.predict(some_id, api_name="/photo")
        assert photo["id"] == some_id and photo["file"] == str(b / some_name) and photo["root"] == str(b)
        stats = client.predict(api_name="/stats")
        assert stats["photos"] == 6 + len(expected) and set(stats["roots"]) == {str(a), str(b)}
    print(f"B seen by the engine after {engine_s:.2f} s, by the server after {server_s:.2f} s")
