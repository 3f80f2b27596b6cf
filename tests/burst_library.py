"""A generated library of bursts, indexed once per session: BURSTS bursts of one generated scene each (its
variants a second apart) and lone photos (distinct scenes taken within the same minutes, and burst 0's scene
again a year later). For the near-duplicate tests: tests/test_duplicates.py and the page's."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image

from search import duplicates

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


def build(base: Path, encoders):
    """(photo root, index, {first shot: its burst's relpaths}, {lone photo: {itself}})."""
    from indexer.pipeline import IndexOptions, index

    root = base / "photos"
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
    db = base / "index"
    summary = index(IndexOptions(paths=[str(root)], db=db, encoders=encoders, precision="fp32"))
    assert not summary.problems
    return root, db, expected, lone


