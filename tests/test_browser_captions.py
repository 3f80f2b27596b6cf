"""The Index tab's caption check in a real browser: on an index with captions that belong to other photos
(tests/test_check_captions.py), "Check captions" lists exactly those, furthest first, with suggestions."""
from __future__ import annotations

import pytest

from search.consistency import check_captions
from store import Store
from tests import app_server
from tests.test_browser import WAIT_MS, wait_for_status
from tests.test_check_captions import build


def setup_module():
    missing = app_server.chromium_missing()
    if missing:
        pytest.skip(missing)


def test_the_index_tab_lists_the_captions_that_do_not_fit(tmp_path_factory):
    db, _ = build(tmp_path_factory.mktemp("check-page"))
    expected = check_captions(Store(db).pinned(), top=100)
    with app_server.page_on_index(tmp_path_factory, db) as page:
        page.get_by_role("tab", name="Index").click()
        page.click("#check-captions")
        status = wait_for_status(page, "fit their photo", "#check-status")
        last = expected.flagged[-1].text
        page.wait_for_function("t => document.querySelector('#check-table')?.innerText.includes(t)", arg=last,
                               timeout=WAIT_MS)
        table = page.inner_text("#check-table")
    assert status.startswith(f"{len(expected.flagged)} of {expected.checked} captions")
    places = [table.index(f"\n{c.text}\n") for c in expected.flagged]  # a cell of its own
    assert places == sorted(places) and len(expected.flagged) == 3  # furthest first
    assert all(" | ".join(c.suggestions) in table for c in expected.flagged)
