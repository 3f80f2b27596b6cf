"""app.py when the index is missing (the page explains, the server keeps running and picks the index up once it
exists) and when a model does not match the index (one line on stderr, exit status 2)."""
from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests import app_server
from tests.app_server import assert_no_unexpected_errors, start_app
from tests.conftest import FIXTURE


def test_a_missing_index_is_explained_until_it_is_built(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    library = app_server.shared_library(tmp_path_factory, tiny_encoders, tiny_model_dirs)
    db = tmp_path_factory.mktemp("later") / "index"
    server = start_app(tmp_path_factory, "--db", str(db))
    try:
        server.wait_ready()
        assert httpx.get(server.url, timeout=30).status_code == 200
        client = Client(server.url, verbose=False)
        explained = "no Glance index at .*: build one with `glance index ~/Pictures --db"
        for api_name, args in (("/search_text", ["red"]), ("/stats", [])):
            with pytest.raises(AppError, match=explained):
                client.predict(*args, api_name=api_name)
        if not app_server.chromium_missing():
            assert_the_page_explains(server, db)
        app_server.copy_index(library, db)  # the index appears while the app runs
        hits = client.predict("red", top=100, api_name="/search_text")["hits"]
        assert {h["relpath"] for h in hits} == set(library.ids)
        assert_a_meta_change_is_picked_up(client, db)
    finally:
        server.stop()
    assert_no_unexpected_errors(server)


def assert_a_meta_change_is_picked_up(client, db) -> None:
    """Not only other models: a new indexing run (here: its time stamp) reaches the running app."""
    from search.live import RECHECK_S
    from store import Store

    Store(db).write_meta({"last_indexed": "2031-02-03T04:05:06"})
    deadline = time.monotonic() + RECHECK_S + 30
    while client.predict(api_name="/stats")["last_indexed"] != "2031-02-03T04:05:06":
        assert time.monotonic() < deadline, "the app kept the index it had opened"
        time.sleep(1)


def assert_the_page_explains(server, db) -> None:
    with app_server.chromium() as browser:
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_function("document.querySelector('#banner')?.innerText.includes('glance index')",
                               timeout=60_000)
        banner = page.inner_text("#banner")
    assert "No photos indexed yet" in banner and f"glance index ~/Pictures --db {db}" in banner


def test_a_model_that_does_not_match_the_index_is_refused(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    from models.synthetic import write_text

    library = app_server.shared_library(tmp_path_factory, tiny_encoders, tiny_model_dirs)
    other = write_text(tmp_path_factory.mktemp("other") / "nomic-embed-text-v1.5", "tiny", seed=7, template=FIXTURE)
    server = start_app(tmp_path_factory, "--db", str(library.db), "--text-model", str(other))
    try:
        assert server.wait_exit() == 2
    finally:
        server.stop()
    lines = server.stderr().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error: --text-model") and "rebuild" in lines[0]
