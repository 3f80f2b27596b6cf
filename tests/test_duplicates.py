"""Near-duplicates (search/duplicates.py): a generated library of bursts collapses to one result per burst, no
distinct photo is collapsed, and `glance duplicates` lists the groups. The thresholds are measured on the tiny
test model itself, as they are on any model."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import numpy as np

from search import duplicates
from search.engine import Engine
from search.filters import Filters
from tests.burst_library import KEPT_VARIANTS, START

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
