"""Near-duplicates (search/duplicates.py): a generated library of bursts collapses to one result per burst, no
distinct photo is collapsed, and `glance duplicates` lists the groups. The thresholds are measured on the tiny
test model itself, as they are on any model."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import IndexOptions, index
from search import duplicates
from search.engine import Engine
from search.filters import Filters

BURSTS = 6
# What the tiny random-weight model can tell apart: an off-centre 80% crop moves its vector further than some
# distinct scenes are from each other (the measured recall says so), so the library leaves that variant out.
KEPT_VARIANTS = ["jpeg q70", "jpeg q30", "crop 90%", "12% brighter", "12% darker", "half size"]
START = datetime(2024, 5, 1, 9, 0, 0)


def save(image: Image.Image, path, taken: datetime) -> None:
    exif = Image.Exif()
    exif[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(path, format="JPEG", quality=92, exif=exif.tobytes())


@pytest.fixture(scope="module")
def bursts(tmp_path_factory, tiny_encoders):
    """BURSTS bursts of one scene each (its variants a second apart), plus lone photos: distinct scenes taken
    within the same minutes, and burst 0's scene again a year later (the same view, another photo)."""
    root = tmp_path_factory.mktemp("bursts") / "photos"
    expected: dict[str, set[str]] = {}
    for number in range(BURSTS):
        original = duplicates.scene(5000 + number)
        shots = [original, *(duplicates.VARIANTS[name](original) for name in KEPT_VARIANTS)]
        names = set()
        for shot, image in enumerate(shots):
            name = f"burst{number}/shot{shot}.jpg"
            save(image, root / name, START + timedelta(minutes=10 * number, seconds=shot))
            names.add(name)
        expected[f"burst{number}/shot0.jpg"] = names
    lone = {}
    for number in range(4):
        name = f"lone/scene{number}.jpg"
        save(duplicates.scene(7000 + number), root / name, START + timedelta(minutes=10 * number, seconds=30))
        lone[name] = {name}
    save(duplicates.scene(5000), root / "lone/year-later.jpg", START + timedelta(days=365))
    lone["lone/year-later.jpg"] = {"lone/year-later.jpg"}
    db = root.parent / "index"
    summary = index(IndexOptions(paths=[str(root)], db=db, encoders=tiny_encoders, precision="fp32"))
    assert not summary.problems
    return root, db, expected, lone


def relpaths(hits) -> set[str]:
    return {h.relpath for h in hits}


def test_the_thresholds_are_measured_on_generated_bursts(tiny_encoders):
    measured = duplicates.measure(lambda images: tiny_encoders[0].embed_images(images).numpy())
    assert measured.precision == 1.0  # no pair of distinct scenes passes
    assert 0.5 < measured.recall <= 1.0 and -1 <= measured.cosine <= 1 and -1 <= measured.layout <= 1
    assert measured.cosine > measured.distinct_max or measured.burst_min > measured.distinct_max
    engine_threshold = duplicates.threshold_for(tiny_encoders[0])
    assert engine_threshold == duplicates.threshold_for(tiny_encoders[0])  # kept, not measured again


def test_the_library_collapses_to_one_group_per_burst(bursts):
    root, db, expected, lone = bursts
    groups = Engine(db, precision="fp32").duplicates()
    found = {frozenset({g.relpath, *relpaths(g.duplicates)}) for g in groups}
    assert found == {frozenset(names) for names in expected.values()}  # no distinct photo in any group
    biggest = groups[0]
    assert biggest.width * biggest.height == max(d.width * d.height for d in (biggest, *biggest.duplicates))
    only_one = Engine(db, precision="fp32").duplicates(Filters(folder="burst2"))
    assert [relpaths([g, *g.duplicates]) for g in only_one] == [expected["burst2/shot0.jpg"]]


def test_a_search_shows_one_result_per_burst(bursts):
    root, db, expected, lone = bursts
    engine = Engine(db, precision="fp32")
    like = str(root / "burst3/shot0.jpg")
    flat = engine.search(like=like, top=100)
    collapsed = engine.search(like=like, top=100, collapse=True)
    assert len(flat.hits) == len(expected) * (len(KEPT_VARIANTS) + 1) + len(lone) - 1  # every photo but itself
    shown = [relpaths([h, *h.duplicates]) for h in collapsed.hits]
    groups = [names - {"burst3/shot0.jpg"} for names in expected.values()] + list(lone.values())
    assert sorted(map(sorted, shown)) == sorted(map(sorted, groups))
    assert relpaths(collapsed.hits[:1]) <= expected["burst3/shot0.jpg"]  # its own burst first
    assert [h.id for h in collapsed.hits] == [h.id for h in flat.hits if h.id in {c.id for c in collapsed.hits}]
    first_page = engine.search(like=like, top=3, collapse=True)
    second_page = engine.search(like=like, top=3, offset=3, collapse=True)
    assert [h.id for h in first_page.hits + second_page.hits] == [h.id for h in collapsed.hits[:6]]


def glance(*args):
    return subprocess.run([sys.executable, "-m", "glance", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_glance_duplicates_lists_the_groups(bursts):
    root, db, expected, lone = bursts
    done = glance("duplicates", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    listed = {frozenset({g["keep"]["relpath"], *(d["relpath"] for d in g["duplicates"])}) for g in answer["groups"]}
    assert listed == {frozenset(names) for names in expected.values()}
    assert answer["photos_in_groups"] == sum(map(len, expected.values())) and answer["threshold"]["precision"] == 1.0
    text = glance("duplicates", "--db", db, "--folder", "lone")
    assert text.returncode == 1 and "0 groups" in text.stderr and text.stdout == ""
    search = glance("search", "--db", db, "--like", root / "burst1/shot0.jpg", "--collapse", "--top", "3")
    assert search.returncode == 0, search.stderr
    assert search.stdout.splitlines()[0].endswith(f"\t+{len(KEPT_VARIANTS) - 1}")  # its burst, less itself
    missing = glance("duplicates", "--db", root.parent / "nothing")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_near_pairs_keep_the_time_rule():
    vectors = np.eye(3, dtype=np.float32)[[0, 0, 0]]  # three identical vectors
    layouts = np.zeros((3, 4), np.float32)
    dates = [START, START + timedelta(seconds=duplicates.BURST_SECONDS), START + timedelta(days=1)]
    threshold = duplicates.Threshold(0.9, 0.9, 1.0, 1.0, 1.0, 0.0)
    pairs = duplicates.near_pairs(vectors, layouts, dates, threshold)
    assert {i: sorted(j for j, _ in found) for i, found in pairs.items()} == {0: [1], 1: [0]}
    undated = duplicates.near_pairs(vectors, layouts, [None, START, START + timedelta(days=1)], threshold)
    assert sorted(j for j, _ in undated[0]) == [1, 2]  # no date: the vectors decide
    assert duplicates.cluster([2, 0, 1], undated) == [[2, 0], [1]]  # 1 pairs with 0, who is not a leader
