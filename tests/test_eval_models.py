"""`glance eval --model SPEC`: other models on the held-out photos of a library indexed by the real indexer,
against a naive reference (the photos and captions read back from disk, embedded and ranked the obvious way),
the index's own model given as --model against its stored vectors, and the index and photos left untouched."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.synthetic import write_open_clip, write_pair
from search import compare, evaluate
from search.heldout import is_held_out
from store import CAPTIONS, IMAGES, Store, image_id
from tests.indexer_library import pattern
from tests.test_eval import naive_ranks

from .conftest import FIXTURE

REPO = Path(__file__).resolve().parent.parent
TINY_CLIP = {"embed_dim": 64, "vision_cfg": {"layers": 2, "width": 128},
             "text_cfg": {"layers": 2, "width": 64, "heads": 2}}  # as tests/test_openclip.py sizes ViT-B-32
SHARED_TEXT = "two photos share this caption"


def glance_process(*argv, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def write_library(root: Path, held_out: int, trained: int) -> dict[str, list[str]]:
    """Captioned photos whose names are picked so that exactly `held_out` of them fall in the held-out split
    (and `trained` do not), plus two uncaptioned ones. Returns photo name -> its captions."""
    real_root = os.path.realpath(root)
    captions: dict[str, list[str]] = {}
    counts = {True: 0, False: 0}
    wanted = {True: held_out, False: trained}
    number = 0
    while counts[True] < held_out or counts[False] < trained:
        name = f"photo{number:03d}." + ("jpg" if number % 5 == 0 else "png")
        side = is_held_out(image_id(real_root, name))
        if counts[side] < wanted[side]:
            pattern(number, (64, 48)).save(root / name, **({"quality": 95} if name.endswith("jpg") else {}))
            captions[name] = [f"picture number {number}, {'kept back' if side else 'for training'}"]
            (root / f"{name}.txt").write_text(captions[name][0])
            counts[side] += 1
        number += 1
    for extra in ("uncaptioned-a.png", "uncaptioned-b.png"):
        pattern(1000 + len(extra), (64, 48)).save(root / extra)
    return captions


def share_and_add_captions(root: Path, captions: dict[str, list[str]]) -> Path:
    """Two held-out photos get one more caption with the same text (one query, two positives), one photo a
    second text, and a free-standing label belongs to no photo: all from a captions CSV beside the folder."""
    held = [name for name in captions if is_held_out(image_id(os.path.realpath(root), name))]
    rows = [[held[0], SHARED_TEXT], [held[1], SHARED_TEXT], [held[2], "a second caption for this one"],
            ["", "a label that belongs to no photo"]]
    for name, text in rows[:3]:
        captions[name].append(text)
    path = root.parent / f"{root.name}-captions.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["path", "caption"], *rows])
    return path


def build_index(root: Path, captions_files: list[Path], tiny_encoders) -> Path:
    from indexer.pipeline import IndexOptions, index

    db = root.parent / f"{root.name}-index"
    summary = index(IndexOptions(paths=[str(root)], db=db, captions=[str(p) for p in captions_files],
                                 encoders=tiny_encoders, precision="fp32"))
    assert not summary.problems, summary.problems
    return db


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoders):
    """22 held-out captioned photos, 12 trained-on ones, 2 without captions, indexed by the real indexer."""
    root = tmp_path_factory.mktemp("eval-models") / "photos"
    root.mkdir()
    captions = write_library(root, held_out=22, trained=12)
    db = build_index(root, [share_and_add_captions(root, captions)], tiny_encoders)
    return root, db, captions


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """Two models the index was not built with: a tiny open_clip checkpoint (one folder) and a tiny Nomic pair
    with other weights (two folders)."""
    folder = tmp_path_factory.mktemp("other-models")
    clip = write_open_clip(folder / "ViT-B-32", "ViT-B-32", seed=3, overrides=TINY_CLIP)
    nomic = write_pair(folder / "nomic", seed=7, template=FIXTURE)
    return {"open_clip": str(clip), "nomic": f"{nomic[0]},{nomic[1]}"}


@pytest.fixture(scope="module")
def compared(library, other_models, tiny_model_dirs):
    _, db, _ = library
    own = ",".join(map(str, tiny_model_dirs))
    candidates = compare.resolve_candidates(str(db), [other_models["open_clip"], other_models["nomic"], own])
    return compare.run(str(db), candidates, seed=2, precision="fp32")


def by_spec(report: dict, spec: str) -> dict:
    return next(model for model in report["models"] if model["spec"] == spec)


def naive_figures(root: Path, captions: dict[str, list[str]], spec: str, dims: tuple[int, ...]) -> dict:
    """The held-out photos and their captions read back from disk (not from the index), embedded with the
    model's own encoders one by one, ranked by sorting every query's scores."""
    from models import load_pair

    held = sorted((image_id(os.path.realpath(root), name), name) for name in captions
                  if is_held_out(image_id(os.path.realpath(root), name)))
    vision, text = load_pair(*compare.split_spec(spec), precision="fp32")
    photos = np.concatenate([vision.embed_images([Image.open(root / name, formats=["PNG", "JPEG"])]).numpy()
                             for _, name in held])
    texts = sorted({t for _, name in held for t in captions[name]})
    text_vectors = text.embed_captions(texts).numpy()
    owners = [{row for row, (_, name) in enumerate(held) if t in captions[name]} for t in texts]
    own_texts = [{texts.index(t) for t in captions[name]} for _, name in held]
    figures = {}
    for dim in dims:
        cut_photos, cut_texts = evaluate.unit(photos[:, :dim]), evaluate.unit(text_vectors[:, :dim])
        figures[dim] = {"caption_to_photo": naive_ranks(cut_texts, cut_photos, owners),
                        "photo_to_caption": naive_ranks(cut_photos, cut_texts, own_texts)}
    return figures


def assert_rows_match(rows: list[dict], naive: dict) -> None:
    assert [row["dim"] for row in rows] == list(naive)
    for row in rows:
        for direction, ranks in naive[row["dim"]].items():
            for k in evaluate.KS:
                assert row[direction][f"recall@{k}"]["value"] == pytest.approx(np.mean(ranks <= k))
            assert row[direction]["mrr"]["value"] == pytest.approx(np.mean(1 / ranks))


def tree_state(*folders: Path) -> dict[str, tuple[int, int]]:
    """Sizes and mtimes of every file, except the evaluation report that `glance eval` keeps in extras/."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns)
            for folder in folders for path in sorted(folder.rglob("*"))
            if path.is_file() and path.relative_to(folder).parts[:1] != ("extras",)}


def table_versions(db: Path) -> dict[str, int]:
    store = Store(db)
    return {name: store.table(name).version for name in (IMAGES, CAPTIONS)}


# ----- the figures ------------------------------------------------------------------------------------------------
def test_the_held_out_photos_are_the_split_and_ranked_among_themselves(library, compared):
    root, db, captions = library
    ids = [image_id(os.path.realpath(root), name) for name in captions]
    assert compare.held_out_photos(Store(db).pinned()).ids == sorted(i for i in ids if is_held_out(i))
    held = compared["held_out"]
    assert (held["captioned_photos"], held["held_out_photos"], held["photos"]) == (34, 22, 22)
    assert held["all_captioned"] is False and held["skipped"] == 0 and held["split_seed"] == 0
    assert held["caption_texts"] == 22 + 2 and held["pairs"] == 22 + 3  # the shared text is one query
    assert held["queries"] == {"caption_to_photo": 24, "photo_to_caption": 22}
    assert [row["dim"] for row in held["rows"]] == [128, 64]  # the index's own model: v1.5 at 128
    for model in compared["models"]:
        assert (model["photos"], model["skipped"], model["queries"]) == (22, 0, held["queries"])


def test_other_families_match_a_naive_reference(library, compared, other_models):
    root, _, captions = library
    clip = by_spec(compared, other_models["open_clip"])
    assert (clip["family"], clip["dim"], clip["model_version"]) == ("open_clip", 64, "open_clip:ViT-B-32")
    assert_rows_match(clip["rows"], naive_figures(root, captions, other_models["open_clip"], (64,)))
    nomic = by_spec(compared, other_models["nomic"])
    assert (nomic["family"], nomic["dim"]) == ("nomic", 128)
    assert_rows_match(nomic["rows"], naive_figures(root, captions, other_models["nomic"], (128, 64)))
    assert nomic["rows"][0]["caption_to_photo"] != by_spec(compared, other_models["open_clip"])["rows"][0][
        "caption_to_photo"]  # other weights rank differently: the figures are not a constant


def test_the_index_model_as_a_candidate_gives_the_stored_vector_figures(compared, tiny_model_dirs):
    same = by_spec(compared, ",".join(map(str, tiny_model_dirs)))
    assert (same["vision_model"], same["text_model"]) == tuple(str(d.resolve()) for d in tiny_model_dirs)
    stored = compared["held_out"]
    assert [row["dim"] for row in same["rows"]] == [row["dim"] for row in stored["rows"]]
    for embedded, from_index in zip(same["rows"], stored["rows"]):
        for direction in evaluate.DIRECTIONS:
            assert embedded[direction] == from_index[direction]  # values and intervals, to the last digit


def test_a_nomic_vision_folder_alone_pairs_with_the_index_text_model(library, tiny_model_dirs):
    _, db, _ = library
    candidate, = compare.resolve_candidates(str(db), [str(tiny_model_dirs[0])])
    assert candidate.text.spec == str(tiny_model_dirs[1].resolve())


# ----- the command: JSON, table, nothing written ----------------------------------------------------------------
def test_the_command_adds_sections_and_writes_nothing(library, other_models, tiny_model_dirs, capsys):
    from glance.cli import main

    root, db, _ = library
    before, versions = tree_state(root, db), table_versions(db)
    done = glance_process("eval", "--db", db, "--json", "--precision", "fp32", "--seed", "2",
                          "--model", other_models["open_clip"], "--model", ",".join(map(str, tiny_model_dirs)))
    assert done.returncode == 0, done.stderr
    assert tree_state(root, db) == before and table_versions(db) == versions  # the photos and the index as they were
    report, plain = json.loads(done.stdout), evaluate.run(str(db), seed=2)
    assert set(report) == set(plain) | {"held_out", "models", "evaluated_at"}  # the existing keys stay as they were
    assert {key: report[key] for key in plain if key != "rows"} == {key: v for key, v in plain.items() if key != "rows"}
    assert [row["caption_to_photo"] for row in report["rows"]] == [row["caption_to_photo"] for row in plain["rows"]]
    clip, same = report["models"]
    assert set(clip) >= {"spec", "family", "dim", "photos", "skipped", "rows"}
    assert clip["spec"] == other_models["open_clip"]
    assert (clip["photos"], clip["skipped"], report["held_out"]["photos"]) == (22, 0, 22)
    assert same["rows"][0]["photo_to_caption"] == report["held_out"]["rows"][0]["photo_to_caption"]
    with pytest.raises(SystemExit) as exited:  # in-process this time, as a table
        main(["eval", "--db", str(db), "--precision", "fp32", "--model", other_models["open_clip"]])
    table = capsys.readouterr().out
    assert exited.value.code == 0 and "caption -> photo: 36 queries, ranked among 36 photos" in table
    assert "held-out photos: 22 of the 34 captioned photos" in table
    assert "index's own model, from its stored vectors" in table
    assert f"--model {other_models['open_clip']}: " in table and "(open_clip, open_clip:ViT-B-32, dim 64)" in table
    assert tree_state(root, db) == before and table_versions(db) == versions


def test_a_missing_model_is_one_line_and_exit_2(library, tmp_path):
    _, db, _ = library
    for spec, words in (("someone/not-a-cached-model", "is not in the Hugging Face cache"),
                        (str(tmp_path / "no-such-folder"), "no model folder")):
        done = glance_process("eval", "--db", db, "--model", spec, env_extra={"HF_HOME": str(tmp_path / "hf")})
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith(f"glance: error: --model {spec}: ") and words in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_specs_that_are_no_pair_are_refused(library, other_models, tiny_model_dirs):
    from models import MismatchedModels

    _, db, _ = library
    with pytest.raises(compare.UsageError, match="two as VISION,TEXT"):
        compare.split_spec("a,b,c")
    with pytest.raises(MismatchedModels, match=f"--model {tiny_model_dirs[0]},"):
        compare.resolve_candidates(str(db), [f"{tiny_model_dirs[0]},{other_models['open_clip']}"])


def test_too_few_captioned_photos_stays_the_plain_error(tmp_path, tiny_model_dirs):
    from tests.test_eval import unit_rows, write_index

    photos = unit_rows(np.random.default_rng(0).normal(size=(30, 128)))
    few = write_index(tmp_path / "few", photos, [(i, f"c{i}", photos[i]) for i in range(19)])
    done = glance_process("eval", "--db", few.path, "--model", ",".join(map(str, tiny_model_dirs)))
    assert done.returncode == 2 and done.stderr.startswith("glance: error: only 19 captioned photos in the index")


# ----- few held-out photos, and photos that cannot be read any more ---------------------------------------------
def test_too_few_held_out_uses_every_captioned_photo_and_skips_unreadable_files(tmp_path, tiny_encoders,
                                                                                  tiny_model_dirs):
    root = tmp_path / "photos"
    root.mkdir()
    captions = write_library(root, held_out=4, trained=20)
    db = build_index(root, [], tiny_encoders)
    gone, damaged, escaping = sorted(name for name in captions if name.endswith(".png"))[:3]
    (root / gone).unlink()
    (root / damaged).write_bytes(b"this is no longer an image")
    outside = tmp_path / "outside.png"
    (root / escaping).rename(outside)
    (root / escaping).symlink_to(outside)  # the file is there, but outside its indexed folder
    report = compare.run(str(db), compare.resolve_candidates(str(db), [",".join(map(str, tiny_model_dirs))]),
                         precision="fp32")
    held, (model,) = report["held_out"], report["models"]
    assert (held["held_out_photos"], held["all_captioned"], held["captioned_photos"]) == (4, True, 24)
    assert (held["photos"], held["skipped"], model["photos"], model["skipped"]) == (21, 3, 21, 3)
    reasons = " | ".join(model["skipped_examples"])
    assert "no longer exists" in reasons and "not an image Glance can read" in reasons
    assert "leads outside its indexed folder" in reasons
    for embedded, from_index in zip(model["rows"], held["rows"]):  # both over the 21 photos still readable
        assert embedded["caption_to_photo"] == from_index["caption_to_photo"]
    text = compare.report_text(report)
    assert "only 4 of the 24 captioned photos are held out (fewer than 20), so every captioned photo is used" in text
    assert "skipped: 3 of them could not be read" in text
