"""An open_clip model end to end: indexed, recorded in the index, searched with text as typed, and never mixed
with another family's vectors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from models.synthetic import write_open_clip
from store import Store

from .conftest import REPO
from .test_openclip import ARCHS

COLOURS = {"red": (220, 30, 30), "red2": (205, 40, 35), "green": (30, 200, 40), "blue": (30, 40, 220)}


def glance(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    base = tmp_path_factory.mktemp("open-clip-library")
    model = write_open_clip(base / "ViT-B-32", "ViT-B-32", seed=3, overrides=ARCHS["ViT-B-32"])
    photos = base / "photos"
    photos.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (120, 90), rgb).save(photos / f"{name}.png")
    (photos / "green.png.txt").write_text("a green field")
    done = glance("index", photos, "--db", base / "db", "--vision-model", model, "--json", "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    return base, model, photos, base / "db", json.loads(done.stdout)


def test_the_index_records_the_open_clip_checkpoint_for_both_towers(indexed):
    _, model, _, db, summary = indexed
    meta = Store(db).meta()
    assert summary["added"] == len(COLOURS) and summary["captions"]["added"] == 1
    assert meta["vision_model"] == meta["text_model"] == str(model.resolve())
    assert meta["model_version"] == "open_clip:ViT-B-32" and meta["dim"] == ARCHS["ViT-B-32"]["embed_dim"]


def test_search_loads_it_from_the_index_and_embeds_text_as_typed(indexed):
    import torch

    from models.openclip import load_open_clip_pair
    from search.engine import Engine

    _, model, photos, db, _ = indexed
    engine = Engine(db, precision="fp32")
    vision, text = load_open_clip_pair(model, precision="fp32")
    query = text.embed(["a red square"])[0].numpy()  # as typed: no `search_query: ` prefix for this family
    stored = {r["relpath"]: np.asarray(r["vector"]) for r in Store(db).table("images").to_arrow().to_pylist()}
    hits = engine.search("a red square", top=10).hits
    assert {h.relpath for h in hits} == set(stored)
    for hit in hits:
        assert hit.score == pytest.approx(float(query @ stored[hit.relpath]), abs=1e-5)
    with torch.inference_mode():
        pixels = vision.embed_images([Image.open(photos / "red.png")])[0].numpy()
    assert np.allclose(pixels, stored["red.png"], atol=1e-5)  # the indexer's path is the encoder's path
    like = engine.search(like=str(photos / "red.png"), top=1).hits
    assert like[0].relpath == "red2.png"  # the nearest colour, through the open_clip image space
    caption = engine.caption_search("a green field", top=1)[0]
    assert caption.text == "a green field" and caption.cosine == pytest.approx(1.0, abs=1e-5)  # as written


def test_cli_search_and_stats_work_on_it(indexed):
    _, _, photos, db, _ = indexed
    done = glance("search", "--like", photos / "red.png", "--top", "1", "--db", db, "--precision", "fp32")
    assert done.returncode == 0 and done.stdout.split("\t")[1].strip() == str(photos / "red2.png"), done.stderr
    stats = json.loads(glance("stats", "--json", "--db", db).stdout)
    assert stats["model_version"] == "open_clip:ViT-B-32" and stats["photos"] == len(COLOURS)


def test_another_family_on_the_index_is_refused_unless_reindex(indexed, tiny_model_dirs, tmp_path):
    base, model, photos, db, _ = indexed
    vision, text = tiny_model_dirs
    refused = glance("index", photos, "--db", db, "--vision-model", vision, "--text-model", text)
    assert refused.returncode == 2 and "--reindex" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    mixed = glance("index", photos, "--db", tmp_path / "new", "--vision-model", model, "--text-model", text)
    assert mixed.returncode == 2 and "not one checkpoint" in mixed.stderr
    dim = glance("embed", "--text", "x", "--vision-model", model, "--dim", "32")
    assert dim.returncode == 2 and "--dim 32 is not available" in dim.stderr
