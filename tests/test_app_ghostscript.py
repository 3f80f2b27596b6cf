"""No query image sent to the web API (or dropped on the page) reaches Ghostscript or any other external program.

A real app server (python app.py, --auth) runs with a fake `gs` first on its PATH; the fake leaves a mark file
when anything runs it. PostScript uploads, named .eps or disguised as .jpg, must be refused by core/images.py's
allow-list with one line ("PostScript/EPS files are never opened"), and the mark must never appear. A control
test proves the fake is what Pillow would run without the allow-list, so its absence means something.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests import app_server
from tests.app_server import AUTH

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
REFUSAL = "PostScript/EPS files are never opened"
NAMES = ["q.eps", "holiday.jpg"]  # PostScript named as such, and disguised as a JPEG
ENDPOINTS = ["/search_image", "/image_to_text"]


@pytest.fixture(scope="module")
def fake_gs(tmp_path_factory):
    """(environment with a `gs` first on PATH that leaves a mark when run, the mark file)."""
    base = tmp_path_factory.mktemp("fake-gs")
    bin_dir, mark = base / "bin", base / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" > {mark}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, mark


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eps-uploads")
    for name in NAMES:
        (folder / name).write_bytes(EPS)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, app_library, fake_gs):
    env, _ = fake_gs
    with app_server.logged_in_server(tmp_path_factory, app_library, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, auth=AUTH, verbose=False)


def test_the_fake_ghostscript_is_what_pillow_would_run(tmp_path, fake_gs):
    """The control (runs first): Pillow alone, without the allow-list, on the very PATH the server gets, does
    hand PostScript to the fake gs, so an absent mark below means the allow-list stopped it."""
    env, mark = fake_gs
    eps = tmp_path / "q.eps"
    eps.write_bytes(EPS)
    child = "import sys\nfrom PIL import Image\ntry:\n    Image.open(sys.argv[1]).load()\nexcept Exception:\n    pass"
    subprocess.run([sys.executable, "-c", child, str(eps)], env={**os.environ, **env}, timeout=60, check=True)
    assert mark.exists()
    mark.unlink()  # made by this control only: the server tests need a clean mark


@pytest.mark.parametrize("api_name", ENDPOINTS)
@pytest.mark.parametrize("name", NAMES)
def test_no_uploaded_query_image_reaches_ghostscript(client, server, uploads, fake_gs, name, api_name):
    _, mark = fake_gs
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(str(uploads / name)), api_name=api_name)
    message = str(raised.value)
    assert REFUSAL in message, message
    assert "\n" not in message.strip() and "Traceback" not in message and "/tmp/gradio" not in message
    assert not mark.exists(), mark.read_text()
    app_server.assert_no_unexpected_errors(server)


def test_the_page_refuses_a_dropped_eps_in_one_line(server, uploads, fake_gs):
    """The browser path (the image slot's upload event, preprocess=False) refuses it too, in one line. The EPS
    goes as image/x-eps (a type some systems give .eps files), since gradio's page itself turns away files
    whose type is not image/* (checked last: application/postscript never leaves the browser)."""
    missing = app_server.chromium_missing()
    if missing:
        pytest.skip(missing)
    from tests.test_browser import WAIT_MS, drop_file, log_in

    _, mark = fake_gs
    slot = "#query-image button[aria-dropeffect]"
    with app_server.chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        log_in(context.new_page(), server)

        def fresh_page():
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_selector("#query textarea", timeout=WAIT_MS)
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('newest first')",
                                   timeout=WAIT_MS)  # the page opens on the library: that event is done
            return page

        for name, mime in (("q.eps", "image/x-eps"), ("holiday.jpg", "image/jpeg")):
            page = fresh_page()
            drop_file(page, slot, uploads / name, mime)
            # Gradio's "processing" overlay can linger in the status box a moment after the message arrives
            page.wait_for_function("(t => t.includes('⚠️') && !t.includes('processing'))"
                                   "(document.querySelector('#status')?.innerText ?? '')", timeout=WAIT_MS)
            status = page.inner_text("#status").strip()
            assert REFUSAL in status and "\n" not in status, status
            page.close()
        page = fresh_page()
        drop_file(page, slot, uploads / "q.eps", "application/postscript")
        page.get_by_text("Invalid file type").wait_for(timeout=WAIT_MS)  # gradio's own refusal, in the browser
        status = page.inner_text("#status").strip()  # still the library the page opened on: nothing was sent
        assert "newest first" in status and "⚠️" not in status, status
        context.close()
    assert not mark.exists()
    app_server.assert_no_unexpected_errors(server)
