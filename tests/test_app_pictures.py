"""Pictures for the page (search/preview.py) on a library of its own, indexed by the real indexer: a 60 MP photo
gets a real large preview, and a thumbnail damaged in the index costs its tile, not the search (in Chromium,
against a real server on 127.0.0.1)."""
from __future__ import annotations

import lancedb
import pytest
from PIL import Image

from store import Store
from tests import app_server
from tests.app_server import AUTH

BIG = "big/sixty-megapixels.jpg"
DAMAGED = "plain/red.jpg"  # its thumbnail bytes are replaced by junk in the index
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    library = app_server.paint_library(tmp_path_factory.mktemp("pictures-library"))
    big = library.path(BIG)
    big.parent.mkdir()
    Image.new("RGB", (10_000, 6_000), (20, 90, 200)).save(big, quality=80)  # solid: cheap to write and to index
    app_server.index_library(library, tiny_encoders, tiny_model_dirs)
    images = lancedb.connect(str(library.db)).open_table("images")
    images.update(where=f"relpath = '{DAMAGED}'", values={"thumb": b"junk"})
    Store(library.db).publish()  # readers see what a writer published: the damage too
    return library


@pytest.fixture(scope="module")
def engine(library):
    from search.engine import Engine

    return Engine(library.db)


@pytest.fixture
def pictures():
    from search.preview import Pictures

    made = Pictures()
    yield made
    made.remove()


def test_a_60_megapixel_photo_gets_a_large_preview(engine, pictures, library):
    from search.preview import PREVIEW_PX

    image, note = pictures.preview(engine, library.ids[BIG])
    assert note == "" and isinstance(image, Image.Image)
    assert image.size == (PREVIEW_PX, PREVIEW_PX * 6 // 10) and image.getpixel((10, 10)) == pytest.approx(
        (20, 90, 200), abs=3)


def test_a_damaged_thumbnail_becomes_the_placeholder(engine, pictures, library):
    assert pictures.thumbnail(engine, library.ids[DAMAGED]) == str(pictures.placeholder)
    good = pictures.thumbnail(engine, library.ids["plain/sub/crimson.jpg"])
    assert good != str(pictures.placeholder) and Image.open(good).size == app_server.SIZE


@pytest.fixture(scope="module")
def page(tmp_path_factory, library):
    missing = app_server.chromium_missing()
    if missing:
        pytest.skip(missing)
    with app_server.logged_in_server(tmp_path_factory, library) as server, app_server.chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url)
        page.fill("input[type=password]", AUTH[1])
        page.locator("input[type=text]").first.fill(AUTH[0])
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#query textarea", timeout=WAIT_MS)
        yield page


def search_folder(page, folder: str, count: int) -> None:
    page.locator("#filters").click()
    page.fill("#folder textarea", folder)
    page.fill("#query textarea", "photo")
    page.press("#query textarea", "Enter")
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length == {count} && "
                           "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)",
                           timeout=WAIT_MS)


def test_the_page_shows_every_result_around_a_damaged_thumbnail(page):
    search_folder(page, "plain", 3)
    assert "3 of 3 photos" in page.inner_text("#status")
    tiles = page.evaluate("""[...document.querySelectorAll('#gallery button.thumbnail-item')].map(b => ({
        caption: b.querySelector('.caption-label')?.innerText,
        size: [b.querySelector('img').naturalWidth, b.querySelector('img').naturalHeight]}))""")
    sizes = {tile["caption"].split(" · ")[1]: tuple(tile["size"]) for tile in tiles}
    assert sizes == {"red.jpg": (64, 64), "crimson.jpg": app_server.SIZE, "purple.png": app_server.SIZE}


def test_the_page_shows_a_60_megapixel_photo_large(page):
    page.reload()
    # the reloaded page first runs the search its address names (?q=photo): a search started before that one
    # has answered would be overwritten by it
    page.wait_for_function("document.querySelector('#status')?.innerText.includes(' photos')", timeout=WAIT_MS)
    search_folder(page, "big", 1)
    page.locator("#gallery img").first.click()
    page.wait_for_function("document.querySelector('#detail-image img')?.naturalWidth > 0", timeout=WAIT_MS)
    width = page.evaluate("document.querySelector('#detail-image img').naturalWidth")
    assert width == 1280 and "showing the thumbnail" not in page.inner_text("#detail-info")
