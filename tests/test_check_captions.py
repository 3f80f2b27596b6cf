"""`glance check-captions` (search/consistency.py): in an index written through the store API, captions near
their photo pass, captions that describe another photo are flagged, furthest first, with the captions of the
nearest captioned photos as suggestions. Needs no model."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from search.consistency import CHECK_Z, check_captions
from search.engine import Engine
from store import TEXT_MODEL, VISION_MODEL, Store
from tests.conftest import FIXTURE
from tests.test_eval import unit_rows, write_index

PHOTOS, DIM = 60, 128  # the tiny test models' width: the page and the engine can open the index
SWAPPED = {7: 40, 21: 3, 33: 50}  # photo -> the photo whose caption it wrongly carries


def build(folder):
    """An index of PHOTOS photos (no files: vectors and rows only), each captioned near itself but SWAPPED."""
    rng = np.random.default_rng(3)
    photos = unit_rows(rng.normal(size=(PHOTOS, DIM)))
    near = unit_rows(photos + 0.12 * rng.normal(size=(PHOTOS, DIM)))  # each photo's caption, close to it
    captions = [(i, f"caption of {SWAPPED.get(i, i)}", near[SWAPPED.get(i, i)]) for i in range(PHOTOS)]
    captions.append((None, "a free-standing text", near[5]))  # not a photo's caption: never judged
    db = folder / "index"
    store = write_index(db, photos, captions)
    with store.writing():  # the tiny models as the index's own, so that Engine and the page open it
        store.write_meta({VISION_MODEL: str(FIXTURE / "vision-v1.5"), TEXT_MODEL: str(FIXTURE / "text-v1.5")})
        store.publish()
    return db, photos


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build(tmp_path_factory.mktemp("check"))


def test_captions_of_another_photo_are_flagged_furthest_first(index):
    db, photos = index
    report = check_captions(Store(db).pinned(), top=50)
    assert report.checked == PHOTOS
    flagged = {c.image_id: c for c in report.flagged}
    assert set(flagged) == {f"p{i}" for i in SWAPPED}
    assert [c.z for c in report.flagged] == sorted(c.z for c in report.flagged) and report.flagged[0].z <= CHECK_Z
    wrong = flagged["p7"]
    assert wrong.text == "caption of 40" and wrong.path == "/library/7.jpg"
    assert wrong.cosine < report.median - 2 * report.mad
    order = np.argsort(-(photos @ photos[7]))
    nearest = [int(k) for k in order if k != 7][:3]
    assert wrong.suggestions == tuple(f"caption of {SWAPPED.get(k, k)}" for k in nearest)
    assert len(check_captions(Store(db).pinned(), top=1).flagged) == 1
    assert Engine(db, precision="fp32").check_captions(top=50) == report


def test_the_command_lists_them_without_a_model(index):
    db, _ = index
    done = subprocess.run([sys.executable, "-m", "glance", "check-captions", "--db", str(db), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # some were flagged
    answer = json.loads(done.stdout)
    assert {c["image_id"] for c in answer["flagged"]} == {f"p{i}" for i in SWAPPED} and answer["checked"] == PHOTOS
    text = subprocess.run([sys.executable, "-m", "glance", "check-captions", "--db", str(db), "--top", "1"],
                          capture_output=True, text=True, timeout=300)
    assert text.stdout.splitlines()[1].startswith("  suggestion: ") and f"1 of {PHOTOS} captions flagged" in text.stderr
    missing = subprocess.run([sys.executable, "-m", "glance", "check-captions", "--db", str(db.parent / "none")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
