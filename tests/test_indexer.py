"""The indexer through its Python API, on a generated library (tests/indexer_library.py) and the tiny models."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import indexer.pipeline as pipeline
import store as st
from indexer import admin
from indexer.pipeline import IndexOptions, index
from models import PREPROCESS_VERSION
from models.synthetic import write_pair
from store import CAPTIONS, IMAGES, Store, StoreError
from tests.conftest import FIXTURE
from tests.indexer_library import make_library, pattern, snapshot


def run(paths, db, encoders, **options):
    return index(IndexOptions(paths=[str(p) for p in paths], db=db, encoders=encoders, **options))


def rows(db, name=IMAGES) -> list[dict]:
    return Store(db).table(name).to_arrow().to_pylist()


def by_relpath(db) -> dict[str, dict]:
    return {r["relpath"]: r for r in rows(db)}


def captions_by_relpath(db) -> dict[str, set]:
    relpath = {r["id"]: r["relpath"] for r in rows(db)}
    found: dict[str, set] = {}
    for c in rows(db, CAPTIONS):
        found.setdefault(relpath.get(c["image_id"], c["image_id"]), set()).add((c["source"], c["text"]))
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoders):
    folder = tmp_path_factory.mktemp("built")
    lib = make_library(folder)
    before = snapshot(lib.root)
    db = folder / "db"
    summary = run([lib.root], db, tiny_encoders, captions=[str(lib.captions_csv), str(lib.captions_jsonl)])
    return SimpleNamespace(lib=lib, db=db, summary=summary, before=before)


@pytest.fixture
def fresh(tmp_path, tiny_encoders):
    """A library of our own, indexed once (with its captions files), for tests that change it."""
    lib = make_library(tmp_path)
    db = tmp_path / "db"
    run([lib.root], db, tiny_encoders, captions=[str(lib.captions_csv), str(lib.captions_jsonl)])
    return SimpleNamespace(lib=lib, db=db)


class Spy:
    """Wraps a pipeline function and records the paths it was called with."""

    def __init__(self, monkeypatch, name):
        self.paths, original = [], getattr(pipeline, name)

        def wrapper(path, *args, **kwargs):
            self.paths.append(os.path.relpath(path, self.root) if self.root else path)
            return original(path, *args, **kwargs)
        self.root = None
        monkeypatch.setattr(pipeline, name, wrapper)


# ----- a first run over the whole library --------------------------------------------------------------------

def test_every_good_file_is_indexed_once_and_nothing_else(built):
    assert set(by_relpath(built.db)) == set(built.lib.good)
    assert len(rows(built.db)) == len(built.lib.good)  # the folder symlink 2023/summer-link is not indexed twice
    assert built.summary.added == len(built.lib.good)
    assert (built.summary.updated, built.summary.moved, built.summary.removed) == (0, 0, 0)


def test_each_bad_file_is_skipped_with_its_reason(built):
    problems = {os.path.relpath(p.path, built.lib.root): p.reason for p in built.summary.problems}
    assert set(problems) == set(built.lib.bad), problems
    for path, words in built.lib.bad.items():
        assert words in problems[path], (path, problems[path])
    assert built.summary.failed == len(built.lib.bad) and built.summary.exit_status == 1


def test_the_library_is_never_written(built):
    assert snapshot(built.lib.root) == built.before  # same entries, bytes, sizes and mtimes


def test_stored_columns(built, tiny_encoders):
    vision, _ = tiny_encoders
    root = os.path.realpath(built.lib.root)
    for relpath, row in by_relpath(built.db).items():
        path = built.lib.root / relpath
        data = path.read_bytes()
        assert row["id"] == st.image_id(root, relpath) and row["root"] == root
        assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["size"] == len(data)
        assert row["mtime_ns"] == path.stat().st_mtime_ns and row["indexed_at"] is not None
        thumb = Image.open(io.BytesIO(row["thumb"]))
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
        vector = np.asarray(row["vector"], dtype=np.float32)
        assert vector.shape == (vision.dim,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        # the same pixels the models package would feed the model, EXIF orientation and all
        expected = vision.embed_images([Image.open(path)])[0].numpy()
        assert np.allclose(vector, expected, atol=1e-5), relpath
        for key, value in built.lib.good[relpath].items():
            assert str(row[key]) == str(value), (relpath, key)


def test_captions_from_every_source(built, tiny_encoders):
    _, text = tiny_encoders
    lib = built.lib
    expected = {k: set(v) for k, v in lib.expected_captions.items()}
    for relpath, found in lib.expected_captions_files.items():
        expected.setdefault(relpath, set()).update(found)
    expected[""] = {("file", t) for t in lib.free_texts}  # free-standing texts: image_id ""
    assert captions_by_relpath(built.db) == expected
    flagged = {r["relpath"] for r in rows(built.db) if r["has_caption"]}
    assert flagged == set(expected) - {""}
    for c in rows(built.db, CAPTIONS):
        assert c["id"] == st.caption_id(c["image_id"], c["source"], c["text"])
        want = text.embed(["search_query: " + c["text"]])[0].numpy()
        assert np.allclose(c["vector"], want, atol=1e-5)


def test_meta_records_models_and_roots(built, tiny_model_dirs):
    meta = Store(built.db).meta()
    assert meta[st.VISION_MODEL] == str(tiny_model_dirs[0].resolve())
    assert meta[st.TEXT_MODEL] == str(tiny_model_dirs[1].resolve())
    assert (meta[st.MODEL_VERSION], meta[st.DIM], meta[st.PREPROCESS_VERSION_KEY]) == ("v1.5", 128, PREPROCESS_VERSION)
    assert meta[st.SCHEMA_VERSION_KEY] == st.SCHEMA_VERSION and meta[st.LAST_INDEXED]
    assert meta[st.ROOTS] == [os.path.realpath(built.lib.root)]


def test_full_text_index_on_captions(built):
    captions = Store(built.db).table(CAPTIONS)
    assert any(ix.columns == ["text"] and ix.index_type == "FTS" for ix in captions.list_indices())
    hits = captions.search("lighthouse", query_type="fts").limit(5).to_arrow()["text"].to_pylist()
    assert hits == ["a lighthouse at dusk"]


def test_rerun_on_an_unchanged_library_opens_no_photo(built, tiny_encoders, monkeypatch):
    spy = Spy(monkeypatch, "read_file")
    spy.root = built.lib.root
    summary = run([built.lib.root], built.db, tiny_encoders)
    assert summary.unchanged == len(built.lib.good)
    assert (summary.added, summary.updated, summary.moved, summary.removed) == (0, 0, 0, 0)
    # only the bad files (which have no row) are tried again, in case they were fixed
    assert set(spy.paths) <= set(built.lib.bad)
    assert captions_by_relpath(built.db).get("captioned/plain.jpg")  # file captions stay without --captions


# ----- changes between runs ----------------------------------------------------------------------------------

def test_moved_and_renamed_files_reuse_their_vectors(fresh, tiny_encoders, monkeypatch):
    lib, before = fresh.lib, by_relpath(fresh.db)
    (lib.root / "moved").mkdir()
    os.rename(lib.root / "2023/summer/beach.jpg", lib.root / "moved/beach.jpg")
    os.rename(lib.root / "exif/described.jpg", lib.root / "exif/renamed.jpg")
    os.rename(lib.root / "captioned/dog.jpg", lib.root / "moved/dog.jpg")  # with its sidecar
    os.rename(lib.root / "captioned/dog.jpg.txt", lib.root / "moved/dog.jpg.txt")
    spy = Spy(monkeypatch, "decode")
    spy.root = lib.root
    summary = run([lib.root], fresh.db, tiny_encoders)
    assert (summary.moved, summary.removed, summary.added) == (3, 3, 0)
    assert not [p for p in spy.paths if "moved" in p or "renamed" in p]  # no photo decoded again
    after = by_relpath(fresh.db)
    for old, new in (("2023/summer/beach.jpg", "moved/beach.jpg"), ("exif/described.jpg", "exif/renamed.jpg")):
        assert old not in after
        assert after[new]["vector"] == before[old]["vector"] and after[new]["thumb"] == before[old]["thumb"]
        assert after[new]["sha256"] == before[old]["sha256"]
    assert after["exif/renamed.jpg"]["camera"] == "Canon EOS 5D"
    captions = captions_by_relpath(fresh.db)
    assert captions["exif/renamed.jpg"] == {("exif", "a red bicycle against a brick wall")}
    assert captions["moved/dog.jpg"] == {("sidecar", "a dog running on the beach")}
    assert "exif/described.jpg" not in captions and "captioned/dog.jpg" not in captions
    assert all(c["image_id"] in {r["id"] for r in rows(fresh.db)} or c["image_id"] == ""
               for c in rows(fresh.db, CAPTIONS))


def test_copies_reuse_the_vector_too(fresh, tiny_encoders):
    shutil.copy(fresh.lib.root / "2024/old.bmp", fresh.lib.root / "2024/copy.bmp")
    summary = run([fresh.lib.root], fresh.db, tiny_encoders)
    assert (summary.moved, summary.removed) == (1, 0)
    after = by_relpath(fresh.db)
    assert after["2024/copy.bmp"]["vector"] == after["2024/old.bmp"]["vector"]


def test_changed_file_is_embedded_again_and_touched_file_is_not(fresh, tiny_encoders, monkeypatch):
    lib, before = fresh.lib, by_relpath(fresh.db)
    pattern(99).save(lib.root / "2024/old.bmp")  # new content
    later = time.time() + 100
    os.utime(lib.root / "2024/scan.tiff", (later, later))  # same bytes, new mtime
    spy = Spy(monkeypatch, "decode")
    spy.root = lib.root
    summary = run([lib.root], fresh.db, tiny_encoders)
    assert summary.updated == 1 and summary.unchanged == len(lib.good) - 1 and summary.moved == 0
    assert set(spy.paths) - set(lib.bad) == {"2024/old.bmp"}
    after = by_relpath(fresh.db)
    assert after["2024/old.bmp"]["vector"] != before["2024/old.bmp"]["vector"]
    assert after["2024/old.bmp"]["sha256"] != before["2024/old.bmp"]["sha256"]
    assert after["2024/scan.tiff"]["mtime_ns"] == (lib.root / "2024/scan.tiff").stat().st_mtime_ns
    assert after["2024/scan.tiff"]["vector"] == before["2024/scan.tiff"]["vector"]


def test_content_captions_follow_content_changes(fresh, tiny_encoders):
    path = fresh.lib.root / "exif/described.jpg"
    pattern(98).save(path)  # the new content has no ImageDescription
    run([fresh.lib.root], fresh.db, tiny_encoders)
    assert "exif/described.jpg" not in captions_by_relpath(fresh.db)
    assert not by_relpath(fresh.db)["exif/described.jpg"]["has_caption"]


def test_deleted_files_leave_the_index_only_within_the_folders_given(fresh, tiny_encoders, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    pattern(50).save(other / "x.jpg")
    pattern(51).save(other / "y.jpg")
    run([other], fresh.db, tiny_encoders)
    (other / "x.jpg").unlink()
    (fresh.lib.root / "2024/old.bmp").unlink()
    (fresh.lib.root / "captioned/dog.jpg").unlink()
    summary = run([fresh.lib.root], fresh.db, tiny_encoders)
    assert summary.removed == 2
    relpaths = set(by_relpath(fresh.db))
    assert "2024/old.bmp" not in relpaths and "x.jpg" in relpaths  # the other root was not walked
    assert "captioned/dog.jpg" not in captions_by_relpath(fresh.db)
    assert run([other], fresh.db, tiny_encoders).removed == 1
    assert "x.jpg" not in set(by_relpath(fresh.db))


def test_a_subfolder_belongs_to_its_root_and_limits_deletions(fresh, tiny_encoders):
    (fresh.lib.root / "2024/old.bmp").unlink()
    (fresh.lib.root / "2023/winter/snow.png").unlink()
    pattern(60).save(fresh.lib.root / "2024/new.png")
    summary = run([fresh.lib.root / "2024"], fresh.db, tiny_encoders)
    assert (summary.added, summary.removed) == (1, 1)
    after = by_relpath(fresh.db)
    assert after["2024/new.png"]["root"] == os.path.realpath(fresh.lib.root)
    assert "2023/winter/snow.png" in after  # outside the folder given: untouched
    assert Store(fresh.db).meta()[st.ROOTS] == [os.path.realpath(fresh.lib.root)]


def test_a_parent_folder_absorbs_a_known_root_without_re_embedding(tmp_path, tiny_encoders, monkeypatch):
    lib = make_library(tmp_path)
    db = tmp_path / "db"
    run([lib.root / "2024"], db, tiny_encoders)
    first = by_relpath(db)
    spy = Spy(monkeypatch, "decode")
    spy.root = lib.root
    summary = run([lib.root], db, tiny_encoders)
    assert summary.moved == len(first) and summary.removed == len(first)
    assert not [p for p in spy.paths if p.startswith("2024/") and p not in lib.bad]
    after = by_relpath(db)
    assert {r["root"] for r in after.values()} == {os.path.realpath(lib.root)}
    for relpath, row in first.items():
        assert after["2024/" + relpath]["vector"] == row["vector"]
    assert Store(db).meta()[st.ROOTS] == [os.path.realpath(lib.root)]


def test_a_different_model_is_refused_unless_reindex(fresh, tiny_encoders, tmp_path):
    vision, text = write_pair(tmp_path / "other-models", seed=7, template=FIXTURE)
    before = by_relpath(fresh.db)
    with pytest.raises(StoreError, match="--reindex"):
        index(IndexOptions([str(fresh.lib.root)], db=fresh.db, vision_model=str(vision), text_model=str(text)))
    assert by_relpath(fresh.db) == before  # nothing touched
    summary = index(IndexOptions([str(fresh.lib.root)], db=fresh.db, vision_model=str(vision), text_model=str(text),
                                 reindex=True, precision="fp32"))
    assert summary.added == len(fresh.lib.good)
    meta = Store(fresh.db).meta()
    assert meta[st.VISION_MODEL] == str(vision.resolve()) and meta[st.TEXT_MODEL] == str(text.resolve())
    after = by_relpath(fresh.db)
    assert all(after[k]["vector"] != before[k]["vector"] for k in before)
    # the new index keeps its models by default: a plain re-run needs no flags and changes nothing
    again = index(IndexOptions([str(fresh.lib.root)], db=fresh.db, precision="fp32"))
    assert again.unchanged == len(fresh.lib.good)
    with pytest.raises(StoreError, match="not comparable"):
        run([fresh.lib.root], fresh.db, tiny_encoders)


def test_sidecar_edits_and_captions_files_are_reconciled(fresh, tiny_encoders, tmp_path):
    lib = fresh.lib
    (lib.root / "captioned/dog.jpg.txt").write_text("a dog chasing a ball")
    (lib.root / "captioned/cat.txt").unlink()
    csv = tmp_path / "new.csv"
    csv.write_text(f"path,caption\n{lib.root / 'captioned/plain.jpg'},a single new caption\n"
                   f"missing/photo.jpg,nobody home\n,a free label\n")
    summary = run([lib.root], fresh.db, tiny_encoders, captions=[str(csv)])
    captions = captions_by_relpath(fresh.db)
    assert captions["captioned/dog.jpg"] == {("sidecar", "a dog chasing a ball")}
    assert "captioned/cat.png" not in captions and not by_relpath(fresh.db)["captioned/cat.png"]["has_caption"]
    assert captions["captioned/plain.jpg"] == {("file", "a single new caption")}
    assert "2023/summer/beach.jpg" not in captions  # the captions files given are the whole truth
    assert captions[""] == {("file", "a free label")}
    caption_problems = [p for p in summary.problems if p.kind == "caption"]
    assert len(caption_problems) == 1 and "missing/photo.jpg" in caption_problems[0].path
    # without --captions, file captions stay as they are
    run([lib.root], fresh.db, tiny_encoders)
    assert captions_by_relpath(fresh.db)["captioned/plain.jpg"] == {("file", "a single new caption")}


def test_vector_index_is_built_once_the_table_is_big_enough(fresh, tiny_encoders, monkeypatch):
    images = Store(fresh.db).table(IMAGES)
    assert not [ix for ix in images.list_indices() if ix.columns == ["vector"]]  # 23 rows: exact search
    monkeypatch.setattr(st.schema, "VECTOR_INDEX_MIN_ROWS", 20)
    summary = run([fresh.lib.root], fresh.db, tiny_encoders)
    assert any("vector index" in what for what in summary.maintenance)
    index_ = [ix for ix in Store(fresh.db).table(IMAGES).list_indices() if ix.columns == ["vector"]]
    assert index_ and index_[0].index_type == "IvfSq"  # auto
    assert Store(fresh.db).meta()[st.VECTOR_INDEX_ROWS] == len(fresh.lib.good)
    query = np.asarray(by_relpath(fresh.db)["2024/old.bmp"]["vector"], dtype=np.float32)
    hit = Store(fresh.db).table(IMAGES).search(query).distance_type("cosine").limit(1).to_arrow()
    assert hit["relpath"][0].as_py() == "2024/old.bmp"
    assert not run([fresh.lib.root], fresh.db, tiny_encoders).maintenance  # no rebuild until the table doubles


def test_stats_and_remove(fresh):
    root = os.path.realpath(fresh.lib.root)
    stats = Store(fresh.db).stats()
    assert stats["photos"] == len(fresh.lib.good) and stats["roots"] == {root: len(fresh.lib.good)}
    assert stats["captions_by_source"]["sidecar"] == 2 and stats["texts"] == 3
    in_2024 = [k for k in fresh.lib.good if k.startswith("2024/")]
    shutil.rmtree(fresh.lib.root / "2024")  # removing works for folders already gone from disk
    result = admin.remove([str(fresh.lib.root / "2024")], fresh.db)
    assert result["removed"] == len(in_2024)
    assert not [k for k in by_relpath(fresh.db) if k.startswith("2024/")]
    result = admin.remove([str(fresh.lib.root / "captioned/dog.jpg")], fresh.db)
    assert result["removed"] == 1 and "captioned/dog.jpg" not in captions_by_relpath(fresh.db)
    admin.remove([str(fresh.lib.root)], fresh.db)
    assert rows(fresh.db) == [] and Store(fresh.db).meta()[st.ROOTS] == []
    assert {c["image_id"] for c in rows(fresh.db, CAPTIONS)} == {""}  # only free-standing texts remain


def test_decoding_runs_ahead_of_the_model_in_worker_threads_with_a_bounded_window(tmp_path, tiny_encoders,
                                                                                  monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(24):
        pattern(100 + i).save(folder / f"{i:02d}.jpg")
    state = {"started": 0, "committed": 0, "ahead": 0, "during_commit": 0, "threads": set(), "in_commit": False}
    lock = threading.Lock()
    prepare, commit = pipeline.Indexer._prepare, pipeline.Indexer._commit

    def spy_prepare(self, todo):
        with lock:
            state["started"] += 1
            state["ahead"] = max(state["ahead"], state["started"] - state["committed"])
            state["during_commit"] += state["in_commit"]
            state["threads"].add(threading.current_thread().name)
        return prepare(self, todo)

    def spy_commit(self, batch):
        state["in_commit"] = True
        time.sleep(0.05)  # stands in for a slow model: workers keep decoding meanwhile
        commit(self, batch)
        with lock:
            state["committed"] += len(batch)
            state["in_commit"] = False

    monkeypatch.setattr(pipeline.Indexer, "_prepare", spy_prepare)
    monkeypatch.setattr(pipeline.Indexer, "_commit", spy_commit)
    summary = run([folder], tmp_path / "db", tiny_encoders, batch_size=3, commit_every=3, workers=2)
    assert summary.added == 24
    assert all(name.startswith("glance-decode") for name in state["threads"])
    assert state["during_commit"] > 0  # decoding overlapped inference
    assert state["ahead"] <= 3 * 3  # at most two commits queued plus the one being filled


def test_small_model_batches_are_committed_together(tmp_path, tiny_encoders, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(pipeline.COMMIT_PHOTOS + 5):
        pattern(200 + i).save(folder / f"{i:03d}.png")
    vision = tiny_encoders[0]
    calls, commits = [], []
    embed_pixels, commit = type(vision).embed_pixels, pipeline.Indexer._commit
    monkeypatch.setattr(type(vision), "embed_pixels",
                        lambda self, pixels, dim=None: (calls.append(len(pixels)), embed_pixels(self, pixels, dim))[1])
    monkeypatch.setattr(pipeline.Indexer, "_commit",
                        lambda self, batch: (commits.append(len(batch)), commit(self, batch)))
    summary = run([folder], tmp_path / "db", tiny_encoders, batch_size=4, workers=2)
    assert summary.added == pipeline.COMMIT_PHOTOS + 5 and len(rows(tmp_path / "db")) == summary.added
    assert commits == [pipeline.COMMIT_PHOTOS, 5]
    assert max(calls) == 4 and sum(calls) == summary.added  # the model still sees batches of 4


def test_db_inside_the_library_is_refused(fresh, tiny_encoders):
    from core.errors import UsageError

    with pytest.raises(UsageError, match="never writes into a photo library"):
        run([fresh.lib.root], fresh.lib.root / "index", tiny_encoders)
    assert not (fresh.lib.root / "index").exists()


def test_commits_follow_the_batch_sized_for_where_the_model_landed(tmp_path, tiny_model_dirs, monkeypatch):
    """The batch is sized once before the model loads and again for its device (a GPU's is larger): commits and
    model calls after the first follow the second size."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(11):
        pattern(300 + i).save(folder / f"{i:02d}.png")
    monkeypatch.setattr(pipeline, "COMMIT_PHOTOS", 1)
    monkeypatch.setattr(pipeline, "auto_batch_size", lambda *args, device=None: 2 if device is None else 4)
    from models import VisionEncoder

    calls, commits = [], []
    commit, embed_pixels = pipeline.Indexer._commit, VisionEncoder.embed_pixels
    monkeypatch.setattr(pipeline.Indexer, "_commit",
                        lambda self, batch: (commits.append(len(batch)), commit(self, batch)))
    monkeypatch.setattr(VisionEncoder, "embed_pixels",
                        lambda self, pixels, dim=None: (calls.append(len(pixels)), embed_pixels(self, pixels, dim))[1])
    vision, text = tiny_model_dirs
    summary = index(IndexOptions([str(folder)], db=tmp_path / "db", vision_model=str(vision), text_model=str(text),
                                 workers=1))
    assert summary.added == 11 and commits == [2, 4, 4, 1]
    assert calls == [2, 4, 4, 1]  # the model too sees the batch sized for its device, from the first call on


def test_cpu_batches_hold_about_3200_token_rows_and_at_most_32_images(monkeypatch):
    from models.preprocess import Preprocess

    monkeypatch.setattr(pipeline, "available_memory", lambda device=None: 64 << 30)
    nomic = Preprocess(size=(224, 224), shortest_edge=None, crop=None, resample=3, mean=(0, 0, 0), std=(1, 1, 1))
    vit_b_32_256 = Preprocess(size=(256, 256), shortest_edge=None, crop=None, resample=3, mean=(0, 0, 0),
                              std=(1, 1, 1))
    assert pipeline.auto_batch_size(nomic, 768, 12, patch=16) == 16  # 197 tokens an image
    assert pipeline.auto_batch_size(vit_b_32_256, 768, 12, patch=32) == pipeline.MAX_CPU_BATCH  # 65 tokens


def test_batches_are_sized_to_available_memory(monkeypatch, tiny_model_dirs):
    from models.preprocess import Preprocess

    pre = Preprocess.from_folder(tiny_model_dirs[0])
    monkeypatch.setattr(pipeline, "available_memory", lambda device=None: 64 << 30)
    tokens = (pre.input_size[0] // 16) * (pre.input_size[1] // 16) + 1
    assert pipeline.auto_batch_size(pre, 768, 12) == min(pipeline.MAX_CPU_BATCH, pipeline.CPU_TOKEN_ROWS // tokens)
    monkeypatch.setattr(pipeline, "available_memory", lambda device=None: 200 << 20)  # a starved machine: smaller batches
    assert 1 <= pipeline.auto_batch_size(pre, 768, 12) < 8


def test_progress_bar_shows_rate_and_eta(tmp_path, tiny_encoders, capsys):
    for i in range(3):
        pattern(200 + i).save(tmp_path / f"{i}.jpg")
    run([tmp_path], tmp_path.parent / f"{tmp_path.name}-db", tiny_encoders, progress=True)
    err = capsys.readouterr().err
    assert "indexing: 100%" in err and "3/3" in err and "file/s" in err and "<" in err  # elapsed<remaining


def test_captions_file_formats(tmp_path):
    from core.errors import UsageError
    from indexer.captions import load_caption_files

    (tmp_path / "a.csv").write_text('file,text\nx.jpg,"one, with a comma"\nx.jpg,"two\nlines"\n,label\n')
    (tmp_path / "b.jsonl").write_text('{"path": "y.jpg", "captions": ["p", "q"]}\n\n{"caption": "free"}\n')
    (tmp_path / "c.txt").write_text("cat\n\n dog \n")
    entries = load_caption_files([str(tmp_path / n) for n in ("a.csv", "b.jsonl", "c.txt")])
    assert [(e.path, e.text) for e in entries] == [
        ("x.jpg", "one, with a comma"), ("x.jpg", "two\nlines"), (None, "label"), ("y.jpg", "p"), ("y.jpg", "q"),
        (None, "free"), (None, "cat"), (None, "dog")]
    (tmp_path / "bad.csv").write_text("just,columns\n1,2\n")
    (tmp_path / "bad.json").write_text("{}")
    for name, words in (("bad.csv", "must name the columns"), ("bad.json", "use .csv, .jsonl or .txt"),
                        ("missing.csv", "no such captions file")):
        with pytest.raises(UsageError, match=words):
            load_caption_files([str(tmp_path / name)])


def test_an_unfinished_row_is_redone_with_its_captions(fresh, tiny_encoders):
    """The state a kill leaves between a batch's first photo write and its captions: the row has no mtime."""
    store = Store(fresh.db)
    row = by_relpath(fresh.db)["exif/described.jpg"]
    store.table(IMAGES).update(where=f"id = '{row['id']}'", values={"mtime_ns": None})
    store.table(CAPTIONS).delete(f"image_id = '{row['id']}'")
    summary = run([fresh.lib.root], fresh.db, tiny_encoders)
    assert summary.unchanged == len(fresh.lib.good)  # same bytes: nothing was added or updated
    after = by_relpath(fresh.db)["exif/described.jpg"]
    assert after["mtime_ns"] == row["mtime_ns"] and np.allclose(after["vector"], row["vector"], atol=1e-5)
    assert captions_by_relpath(fresh.db)["exif/described.jpg"] == {("exif", "a red bicycle against a brick wall")}


class Crash(BaseException):
    """Stands in for SIGKILL between two commits (BaseException: nothing on the way may catch it)."""


def test_a_crash_between_any_two_commits_converges_on_rerun(tmp_path, tiny_encoders, monkeypatch):
    """Deterministic companion of the SIGKILL test: stop before the 1st, 2nd, ... write of a run that adds,
    changes, moves and deletes photos, then run again; every time the result equals an uninterrupted run."""
    from lancedb.table import LanceTable

    from tests.indexer_library import assert_same_rows, dump

    lib = make_library(tmp_path)
    for relpath in list(lib.good):  # a smaller library keeps this loop quick
        if relpath.startswith(("modes/", "2024/")):
            (lib.root / relpath).unlink()
            lib.good.pop(relpath)
    shutil.rmtree(lib.root / "bad")
    captions = [str(lib.captions_csv), str(lib.captions_jsonl)]
    base = tmp_path / "base"
    run([lib.root], base, tiny_encoders, captions=captions)
    # the second run's changes: one new photo (with a sidecar), one changed, one moved (with an XMP caption),
    # one deleted, an edited sidecar
    pattern(70).save(lib.root / "captioned/new.jpg")
    (lib.root / "captioned/new.jpg.txt").write_text("a brand new photo")
    pattern(71).save(lib.root / "2023/summer/Sunset.JPEG", format="JPEG")
    os.rename(lib.root / "xmp/lighthouse.jpg", lib.root / "2023/lighthouse.jpg")
    (lib.root / "xmp/kite.png").unlink()
    (lib.root / "captioned/dog.jpg.txt").write_text("a dog with a stick")

    def second_run(db):
        return run([lib.root], db, tiny_encoders, captions=captions, batch_size=2, commit_every=2, workers=1)

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    writes = {"n": 0, "crash_at": None}

    def counted(name):
        original = getattr(LanceTable, name)

        def wrapper(self, *args, **kwargs):
            writes["n"] += 1
            if writes["n"] == writes["crash_at"]:
                raise Crash()
            return original(self, *args, **kwargs)
        monkeypatch.setattr(LanceTable, name, wrapper)

    for name in ("merge_insert", "delete", "update", "create_index", "optimize", "add"):
        counted(name)
    publishes = []
    publish = Store.publish
    monkeypatch.setattr(Store, "publish", lambda self: (publishes.append(writes["n"]), publish(self)))
    summary = second_run(clean)
    total, want = writes["n"], dump(clean)
    batches = -(-(summary.added + summary.updated + summary.moved) // 2)
    # each batch, the removals, the caption repairs and the maintenance publish: those commits are crash points too
    assert len(publishes) == batches + 3 and total > 10 + len(publishes)
    for crash_at in range(1, total + 1):
        db = tmp_path / f"crash{crash_at}"
        shutil.copytree(base, db)
        writes.update(n=0, crash_at=crash_at)
        with pytest.raises(Crash):
            second_run(db)
        writes.update(crash_at=None)
        second_run(db)
        assert_same_rows(dump(db), want)


def test_quotes_and_sql_words_in_paths_are_only_data(tmp_path, tiny_encoders):
    folder = tmp_path / "O'Brien \"photos\"; DROP TABLE images; --"
    folder.mkdir()
    pattern(80).save(folder / "it's.jpg")
    db = tmp_path / "db"
    assert run([folder], db, tiny_encoders).added == 1
    assert run([folder], db, tiny_encoders).unchanged == 1  # looked up by `root = '...'`
    assert admin.remove([str(folder / "it's.jpg")], db)["removed"] == 1
    assert st.sql_in("id", ["a'b", "c"]) == "id IN ('a''b', 'c')" and st.sql_in("id", []) == "FALSE"
