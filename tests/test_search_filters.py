"""Filters compile to LanceDB prefilters that match exactly the right rows, whatever the folder is called."""
from __future__ import annotations

from datetime import date, datetime

import lancedb
import pyarrow as pa
import pytest

from core.errors import UsageError
from search.filters import Filters, date_range, resolve
from store import photo_where


def compile_where(filters, roots=(), exclude_ids=()):
    return photo_where(resolve(filters, roots, exclude_ids))

HOSTILE = ["it's", "a%b", "a_b", "axb", "x' OR '1'='1", "back\\slash", "x'; DROP TABLE images; --", "100%", "_",
           "q\"uote", "2023/trip", "2023/trip-old", "with space", "ünï"]
ROOTS = ["/photos", "/more/photos"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Two rows per folder (one per root) plus decoys whose names a wildcard or an injection would match."""
    rows = []
    for folder in HOSTILE:
        for root in ROOTS:
            rows.append({"id": f"{root}|{folder}", "root": root, "relpath": f"{folder}/p.jpg"})
    rows.append({"id": "deep", "root": "/photos", "relpath": "2023/trip/deep/p.jpg"})
    rows.append({"id": "top", "root": "/photos", "relpath": "p.jpg"})
    db = lancedb.connect(str(tmp_path_factory.mktemp("filters")))
    return db.create_table("images", pa.Table.from_pylist(rows))


def matching(table, filters: Filters) -> set[str]:
    where = compile_where(filters, ROOTS)
    return set(table.search().where(where).select(["id"]).limit(1000).to_arrow().column("id").to_pylist())


@pytest.mark.parametrize("folder", HOSTILE)
def test_a_folder_matches_exactly_its_own_rows(table, folder):
    expected = {f"{root}|{folder}" for root in ROOTS}
    if folder == "2023/trip":
        expected.add("deep")
    assert matching(table, Filters(folder=folder)) == expected
    assert matching(table, Filters(folder=folder + "/")) == expected


def test_absolute_folders_select_one_root(table):
    assert matching(table, Filters(folder="/more/photos/it's")) == {"/more/photos|it's"}
    assert len(matching(table, Filters(folder="/more/photos"))) == len(HOSTILE)
    assert len(matching(table, Filters(folder="/more"))) == len(HOSTILE)  # a folder above a root: all of it


def test_the_top_of_the_library_is_no_restriction():
    assert compile_where(Filters(folder="."), ROOTS) is None
    assert compile_where(Filters(), ROOTS) is None


def test_folders_that_cannot_match_are_refused_with_a_message():
    with pytest.raises(UsageError, match="not inside an indexed folder"):
        compile_where(Filters(folder="/etc"), ROOTS)
    with pytest.raises(UsageError, match=r"'\.\.'"):
        compile_where(Filters(folder="a/../../etc"), ROOTS)
    with pytest.raises(UsageError, match="NUL"):
        compile_where(Filters(folder="a\x00b"), ROOTS)


def test_values_reach_sql_only_as_escaped_literals():
    where = compile_where(Filters(folder="x' OR '1'='1"), ROOTS, exclude_ids=("a'b",))
    assert where == "starts_with(relpath, 'x'' OR ''1''=''1/') AND id != 'a''b'"


@pytest.mark.parametrize("date_from, date_to, start, end", [
    ("2023", "2023", datetime(2023, 1, 1), datetime(2024, 1, 1)),
    ("2023-07", "2023-12", datetime(2023, 7, 1), datetime(2024, 1, 1)),
    ("2023-07-14", "2023-07-14", datetime(2023, 7, 14), datetime(2023, 7, 15)),
    ("2023-07-14 09:30", None, datetime(2023, 7, 14, 9, 30), None),
    (date(2023, 2, 28), datetime(2023, 3, 1, 12), datetime(2023, 2, 28), datetime(2023, 3, 1, 12, 0, 1)),
])
def test_dates_cover_the_whole_period_written(date_from, date_to, start, end):
    assert date_range(date_from, date_to) == (start, end)


@pytest.mark.parametrize("date_from, date_to", [("2023-02-30", None), ("yesterday", None), ("2024", "2023"),
                                                ("2023-13", None), ("9999", "'; DROP")])
def test_invalid_dates_are_usage_errors(date_from, date_to):
    with pytest.raises(UsageError):
        compile_where(Filters(date_from=date_from, date_to=date_to))


def test_date_and_caption_clauses(tmp_path):
    rows = [{"id": str(i), "taken_at": t, "has_caption": c} for i, (t, c) in enumerate([
        (datetime(2022, 7, 31, 23, 59, 59), True), (datetime(2022, 8, 1), False), (None, None),
        (datetime(2022, 7, 1), None)])]
    schema = pa.schema([("id", pa.string()), ("taken_at", pa.timestamp("s")), ("has_caption", pa.bool_())])
    table = lancedb.connect(str(tmp_path)).create_table("t", pa.Table.from_pylist(rows, schema=schema))

    def ids(filters):
        return sorted(table.search().where(compile_where(filters)).select(["id"]).to_arrow().column("id").to_pylist())

    assert ids(Filters(date_from="2022-07", date_to="2022-07")) == ["0", "3"]
    assert ids(Filters(date_from="2022-08")) == ["1"]
    assert ids(Filters(has_caption=True)) == ["0"]
    assert ids(Filters(has_caption=False)) == ["1", "2", "3"]
