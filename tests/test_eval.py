"""`glance eval`: the metrics on indexes whose vectors are built to carry (or not carry) the captions' meaning,
checked against hand and naive computations, and the command on a library indexed by the real indexer."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from search import evaluate
from store import (DIM, MODEL_VERSION, PREPROCESS_VERSION_KEY, SCHEMA_VERSION, SCHEMA_VERSION_KEY, TEXT_MODEL,
                   VISION_MODEL, Store, caption_id, captions_schema, images_schema)

REPO = Path(__file__).resolve().parent.parent
DIM_ = 128
CLASSES = 8
PHOTOS = 160


def glance_process(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def write_index(db: Path, photo_vectors: np.ndarray, captions: list[tuple[int | None, str, np.ndarray]],
                version: str = "v1.5") -> Store:
    """An index written through the Store API: photo i has id p{i}; a caption's photo None is a free text."""
    dim = photo_vectors.shape[1]
    store = Store(db)
    with store.writing():
        store.create_tables(dim)
        store.write_meta({VISION_MODEL: "made-up-vision", TEXT_MODEL: "made-up-text", MODEL_VERSION: version,
                          DIM: dim, PREPROCESS_VERSION_KEY: 1, SCHEMA_VERSION_KEY: SCHEMA_VERSION})
        captioned = {photo for photo, _, _ in captions if photo is not None}
        store.upsert_photos(pa.Table.from_pylist(
            [{"id": f"p{i}", "root": "/library", "relpath": f"{i}.jpg", "has_caption": i in captioned,
              "vector": v.tolist()} for i, v in enumerate(photo_vectors)], schema=images_schema(dim)))
        rows = [{"id": caption_id("" if photo is None else f"p{photo}", "sidecar", text),
                 "image_id": "" if photo is None else f"p{photo}", "text": text, "source": "sidecar",
                 "vector": v.tolist()} for photo, text, v in captions]
        store.upsert_captions(pa.Table.from_pylist(rows, schema=captions_schema(dim)))
        store.publish()
    return store


def class_library(seed: int = 1, caption_noise: float = 2.5):
    """PHOTOS photos in CLASSES classes (centroid + noise); each caption near its own photo. Photo 0 and 1 share
    a caption text, photo 2 has two captions, photos from 140 on have none (distractors)."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(CLASSES, DIM_))
    photos = unit_rows(centroids[np.arange(PHOTOS) % CLASSES] + 0.8 * rng.normal(size=(PHOTOS, DIM_)))
    captions = [(i, f"photo {i} of class {i % CLASSES}", unit_rows(photos[i:i + 1] + caption_noise *
                                                                    rng.normal(size=(1, DIM_)) / DIM_ ** 0.5)[0])
                for i in range(2, 140)]
    shared = unit_rows(photos[0:2].mean(axis=0, keepdims=True))[0]
    captions += [(0, "two photos, one text", shared), (1, "two photos, one text", shared),
                 (2, "a second caption of photo 2", photos[2]), (None, "a free-standing label", photos[3])]
    return photos, captions


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    photos, captions = class_library()
    db = tmp_path_factory.mktemp("eval-classes") / "index"
    write_index(db, photos, captions)
    return db, photos, captions


@pytest.fixture(scope="module")
def classes_report(classes):
    return evaluate.run(str(classes[0]), seed=3)


def naive_ranks(queries: np.ndarray, candidates: np.ndarray, positives: list[set[int]]) -> np.ndarray:
    """Rank of the best positive, by sorting every query's scores: the obvious, slow way."""
    ranks = []
    for query, good in zip(queries, positives):
        order = np.argsort(-(candidates @ query), kind="stable")
        ranks.append(1 + min(int(np.flatnonzero(order == c)[0]) for c in good))
    return np.array(ranks)


# ----- the metrics by hand ------------------------------------------------------------------------------------
def test_ranks_and_metrics_match_a_hand_computation():
    at = lambda degrees: [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]  # noqa: E731
    candidates = np.array([at(0), at(30), at(60), at(90)], np.float32)
    queries = np.array([at(0), at(55), at(85)], np.float32)
    # query 0's photo is candidate 0 (rank 1); query 1's is candidate 3 (60, 30 and... closer first: rank 3);
    # query 2 has two positives, candidates 0 and 2: the best one (60 degrees) ranks 2, after 90.
    ranks = evaluate.first_positive_ranks(queries, candidates, np.array([0, 1, 2, 2]), np.array([0, 3, 0, 2]))
    assert ranks.tolist() == [1, 3, 2]
    values = evaluate.per_query_metrics(ranks)
    assert values[:, :].mean(axis=1).tolist() == pytest.approx([1 / 3, 1.0, 1.0, (1 + 1 / 3 + 1 / 2) / 3])


def test_a_text_on_several_photos_is_one_query_with_every_such_photo_positive():
    photos = np.eye(3, dtype=np.float32)
    pairs = evaluate.build_pairs(["a", "b", "c"], photos, ["a", "b", "c", "x"], ["same", "same", "other", "gone"],
                                 np.eye(3, dtype=np.float32)[[0, 0, 2, 1]])
    assert len(pairs.texts) == 2 and sorted(zip(pairs.pair_text.tolist(), pairs.pair_photo.tolist())) == \
        [(0, 0), (0, 1), (1, 2)]  # the caption of an unknown photo "x" is left out
    assert pairs.captioned_photos.tolist() == [0, 1, 2]


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_queries():
    rng = np.random.default_rng(0)
    small, large = (evaluate.bootstrap(rng.integers(0, 2, (1, n)).astype(float), 1000, seed=5)[0] for n in (30, 3000))
    for f in (small, large):
        assert f["low"] <= f["value"] <= f["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 4
    same = evaluate.bootstrap(np.ones((2, 40)), 200, seed=1)
    assert all(f == {"value": 1.0, "low": 1.0, "high": 1.0} for f in same)


def test_matryoshka_sizes_only_for_v1_5():
    from models.dims import supported_dims

    assert supported_dims(768, "v1.5") == (768, 512, 256, 128, 64)
    assert supported_dims(128, "v1.5") == (128, 64)
    assert supported_dims(768, "v1") == (768,) and supported_dims(512, "open_clip:ViT-B-32") == (512,)


# ----- the whole evaluation on built indexes ------------------------------------------------------------------
def test_figures_agree_with_a_naive_computation(classes, classes_report):
    _, photos, captions = classes
    texts = {}
    for photo, text, vector in captions:
        if photo is not None:
            texts.setdefault(text, (vector, set()))[1].add(photo)
    text_vectors = np.array([v for v, _ in texts.values()])
    to_photo = naive_ranks(text_vectors, photos, [good for _, good in texts.values()])
    captioned = sorted(set().union(*(good for _, good in texts.values())))
    own = [{t for t, (_, good) in enumerate(texts.values()) if p in good} for p in captioned]
    to_caption = naive_ranks(photos[captioned], text_vectors, own)
    full = classes_report["rows"][0]
    for direction, ranks in (("caption_to_photo", to_photo), ("photo_to_caption", to_caption)):
        for k in (1, 5, 10):
            assert full[direction][f"recall@{k}"]["value"] == pytest.approx(np.mean(ranks <= k))
        assert full[direction]["mrr"]["value"] == pytest.approx(np.mean(1 / ranks))
    assert classes_report["pairs"] == 138 + 3 and classes_report["captioned_photos"] == 140
    assert classes_report["queries"] == {"caption_to_photo": 140, "photo_to_caption": 140}
    assert classes_report["photos"] == PHOTOS and classes_report["caption_texts"] == 140


def test_informative_vectors_retrieve_and_every_interval_holds_its_estimate(classes_report):
    full = classes_report["rows"][0]
    assert full["caption_to_photo"]["recall@5"]["value"] > 0.9 and full["photo_to_caption"]["recall@10"]["value"] > 0.9
    assert full["caption_to_photo"]["recall@1"]["value"] < 1  # not trivially perfect: the ranks vary
    for row in classes_report["rows"]:
        for direction in evaluate.DIRECTIONS:
            for f in row[direction].values():
                assert 0 <= f["low"] <= f["value"] <= f["high"] <= 1


def test_perfect_vectors_give_recall_one_and_random_ones_chance(tmp_path):
    rng = np.random.default_rng(7)
    photos = unit_rows(rng.normal(size=(200, DIM_)))
    perfect = evaluate.run(str(write_index(tmp_path / "perfect", photos,
                                           [(i, f"caption {i}", photos[i]) for i in range(100)]).path))
    for direction in evaluate.DIRECTIONS:
        assert all(f["value"] == 1.0 for f in perfect["rows"][0][direction].values())
    noise = unit_rows(rng.normal(size=(100, DIM_)))
    chance = evaluate.run(str(write_index(tmp_path / "random", photos,
                                          [(i, f"caption {i}", noise[i]) for i in range(100)]).path))
    to_photo = chance["rows"][0]["caption_to_photo"]
    assert to_photo["recall@10"]["low"] <= 10 / 200 <= to_photo["recall@10"]["high"]
    assert to_photo["recall@10"]["value"] < 0.15 and to_photo["mrr"]["value"] < 0.1
    to_caption = chance["rows"][0]["photo_to_caption"]
    assert to_caption["recall@10"]["low"] <= 10 / 100 <= to_caption["recall@10"]["high"]


def test_matryoshka_rows_cut_the_vectors(tmp_path, classes_report):
    """What the captions share with their photos lives only past component 64 here: the 64 row falls to chance."""
    assert [(r["dim"], r["bytes_per_photo"]) for r in classes_report["rows"]] == [(128, 512), (64, 256)]
    assert all(r["exact_ms_per_query"] > 0 for r in classes_report["rows"])
    rng = np.random.default_rng(2)
    photos = rng.normal(size=(100, DIM_))
    captions = photos.copy()
    captions[:, :64] = rng.normal(size=(100, 64))  # the first 64 components disagree
    report = evaluate.run(str(write_index(tmp_path / "late", unit_rows(photos),
                                          [(i, f"c{i}", v) for i, v in enumerate(unit_rows(captions))]).path))
    full, cut = report["rows"]
    assert full["caption_to_photo"]["recall@1"]["value"] > 0.9
    assert cut["dim"] == 64 and cut["caption_to_photo"]["recall@10"]["value"] < 0.3


def test_no_matryoshka_rows_for_other_families(tmp_path):
    photos, captions = class_library(seed=4)
    report = evaluate.run(str(write_index(tmp_path / "v1", photos, captions, version="v1").path))
    assert [r["dim"] for r in report["rows"]] == [128] and report["model_version"] == "v1"


# ----- the command ---------------------------------------------------------------------------------------------
def test_json_and_table_from_the_command(classes):
    done = glance_process("eval", "--db", classes[0], "--json", "--seed", "3")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"db", "vision_model", "text_model", "model_version", "dim", "pairs", "queries", "rows"}
    assert report["db"] == str(classes[0]) and report["vision_model"] == "made-up-vision"
    row = report["rows"][0]
    assert set(row) == {"dim", "bytes_per_photo", "exact_ms_per_query", "caption_to_photo", "photo_to_caption"}
    assert set(row["caption_to_photo"]) == {"recall@1", "recall@5", "recall@10", "mrr"}
    assert set(row["caption_to_photo"]["mrr"]) == {"value", "low", "high"}
    table = glance_process("eval", "--db", classes[0])
    assert table.returncode == 0 and "caption -> photo: 140 queries" in table.stdout
    assert "photo -> caption: 140 queries" in table.stdout
    assert [line.split()[0] for line in table.stdout.splitlines() if line[:5].strip() in ("128", "64")] == \
        ["128", "64", "128", "64"]


def test_too_few_captioned_photos_and_no_index_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(0)
    photos = unit_rows(rng.normal(size=(50, DIM_)))
    few = write_index(tmp_path / "few", photos, [(i, f"c{i}", photos[i]) for i in range(19)])
    done = glance_process("eval", "--db", few.path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (f"glance: error: only 19 captioned photos in the index at {few.path}; evaluation "
                                   "needs at least 20 for the figures to mean anything")
    enough = write_index(tmp_path / "enough", photos, [(i, f"c{i}", photos[i]) for i in range(20)])
    assert evaluate.run(str(enough.path))["captioned_photos"] == 20
    missing = glance_process("eval", "--db", tmp_path / "nothing")
    assert missing.returncode == 2 and missing.stderr.startswith(f"glance: error: no Glance index at {tmp_path}")
    assert not (tmp_path / "nothing").exists()


# ----- end to end: a library indexed by the real indexer -------------------------------------------------------
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (250, 250, 250), (5, 5, 5),
           (140, 30, 160), (30, 220, 220)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_encoders):
    from indexer.pipeline import IndexOptions, index

    root = tmp_path_factory.mktemp("eval-photos")
    for i in range(26):
        colour = COLOURS[i % len(COLOURS)]
        shade = tuple(min(255, c + 3 * i) for c in colour)
        Image.new("RGB", (64, 48), shade).save(root / f"photo{i:02d}.png")
        if i < 24:
            (root / f"photo{i:02d}.png.txt").write_text(f"a plain square, colour number {i % len(COLOURS)}, shot {i}")
    labels = root.parent / f"{root.name}-labels.csv"
    with labels.open("w", newline="") as f:
        csv.writer(f).writerows([["path", "caption"], ["", "a label that belongs to no photo"]])
    db = root.parent / f"{root.name}-index"
    summary = index(IndexOptions(paths=[str(root)], db=db, captions=[str(labels)], encoders=tiny_encoders,
                                 precision="fp32"))
    assert not summary.problems, summary.problems
    return db


def test_eval_on_a_library_indexed_by_the_real_indexer(indexed):
    done = glance_process("eval", "--db", indexed, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["photos"] == 26 and report["captioned_photos"] == 24 and report["pairs"] == 24
    assert report["caption_texts"] == 24  # the free-standing label is no pair
    assert report["model_version"] == "v1.5" and [r["dim"] for r in report["rows"]] == [128, 64]
    stored = Store(indexed).stats()
    assert stored["photos_with_captions"] == 24 and stored["texts"] == 1
    table = glance_process("eval", "--db", indexed)
    assert table.returncode == 0 and "pairs: 24 (caption, photo)" in table.stdout
    print(table.stdout)
