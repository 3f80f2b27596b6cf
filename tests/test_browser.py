"""The page in a real browser: Playwright driving Debian's Chromium against app.py on 127.0.0.1 (with --auth).

Log in, type a query, see thumbnails and load more; drop an image file on the image slot (a real drop event
carrying the file), paste one from the clipboard and upload one through the file input; click a result, read
the large view, press "More like this"; errors appear in the page; the page asks nothing of the internet.
Saves a screenshot (see save_screenshot).
"""
from __future__ import annotations

import base64
import csv
import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from tests import app_server
from tests.app_server import REPO

SCREENSHOT = REPO / "assets" / "screenshot.png"
MAX_SCREENSHOT_BYTES = 300_000
WAIT_MS = 60_000  # two busy cores


def setup_module():
    missing = app_server.chromium_missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def context(app):
    """One logged-in browser context; every request it makes outside the server is recorded."""
    with app_server.chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app.url.rstrip("/"))
        context.outside = []
        context.on("request", lambda r: None if r.url.startswith((app.url, "data:", "blob:"))
                   else context.outside.append(r.url))
        log_in(context.new_page(), app)
        yield context
        outside = context.outside
    assert outside == []  # no web fonts, CDNs or analytics: the page works offline


def log_in(page, app) -> None:
    app_server.log_in(page, app.url)
    page.close()


@pytest.fixture
def page(context, app):
    page = context.new_page()
    page.goto(app.url)
    page.wait_for_selector("#query textarea", timeout=WAIT_MS)
    yield page
    page.close()


def captions(page) -> list[str]:
    return page.locator("#gallery .caption-label").all_inner_texts()


# Gradio's progress overlay ("processing | 0.1s", "queue: 1/2 | 0.3s") sits inside the status box and can linger a
# moment after the message has arrived.
PROGRESS_OVERLAY = r"(processing|queue:[^|]*) \| [0-9.]+s"


def wait_for_status(page, pattern: str, box: str = "#status") -> str:
    """The status box's text once it matches `pattern` and gradio's progress overlay has left it."""
    page.wait_for_function("([box, p, busy]) => { const t = document.querySelector(box)?.innerText;"
                           " return new RegExp(p).test(t) && !new RegExp(busy).test(t); }",
                           arg=[box, pattern, PROGRESS_OVERLAY], timeout=WAIT_MS)
    return page.inner_text(box)


def drop_file(page, selector: str, path: Path, mime: str) -> None:
    """A real drop: dragenter, dragover and drop events whose DataTransfer carries the file's bytes."""
    page.evaluate("""([selector, b64, name, mime]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: mime}));
        const target = document.querySelector(selector);
        for (const kind of ["dragenter", "dragover", "drop"]) {
            target.dispatchEvent(new DragEvent(kind, {bubbles: true, cancelable: true, dataTransfer: transfer}));
        }
    }""", [selector, base64.b64encode(path.read_bytes()).decode(), path.name, mime])


def wait_for_thumbnails(page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length == {count}", timeout=WAIT_MS)


def test_type_a_query_see_thumbnails_and_load_more(page, app_library):
    total = len(app_library.ids)
    page.fill("#query textarea", "a red kite")
    page.press("#query textarea", "Enter")
    assert f"24 of {total} photos for “a red kite”" in wait_for_status(page, "photos for")
    wait_for_thumbnails(page, 24)
    assert all(re.fullmatch(r"-?\d\.\d{3} · .+\.(jpg|png)", c) for c in captions(page))
    page.click("#load-more")
    assert f"{total} of {total} photos" in wait_for_status(page, f"^{total} of")
    wait_for_thumbnails(page, total)
    scores = [float(c.split(" · ")[0]) for c in captions(page)]
    assert scores == sorted(scores, reverse=True) and len(set(captions(page))) == total
    assert not page.locator("#load-more").is_visible()


def test_drop_an_image_on_the_image_slot(page, app_library):
    drop_file(page, "#query-image button[aria-dropeffect]", app_library.path("nature/green.jpg"), "image/jpeg")
    wait_for_status(page, "like the query image")
    assert captions(page)[0] == "1.000 · green.jpg"


def test_paste_an_image_from_the_clipboard(page, app_library):
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
    }""", base64.b64encode(app_library.path("plain/purple.png").read_bytes()).decode())
    page.click("#query-image button[aria-label='Paste from clipboard']")
    wait_for_status(page, "like the query image")
    assert captions(page)[0] == "1.000 · purple.png"


def test_click_a_result_then_more_like_this(page, app_library, tmp_path):
    page.locator("#query-image input[type=file]").set_input_files(str(app_library.path("plain/red.jpg")))
    wait_for_status(page, "like the query image")
    page.locator("#gallery img").first.click()
    page.wait_for_selector("#detail-info h3", timeout=WAIT_MS)
    info = page.inner_text("#detail-info")
    assert str(app_library.path("plain/red.jpg")) in info and "a red kite on a sunny day" in info and "EOS 5D" in info
    page.wait_for_selector("#detail-image img", timeout=WAIT_MS)
    page.click("#more-like-this")
    wait_for_status(page, "like plain/red.jpg")
    wait_for_thumbnails(page, 24)
    assert "red.jpg" not in [c.split(" · ")[1] for c in captions(page)]
    page.locator("#gallery img").first.click()  # the large view of the best match, for the screenshot
    page.wait_for_function("document.querySelector('#detail-info')?.innerText.includes('crimson.jpg')",
                           timeout=WAIT_MS)
    save_screenshot(page, tmp_path / "more-like-this.png")


def test_image_to_text_tab(page, app_library):
    page.get_by_role("tab", name="Image → Text").click()
    page.locator("#i2t-image input[type=file]").set_input_files(str(app_library.path("nature/yellow.jpg")))
    page.wait_for_function("document.querySelector('#i2t-status')?.innerText.includes('texts nearest')",
                           timeout=WAIT_MS)
    table = page.inner_text("#i2t-table")
    assert all(text in table for text in ("receipt", "green meadow", "a red kite on a sunny day"))


def test_the_page_opens_on_the_library_newest_first(page, app_library):
    total = len(app_library.ids)
    assert f"24 of {total} photos, newest first" in wait_for_status(page, "newest first")
    wait_for_thumbnails(page, 24)
    dates = [c.split(" · ")[0] for c in captions(page)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", d) for d in dates) and dates == sorted(dates, reverse=True)
    page.click("#load-more")
    wait_for_status(page, f"^{total} of {total} photos, newest first")
    assert [c.split(" · ")[1] for c in captions(page)][-3:] == ["green.jpg", "crimson.jpg", "red.jpg"]


def test_group_by_month_draws_dividers_and_opens_the_photo_clicked(page, app_library):
    wait_for_status(page, "newest first")
    page.click("#filters")
    page.fill("#folder textarea, #folder input", "2023")
    page.fill("#date-from textarea, #date-from input", "2023-07")
    page.locator("#group label", has_text="Month").click()
    wait_for_status(page, "^3 of 3 photos, newest first")
    page.wait_for_function("document.querySelectorAll('#groups .group-gallery img').length == 3", timeout=WAIT_MS)
    dividers = [text.strip() for text in page.locator(outermost("group-divider")).all_inner_texts()]
    assert dividers == ["December 2023 · 1", "July 2023 · 2"]
    assert not page.locator("#gallery").is_visible()
    july = page.locator(outermost("group-gallery")).nth(1)
    assert july.locator(".caption-label").all_inner_texts() == ["2023-07-11 · gradient.jpg", "2023-07-10 · stripes.jpg"]
    july.locator("img").nth(1).click()
    page.wait_for_function("document.querySelector('#detail-info')?.innerText.includes('stripes.jpg')",
                           timeout=WAIT_MS)
    assert str(app_library.path("2023/trip/stripes.jpg")) in page.inner_text("#detail-info")
    page.locator("#group label", has_text="None").click()  # back to one gallery, the same three photos
    wait_for_thumbnails(page, 3)
    page.wait_for_function("document.querySelectorAll('#groups .group-divider').length == 0", timeout=WAIT_MS)


def test_group_by_day_draws_one_divider_per_day(page, app_library):
    from datetime import datetime, timezone

    wait_for_status(page, "newest first")
    page.click("#filters")
    page.fill("#folder textarea, #folder input", "2023")
    page.locator("#group label", has_text="Day").click()
    wait_for_status(page, "^5 of 5 photos, newest first")
    page.wait_for_function("document.querySelectorAll('#groups .group-gallery img').length == 5", timeout=WAIT_MS)
    dividers = [text.strip() for text in page.locator(outermost("group-divider")).all_inner_texts()]
    written = {datetime.fromtimestamp(app_library.path(p).stat().st_mtime, timezone.utc).strftime("%Y-%m-%d")
               for p in ("2023/trip/checker.png", "2023/trip-old/white.png")}  # no EXIF date: their file time
    undated = [f"{day} · {2 if len(written) == 1 else 1}" for day in sorted(written, reverse=True)]
    assert dividers == [*undated, "2023-12-31 · 1", "2023-07-11 · 1", "2023-07-10 · 1"]


def outermost(css_class: str) -> str:
    """gradio puts elem_classes on a block and on its inner element: the blocks only."""
    return f"#groups .{css_class}:not(.{css_class} .{css_class})"


def test_errors_are_shown_in_the_page(page, tmp_path):
    page.click("#filters")
    page.fill("#date-from textarea, #date-from input", "2021-13")
    page.click("#search-button")
    assert "invalid from date" in wait_for_status(page, "⚠️")
    page.fill("#date-from textarea, #date-from input", "")
    not_an_image = tmp_path / "holiday.jpg"
    not_an_image.write_text("not an image\n")
    page.locator("#query-image input[type=file]").set_input_files(str(not_an_image))
    assert "not an image Glance can read" in wait_for_status(page, "not an image")
    page.fill("#query textarea", "x" * 10_000)
    page.click("#search-button")
    assert "10,000 characters" in wait_for_status(page, "characters")


def save_screenshot(page, target: Path, asset: Path = SCREENSHOT) -> None:
    """To a temporary file, and to `asset` in assets/ (for the README) when that is missing or
    GLANCE_UPDATE_SCREENSHOT=1, quantized to stay small: a test run does not rewrite a committed file."""
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    if asset.exists() and os.environ.get("GLANCE_UPDATE_SCREENSHOT") != "1":
        return
    image = Image.open(target).convert("RGB")
    for colours in (256, 128, 64):
        out = io.BytesIO()
        image.quantize(colours, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
        if out.tell() <= MAX_SCREENSHOT_BYTES:
            break
    asset.write_bytes(out.getvalue())
    assert asset.stat().st_size <= MAX_SCREENSHOT_BYTES


def download(page, link_selector: str, target: Path) -> Path:
    """Click the file link a component shows and save what the browser downloads."""
    link = page.locator(link_selector).first
    link.wait_for(timeout=WAIT_MS)
    with page.expect_download(timeout=WAIT_MS) as started:
        link.click()
    started.value.save_as(target)
    return target


def first_page_of(page, text: str) -> list[str]:
    """Search for `text`; the names on the first page of results, best first."""
    page.fill("#query textarea", text)
    page.click("#search-button")
    wait_for_status(page, "best first")
    # The status can arrive before the gallery does, and the newest-first page it replaces also shows 24 photos:
    # wait until all 24 captions carry a score.
    page.wait_for_function("() => { const c = [...document.querySelectorAll('#gallery .caption-label')];"
                           " return c.length == 24 && c.every(e => /^-?\\d\\.\\d{3} · /.test(e.innerText)); }",
                           timeout=WAIT_MS)
    wait_for_thumbnails(page, 24)
    return [c.split(" · ")[1] for c in captions(page)]


def test_the_results_download_as_csv(page, app_library, tmp_path):
    shown = first_page_of(page, "a red kite")
    page.click("#export-csv")
    assert "24 results exported as CSV" in wait_for_status(page, "exported as CSV")
    saved = download(page, "#exported a", tmp_path / "results.csv")
    with saved.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [Path(row["path"]).name for row in rows] == shown
    assert all(row["path"].startswith(str(app_library.root)) for row in rows)
    kite = next(row for row in rows if row["path"].endswith("plain/red.jpg"))
    assert "a red kite on a sunny day" in kite["captions"]


def test_thumbs_up_refines_the_results_and_more_like_the_liked(page, app_library):
    before = first_page_of(page, "a photo")
    page.locator("#gallery img").nth(5).click()
    page.wait_for_selector("#detail-info h3", timeout=WAIT_MS)
    liked = before[5]
    page.click("#thumbs-up")
    assert "refined by 1 👍 and 0 👎" in wait_for_status(page, "refined by 1 👍")
    wait_for_thumbnails(page, 24)
    after = [c.split(" · ")[1] for c in captions(page)]
    assert liked in after and after.index(liked) <= 5
    page.click("#more-like-these")
    wait_for_status(page, "like the 1 liked photos")
    wait_for_thumbnails(page, 24)
    assert liked not in [c.split(" · ")[1] for c in captions(page)]  # the liked photo is the query


def test_a_saved_search_opens_with_its_query_and_filters(page, app, app_library):
    page.fill("#query textarea", "a photo")
    page.click("#filters")
    page.fill("#folder textarea, #folder input", "plain")
    page.click("#search-button")
    wait_for_status(page, "best first")
    first = captions(page)
    page.fill("#save-name textarea, #save-name input", "browser plain")
    page.click("#save-search")
    wait_for_status(page, "Saved “browser plain”")
    page.goto(app.url)  # the bare address (the page's own names this search)
    page.wait_for_selector("#query textarea", timeout=WAIT_MS)
    wait_for_status(page, "newest first")  # the page opens on the library again
    page.locator("#saved-list input").click()
    page.get_by_role("option", name="browser plain").click()
    page.click("#open-saved")
    wait_for_status(page, "best first")
    assert captions(page) == first
    assert page.input_value("#query textarea") == "a photo"
    page.click("#filters")
    assert page.input_value("#folder textarea, #folder input") == "plain"
    from search.saved import SavedSearches
    from store import Store

    SavedSearches(Store(app_library.db)).delete("browser plain")  # the shared index, as it was


def test_the_address_keeps_the_search_and_the_open_photo(page, app, app_library):
    page.fill("#query textarea", "a photo")
    page.click("#filters")
    page.fill("#folder textarea, #folder input", "plain")
    page.locator("#sort label", has_text="Date").click()
    wait_for_status(page, "newest first among")
    page.locator("#gallery img").nth(1).click()
    page.wait_for_selector("#detail-info h3", timeout=WAIT_MS)
    opened = page.inner_text("#detail-info h3")
    page.wait_for_function("document.location.search.includes('photo=')", timeout=WAIT_MS)
    address = page.url
    assert "q=a+photo" in address and "folder=plain" in address and "sort=date" in address
    shown = captions(page)
    again = page.context.new_page()  # the address alone, in a new tab
    again.goto(address)
    wait_for_status(again, "newest first among")
    assert captions(again) == shown and again.input_value("#query textarea") == "a photo"
    again.wait_for_selector("#detail-info h3", timeout=WAIT_MS)
    assert again.inner_text("#detail-info h3") == opened
    again.close()


def test_the_large_view_steps_with_the_keys_shows_exif_and_downloads_the_original(page, app_library, tmp_path):
    names = first_page_of(page, "a red kite")
    page.locator("#gallery img").nth(0).click()
    page.wait_for_function("n => document.querySelector('#detail-info h3')?.innerText == n", arg=names[0],
                           timeout=WAIT_MS)
    page.locator("#status").click()  # the focus off the gallery, as after reading the page
    for key, name in (("ArrowRight", names[1]), ("ArrowRight", names[2]), ("ArrowLeft", names[1])):
        page.keyboard.press(key)
        page.wait_for_function("n => document.querySelector('#detail-info h3')?.innerText == n", arg=name,
                               timeout=WAIT_MS)
    page.wait_for_function("document.querySelectorAll('#detail-map circle.here').length == 1", timeout=WAIT_MS)
    red = names.index("red.jpg")
    page.locator("#gallery img").nth(red).click()
    page.wait_for_function("document.querySelector('#detail-info h3')?.innerText == 'red.jpg'", timeout=WAIT_MS)
    assert "Model: Canon EOS 5D" in page.inner_text("#detail-info")
    page.click("#download-original")
    saved = download(page, "#original-file a", tmp_path / "original.jpg")
    assert saved.read_bytes() == app_library.path("plain/red.jpg").read_bytes()
    page.locator("#status").click()
    page.keyboard.press("Escape")
    page.wait_for_function("!document.querySelector('#detail #detail-info')", timeout=WAIT_MS)  # closed
