"""Near-duplicates collapsed in the page, in a real browser: with "Collapse near-duplicates" a search over a
library of bursts (tests/burst_library.py) shows one tile per burst, marked "+N similar", and clicking such a
tile opens its group in place and shows the photo."""
from __future__ import annotations

import pytest

from tests import app_server
from tests.app_server import REPO
from tests.test_browser import WAIT_MS, captions, save_screenshot, wait_for_status


def setup_module():
    missing = app_server.chromium_missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def page(tmp_path_factory, bursts):
    with app_server.page_on_index(tmp_path_factory, bursts[1]) as page:
        yield page


def test_a_burst_is_one_tile_that_opens_on_click(page, bursts, tmp_path):
    root, db, expected, lone = bursts
    wait_for_status(page, "newest first")
    page.click("#filters")
    page.locator("#collapse input").check()
    page.fill("#query textarea", "a photo")
    page.click("#search-button")
    status = wait_for_status(page, "near-duplicates collapsed")
    tiles = len(expected) + len(lone)
    assert status.startswith(f"{tiles} of ") and f"{sum(map(len, expected.values())) - len(expected)} near" in status
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length == {tiles}", timeout=WAIT_MS)
    shown = captions(page)
    bursts_shown = [i for i, text in enumerate(shown) if text.endswith("similar")]
    assert len(bursts_shown) == len(expected)
    members = len(next(iter(expected.values())))
    assert all(shown[i].endswith(f"+{members - 1} similar") for i in bursts_shown)
    first = bursts_shown[0]
    page.locator("#gallery img").nth(first).click()
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length == {tiles + members - 1}",
                           timeout=WAIT_MS)
    opened = captions(page)
    assert not opened[first].endswith("similar")  # its group now follows it
    group_names = {text.split(" · ")[1] for text in opened[first:first + members]}
    assert len(group_names) == members and all(name.startswith("shot") for name in group_names)
    page.wait_for_selector("#detail-info h3", timeout=WAIT_MS)
    assert str(root) in page.inner_text("#detail-info")
    save_screenshot(page, tmp_path / "duplicates.png", REPO / "assets" / "duplicates.png")


def test_a_box_on_the_map_asks_for_more_like_those_photos(page, bursts, tmp_path):
    root, db, expected, lone = bursts
    page.get_by_role("tab", name="Map").click()
    total = sum(map(len, expected.values())) + len(lone)
    page.wait_for_function(f"document.querySelectorAll('#map circle').length == {total}", timeout=WAIT_MS)
    assert f"{total} of {total} photos, placed by PCA" in page.inner_text("#map-status")
    first = page.locator("#map circle").first.bounding_box()
    page.mouse.move(first["x"] + first["width"] / 2, first["y"] + first["height"] / 2)  # hover: its thumbnail
    page.wait_for_function("document.querySelector('#map-preview img')?.src", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#map-preview-name')?.innerText.includes('.jpg')",
                           timeout=WAIT_MS)
    save_screenshot(page, tmp_path / "map.png", REPO / "assets" / "map.png")
    frame = page.locator("#map svg").bounding_box()
    inside = page.evaluate("[...document.querySelectorAll('#map circle')].filter(c => +c.getAttribute('cx') < 480)"
                           ".length")
    assert 0 < inside < total
    page.mouse.move(frame["x"] + 2, frame["y"] + 2)  # a box around the left half of the map
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] / 4, frame["y"] + frame["height"] / 2, steps=5)
    page.mouse.move(frame["x"] + frame["width"] * 0.48, frame["y"] + frame["height"] - 2, steps=5)
    page.mouse.up()
    status = wait_for_status(page, "like the .* liked photos")
    assert f"{total - inside} of {total - inside} photos like the {inside} liked photos" in status
    page.get_by_role("tab", name="Map").click()
    page.wait_for_function(f"document.querySelectorAll('#map circle').length == {total}", timeout=WAIT_MS)
    spot = page.locator("#map circle").first.bounding_box()
    x, y = spot["x"] + spot["width"] / 2, spot["y"] + spot["height"] / 2
    name = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('circle').querySelector('title')"
                         ".textContent", [x, y]).split(" · ")[0]  # the point on top there
    page.mouse.click(x, y)
    wait_for_status(page, f"like .*{name}")
    page.wait_for_function("n => document.querySelector('#detail-info')?.innerText.includes(n)", arg=name,
                           timeout=WAIT_MS)
