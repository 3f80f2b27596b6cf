"""`glance index --dim N`: vectors stored at a Matryoshka size, kept on later runs, searched at that size."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import UsageError
from indexer.pipeline import IndexOptions, index
from search.engine import Engine
from store import Store, StoreError

from .indexer_library import pattern


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dim-photos")
    for i in range(4):
        pattern(i, (64, 48)).save(folder / f"p{i}.png")
    (folder / "p0.png.txt").write_text("a red bicycle")
    return folder


def stored(db, table):
    return {r["id"]: np.asarray(r["vector"], np.float32) for r in Store(db).table(table).to_arrow().to_pylist()}


def test_vectors_are_the_full_ones_cut_and_renormalised(photos, tiny_encoders, tmp_path):
    full, small = tmp_path / "full", tmp_path / "small"
    common = dict(paths=[str(photos)], encoders=tiny_encoders, precision="fp32")
    index(IndexOptions(db=full, **common))
    index(IndexOptions(db=small, dim=64, **common))
    assert Store(small).meta()["dim"] == 64 and Store(full).meta()["dim"] == 128
    for table in ("images", "captions"):
        big, cut = stored(full, table), stored(small, table)
        assert set(big) == set(cut)
        for key, vector in cut.items():
            expected = big[key][:64] / np.linalg.norm(big[key][:64])
            assert vector.shape == (64,) and np.allclose(vector, expected, atol=1e-5)
    again = index(IndexOptions(db=small, **common))  # no --dim: the index keeps its size
    assert again.unchanged == 4 and Store(small).meta()["dim"] == 64
    hits = Engine(small, precision="fp32").search("a red bicycle", top=4).hits
    assert len(hits) == 4 and -1.0 <= hits[0].score <= 1.0


def test_another_size_is_refused_without_reindex_and_bad_sizes_say_which_exist(photos, tiny_encoders, tmp_path):
    db = tmp_path / "db"
    common = dict(paths=[str(photos)], db=db, encoders=tiny_encoders, precision="fp32")
    index(IndexOptions(dim=64, **common))
    with pytest.raises(StoreError, match="dim=64.*dim=128|--reindex"):
        index(IndexOptions(dim=128, **common))
    with pytest.raises(UsageError, match="--dim 100: .* embeds at 128, 64"):
        index(IndexOptions(dim=100, **common))
    rebuilt = index(IndexOptions(dim=128, reindex=True, **common))
    assert rebuilt.added == 4 and Store(db).meta()["dim"] == 128
    assert Image.open(photos / "p0.png").size == (64, 48)  # the library is only read
