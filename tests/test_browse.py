"""Browsing the library without a query, results ordered by date, and day/month groups (search/timeline.py),
through the engine over the painted library of tests/search_library.py, and through `glance search`, which can
also export a result list as a folder of links (search/export.py)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

import store.reading as store_reading
from core.errors import UsageError
from search import timeline
from search.engine import Engine
from search.filters import Filters
from store import Store
from tests.test_cold_start import glance_in_fresh_process

# The painted photos by taken-at date, newest first (tests/search_library.py). "black" has no date, nor has the
# photo behind the symlink "escape": their file times (this session) make them the newest.
DATED_NEWEST_FIRST = ["purple", "cyan", "gradient", "checker", "stripes", "white", "yellow", "blue", "green", "red2",
                      "red"]


@pytest.fixture(scope="module")
def engine(library):
    return Engine(library.db, precision="fp32")


def names(library, hits):
    return [library.name_of(h.id) for h in hits]


def test_browsing_shows_the_library_newest_first_by_taken_at_then_file_time(engine, library):
    results = engine.browse(top=50)
    shown = names(library, results.hits)
    undated = sorted(results.hits[:2], key=lambda h: (-h.file_time.timestamp(), h.id))
    assert set(shown[:2]) == {"black", "escape"} and [h.id for h in results.hits[:2]] == [h.id for h in undated]
    assert shown[2:] == DATED_NEWEST_FIRST
    assert all(h.taken_at is None and h.file_time is not None for h in results.hits[:2])
    assert (results.sort, results.total_considered, results.has_more) == ("date", 13, False)


def test_browsing_pages_through_one_order(engine, library):
    whole = [h.id for h in engine.browse(top=50).hits]
    pages = [engine.browse(top=5, offset=offset) for offset in (0, 5, 10)]
    assert [h.id for page in pages for h in page.hits] == whole
    assert [page.has_more for page in pages] == [True, True, False]
    beyond = engine.browse(top=5, offset=40)
    assert beyond.hits == [] and not beyond.has_more


def test_the_filters_apply_to_browsing(engine, library):
    assert names(library, engine.browse(Filters(folder="2023")).hits) == ["cyan", "gradient", "checker"]
    summer = engine.browse(Filters(date_from="2022-07", date_to="2022-08"))
    assert names(library, summer.hits) == ["yellow", "blue", "green"] and summer.total_considered == 3
    captioned = engine.browse(Filters(has_caption=True), top=50)
    assert names(library, captioned.hits) == ["checker", "stripes", "yellow", "green", "red"]
    nothing = engine.browse(Filters(folder="no/such/folder"))
    assert nothing.hits == [] and "no photos match the filters" in nothing.note


def test_a_query_sorted_by_date_keeps_its_matches_and_orders_them_newest_first(engine, library):
    by_relevance = engine.search(like=library.ids["red"], top=50)
    by_date = engine.search(like=library.ids["red"], top=50, sort="date")
    assert {h.id for h in by_date.hits} == {h.id for h in by_relevance.hits} and by_date.sort == "date"
    dated = [n for n in names(library, by_date.hits) if n not in ("black", "escape")]
    assert dated == [n for n in DATED_NEWEST_FIRST if n != "red"]
    score = {h.id: h.score for h in by_relevance.hits}
    assert all(h.score == pytest.approx(score[h.id]) for h in by_date.hits)  # the scores are the query's
    pages = [engine.search(like=library.ids["red"], top=4, offset=o, sort="date") for o in (0, 4, 8)]
    assert [h.id for p in pages for h in p.hits] == [h.id for h in by_date.hits]


def test_a_sort_that_is_not_known_is_refused(engine, library):
    with pytest.raises(UsageError, match="sort must be one of: relevance, date"):
        engine.search("red", sort="newest")
    with pytest.raises(UsageError, match="offset must be a whole number"):
        engine.browse(offset=-1)


def test_groups_by_day_and_month_follow_the_list(engine, library):
    hits = engine.browse(Filters(date_from="2022", date_to="2023-07"), top=50).hits
    months = [(label, names(library, members)) for label, members in timeline.groups(hits, "month")]
    assert months == [("July 2023", ["gradient", "checker"]), ("June 2023", ["stripes"]),
                      ("January 2023", ["white"]), ("August 2022", ["yellow"]), ("July 2022", ["blue", "green"])]
    days = [label for label, _ in timeline.groups(hits, "day")]
    assert days == ["2023-07-11", "2023-07-10", "2023-06-01", "2023-01-05", "2022-08-01", "2022-07-31", "2022-07-14"]
    ranked = engine.search(like=library.ids["red"], top=50).hits  # a relevance list: groups where they first appear
    grouped = timeline.groups(ranked, "month")
    assert sum(len(members) for _, members in grouped) == len(ranked)
    assert grouped[0][1][0].id == ranked[0].id and len({label for label, _ in grouped}) == len(grouped)


def test_undated_rows_come_last_in_the_date_order():
    rows = pa.table({"id": ["a", "b", "c", "d"],
                     "taken_at": pa.array([None, datetime(2020, 1, 1), None, datetime(2021, 1, 1)], pa.timestamp("s")),
                     "mtime_ns": pa.array([None, 5 * 10**18, 1_600_000_000 * 10**9, None], pa.int64())})
    # c's file time (2020-09) is between b's and d's taken-at dates; a has no date at all
    assert timeline.newest_first(rows).to_pylist() == ["d", "c", "b", "a"]
    assert timeline.group_label(None, "day") == "date unknown"


def test_a_new_snapshot_is_browsed_afresh(library, tmp_path, monkeypatch):
    copy = tmp_path / "index"
    shutil.copytree(library.db, copy)
    engine = Engine(copy, precision="fp32")
    assert names(library, engine.browse(top=50).hits)[2] == "purple"
    Store(copy).delete_photos([library.ids["purple"]])
    Store(copy).publish()
    monkeypatch.setattr(store_reading, "PAIR_TTL_S", 0.0)
    assert names(library, engine.browse(top=50).hits)[2:] == DATED_NEWEST_FIRST[1:]


# --------------------------------------------------------------------------------------------- the CLI

def glance(*args):
    return subprocess.run([sys.executable, "-m", "glance", "search", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_the_cli_browses_and_groups(library):
    done = glance("--db", library.db, "--sort", "date", "--group", "month", "--from", "2023", "--to", "2023-07")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "# July 2023 (2)" and lines[3] == "# June 2023 (1)" and lines[5] == "# January 2023 (1)"
    date, path = lines[1].split("\t")
    assert date == "2023-07-11 00:00:00" and path == str(library.path("gradient"))
    as_json = json.loads(glance("--db", library.db, "--sort", "date", "--group", "day", "--folder", "2023",
                                "--json").stdout)
    assert [(hit["file"], hit["group"]) for hit in as_json] == [
        (str(library.path("cyan")), "2023-12-31"), (str(library.path("gradient")), "2023-07-11"),
        (str(library.path("checker")), "2023-07-10")]


def test_browsing_from_the_cli_loads_no_model(library, engine, tmp_path):
    """Browsing needs only the index: no torch, so no seconds of imports and model loading."""
    done = glance_in_fresh_process(["search", "--sort", "date", "--top", "5", "--db", str(library.db)], ("torch",),
                                   {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert "LOADED [] 0" in done.stdout, done.stdout + done.stderr
    printed = [line.split("\t")[1] for line in done.stdout.splitlines()[:-1]]
    assert printed == [hit.path for hit in engine.browse(top=5).hits]
    missing = glance("--db", tmp_path / "nothing-here", "--sort", "date")
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


def test_the_cli_takes_liked_and_disliked_photos(library):
    liked = glance("--db", library.db, "--liked", library.path("red"), "--liked", library.ids["blue"], "--json",
                   "--top", "50")
    assert liked.returncode == 0, liked.stderr
    files = [hit["file"] for hit in json.loads(liked.stdout)]
    assert str(library.path("red")) not in files and str(library.path("blue")) not in files and files
    refined = glance("--db", library.db, "a photo", "--disliked", library.path("green"), "--json", "--top", "50")
    assert refined.returncode == 0 and str(library.path("green")) not in refined.stdout


def saved_cli(*args):
    return subprocess.run([sys.executable, "-m", "glance", "saved", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_glance_saved_adds_lists_runs_and_removes(library, tmp_path):
    db = tmp_path / "index"
    shutil.copytree(library.db, db)  # saved searches live in the index folder
    added = saved_cli("add", "trip", "red", "--folder", "2023", "--sort", "date", "--db", db)
    assert added.returncode == 0 and "saved 'trip'" in added.stderr
    assert saved_cli("add", "newest", "--db", db).returncode == 0
    listed = saved_cli("--db", db)
    assert listed.stdout.splitlines() == ["newest\tthe whole library, newest first",
                                          "trip\t“red”, folder 2023, newest first"]
    ran = saved_cli("run", "trip", "--db", db, "--json")
    direct = glance("--db", db, "red", "--folder", "2023", "--sort", "date", "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout) == json.loads(direct.stdout)
    assert json.loads(saved_cli("--db", db, "--json").stdout)[1]["folder"] == "2023"
    assert saved_cli("remove", "trip", "--db", db).returncode == 0
    missing = saved_cli("run", "trip", "--db", db)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no saved search" in missing.stderr
    bad = saved_cli("add", "x", "--from", "2021-13", "--db", db)
    assert bad.returncode == 2 and "invalid from date" in bad.stderr


def test_the_cli_asks_for_a_query_or_a_date_sort(library):
    done = glance("--db", library.db)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "browse with --sort date" in done.stderr
    bad = glance("--db", library.db, "--sort", "newest")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_the_cli_exports_a_result_list_as_numbered_links(library, tmp_path):
    target = tmp_path / "picked" / "summer"
    done = glance("--db", library.db, "--sort", "date", "--folder", "2023", "--export-links", target)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"glance: linked 3 photos into {target}" and done.stdout.count("\n") == 3
    links = sorted(target.iterdir())
    assert [link.name for link in links] == ["0001-cyan.png", "0002-gradient.png", "0003-checker.png"]
    assert [Path(os.readlink(link)) for link in links] == [library.path(n) for n in ("cyan", "gradient", "checker")]
    again = glance("--db", library.db, "--sort", "date", "--folder", "2023", "--export-links", target)
    assert again.returncode == 2 and "already exists" in again.stderr and len(list(target.iterdir())) == 3


def test_the_cli_exports_a_result_list_as_csv_and_json(library, tmp_path):
    table = tmp_path / "out" / "summer.csv"
    done = glance("--db", library.db, "--sort", "date", "--folder", "2023", "--export", table)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"glance: wrote 3 results to {table}"
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [str(library.path(n)) for n in ("cyan", "gradient", "checker")]
    assert list(rows[0]) == ["path", "score", "taken_at", "captions"] and rows[0]["taken_at"].startswith("2023-12-31")
    listed = tmp_path / "captioned.json"
    assert glance("--db", library.db, "red", "--has-caption", "--top", "50", "--export", listed).returncode == 0
    exported = json.loads(listed.read_text())
    shown = json.loads(glance("--db", library.db, "red", "--has-caption", "--top", "50", "--json").stdout)
    assert [row["path"] for row in exported] == [hit["file"] for hit in shown]
    assert all(row["captions"] and all(isinstance(t, str) for t in row["captions"]) for row in exported)
    for bad, words in ((tmp_path / "x.txt", "must end in .csv or .json"), (library.root / "x.csv", "never writes"),
                       (tmp_path, "must end in .csv")):
        refused = glance("--db", library.db, "red", "--export", bad)
        assert refused.returncode == 2 and words in refused.stderr and refused.stderr.count("\n") == 1
    assert not (library.root / "x.csv").exists()


def test_export_never_writes_into_the_library(library):
    before = sorted(p.relative_to(library.root) for p in library.root.rglob("*"))
    for inside in (library.root, library.root / "plain" / "picked"):
        done = glance("--db", library.db, "red", "--export-links", inside)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "never writes into the photo library" \
            in done.stderr
    assert sorted(p.relative_to(library.root) for p in library.root.rglob("*")) == before
    captions = glance("--db", library.db, "red", "--captions", "--export-links", "/tmp/x")
    assert captions.returncode == 2 and "do not go with --captions" in captions.stderr
