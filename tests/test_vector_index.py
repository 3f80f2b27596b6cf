"""`glance index --vector-index {auto,flat,sq,pq}`: the kind is recorded and kept, another kind rebuilds only the
index, compressed indexes still find the exact top hit, and `glance eval` measures what they cost. Every index
here is a real LanceDB index on disk, on tables just past the VECTOR_INDEX_TRAIN_ROWS a compressed one needs."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

import store as st
from core.errors import UsageError
from indexer.cli import stats_text
from indexer.pipeline import IndexOptions, choose_vector_index, index
from search import evaluate
from store import IMAGES, VECTOR_INDEX, VECTOR_INDEX_TRAIN_ROWS, Store
from store.vector_index import vector_index_of

from .indexer_library import pattern
from .test_eval import glance_process, unit_rows, write_index

PHOTOS = VECTOR_INDEX_TRAIN_ROWS + 44  # enough to train PQ's 256-centroid codebooks
DIM_ = 64


def listed_type(db) -> str | None:
    listed = vector_index_of(Store(db).table(IMAGES))
    return listed.index_type if listed is not None else None


def stored_vectors(db) -> dict[str, list[float]]:
    return {r["id"]: r["vector"] for r in Store(db).table(IMAGES).search().select(["id", "vector"]).limit(None)
            .to_arrow().to_pylist()}


def set_kind(db, kind: str) -> list[str]:
    """What the indexer does at the end of a run for this kind: record it, then bring the index in line."""
    store = Store(db)
    with store.writing():
        store.write_meta({VECTOR_INDEX: kind})
        done = store.ensure_indexes()
        store.publish()
    return done


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vector-index-photos")
    for i in range(PHOTOS):
        pattern(i, (16, 12)).save(folder / f"p{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def indexed(photo_folder, tiny_encoders, tmp_path_factory):
    db = tmp_path_factory.mktemp("vector-index-db") / "index"
    summary = index(IndexOptions(paths=[str(photo_folder)], db=db, encoders=tiny_encoders, precision="fp32"))
    assert summary.added == PHOTOS and listed_type(db) is None  # auto: no index below 20,000 photos
    return db


@pytest.fixture(scope="module")
def clustered():
    """PHOTOS unit vectors around 12 centres, and one caption per photo for its first 200, near its photo."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(12, DIM_))
    photos = unit_rows(centres[np.arange(PHOTOS) % 12] + 0.7 * rng.normal(size=(PHOTOS, DIM_)))
    captions = [(i, f"caption {i}", unit_rows(photos[i:i + 1] + 0.04 * rng.normal(size=(1, DIM_)))[0])
                for i in range(200)]
    return photos, captions


# ----- the option, through the real indexer ------------------------------------------------------------------
def test_the_kind_is_recorded_kept_and_a_change_rebuilds_only_the_index(indexed, photo_folder, tiny_encoders,
                                                                         tmp_path):
    db = shutil.copytree(indexed, tmp_path / "index")
    vectors = stored_vectors(db)
    common = dict(paths=[str(photo_folder)], db=db, encoders=tiny_encoders, precision="fp32")
    built = index(IndexOptions(vector_index="pq", **common))
    assert Store(db).meta()[VECTOR_INDEX] == "pq" and listed_type(db) == "IvfPq"
    codes = Store(db).meta()[st.DIM] // 8  # one byte per 8 components
    assert built.maintenance == [f"built vector index (IVF_PQ, cosine, {codes} bytes/photo) over {PHOTOS} images"]
    assert built.unchanged == PHOTOS and built.added == built.updated == 0  # nothing embedded
    kept = index(IndexOptions(**common))  # no flag: the index keeps its kind, and nothing is rebuilt
    assert Store(db).meta()[VECTOR_INDEX] == "pq" and listed_type(db) == "IvfPq" and kept.maintenance == []
    for kind, lance_type in (("sq", "IvfSq"), ("flat", "IvfFlat")):
        changed = index(IndexOptions(vector_index=kind, **common))
        assert listed_type(db) == lance_type and Store(db).meta()[VECTOR_INDEX] == kind
        assert changed.unchanged == PHOTOS and changed.images_total == PHOTOS
        assert stored_vectors(db) == vectors  # every vector exactly as embedded, only the index changed
    assert "IvfFlat (cosine, --vector-index flat)" in stats_text(Store(db).stats())


def test_a_compressed_kind_waits_for_enough_photos_and_says_why(photo_folder, tiny_encoders, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for name in ("p000.png", "p001.png", "p002.png"):
        shutil.copy(photo_folder / name, few / name)
    db = tmp_path / "index"
    summary = index(IndexOptions(paths=[str(few)], db=db, vector_index="sq", encoders=tiny_encoders,
                                 precision="fp32"))
    note = (f"none yet, exact search: --vector-index sq is built once the index holds {VECTOR_INDEX_TRAIN_ROWS} "
            "photos (it holds 3)")
    assert listed_type(db) is None and summary.vector_index_note == note
    assert f"  vector index: {note}" in summary.text().splitlines()
    assert summary.as_dict()["vector_index_note"] == note
    assert f"vector index: {note}" in stats_text(Store(db).stats()).splitlines()


def test_the_flag_is_kept_through_reindex_and_a_bad_value_is_refused():
    assert choose_vector_index({VECTOR_INDEX: "sq"}, None) == "sq"  # --reindex reads meta before dropping it
    assert choose_vector_index({VECTOR_INDEX: "sq"}, "pq") == "pq" and choose_vector_index({}, None) == "auto"
    with pytest.raises(UsageError, match="--vector-index hnsw: choose one of auto, flat, sq, pq"):
        choose_vector_index({}, "hnsw")


def test_a_bad_value_on_the_command_line_is_one_line(tmp_path):
    done = glance_process("index", tmp_path, "--db", tmp_path / "index", "--vector-index", "ivf_pq")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("glance: error: argument --vector-index: invalid choice: 'ivf_pq' (choose from "
                                   "'auto', 'flat', 'sq', 'pq') (see glance index --help)")
    assert not (tmp_path / "index").exists()


# ----- searching through the index (tables built through the Store API) ----------------------------------------
@pytest.mark.parametrize("kind, lance_type", [("sq", "IvfSq"), ("pq", "IvfPq")])
def test_a_compressed_index_finds_the_exact_top_hit_for_near_duplicates(clustered, tmp_path, kind, lance_type):
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos, captions).path
    set_kind(db, kind)
    assert listed_type(db) == lance_type
    store = Store(db)
    rng = np.random.default_rng(5)
    for row in rng.choice(PHOTOS, 25, replace=False):
        query = unit_rows(photos[row:row + 1] + 0.01 * rng.normal(size=(1, DIM_)))[0]
        hits, mode = store.nearest(IMAGES, query, None, 5, ["id"])
        assert mode == "index"  # a chosen kind answers even on a table this small
        assert hits["id"][0].as_py() == f"p{row}"
        # refine re-scores the candidates on the float32 vectors: the score is the exact cosine, not the code's
        assert hits["score"][0].as_py() == pytest.approx(float(photos[row] @ query), abs=1e-5)


def test_fragments_are_compacted_before_an_index_is_built_over_them(clustered, tmp_path, monkeypatch):
    """Compacting fragments an IVF index covers remaps it, and a remapped index searches several times slower
    (store/db.py ensure_indexes): the end of a run compacts first, then builds over the merged fragments."""
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos, captions).path
    calls = []
    for name in ("compact", "ensure_vector_index", "ensure_filter_indexes"):
        original = getattr(Store, name)
        monkeypatch.setattr(Store, name, lambda self, _f=original, _n=name: calls.append(_n) or _f(self))
    assert set_kind(db, "flat")[0].startswith("built vector index (IVF_FLAT")
    assert calls == ["compact", "ensure_vector_index", "ensure_filter_indexes"]
    assert listed_type(db) == "IvfFlat" and len(Store(db).table(IMAGES).to_lance().get_fragments()) == 1


def test_auto_keeps_small_tables_exact_and_drops_an_index_of_another_kind(clustered, tmp_path):
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos, captions).path
    set_kind(db, "pq")
    vectors = stored_vectors(db)
    done = set_kind(db, "auto")
    assert done[0] == "dropped the IVF_PQ vector index: --vector-index auto searches exactly below 20000 photos"
    assert listed_type(db) is None and stored_vectors(db) == vectors
    assert Store(db).nearest(IMAGES, photos[0], None, 3, ["id"])[1] == "exact"


@pytest.mark.parametrize("kind", [None, "sq"])
def test_one_search_for_many_vectors_answers_as_a_search_for_each(clustered, tmp_path, kind):
    """What a batching server sends (search/batching.py SearchBatcher): the same rows, scores and order."""
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos, captions).path
    if kind:
        set_kind(db, kind)
    store = Store(db).pinned()
    rng = np.random.default_rng(8)
    queries = list(unit_rows(photos[rng.choice(PHOTOS, 6, replace=False)] + 0.3 * rng.normal(size=(6, DIM_))))
    for where in (None, st.PhotoFilter(has_caption=True)):
        together = store.nearest_many(IMAGES, queries, where, 7, ["id", "has_caption"])
        assert len(together) == len(queries)
        for query, (rows, mode) in zip(queries, together):
            alone, alone_mode = store.nearest(IMAGES, query, where, 7, ["id", "has_caption"])
            assert mode == alone_mode == ("index" if kind else "exact")
            assert rows.column_names == alone.column_names == ["id", "has_caption", "score"]
            assert rows["id"].to_pylist() == alone["id"].to_pylist() and rows.num_rows == 7
            np.testing.assert_allclose(rows["score"].to_numpy(), alone["score"].to_numpy(), atol=1e-6)
            assert where is None or all(rows["has_caption"].to_pylist())


@pytest.mark.parametrize("kind", [None, "sq"])
def test_a_ranking_by_row_id_reads_the_rows_of_its_own_snapshot(clustered, tmp_path, kind):
    """Engine.search ranks its pool by row id and reads the columns of the hits it shows afterwards (store/reading.py
    ROW_ID): those are the rows it ranked, as they were when it pinned, even after a writer has since replaced them
    and compacted the table."""
    photos, captions = clustered
    store = write_index(tmp_path / "index", photos, captions)
    if kind:
        set_kind(store.path, kind)
    pinned = store.pinned()
    ranked, _ = pinned.nearest(IMAGES, photos[5], None, 12, [st.ROW_ID])
    named, _ = pinned.nearest(IMAGES, photos[5], None, 12, ["id", "relpath"])
    assert ranked.column_names == [st.ROW_ID, "score"] and ranked["score"].to_pylist() == named["score"].to_pylist()
    moved = [{**row, "relpath": "moved/" + row["relpath"]} for row in
             pinned.photo_rows(named["id"].to_pylist(), None, [f.name for f in st.images_schema(DIM_)])]
    writer = Store(store.path)
    with writer.writing():
        writer.upsert_photos(pa.Table.from_pylist(moved, schema=st.images_schema(DIM_)))
        writer.compact()
        writer.publish()
    rows = pinned.rows_at(IMAGES, ranked[st.ROW_ID].to_pylist(), ["id", "relpath"])
    assert [rows[r] for r in ranked[st.ROW_ID].to_pylist()] == named.select(["id", "relpath"]).to_pylist()
    fresh = Store(store.path).pinned()
    assert fresh.photo_row(named["id"][0].as_py(), ["relpath"])["relpath"].startswith("moved/")


def test_new_tables_are_written_in_the_format_whose_row_reads_were_measured_fastest(clustered, tmp_path):
    from store.db import TABLE_FORMAT

    photos, captions = clustered
    store = write_index(tmp_path / "index", photos, captions)
    assert {store.table(name).to_lance().data_storage_version for name in (IMAGES, st.CAPTIONS, st.META)} == \
        {TABLE_FORMAT}


# ----- glance eval ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, name, nbytes", [("sq", "ivf_sq", DIM_), ("pq", "ivf_pq", DIM_ // 8)])
def test_eval_adds_rows_for_the_built_index(clustered, tmp_path, kind, name, nbytes):
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos, captions).path
    assert evaluate.run(str(db))["vector_index_rows"] == []  # no index: search is exact, nothing to add
    set_kind(db, kind)
    report = evaluate.run(str(db), seed=4)
    exact, index_row = report["vector_index_rows"]
    assert (exact["kind"], exact["bytes_per_photo"]) == ("float32 exact", 4 * DIM_)
    assert (index_row["kind"], index_row["bytes_per_photo"]) == (name, nbytes)
    assert index_row["refine_factor"] == 20 and index_row["index_bytes"] > 0  # 200 candidates re-ranked for 10
    full = report["rows"][0]["caption_to_photo"]
    for k in (1, 5, 10):  # LanceDB's exact scan finds what numpy's does
        assert exact["caption_to_photo"][f"recall@{k}"]["value"] == pytest.approx(full[f"recall@{k}"]["value"])
    assert index_row["caption_to_photo"]["recall@10"]["value"] >= exact["caption_to_photo"]["recall@10"]["value"] - 0.02
    assert all(row["ms_per_query"] > 0 for row in report["vector_index_rows"])


def test_eval_prints_the_index_rows(clustered, tmp_path):
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos, captions).path
    set_kind(db, "pq")
    table = glance_process("eval", "--db", db)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "caption -> photo through LanceDB: top 10 per query" in table.stdout
    exact = next(line for line in lines if line.startswith("float32 exact")).split()
    pq = next(line for line in lines if line.startswith("ivf_pq")).split()
    assert exact[2] == str(4 * DIM_) and pq[1] == str(DIM_ // 8)  # bytes/photo
    assert 0.9 <= float(pq[4]) <= 1  # recall@1 through the index, the first of the four figures


# ----- growth ---------------------------------------------------------------------------------------------------
def add_photos(db, vectors: np.ndarray, first: int) -> None:
    import pyarrow as pa

    store = Store(db)
    dim = vectors.shape[1]
    with store.writing():
        store.upsert_photos(pa.Table.from_pylist(
            [{"id": f"p{first + i}", "root": "/library", "relpath": f"{first + i}.jpg", "has_caption": False,
              "vector": v.tolist()} for i, v in enumerate(vectors)], schema=st.images_schema(dim)))
        store.publish()


def test_growth_folds_new_photos_into_the_index_and_searches_go_on_while_it_is_rebuilt(clustered, tmp_path,
                                                                                        monkeypatch):
    import threading

    from store.vector_index import nprobes, partitions

    monkeypatch.setattr(st.schema, "VECTOR_INDEX_MIN_ROWS", 200)
    monkeypatch.setattr(st.reading, "EXACT_MAX_ROWS", 0)  # auto's index answers on a table this small
    photos, captions = clustered
    db = write_index(tmp_path / "index", photos[:200], captions[:100]).path
    assert set_kind(db, "auto") and listed_type(db) == "IvfSq"  # auto: IVF_SQ, sqrt(rows) partitions
    assert Store(db).built_rows() == 200 and partitions(200) == 14 and nprobes(200) == 32

    add_photos(db, photos[200:PHOTOS], 200)  # grown by half: folded in, not retrained
    assert not set_kind(db, "auto")
    images = Store(db).table(IMAGES)
    assert images.index_stats(vector_index_of(images).name).num_unindexed_rows == 0
    assert Store(db).built_rows() == 200
    reader = Store(db)
    for row in (3, 250, PHOTOS - 1):  # old and new photos alike are found through the index
        hits, mode = reader.nearest(IMAGES, photos[row], None, 3, ["id"])
        assert mode == "index" and hits["id"][0].as_py() == f"p{row}"

    rng = np.random.default_rng(8)
    grown = unit_rows(photos[np.arange(PHOTOS) % 40] + 0.3 * rng.normal(size=(PHOTOS, DIM_)))
    add_photos(db, grown, PHOTOS)  # doubled: the next run retrains the partitions
    answers, stop = [], threading.Event()

    def search_meanwhile():
        while not stop.is_set():
            hits, _ = reader.nearest(IMAGES, photos[7], None, 1, ["id"])
            answers.append(hits["id"][0].as_py())

    searching = threading.Thread(target=search_meanwhile)
    searching.start()
    try:
        done = set_kind(db, "auto")
    finally:
        stop.set()
        searching.join()
    assert done and done[0].startswith("built vector index (IVF_SQ") and Store(db).built_rows() == 2 * PHOTOS
    assert answers and set(answers) == {"p7"}  # every search during the rebuild answered, and right
    assert Store(db).nearest(IMAGES, grown[5], None, 1, ["id"])[0]["id"][0].as_py() == f"p{PHOTOS + 5}"
