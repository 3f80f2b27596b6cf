"""What goes wrong around a library in real life: a drive that is not mounted (an empty or unreadable folder),
a damaged index, a full or read-only disk, a closed stdout. Each gives one line and exit status 2, and nothing
is removed from the index that the user did not ask to remove."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core.errors import UsageError
from indexer.pipeline import IndexOptions, index
from store import IMAGES, Store
from tests.indexer_library import pattern
from tests.test_indexer_cli import REPO, assert_one_line_error, command, env

PHOTOS = 6


@pytest.fixture(scope="module")
def model_flags(tiny_model_dirs) -> list[str]:
    vision, text = tiny_model_dirs
    return ["--vision-model", str(vision), "--text-model", str(text), "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_encoders):
    """A small library and its index, built once; tests work on copies of the index."""
    folder = tmp_path_factory.mktemp("safety")
    root = folder / "photos"
    (root / "trip").mkdir(parents=True)
    for i in range(PHOTOS):
        pattern(400 + i).save(root / ("trip" if i % 2 else "") / f"{i}.jpg")
    (root / "0.jpg.txt").write_text("a caption")
    db = folder / "db"
    index(IndexOptions([str(root)], db=db, encoders=tiny_encoders))
    return SimpleNamespace(root=root, db=db)


@pytest.fixture
def db(base, tmp_path):
    copy = tmp_path / "db"
    shutil.copytree(base.db, copy)
    return copy


def cli(*args, prefix=()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *command(*args)], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)


def photo_count(db) -> int:
    return Store(db).table(IMAGES).count_rows()


def indexed_copy(base, tmp_path, tiny_encoders):
    """A copy of the library, indexed into the test's own index."""
    root, db = tmp_path / "photos", tmp_path / "db"
    shutil.copytree(base.root, root)
    index(IndexOptions([str(root)], db=db, encoders=tiny_encoders))
    return root, db


def unmount(root):
    """The folder as a drive that is not mounted leaves it: there, but empty."""
    shutil.rmtree(root)
    root.mkdir()


# ----- a drive that is not mounted ---------------------------------------------------------------------------

def test_an_empty_root_is_refused_and_nothing_is_removed(base, tmp_path, tiny_encoders):
    root, db = indexed_copy(base, tmp_path, tiny_encoders)
    unmount(root)
    with pytest.raises(UsageError, match=f"is empty but the index holds {PHOTOS} photos from it.*--prune"):
        index(IndexOptions([str(root)], db=db, encoders=tiny_encoders))
    assert photo_count(db) == PHOTOS
    summary = index(IndexOptions([str(root)], db=db, encoders=tiny_encoders, prune=True))
    assert summary.removed == PHOTOS and photo_count(db) == 0


def test_an_empty_folder_inside_a_root_is_refused_too(base, tmp_path, tiny_encoders):
    root, db = indexed_copy(base, tmp_path, tiny_encoders)
    unmount(root / "trip")
    with pytest.raises(UsageError, match=r"trip is empty but the index holds 3 photos"):
        index(IndexOptions([str(root / "trip")], db=db, encoders=tiny_encoders))
    # the root itself still has photos: its emptied subfolder is an ordinary deletion
    assert index(IndexOptions([str(root)], db=db, encoders=tiny_encoders)).removed == 3


def test_the_cli_refuses_an_empty_root_with_one_line_and_prunes_on_request(base, tmp_path, tiny_encoders,
                                                                           model_flags):
    root, db = indexed_copy(base, tmp_path, tiny_encoders)
    unmount(root)
    assert_one_line_error(cli(root, "--db", db, *model_flags), f"is empty but the index holds {PHOTOS} photos")
    assert photo_count(db) == PHOTOS
    pruned = cli(root, "--db", db, "--prune", "--json", *model_flags)
    assert pruned.returncode == 0, pruned.stderr
    assert f'"removed": {PHOTOS}' in pruned.stdout and photo_count(db) == 0


def unprivileged() -> tuple[str, ...]:
    """A command prefix under which a folder of mode 000 cannot be listed: root reads any folder whatever its
    mode, unless it runs without these two capabilities."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root, and setpriv (to drop the file-permission capabilities) is missing")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


def test_an_unreadable_root_is_refused(base, tmp_path, tiny_encoders, model_flags):
    prefix = unprivileged()
    root, db = indexed_copy(base, tmp_path, tiny_encoders)
    os.chmod(root, 0)
    try:
        result = cli(root, "--db", db, *model_flags, prefix=prefix)
    finally:
        os.chmod(root, 0o755)
    assert_one_line_error(result, f"cannot list {root} (Permission denied) but the index holds {PHOTOS} photos")
    assert photo_count(db) == PHOTOS


def test_an_unreadable_subfolder_keeps_its_photos(base, tmp_path, tiny_encoders, model_flags):
    prefix = unprivileged()
    root, db = indexed_copy(base, tmp_path, tiny_encoders)
    os.chmod(root / "trip", 0)
    try:
        result = cli(root, "--db", db, "--json", *model_flags, prefix=prefix)
    finally:
        os.chmod(root / "trip", 0o755)
    assert result.returncode == 1, result.stderr  # reported as a skipped folder, the run goes on
    assert '"removed": 0' in result.stdout and photo_count(db) == PHOTOS


# ----- a damaged index ---------------------------------------------------------------------------------------

def truncate_data_files(db, table):
    for path in glob.glob(str(db / f"{table}.lance" / "data" / "*.lance")):
        os.truncate(path, 100)


def empty_manifests(db, table):
    for path in glob.glob(str(db / f"{table}.lance" / "_versions" / "*.manifest")):
        open(path, "w").close()


@pytest.mark.parametrize("damage,table", [(truncate_data_files, "images"), (empty_manifests, "images"),
                                          (empty_manifests, "meta")])
def test_a_damaged_index_is_one_line_that_says_how_to_rebuild(base, db, model_flags, tiny_encoders, damage, table):
    damage(db, table)
    for args in ((base.root, "--db", db, *model_flags), ("remove", base.root / "0.jpg", "--db", db)):
        result = cli(*args)
        assert_one_line_error(result, f"the index {db} is damaged")
        assert f"glance index --reindex PATH --db {db}" in result.stderr
    # and the way out works
    assert index(IndexOptions([str(base.root)], db=db, encoders=tiny_encoders, reindex=True)).added == PHOTOS


# ----- full and read-only disks ------------------------------------------------------------------------------

def mount(*args) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


def noisy_photos(folder, count):
    """Photos whose thumbnails do not compress: they fill a small disk quickly."""
    folder.mkdir()
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 255, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"noise{i}.png")


def test_a_full_disk_is_one_line_that_says_free_some_space(base, tmp_path, model_flags):
    disk = tmp_path / "disk"
    disk.mkdir()
    pages = [-(-os.path.getsize(p) // 4096) for p in glob.glob(str(base.db / "**"), recursive=True) if os.path.isfile(p)]
    used = 4096 * sum(pages)  # tmpfs stores each file in whole pages
    if not mount("-t", "tmpfs", "-o", f"size={used + (96 << 10)}", "tmpfs", str(disk)):
        pytest.skip("needs root and mount to make a small disk (tmpfs)")
    try:
        shutil.copytree(base.db, disk / "db")
        noisy_photos(tmp_path / "noise", 40)
        result = cli(tmp_path / "noise", "--db", disk / "db", "--batch-size", "4", "--commit-every", "4",
                     *model_flags)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert_one_line_error(result, "no space left on the disk of the index")
    assert "free some disk space" in result.stderr


def test_read_only_table_folders_are_one_line(base, db, model_flags):
    images = db / "images.lance"
    if not (mount("--bind", str(images), str(images)) and mount("-o", "remount,bind,ro", str(images))):
        subprocess.run(["umount", str(images)], capture_output=True)
        pytest.skip("needs root and mount to make a read-only folder that root cannot write either")
    try:
        noisy_photos(db.parent / "more", 2)
        added = cli(db.parent / "more", "--db", db, *model_flags)
        removed = cli("remove", base.root / "0.jpg", "--db", db)
    finally:
        subprocess.run(["umount", str(images)], check=True)
    for result in (added, removed):
        assert_one_line_error(result, f"the index {db} is on a read-only file system")
    assert photo_count(db) == PHOTOS


# ----- a closed stdout ---------------------------------------------------------------------------------------

def test_stats_into_a_closed_pipe_ends_quietly(base):
    """`python -m indexer stats | head -1`: the reader is gone before stats prints."""
    process = subprocess.Popen(command("stats", "--db", base.db), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # like `head` after its first line: every write now fails with EPIPE
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, err
    assert err == ""
    shell = subprocess.run(f"{' '.join(command('stats', '--db', base.db))} | head -1", shell=True, cwd=REPO,
                           env=env(), capture_output=True, text=True, timeout=120)
    assert shell.stdout.startswith("index: ") and "Broken pipe" not in shell.stderr and shell.stderr == ""
