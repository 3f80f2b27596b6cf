"""`glance tune`: real learning on a generated captioned library (tests/tune_library.py) with the tiny random-weight
models, whose text and image spaces are unrelated until tuned; the split, the saved file, search with and without
the tuning, refusal on another index's models, and the kept-off rule."""
from __future__ import annotations

import json
import shutil
from math import comb
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from search import heldout, tune
from search.engine import Engine
from store import TUNING, Store, image_id
from tests import tune_library
from tests.test_eval import glance_process, unit_rows, write_index

PHOTOS = 400


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoders):
    """(photos root, index folder, what each photo shows), indexed once by the real indexer."""
    from indexer.pipeline import IndexOptions, index

    root = tmp_path_factory.mktemp("tune-photos")
    photos = tune_library.write(root, PHOTOS)
    db = root.parent / f"{root.name}-index"
    summary = index(IndexOptions(paths=[str(root)], db=db, encoders=tiny_encoders, precision="fp32"))
    assert not summary.problems and summary.captions_total == PHOTOS
    return root, db, {p.name: p for p in photos}


@pytest.fixture(scope="module")
def untuned(library, tmp_path_factory):
    """A copy of the index before any tuning (the baseline for search comparisons)."""
    copy = tmp_path_factory.mktemp("untuned") / "index"
    shutil.copytree(library[1], copy)
    return copy


@pytest.fixture(scope="module")
def tuned(library, untuned):
    """The adapter trained with the defaults, through the command."""
    done = glance_process("tune", "--db", library[1], "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def chance_recall_at_5(split: tune.Split) -> float:
    """Expected recall@5 of a random ranking: per query with m positives among n, 1 - C(n-m, 5) / C(n, 5)."""
    pairs = split.held_out
    n = len(pairs.photos)
    positives = np.bincount(pairs.pair_text, minlength=len(pairs.texts))
    return float(np.mean([1 - comb(n - m, 5) / comb(n, 5) for m in positives]))


def test_tuning_lifts_held_out_recall_far_above_the_untuned_base(library, tuned):
    split, _ = tune.load_split(Store(library[1]), 0)
    chance = chance_recall_at_5(split)
    base, after = tuned["held_out"]["base"], tuned["held_out"]["tuned"]
    assert base["recall@5"] < 2 * chance  # random towers: the untrained adapter is near chance
    assert after["recall@5"] >= 3 * max(base["recall@5"], chance)
    assert after["mrr"] > 2 * base["mrr"] and tuned["active"] and tuned["better_than_base"]
    assert base["queries"] == len(split.held_out.texts) and base["candidates"] == len(split.held_out.photos)
    assert tuned["split"]["held_out"]["photos"] == len(split.held_out_ids) > 40
    assert Store(library[1]).meta()[TUNING] == tuned["name"] == tuned["active_tuning"]


def test_search_with_the_caption_words_returns_photos_of_the_right_class(library, tuned):
    """Held-out photos' captions as typed queries: the top hits match the colour asked for (chance: 1/8)."""
    root, db, shown = library
    split, _ = tune.load_split(Store(db), 0)
    resolved = str(Path(root).resolve())
    captions = sorted({shown[name].caption for name in shown if heldout.is_held_out(image_id(resolved, name))})[:20]
    engine = Engine(db, precision="fp32")
    right = {True: [], False: []}
    for caption in captions:
        colour = caption.split()[1]
        for use in (True, False):
            results = engine.search(caption, top=5, tuning=use)
            assert results.tuning == (tuned["name"] if use else None)
            right[use] += [shown[Path(h.path).name].colour == colour for h in results.hits]
    assert np.mean(right[True]) >= 0.6 > 2 * np.mean(right[False])


def test_held_out_photos_are_never_trained_on(library):
    """Training twice, once with every held-out photo and caption vector replaced by noise, learns the very
    same map: nothing of a held-out photo reaches the weights."""
    store = Store(library[1])
    split, _ = tune.load_split(store, 0)
    assert not set(split.held_out_ids) & set(split.train_ids) and not set(split.validation_ids) & set(split.train_ids)
    assert all(heldout.role(i) == heldout.HELD_OUT for i in split.held_out_ids)
    rng = np.random.default_rng(5)
    scrambled = tune.Split(split.train, split.validation,
                           tune.Pairs(unit_rows(rng.normal(size=split.held_out.photos.shape)),
                                      unit_rows(rng.normal(size=split.held_out.texts.shape)),
                                      split.held_out.pair_text, split.held_out.pair_photo),
                           split.train_ids, split.held_out_ids, split.validation_ids, split.texts)
    learned = [tune.AdapterTrainer(s, 0).fit(max_epochs=6).tensors for s in (split, scrambled)]
    assert all(np.array_equal(learned[0][key], learned[1][key]) for key in ("weight", "bias"))
    assert not np.allclose(learned[0]["weight"], np.eye(len(learned[0]["weight"])))


def test_the_split_is_by_photo_and_stable(library):
    ids = Store(library[1]).photo_ids().to_pylist()
    roles = [heldout.role(i) for i in ids]
    assert roles == [heldout.role(i) for i in ids]  # the same on every call
    share = roles.count(heldout.HELD_OUT) / len(ids)
    assert 0.12 < share < 0.28 and heldout.held_out_ids(ids) == {i for i, r in zip(ids, roles) if r == "held_out"}
    assert [heldout.role(i, seed=1) for i in ids] != roles  # the seed picks another split


def test_the_tuning_is_saved_as_safetensors_with_its_figures_and_models(library, tuned):
    path = Path(library[1]) / "extras" / f"{tuned['name']}.safetensors"
    saved = load_file(str(path))
    weight = saved["weight"]
    assert weight.shape == (128, 128) and weight.dtype == np.float32 and saved["bias"].shape == (128,)
    tensors, info = Store(library[1]).load_tuning(tuned["name"])
    assert info["models"]["dim"] == 128 and info["held_out"] == tuned["held_out"] and info["method"] == "adapter"
    assert np.array_equal(tensors["weight"], weight)


def test_no_tuning_gives_the_untuned_results(library, untuned, tuned):
    query = "two green squares on a plain background"
    with_tuning = glance_process("search", query, "--db", library[1], "--json", "--top", "8", "--precision", "fp32")
    without = glance_process("search", query, "--db", library[1], "--json", "--top", "8", "--precision", "fp32",
                             "--no-tuning")
    assert with_tuning.returncode == without.returncode == 0, without.stderr
    scores = {name: [(h["id"], round(h["score"], 4)) for h in json.loads(done.stdout)]
              for name, done in (("tuned", with_tuning), ("off", without))}
    before = [(h.id, round(h.score, 4)) for h in Engine(untuned, precision="fp32").search(query, top=8).hits]
    assert scores["off"] == before != scores["tuned"]


def test_caption_search_and_image_queries_are_not_mapped(library, untuned, tuned):
    tuned_engine, base_engine = Engine(library[1], precision="fp32"), Engine(untuned, precision="fp32")
    texts = [(h.text, round(h.score, 5)) for h in tuned_engine.caption_search("red circles", top=5)]
    assert texts == [(h.text, round(h.score, 5)) for h in base_engine.caption_search("red circles", top=5)]
    photo = next(iter(sorted(Path(library[0]).glob("*.png"))))
    like = [(h.id, round(h.score, 5)) for h in tuned_engine.search(image=str(photo), top=5).hits]
    assert like == [(h.id, round(h.score, 5)) for h in base_engine.search(image=str(photo), top=5).hits]


def test_off_switches_it_off_and_the_index_is_untouched(library, tmp_path, tuned):
    db = tmp_path / "index"
    shutil.copytree(library[1], db)
    done = glance_process("tune", "--off", "--db", db)
    assert done.returncode == 0 and f"switched off: {tuned['name']}" in done.stdout
    assert Store(db).meta()[TUNING] is None and Engine(db, precision="fp32").vectors.tuning is None
    again = glance_process("tune", "--off", "--db", db)
    assert again.returncode == 0 and "already off" in again.stdout


def test_a_tuning_is_refused_on_an_index_built_with_another_model(library, tuned, tmp_path, fixture_dir):
    from indexer.pipeline import IndexOptions, index
    from models import load_pair
    from models.synthetic import write_text, write_vision

    other = load_pair(str(write_vision(tmp_path / "vision", seed=7, template=fixture_dir)),
                      str(write_text(tmp_path / "text", seed=7, template=fixture_dir)), precision="fp32")
    photos = tmp_path / "photos"
    tune_library.write(photos, 12)
    db = tmp_path / "other-index"
    index(IndexOptions(paths=[str(photos)], db=db, encoders=other, precision="fp32"))
    source = Path(library[1]) / "extras" / f"{tuned['name']}.safetensors"
    (db / "extras").mkdir(exist_ok=True)  # the index made it already (its map, indexer/collection_map.py)
    shutil.copy(source, db / "extras" / source.name)
    store = Store(db)
    store.set_active_tuning(tuned["name"])
    engine = Engine(db, precision="fp32")
    assert engine.vectors.tuning is None and "refused" in engine.tuning_problem
    assert "made for" in engine.tuning_problem and str(tmp_path / "vision") in engine.tuning_problem
    results = engine.search("one red circle on a plain background", top=3)
    assert results.tuning is None
    done = glance_process("search", "red circle", "--db", db)
    assert done.returncode == 0 and "refused" in done.stderr and done.stderr.count("\n") <= 2


def test_a_tuning_that_does_not_beat_the_base_is_kept_off(tmp_path):
    """Captions whose vectors already equal their photos': nothing can beat a perfect base."""
    rng = np.random.default_rng(3)
    photos = unit_rows(rng.normal(size=(60, 32)))
    db = tmp_path / "perfect"
    write_index(db, photos, [(i, f"caption {i}", photos[i]) for i in range(60)])
    report = tune.run(db, max_epochs=3)
    assert report["held_out"]["base"]["recall@1"] == 1.0 and not report["active"]
    assert Store(db).meta().get(TUNING) is None and report["active_tuning"] is None
    assert (db / "extras" / f"{report['name']}.safetensors").is_file()
    assert "kept off" in tune.report_text(report)


def test_too_few_captioned_photos_is_one_line(tmp_path):
    rng = np.random.default_rng(4)
    photos = unit_rows(rng.normal(size=(15, 16)))
    db = tmp_path / "small"
    write_index(db, photos, [(i, f"caption {i}", photos[i]) for i in range(15)])
    done = glance_process("tune", "--db", db)
    assert done.returncode == 2 and done.stderr.startswith("glance: error: only 15 captioned photos")
    assert done.stderr.count("\n") == 1 and not done.stdout
    missing = glance_process("tune", "--db", tmp_path / "nothing-here")
    assert missing.returncode == 2 and "no glance index" in missing.stderr.lower() and missing.stderr.count("\n") == 1
    bad = glance_process("tune", "--db", db, "--epochs", "0")
    assert bad.returncode == 2 and "--epochs" in bad.stderr


def test_lora_on_the_text_tower_learns_and_search_uses_it(library, untuned, tmp_path):
    db = tmp_path / "index"
    shutil.copytree(library[1], db)
    report = tune.run(db, method="lora", max_epochs=12, learning_rate=1e-2)
    assert report["method"] == "lora" and report["rank"] == 8
    assert report["held_out"]["tuned"]["recall@5"] > 1.5 * report["held_out"]["base"]["recall@5"]
    assert report["active"] and Store(db).meta()[TUNING] == report["name"]
    tensors, _ = Store(db).load_tuning(report["name"])
    assert tensors and all("lora_" in name for name in tensors)
    engine = Engine(db, precision="fp32")
    assert engine.vectors.tuning.method == "lora"
    from search.query import Term

    terms = [Term("one red circle on a plain background")]
    base, mapped = engine.vectors.terms(terms)[0], engine.vectors.photo_terms(terms)[0]
    stored = Engine(untuned, precision="fp32").vectors.text.embed_queries([terms[0].text]).numpy()[0]
    assert np.allclose(base, stored, atol=1e-5) and not np.allclose(mapped, base, atol=1e-3)
    assert engine.search(terms[0].text, top=3).tuning == report["name"]
    served = Engine(db, precision="bf16", fast_start=True)  # a server's engine: fp32 first, then the LoRA on bf16
    assert np.allclose(served.vectors.photo_terms(terms)[0], mapped, atol=1e-5)
    served.finish_loading()
    assert served.vectors.text.precision.path != "fp32"
    fresh = [Term("a red circle, alone")]  # not in the term cache: embedded by the swapped-in model
    held, held_base = served.vectors.photo_terms(fresh)[0], served.vectors.terms(fresh)[0]
    assert float(np.dot(held, engine.vectors.photo_terms(fresh)[0])) > 0.99
    assert not np.allclose(held, held_base, atol=1e-3)


def test_a_running_server_follows_the_active_tuning(library, tuned, tmp_path, monkeypatch):
    """search/live.py re-opens its Engine when the active tuning changes (it is one of the ENCODER_KEYS)."""
    from search import live

    db = tmp_path / "index"
    shutil.copytree(library[1], db)
    monkeypatch.setattr(live, "RECHECK_S", 0.0)  # look at every request instead of every 10 s
    server = live.Library(db, precision="fp32")
    server.start()
    assert server.engine().vectors.tuning.name == tuned["name"]
    Store(db).set_active_tuning(None)
    assert server.engine().vectors.tuning is None
    Store(db).set_active_tuning(tuned["name"])
    assert server.engine().vectors.tuning.name == tuned["name"]


def test_eval_names_the_active_tuning_and_its_held_out_figures(library, tuned):
    from search import evaluate

    report = evaluate.run(str(library[1]))
    assert report["tuning"] == {"name": tuned["name"], "method": "adapter", "held_out": tuned["held_out"]}
    assert f"active tuning: {tuned['name']} (adapter)" in evaluate.report_text(report)


def test_mining_skips_positives_and_near_duplicates_and_scales_by_pool(library, monkeypatch):
    """A copy of a caption's photo (another file, same picture) is never mined as its negative; with a pool
    smaller than the library, mined photos still come from the training photos and pass the filter."""
    split, _ = tune.load_split(Store(library[1]), 0)
    pairs = split.train
    twin = unit_rows(pairs.photos[pairs.pair_photo[0]][None] + 1e-4)  # a near-copy of text 0's photo
    photos = np.concatenate([pairs.photos, twin])
    copied = tune.Split(tune.Pairs(photos, pairs.texts, pairs.pair_text, pairs.pair_photo), split.validation,
                        split.held_out, split.train_ids, split.held_out_ids, split.validation_ids, split.texts)
    trainer = tune.AdapterTrainer(copied, 0)
    hard = trainer.mine()
    text = pairs.pair_text[0]
    assert len(photos) - 1 not in hard[text] and not set(hard[text]) & set(pairs.pair_photo[pairs.pair_text == text])
    monkeypatch.setattr(tune, "MINING_POOL", 50)
    monkeypatch.setattr(tune, "MINING_BLOCK", 16)
    small = trainer.mine()
    assert small.shape == hard.shape and (small >= 0).any() and (small >= -1).all() and small.max() < len(photos)
    assert not any(p in set(pairs.pair_photo[pairs.pair_text == t]) for t, row in enumerate(small) for p in row)
