"""The index's latest evaluation: `glance eval` keeps its report in extras/eval.json (even a read-only index still
gets its figures printed), search/eval_report.py turns it into table rows and plot points, and the page's Index tab
shows it (real server on 127.0.0.1, real Chromium) as it follows the index: none yet, current, stale."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from search import eval_report, evaluate
from store import DIM, Store
from tests import app_server
from tests.test_eval import class_library, glance_process, write_index

WAIT_MS = 60_000  # two busy cores
CAPTIONED, PHOTOS = 24, 26


# ----- the report -> table rows and plot points --------------------------------------------------------------
@pytest.fixture(scope="module")
def classes_db(tmp_path_factory):
    photos, captions = class_library()
    return write_index(tmp_path_factory.mktemp("tab-classes") / "index", photos, captions).path


def test_rows_and_points_come_from_the_report_figures(classes_db):
    report = evaluate.run(str(classes_db), seed=3, resamples=50)
    rows, points = eval_report.table_rows(report), eval_report.plot_points(report)
    full = report["rows"][0]["caption_to_photo"]
    assert [r[:2] for r in rows] == [[128, "512"], [64, "256"]]
    assert rows[0][2:6] == [f"{full[m]['value']:.3f}" for m in ("recall@1", "recall@5", "recall@10", "mrr")]
    assert rows[0][6] == f"{report['rows'][0]['photo_to_caption']['recall@5']['value']:.3f}"
    assert [(p["dim"], p["metric"]) for p in points] == [(64, "recall@1"), (64, "recall@5"), (64, "recall@10"),
                                                         (128, "recall@1"), (128, "recall@5"), (128, "recall@10")]
    assert points[-1]["recall"] == full["recall@10"]["value"]
    assert eval_report.latest(Store(classes_db)) is None  # evaluate.run computes; only the command saves


def test_extra_keys_are_ignored_and_missing_figures_are_blanks():
    report = {"rows": [{"dim": 256, "caption_to_photo": {"recall@1": {"value": 0.5}, "recall@5": {"value": 0.75}},
                        "vector_index": "ivf"},  # no bytes, no recall@10, no MRR, no photo -> caption
                       {"index": "ivf_pq", "recall": 0.9},  # another kind of row: no dim, not a dimension row
                       "not a row"],
              "caption_models": {"minilm": {"rows": []}}}
    assert eval_report.table_rows(report) == [[256, "–", "0.500", "0.750", "–", "–", "–"]]
    assert eval_report.plot_points(report) == [{"dim": 256, "recall": 0.5, "metric": "recall@1"},
                                               {"dim": 256, "recall": 0.75, "metric": "recall@5"}]
    assert eval_report.table_rows({}) == [] and eval_report.plot_points({"rows": None}) == []
    assert eval_report.ran_at({}) == "unknown" and eval_report.ran_at({"evaluated_at": "tuesday"}) == "unknown"
    assert eval_report.ran_at({"evaluated_at": "2024-05-01T12:30:09+02:00"}) == "2024-05-01 10:30 UTC"


def test_a_report_of_other_models_is_stale():
    meta = {"vision_model": "v", "text_model": "t", "model_version": "v1.5", "dim": 128, "preprocess_version": 1}
    report = {**meta, "rows": [], "tuning_rows": []}
    assert not eval_report.is_stale(report, meta)
    assert eval_report.is_stale(report, {**meta, DIM: 64})
    assert eval_report.is_stale(report, {**meta, "vision_model": "other"})
    assert eval_report.is_stale({"rows": []}, meta)  # a report that does not say what it measured


# ----- the command keeps its report ------------------------------------------------------------------------
def test_the_command_saves_what_it_prints(tmp_path, classes_db):
    db = tmp_path / "index"
    shutil.copytree(classes_db, db)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    done = glance_process("eval", "--db", db, "--json", "--seed", "3")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    printed = json.loads(done.stdout)
    assert json.loads((db / "extras" / "eval.json").read_text()) == printed
    ran = datetime.fromisoformat(printed["evaluated_at"])
    assert ran.utcoffset() == timedelta(0) and before <= ran <= datetime.now(timezone.utc)
    assert printed["pairs"] == 141 and [r["dim"] for r in printed["rows"]] == [128, 64]
    latest = eval_report.latest(Store(db))
    assert latest.report == printed and not latest.stale
    table = glance_process("eval", "--db", db, "--seed", "4")  # the table form saves too, replacing the last one
    assert table.returncode == 0 and "pairs: 141" in table.stdout
    assert json.loads((db / "extras" / "eval.json").read_text())["bootstrap"]["seed"] == 4


NO_DAC_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-dac_override,-dac_read_search"]


def as_plain_user() -> list[str]:
    """The prefix that makes the command see file permissions: none for a normal user; root keeps its uid but
    loses the capabilities that let it write into read-only folders (skipped where that cannot be done)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None or subprocess.run([*NO_DAC_OVERRIDE, "true"]).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here: chmod restricts nothing")
    return NO_DAC_OVERRIDE


def test_a_read_only_index_still_gets_its_figures(tmp_path, classes_db):
    db = tmp_path / "index"
    shutil.copytree(classes_db, db)
    folders = [db, *(p for p in db.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        done = subprocess.run([*as_plain_user(), sys.executable, "-m", "glance", "eval", "--db", str(db)],
                              cwd=app_server.REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                              text=True, timeout=120)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert done.returncode == 0 and "pairs: 141 (caption, photo)" in done.stdout
    assert "caption -> photo: 140 queries" in done.stdout
    assert done.stderr.strip() == (f"glance: warning: the evaluation is not kept in the index ({db / 'extras'}: "
                                   "Permission denied)")
    assert not (db / "extras").exists()


def test_an_index_where_the_report_cannot_go_still_gets_its_figures(tmp_path, classes_db):
    """The same path as a read-only folder, for any user (root included): extras/ cannot be made."""
    db = tmp_path / "index"
    shutil.copytree(classes_db, db)
    (db / "extras").write_text("a file where the extras folder should be\n")
    done = glance_process("eval", "--db", db, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["pairs"] == 141
    assert done.stderr.strip() == (f"glance: warning: the evaluation is not kept in the index ({db / 'extras'}: "
                                   "File exists)")


# ----- the Index tab in a real browser -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def captioned_library(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    """CAPTIONED of PHOTOS photos captioned, indexed by the real indexer with the tiny models (recorded, so the
    server and `glance index` find them)."""
    from indexer.pipeline import IndexOptions, index

    root = tmp_path_factory.mktemp("tab-photos")
    for i in range(PHOTOS):
        Image.new("RGB", (64, 48), (9 * i, 255 - 9 * i, (70 * i) % 256)).save(root / f"photo{i:02d}.png")
        if i < CAPTIONED:
            (root / f"photo{i:02d}.png.txt").write_text(f"a plain square in colour {i}")
    db = root.parent / f"{root.name}-index"
    vision, text = map(str, tiny_model_dirs)
    summary = index(IndexOptions(paths=[str(root)], db=db, vision_model=vision, text_model=text,
                                 encoders=tiny_encoders, precision="fp32", workers=1))
    assert not summary.problems, summary.problems
    return root, db


def reindex_at(root: Path, db: Path, dim: int, model_dirs) -> None:
    vision, text = map(str, model_dirs)
    done = subprocess.run([sys.executable, "-m", "glance", "index", str(root), "--db", str(db), "--reindex", "--dim",
                           str(dim), "--vision-model", vision, "--text-model", text, "--precision", "fp32", "-q"],
                          cwd=app_server.REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def open_index_tab(page, expected: str) -> str:
    """Away and back, as a user does: opening the tab reads the index again. Waits for that event to be sent
    and done (its outputs' progress trackers hidden again), so what is read is its answer, not the last one."""
    page.get_by_role("tab", name="Search").click()
    with page.expect_response(lambda r: "/queue/join" in r.url and r.ok, timeout=WAIT_MS):
        page.get_by_role("tab", name="Index").click()
    page.wait_for_function("""t => !document.querySelector("#stats .wrap:not(.hide), #eval-summary .wrap:not(.hide)")
                                  && document.querySelector("#eval-summary")?.innerText.includes(t)""",
                           arg=expected, timeout=WAIT_MS)
    return page.inner_text("#eval-summary")


def test_the_index_tab_follows_the_evaluations(tmp_path_factory, captioned_library, tiny_model_dirs):
    missing = app_server.chromium_missing()
    if missing:
        pytest.skip(missing)
    root, db = captioned_library
    server = app_server.start_app(tmp_path_factory, "--db", str(db)).wait_ready()
    try:
        with app_server.chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            outside = []
            page.on("request", lambda r: None if r.url.startswith((server.url, "data:", "blob:"))
                    else outside.append(r.url))
            page.goto(server.url)
            page.wait_for_selector("#query textarea", timeout=WAIT_MS)
            walk_through_the_states(page, root, db, tiny_model_dirs)
            assert outside == []  # the plot's library is served by the app, not fetched from a CDN
    finally:
        server.stop()
    app_server.assert_no_unexpected_errors(server)


def walk_through_the_states(page, root: Path, db: Path, model_dirs) -> None:
    shows_none(page, db)
    stats = stats_rows(page)
    assert stats["Captioned photos"] == str(CAPTIONED) and stats["Caption model"] == "none"
    assert stats["Dimension"] == "128" and stats["Vector index"] == "none (exact search)"

    done = glance_process("eval", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    shows_current(page, report)

    reindex_at(root, db, 64, model_dirs)  # a rebuild forgets the old models' report ...
    assert not (db / "extras" / "eval.json").exists()
    page.reload()
    page.wait_for_selector("#query textarea", timeout=WAIT_MS)
    shows_none(page, db)
    # ... but an evaluation that read the index before the rebuild can finish, and save, after it
    Store(db).write_report("eval", report)
    summary = open_index_tab(page, "stale")
    assert "dimension 128" in summary and eval_report.ran_at(report) in summary
    assert f"glance eval --db {db}" in summary
    assert not page.locator("#eval-table").is_visible() and not page.locator("#eval-plot").is_visible()


def table_cells(page) -> tuple[list[str], list[list[str]]]:
    """The Dataframe's headers and rows, as its grid roles name them."""
    return page.evaluate("""() => {
        const headers = [...document.querySelectorAll("#eval-table th[role=columnheader]")].map(th => th.title);
        const rows = [];
        for (const cell of document.querySelectorAll("#eval-table [role=gridcell]")) {
            (rows[cell.dataset.row] ??= [])[cell.dataset.col] = cell.innerText.trim();
        }
        return [headers, rows];
    }""")


def stats_rows(page) -> dict[str, str]:
    """The stats table's name -> value cells, read from the table itself: innerText lays cells out with tabs only
    while the tab panel is drawn, and a panel mid-switch reads as one run of text."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll("#stats tbody tr")]
        .map(tr => [...tr.cells].map(cell => cell.textContent.trim())).filter(cells => cells.length === 2))""")


def shows_none(page, db: Path) -> None:
    summary = open_index_tab(page, "No evaluation yet")
    assert f"glance eval --db {db}" in summary
    assert stats_rows(page)["Photos"] == str(PHOTOS)
    assert not page.locator("#eval-table").is_visible() and not page.locator("#eval-plot").is_visible()


def shows_current(page, report: dict) -> None:
    summary = open_index_tab(page, "pairs")
    assert f"{CAPTIONED} pairs" in summary and eval_report.ran_at(report) in summary and "stale" not in summary
    page.wait_for_selector("#eval-table", state="visible", timeout=WAIT_MS)
    expected = [[str(cell) for cell in row] for row in eval_report.table_rows(report)]
    assert [row[0] for row in expected] == ["128", "64"]
    assert table_cells(page) == [eval_report.TABLE_HEADERS, expected]
    page.wait_for_selector("#eval-plot svg .mark-line path", state="attached", timeout=WAIT_MS)
    # one line per recall@k; vega labels each with its first point, the smallest dimension
    lines = [dict(part.split(": ") for part in label.split("; "))
             for label in page.locator("#eval-plot svg .mark-line path").evaluate_all(
                 "paths => paths.map(p => p.getAttribute('aria-label'))")]
    first = {p["metric"]: p["recall"] for p in eval_report.plot_points(report) if p["dim"] == 64}
    assert sorted(line["metric"] for line in lines) == sorted(first) == ["recall@1", "recall@10", "recall@5"]
    assert all(line["dimension"] == "64" and float(line["recall"]) == pytest.approx(first[line["metric"]])
               for line in lines)
    drawn = page.locator("#eval-plot svg").text_content()
    assert all(label in drawn for label in ("recall@1", "recall@5", "recall@10", "dimension", "64", "128"))
    box = page.locator("#eval-plot").bounding_box()
    assert box["width"] > 400 and box["height"] > 200
