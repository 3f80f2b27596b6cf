"""The search engine over a real LanceDB index of a generated library, with the tiny random-weight models.

Random weights carry no meaning, so rankings are tested where they are known: image->image on painted
photos (two reds are each other's nearest), and text queries through their exact vector arithmetic.
"""
from __future__ import annotations

import io
import shutil
import time
from datetime import datetime

import lancedb
import numpy as np
import pytest
from PIL import Image

import search.uploads as uploads
import store.reading as store_reading
from core.errors import UsageError
from search.engine import Engine, NotServable
from search.filters import Filters
from search.query import parse_query
from store import SCHEMA_VERSION, Store, StoreError
from tests.conftest import FIXTURE
from tests.search_library import LIBRARY, stored_rows


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)




@pytest.fixture(scope="module")
def engine(library):
    return Engine(library.db, precision="fp32")


def names(library, hits):
    return [library.name_of(h.id) for h in hits]


def all_photos(library):
    return len(LIBRARY) + len(library.extra_rows)


# ---------------------------------------------------------------------------------------------- ranking

def test_more_like_this_ranks_the_other_red_first_and_leaves_itself_out(engine, library):
    results = engine.search(like=library.ids["red"], top=50)
    ranked = names(library, results.hits)
    assert ranked[0] == "red2"
    assert "red" not in ranked and len(ranked) == all_photos(library) - 1
    scores = [h.score for h in results.hits]
    assert scores == sorted(scores, reverse=True)
    expected = float(unit(library.vectors["red"]) @ unit(library.vectors["red2"]))
    assert results.hits[0].score == pytest.approx(expected, abs=1e-5)


def test_an_indexed_query_file_is_left_out_and_a_new_image_finds_its_colour(engine, library):
    by_path = engine.search(image=str(library.path("red")), top=3)
    assert names(library, by_path.hits)[0] == "red2" and "red" not in names(library, by_path.hits)
    fresh = Image.new("RGB", (120, 90), (215, 35, 30))
    assert set(names(library, engine.search(image=fresh, top=2).hits)) == {"red", "red2"}


def test_text_terms_combine_as_the_normalized_weighted_sum(engine, library, tiny_encoders):
    _, text = tiny_encoders
    e = text.embed_queries(["beach", "people", "dog"]).numpy().astype(np.float64)
    query = unit(e[0] - e[1] + 2 * e[2])
    results = engine.search("beach -people 2:dog", top=50)
    stored = {library.name_of(h.id): h.score for h in results.hits}
    for name, vector in library.vectors.items():
        assert stored[name] == pytest.approx(float(query @ unit(vector)), abs=1e-5)
    assert [(t.text, t.weight) for t in results.query] == [("beach", 1.0), ("people", -1.0), ("dog", 2.0)]


def test_a_subtracted_term_pushes_its_nearest_photo_down(engine, library, tiny_encoders):
    _, text = tiny_encoders
    cat = text.embed_queries(["cat"]).numpy()[0]
    nearest_to_cat = max(library.vectors, key=lambda n: float(unit(cat) @ unit(library.vectors[n])))

    def rank(query):
        return names(library, engine.search(query, top=50).hits).index(nearest_to_cat)

    assert rank("dog -2:cat") > rank("dog")


def test_queries_run_on_the_threads_the_cores_allow_and_leave_torch_as_it_was(engine, library, monkeypatch):
    import torch

    import search.vectors as search_vectors

    seen = []
    for encoder, method in ((engine.vectors.text, "embed_queries"), (engine.vectors.vision(), "embed_images")):
        original = getattr(encoder, method)

        def spy(*args, _original=original, **kwargs):
            seen.append(torch.get_num_threads())
            return _original(*args, **kwargs)
        monkeypatch.setattr(encoder, method, spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for spare, threads in ((0, 1), (1, 2)):  # another process busy on the other core; nothing else running
            monkeypatch.setattr(search_vectors, "spare_cores", lambda spare=spare: spare)
            seen.clear()
            engine.search(f"a thread test {spare}", image=str(library.path("blue")))
            assert seen == [threads, threads]  # the text term and the image
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_term_is_embedded_once_keyed_on_its_normalized_text(library, monkeypatch):
    engine = Engine(library.db, precision="fp32")  # its own term cache
    embedded = []
    original = engine.vectors.text.embed_queries

    def spy(texts, *args, **kwargs):
        embedded.extend(texts)
        return original(texts, *args, **kwargs)
    monkeypatch.setattr(engine.vectors.text, "embed_queries", spy)
    first = engine.search("a  red\tapple")
    again = engine.search("a red apple")  # the same words: the cached vector, the same ranking
    assert embedded == ["a red apple"] and [h.id for h in again.hits] == [h.id for h in first.hits]
    assert [h.score for h in again.hits] == [h.score for h in first.hits]
    engine.search("A red apple +green")  # case is kept (a cased tokenizer tells it apart); new terms only
    assert embedded == ["a red apple", "A red apple", "green"]
    engine.search("green +a red apple", offset=24)  # paging and reordering embed nothing
    assert embedded == ["a red apple", "A red apple", "green"]


def test_a_single_query_engine_holds_no_weights_and_ranks_as_a_server_does(library):
    """`glance search` answers one query: its text model loads in fp32 (no int8 or bf16 weights to build), the
    vision model keeps the precision asked for, and the ranking is the one a long-running engine gives."""
    one = Engine(library.db, single_query=True)
    served = Engine(library.db)
    assert one.vectors.text.precision.path == "fp32"
    assert one.vectors.precision == served.vectors.precision == "auto"  # what the vision model loads with
    for query in ("red", "green stripes", "blue -red"):  # random tiny weights: near-ties below the top few
        assert [h.id for h in one.search(query).hits[:3]] == [h.id for h in served.search(query).hits[:3]]
        terms = parse_query(query)
        for mine, theirs in zip(one.vectors.terms(terms), served.vectors.terms(terms)):
            assert float(np.dot(unit(mine), unit(theirs))) >= 0.999
    asked = Engine(library.db, precision="fp32", single_query=True)
    assert asked.vectors.text.precision.path == "fp32"


def test_a_fast_start_answers_in_fp32_then_swaps_in_the_precision_asked_for(library):
    """A starting server (search/live.py) answers at once with the fp32 text model; finish_loading() then puts the
    precision asked for in its place, and the answers agree with an engine that loaded it directly."""
    from search.live import Library

    fast = Engine(library.db, precision="bf16", fast_start=True)
    direct = Engine(library.db, precision="bf16")
    assert fast.vectors.text.precision.path == "fp32" != direct.vectors.text.precision.path
    started = fast.vectors.text
    early = fast.search("green stripes")
    fast.finish_loading()
    assert fast.vectors.text is not started and fast.vectors.text.precision.path == direct.vectors.text.precision.path
    fast.finish_loading()  # once only
    later, straight = fast.search("red -blue"), direct.search("red -blue")
    assert [h.id for h in later.hits[:3]] == [h.id for h in straight.hits[:3]]
    assert [h.id for h in early.hits[:3]] == [h.id for h in direct.search("green stripes").hits[:3]]
    asked = Engine(library.db, precision="fp32", fast_start=True)
    asked.finish_loading()  # fp32 was asked for: the model it started with stays
    assert asked.vectors.text.precision.path == "fp32"
    server = Library(library.db, precision="bf16")  # a server finishes loading in a thread of its own
    server.start()
    server.stop()  # waits for that thread
    assert server.engine().vectors.text.precision.path == direct.vectors.text.precision.path


def test_text_and_image_together(engine, library, tiny_encoders):
    _, text = tiny_encoders
    dog = unit(text.embed_queries(["a dog"]).numpy()[0])
    query = unit(dog + unit(library.vectors["green"]))  # both parts weigh 1, then the sum is normalized
    both = engine.search("a dog", like=library.ids["green"], top=50)
    scores = {library.name_of(h.id): h.score for h in both.hits}
    assert "green" not in scores and len(scores) == all_photos(library) - 1
    for name, vector in library.vectors.items():
        if name != "green":
            assert scores[name] == pytest.approx(float(query @ unit(vector)), abs=1e-5)
    image_only = [h.id for h in engine.search(like=library.ids["green"], top=50).hits]
    text_only = [h.id for h in engine.search("a dog", top=50).hits if h.id != library.ids["green"]]
    assert [h.id for h in both.hits] not in (image_only, text_only)  # the text moved the ranking, and the image


# ----------------------------------------------------------------------------------------------- paging

def test_pages_are_disjoint_and_consecutive(engine, library):
    everything = [h.id for h in engine.search(like=library.ids["blue"], top=50).hits]
    pages, offset = [], 0
    while True:
        page = engine.search(like=library.ids["blue"], top=5, offset=offset)
        pages.append(page)
        offset += 5
        if not page.has_more:
            break
    assert [h.id for p in pages for h in p.hits] == everything
    assert [len(p.hits) for p in pages] == [5, 5, 2]
    assert all(p.total_considered == all_photos(library) - 1 for p in pages)


@pytest.mark.parametrize("top, offset", [(0, 0), (501, 0), (10, -1), (10, 10_001), ("5", 0)])
def test_bad_paging_is_a_usage_error(engine, top, offset):
    with pytest.raises(UsageError):
        engine.search("dog", top=top, offset=offset)


# ---------------------------------------------------------------------------------------------- filters

@pytest.mark.parametrize("folder", ["plain", "it's", "a%b", "a_b", "axb", "x' OR '1'='1", "back\\slash", "2023/trip"])
def test_folder_filters_return_exactly_that_folder(engine, library, folder):
    expected = {s.name for s in LIBRARY if s.relpath.startswith(folder + "/")}
    results = engine.search("anything", filters=Filters(folder=folder), top=50)
    assert set(names(library, results.hits)) == expected
    assert results.total_considered == len(expected)


def test_absolute_folder_date_and_caption_filters(engine, library):
    absolute = engine.search("x", filters=Filters(folder=str(library.root / "2023")), top=50)
    assert set(names(library, absolute.hits)) == {"checker", "gradient", "cyan"}
    july = engine.search("x", filters=Filters(date_from="2022-07", date_to="2022-07"), top=50)
    assert set(names(library, july.hits)) == {"green", "blue"}  # yellow was taken at 2022-08-01 00:00
    captioned = engine.search("x", filters=Filters(has_caption=True), top=50)
    assert set(names(library, captioned.hits)) == {s.name for s in LIBRARY if s.caption}
    combined = engine.search("x", filters=Filters(folder="2023", date_to=datetime(2023, 7, 10), has_caption=True))
    assert names(library, combined.hits) == ["checker"]


def test_more_like_a_photo_outside_the_filter(engine, library):
    results = engine.search(like=library.ids["red"], filters=Filters(folder="it's"))
    assert names(library, results.hits) == ["green"] and results.total_considered == 1


def test_a_filter_that_matches_nothing_says_so(engine):
    results = engine.search("dog", filters=Filters(folder="no such folder"))
    assert results.hits == [] and not results.has_more
    assert "no photos match the filters (folder no such folder)" in results.note
    with pytest.raises(UsageError, match="not inside an indexed folder"):
        engine.search("dog", filters=Filters(folder="/etc"))


# -------------------------------------------------------------------------------------------- cut-off

def test_cutoff_reports_its_decision_and_keeps_pages_consistent(engine, library):
    from search.cutoff import adaptive_cutoff

    uncut = engine.search(like=library.ids["red"], top=50)
    expected = adaptive_cutoff([h.score for h in uncut.hits], uncut.total_considered)
    results = engine.search(like=library.ids["red"], top=3, cutoff=True)
    assert results.cutoff == expected and results.cutoff.considered == all_photos(library) - 1
    kept = expected.keep if expected.cut else len(uncut.hits)
    assert results.dropped == uncut.total_considered - kept
    second = engine.search(like=library.ids["red"], top=3, offset=3, cutoff=True)
    assert [h.id for h in results.hits + second.hits] == [h.id for h in uncut.hits[:min(6, kept)]]


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("text", ["", "   ", "0:dog", " , "])
def test_an_empty_query_is_refused(engine, text):
    with pytest.raises(UsageError, match="empty query"):
        engine.search(text)


def test_a_10000_character_query_gets_a_message_fast(engine):
    start = time.perf_counter()
    with pytest.raises(UsageError, match="limit is 1,000"):
        engine.search("sunset " * 1430)
    assert time.perf_counter() - start < 0.5


def test_bad_query_images_are_refused(engine, tmp_path, monkeypatch):
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not an image")
    truncated = tmp_path / "cut.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "PNG")
    truncated.write_bytes(buffer.getvalue()[:60])
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 6_000)).save(bomb)  # 60 MP, a few kB on disk
    cases = {text_file: "not an image", truncated: "damaged|not an image", bomb: "megapixels",
             tmp_path / "missing.jpg": "no such image file"}
    for path, message in cases.items():
        with pytest.raises(UsageError, match=message):
            engine.search(image=str(path))
    for url in ["http://example.com/cat.jpg", "https://x/y.png", "file:///etc/passwd", "data:image/png;base64,AAAA"]:
        with pytest.raises(UsageError, match="URLs are not accepted"):
            engine.search(image=url)
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(UsageError, match="over the limit of"):
        engine.check_image(buffer.getvalue())


def test_unknown_like_id_is_a_usage_error(engine):
    with pytest.raises(UsageError, match="no photo with id"):
        engine.search(like="0" * 40)


# ---------------------------------------------------------------------------------------- files, photos

def test_file_path_serves_only_indexed_files_inside_a_root(engine, library):
    assert engine.file_path(library.ids["green"]) == library.path("green").resolve()
    assert engine.file_path(str(library.path("green"))) == library.path("green").resolve()
    with pytest.raises(NotServable) as link:
        engine.file_path(library.extra_rows["escape"])  # a symlink in the root pointing outside it
    assert link.value.status == 403
    traversal = f"{library.root}/plain/../../outside/secret.png"
    for attempt in [traversal, str(library.outside), "0" * 40, "/etc/passwd", str(library.root)]:
        with pytest.raises(NotServable) as refused:
            engine.file_path(attempt)
        assert refused.value.status == 404


def test_thumbnails_and_photo_details(engine, library):
    assert engine.thumbnail(library.ids["green"])[:2] == b"\xff\xd8"  # JPEG
    with pytest.raises(NotServable):
        engine.thumbnail("f" * 40)
    details = engine.photo(library.ids["green"])
    assert details.relpath == "it's/green.png" and details.captions == [("green field", "sidecar")]
    assert details.taken_at == datetime(2022, 7, 14, 9) and details.camera == "TestCam"


def test_stats(engine, library):
    engine.warm_up(vision=True)
    stats = engine.stats()
    assert engine.vectors.vision() is engine.vectors.vision()  # loaded once, by warm_up
    assert (stats["photos"], stats["captions"], stats["texts"]) == (all_photos(library), 5, 4)
    assert stats["dim"] == 128 and stats["roots"] == {str(library.root): all_photos(library)}
    assert stats["model_version"] == "v1.5" and stats["schema_version"] == SCHEMA_VERSION


# ---------------------------------------------------------------------------------------------- texts

def test_image_to_text_ranks_captions_and_free_texts_by_cosine(engine, library):
    table = lancedb.connect(str(library.db)).open_table("captions").to_arrow().to_pylist()
    red = unit(library.vectors["red"])
    expected = sorted(((float(red @ unit(r["vector"])), r["text"]) for r in table), reverse=True)[:5]
    hits = engine.image_to_text(like=library.ids["red"], top=5)
    assert [h.text for h in hits] == [t for _, t in expected]
    assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], abs=1e-5)
    by_file = engine.image_to_text(image=str(library.path("red")), top=5)
    assert [h.text for h in by_file] == [h.text for h in hits]
    caption = next(h for h in engine.image_to_text(like=library.ids["red"], top=9) if h.text == "a red square")
    assert caption.path == str(library.path("red")) and caption.image_id == library.ids["red"]


def test_caption_search_fuses_keyword_and_semantic_matches(engine):
    hits = engine.caption_search("chess", top=9)
    chess = next(h for h in hits if h.text == "a chess board")
    assert chess.routes["keyword"] == 1 and chess.routes["space"] and hits[0].text == "a chess board"
    assert all(set(h.routes) == {"keyword", "space", "caption_model"} for h in hits)
    assert all(h.routes["caption_model"] is None for h in hits)  # this index has no caption model
    assert len(engine.caption_search("it's 100% _ ' OR 1=1 --", top=3)) == 3  # hostile text is only text


def test_caption_search_uses_the_full_text_index_when_present(library, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(library.db, copy)
    from lancedb.index import FTS

    lancedb.connect(str(copy)).open_table("captions").create_index("text", config=FTS())
    engine = Engine(copy, precision="fp32")
    assert engine.stats()["text_index"] is True
    hits = engine.caption_search("birthday", top=3)
    assert hits[0].text == "a birthday cake" and hits[0].matched == "keyword+space"


# ------------------------------------------------------------------------------------------ vector index

def test_the_vector_index_is_used_on_big_tables_and_agrees_with_exact_search(library, tmp_path, monkeypatch):
    copy = tmp_path / "index"
    shutil.copytree(library.db, copy)
    from lancedb.index import IvfFlat

    lancedb.connect(str(copy)).open_table("images").create_index(
        "vector", config=IvfFlat(distance_type="cosine", num_partitions=2))
    Store(copy).publish()  # as the indexer does after building an index
    engine = Engine(copy, precision="fp32")
    exact = engine.search(like=library.ids["red"], top=20)
    monkeypatch.setattr(store_reading, "EXACT_MAX_ROWS", 0)
    indexed = engine.search(like=library.ids["red"], top=20)
    assert (exact.mode, indexed.mode) == ("exact", "index")
    assert [h.id for h in indexed.hits] == [h.id for h in exact.hits]


# ------------------------------------------------------------------------------------------------ models

def test_another_model_is_refused_and_a_copy_of_the_same_is_accepted(library, tmp_path, tiny_model_dirs):
    from models.synthetic import write_pair

    other_vision, other_text = write_pair(tmp_path / "other", seed=5, template=FIXTURE)
    with pytest.raises(StoreError, match="--vision-model .* is not the model the index"):
        Engine(library.db, vision_model=str(other_vision), precision="fp32")
    with pytest.raises(StoreError, match="--text-model .* is not the model the index"):
        Engine(library.db, text_model=str(other_text), precision="fp32")
    v1_vision, _ = write_pair(tmp_path / "v1", version="v1", template=FIXTURE)
    with pytest.raises(StoreError, match="built with Nomic Embed v1.5"):
        Engine(library.db, vision_model=str(v1_vision), precision="fp32")
    copies = [shutil.copytree(d, tmp_path / "copy" / d.name) for d in tiny_model_dirs]
    engine = Engine(library.db, vision_model=str(copies[0]), text_model=str(copies[1]), precision="fp32")
    assert names(library, engine.search(like=library.ids["red"], top=1).hits) == ["red2"]


def test_an_index_without_a_model_record_or_without_tables_is_refused(library, tmp_path):
    with pytest.raises(StoreError, match="no Glance index"):
        Engine(tmp_path / "nothing", precision="fp32")
    copy = tmp_path / "index"
    shutil.copytree(library.db, copy)
    lancedb.connect(str(copy)).drop_table("meta")
    with pytest.raises(StoreError, match="does not record its models"):
        Engine(copy, precision="fp32")



# ------------------------------------------------------------------------------------- relevance feedback

def stored_vectors(library) -> dict[str, np.ndarray]:
    return {row["id"]: unit(row["vector"]) for row in stored_rows(library.db).values()}


def test_liked_photos_alone_are_more_like_these(engine, library):
    liked = [library.ids["red"], str(library.path("blue"))]  # an id or a path, as with --like
    hits = engine.search(liked=liked, top=50).hits
    ids = [h.id for h in hits]
    assert library.ids["red"] not in ids and library.ids["blue"] not in ids  # they are the query
    mean = unit(unit(library.vectors["red"]) + unit(library.vectors["blue"]))
    stored = stored_vectors(library)
    for hit in hits:
        assert hit.score == pytest.approx(float(stored[hit.id] @ mean), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_thumbs_up_and_down_refine_the_query_rocchio_s_way(engine, library):
    from search import engine as engine_module
    from search.query import Term

    text = unit(engine.vectors.terms([Term("a photo")])[0])
    red, blue = (unit(library.vectors[n]) for n in ("red", "blue"))
    refined = engine.search("a photo", top=50, liked=[library.ids["red"]], disliked=[library.ids["blue"]])
    expected = unit(text + engine_module.ROCCHIO_LIKED * red - engine_module.ROCCHIO_DISLIKED * blue)
    assert library.ids["blue"] not in {h.id for h in refined.hits}  # a 👎 photo is left out
    assert library.ids["red"] in {h.id for h in refined.hits}  # a 👍 photo stays
    stored = stored_vectors(library)
    for hit in refined.hits:
        assert hit.score == pytest.approx(float(stored[hit.id] @ expected), abs=1e-4)
    before = [h.id for h in engine.search("a photo", top=50).hits]
    after = [h.id for h in refined.hits]
    assert after.index(library.ids["red"]) <= before.index(library.ids["red"])
    with pytest.raises(UsageError, match="must be a list of photo ids"):
        engine.search("a photo", liked="red")
    with pytest.raises(UsageError, match="at most 100 liked photos"):
        engine.search("a photo", liked=[library.ids["red"]] * 101)
