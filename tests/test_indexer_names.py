"""Photos whose file or folder names are not valid UTF-8 (a Latin-1 `café.jpg` from an old camera or NAS) are
indexed like any other: stored with their raw bytes, found unchanged, followed when moved, removed when gone."""
from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest
from PIL import Image

import store as st
from indexer import admin
from indexer.pipeline import IndexOptions, index
from store import CAPTIONS, IMAGES, Store
from tests.indexer_library import NON_UTF8_NAME, pattern

CAFE = os.fsdecode(NON_UTF8_NAME)  # "caf\udce9.jpg": the OS name, surrogate-escaped
FOLDER = os.fsdecode(b"f\xeate")  # Latin-1 "fête"
IN_FOLDER = FOLDER + "/" + os.fsdecode(b"\xe9t\xe9.png")  # Latin-1 "fête/été.png"


def run(paths, db, encoders, **options):
    return index(IndexOptions(paths=[str(p) for p in paths], db=db, encoders=encoders, **options))


def rows(db) -> dict[bytes, dict]:
    """Image rows by the name's raw bytes (relpath_bytes where set, else the UTF-8 relpath)."""
    table = Store(db).table(IMAGES).to_arrow()
    return {r["relpath_bytes"] or r["relpath"].encode(): r for r in table.to_pylist()}


def make(folder):
    root = folder / "photos"
    (root / FOLDER).mkdir(parents=True)
    pattern(301).save(root / CAFE, format="JPEG")
    (root / (CAFE + ".txt")).write_text("a cup of coffee on a terrace")
    pattern(302).save(root / IN_FOLDER, format="PNG")
    pattern(303).save(root / "plain.jpg")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoders):
    folder = tmp_path_factory.mktemp("names")
    root = make(folder)
    summary = run([root], folder / "db", tiny_encoders)
    return SimpleNamespace(root=root, db=folder / "db", summary=summary, real=os.path.realpath(root))


@pytest.fixture
def fresh(tmp_path, tiny_encoders):
    root = make(tmp_path)
    run([root], tmp_path / "db", tiny_encoders)
    return SimpleNamespace(root=root, db=tmp_path / "db", real=os.path.realpath(root))


def test_non_utf8_names_are_indexed_with_their_bytes(built):
    assert built.summary.added == 3 and not built.summary.problems
    found = rows(built.db)
    assert set(found) == {NON_UTF8_NAME, b"f\xeate/\xe9t\xe9.png", b"plain.jpg"}
    cafe = found[NON_UTF8_NAME]
    assert cafe["relpath"] == "caf\\xe9.jpg" and cafe["relpath_bytes"] == NON_UTF8_NAME  # display form + bytes
    assert cafe["id"] == st.image_id(built.real, CAFE)
    assert st.os_relpath(cafe["relpath"], cafe["relpath_bytes"]) == CAFE
    assert found[b"f\xeate/\xe9t\xe9.png"]["relpath"] == "f\\xeate/\\xe9t\\xe9.png"
    assert found[b"plain.jpg"]["relpath_bytes"] is None  # UTF-8 names keep NULL
    captions = Store(built.db).table(CAPTIONS).to_arrow().to_pylist()
    assert [(c["image_id"], c["source"], c["text"]) for c in captions] == [
        (cafe["id"], "sidecar", "a cup of coffee on a terrace")]  # its sidecar, whose name is Latin-1 too
    assert cafe["has_caption"]


def test_a_rerun_leaves_them_unchanged(built, tiny_encoders):
    summary = run([built.root], built.db, tiny_encoders)
    assert (summary.unchanged, summary.added, summary.updated, summary.removed) == (3, 0, 0, 0)


def test_a_non_utf8_folder_inside_a_root_can_be_given(built, tiny_encoders):
    summary = run([built.root / FOLDER], built.db, tiny_encoders)
    assert (summary.unchanged, summary.added, summary.removed) == (1, 0, 0)


def test_renamed_they_are_moved_not_embedded_again(fresh, tiny_encoders):
    before = rows(fresh.db)[NON_UTF8_NAME]
    new_name = FOLDER + "/" + os.fsdecode(b"caf\xe9-2.jpg")
    os.rename(fresh.root / CAFE, fresh.root / new_name)
    os.rename(fresh.root / (CAFE + ".txt"), fresh.root / (new_name + ".txt"))
    summary = run([fresh.root], fresh.db, tiny_encoders)
    assert (summary.moved, summary.removed, summary.added) == (1, 1, 0)
    after = rows(fresh.db)
    assert NON_UTF8_NAME not in after
    moved = after[b"f\xeate/caf\xe9-2.jpg"]
    assert moved["vector"] == before["vector"] and moved["sha256"] == before["sha256"]
    captions = Store(fresh.db).table(CAPTIONS).to_arrow().to_pylist()
    assert [(c["image_id"], c["text"]) for c in captions] == [(moved["id"], "a cup of coffee on a terrace")]


def test_deleted_they_leave_the_index(fresh, tiny_encoders):
    (fresh.root / CAFE).unlink()
    shutil.rmtree(fresh.root / FOLDER)
    summary = run([fresh.root], fresh.db, tiny_encoders)
    assert summary.removed == 2
    assert set(rows(fresh.db)) == {b"plain.jpg"}
    assert Store(fresh.db).table(CAPTIONS).count_rows() == 0  # the sidecar caption went with its photo


def test_remove_takes_them_out_by_their_os_path(fresh):
    assert admin.remove([str(fresh.root / FOLDER)], fresh.db)["removed"] == 1
    assert admin.remove([str(fresh.root / CAFE)], fresh.db)["removed"] == 1
    assert set(rows(fresh.db)) == {b"plain.jpg"}
    assert Store(fresh.db).table(CAPTIONS).count_rows() == 0


@pytest.fixture(scope="module")
def engine(built, tiny_model_dirs):
    from search.engine import Engine

    return Engine(built.db, precision="fp32")


def test_the_search_engine_finds_and_shows_them(built, engine):
    cafe = rows(built.db)[NON_UTF8_NAME]
    details = engine.photo(cafe["id"])
    assert details.relpath == "caf\\xe9.jpg" and details.captions == [("a cup of coffee on a terrace", "sidecar")]
    other = rows(built.db)[b"plain.jpg"]["id"]
    assert cafe["id"] in [h.id for h in engine.search(like=other, top=5).hits]
    with Image.open(built.root / CAFE) as query:  # the same pixels as a query image: it ranks first
        assert engine.search(image=query.copy(), top=3).hits[0].id == cafe["id"]
    original = (built.root / CAFE).resolve()
    assert engine.file_path(cafe["id"]) == original == engine.file_path(str(built.root / CAFE))  # servable
    assert engine.search(like=str(built.root / CAFE), top=1).hits  # --like takes its path too


def test_the_command_line_shows_them(built, capsys):
    from glance.cli import main

    with pytest.raises(SystemExit) as done:
        main(["search", "--like", rows(built.db)[b"plain.jpg"]["id"], "--db", str(built.db), "--top", "10"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and str(built.root / "caf\\xe9.jpg") in out  # shown with the odd byte as \xe9


def test_a_non_utf8_photo_given_by_its_path_as_the_query_image(built, engine):
    hits = engine.search(image=str(built.root / CAFE), top=3).hits
    # an indexed query image is left out of its own results (engine design); the query itself must work
    assert rows(built.db)[NON_UTF8_NAME]["id"] not in [h.id for h in hits] and hits
