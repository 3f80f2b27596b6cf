"""`glance` as users and scripts run it: help and usage, versions of an index, the image allow-list, one error style."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lancedb
import pytest

from glance.cli import main
from store import SCHEMA_VERSION, Store

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("index", "search", "serve", "stats", "eval", "remove", "embed")
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def glance(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return done.value.code, out, err


def glance_process(*argv, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------- help and usage

@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_neither_torch_nor_lancedb(command):
    probe = ("import sys, glance.cli\n"
             "try:\n    glance.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'lancedb', 'gradio', 'transformers') if m in sys.modules),"
             " file=sys.stderr)")
    argv = [command, "--help"] if command else ["--help"]
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stderr.strip() == "[]", done.stderr
    assert done.stdout.startswith(f"usage: glance {command}".rstrip())


def test_the_top_help_teaches_and_version_answers(capsys):
    code, out, _ = glance(capsys, "--help")
    assert code == 0 and all(command in out for command in COMMANDS)
    assert 'glance search "dog on the beach"' in out and "exit status:" in out
    code, out, _ = glance(capsys, "--version")
    assert code == 0 and out.startswith("glance 0.")


def test_a_mistyped_command_is_one_usage_error():
    done = glance_process("serach", "dog")
    assert done.returncode == 2 and "invalid choice: 'serach'" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------- no external programs

@pytest.fixture
def fake_ghostscript(tmp_path):
    """A `gs` first on PATH that leaves a mark when anything runs it."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" > {mark}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, mark


def test_the_fake_ghostscript_is_what_pillow_would_run(tmp_path, fake_ghostscript):
    env, mark = fake_ghostscript
    eps = tmp_path / "q.eps"
    eps.write_bytes(EPS)
    child = "import sys\nfrom PIL import Image\ntry:\n    Image.open(sys.argv[1]).load()\nexcept Exception:\n    pass"
    subprocess.run([sys.executable, "-c", child, str(eps)], env={**os.environ, **env}, timeout=60)
    assert mark.exists()  # without the allow-list, Pillow hands PostScript to gs


@pytest.mark.parametrize("name", ["q.eps", "holiday.jpg"])
def test_no_query_image_reaches_ghostscript(library, tmp_path, fake_ghostscript, name):
    env, mark = fake_ghostscript
    query = tmp_path / name
    query.write_bytes(EPS)  # PostScript, named .eps or disguised as a JPEG
    for argv in (["search", "--image", query], ["search", "--image", query, "--captions"], ["embed", "--image", query]):
        done = glance_process(*argv, "--db", library.db, env=env) if argv[0] == "search" else \
            glance_process(*argv, env=env)
        assert done.returncode == 2 and "PostScript/EPS files are never opened" in one_error_line(done.stderr)
    assert not mark.exists()


def test_the_indexer_skips_postscript_without_running_it(tmp_path, fake_ghostscript, tiny_model_dirs):
    env, mark = fake_ghostscript
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "scan.jpg").write_bytes(EPS)
    vision, text = tiny_model_dirs
    done = glance_process("index", photos, "--db", tmp_path / "db", "--vision-model", vision, "--text-model", text,
                          "--json", env=env)
    assert done.returncode == 1 and json.loads(done.stdout)["failed"] == 1
    assert "PostScript/EPS" in done.stderr and not mark.exists()


# ------------------------------------------------------------------------------------ manners

def test_like_takes_an_indexed_photos_path_or_its_id(capsys, library):
    for like in (library.path("red"), library.ids["red"]):
        code, out, err = glance(capsys, "search", "--like", like, "--top", "1", "--db", library.db, "--precision", "fp32")
        assert code == 0, err
        assert out.split("\t")[1].strip() == str(library.path("red2"))
    code, _, err = glance(capsys, "search", "--like", library.root / "nowhere.jpg", "--db", library.db)
    assert code == 2 and "is not an indexed photo" in one_error_line(err)


def test_a_search_run_as_the_program_prints_and_writes_everything_before_it_ends(capsys, library, tmp_path):
    """`glance search` as a process skips the interpreter's teardown (core/errors.finish): its output, its
    export file and its exit status must all be whole, and equal to what the same search gives in process."""
    query = ["search", "red", "--db", library.db, "--top", "3", "--json"]
    done = glance_process(*query, "--export", tmp_path / "hits.json")
    assert done.returncode == 0, done.stderr
    printed = [hit["file"] for hit in json.loads(done.stdout)]
    exported = [row["path"] for row in json.loads((tmp_path / "hits.json").read_text())]
    code, out, err = glance(capsys, *query)
    assert code == 0, err
    assert printed == exported == [hit["file"] for hit in json.loads(out)] and len(printed) == 3
    nothing = glance_process("search", "red", "--db", library.db, "--from", "2199")
    assert nothing.returncode == 1 and "no results" in nothing.stderr and not nothing.stdout


@pytest.mark.parametrize("command", [["search", "dog"], ["stats"], ["search", "--stats"], ["remove", "/x"]])
def test_an_index_folder_that_does_not_exist_is_one_line(capsys, tmp_path, command):
    missing = tmp_path / "not" / "there"
    code, _, err = glance(capsys, *command, "--db", missing)
    assert code == 2 and "no Glance index at" in one_error_line(err) and "glance index" in err
    assert not missing.exists() and not missing.parent.exists()


def test_a_benchmark_with_a_missing_tmp_folder_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "bench/query_latency.py", "--quick", "--tmp", str(tmp_path / "no")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not a folder" in done.stderr and "Traceback" not in done.stderr


def test_one_stats_function_one_set_of_keys(capsys, library):
    from search.engine import Engine

    code, out, _ = glance(capsys, "stats", "--json", "--db", library.db)
    from_stats = json.loads(out)
    code, out, _ = glance(capsys, "search", "--stats", "--db", library.db)
    from_search = json.loads(out)
    from_engine = json.loads(json.dumps(Engine(library.db, precision="fp32").stats(), default=str))
    assert from_stats == from_search == from_engine
    assert from_stats["photos"] == sum(from_stats["roots"].values()) == len(library.ids) + len(library.extra_rows)
    code, out, _ = glance(capsys, "stats", "--db", library.db)
    assert code == 0 and f"photos: {from_stats['photos']}" in out and f"schema {SCHEMA_VERSION}" in out


# ------------------------------------------------------------------------------------ versioned index

def test_an_index_from_a_newer_glance_is_refused(library, tmp_path, tiny_model_dirs):
    copy = tmp_path / "newer"
    shutil.copytree(library.db, copy)
    Store(copy).write_meta({"schema_version": 99})
    vision, text = tiny_model_dirs
    for argv in (["search", "dog"], ["stats"], ["index", library.root, "--vision-model", vision, "--text-model", text]):
        done = glance_process(*argv, "--db", copy)
        assert done.returncode == 2, done.stderr
        assert "written by a newer Glance (schema 99" in one_error_line(done.stderr)
        assert f"glance index --reindex PATH --db {copy}" in done.stderr
    Store(copy).write_meta({"schema_version": 2, "preprocess_version": 7})
    done = glance_process("search", "dog", "--db", copy)
    assert done.returncode == 2 and "newer Glance (preprocessing 7" in one_error_line(done.stderr)


def test_an_index_from_an_older_glance_is_migrated_in_place(capsys, library, tmp_path):
    copy = tmp_path / "older"
    shutil.copytree(library.db, copy)
    images = lancedb.connect(str(copy)).open_table("images")
    images.drop_columns(["relpath_bytes"])  # what schema 1 looked like
    Store(copy).write_meta({"schema_version": 1})
    code, out, err = glance(capsys, "search", "--like", library.ids["red"], "--top", "1", "--db", copy,
                            "--precision", "fp32")
    assert code == 0 and out.split("\t")[1].strip() == str(library.path("red2")), err
    assert "relpath_bytes" in lancedb.connect(str(copy)).open_table("images").schema.names
    assert Store(copy).meta()["schema_version"] == SCHEMA_VERSION
    assert Store(copy).table("images").count_rows() == len(library.ids) + len(library.extra_rows)


# ------------------------------------------------------------------------------------ a damaged index

def damage_data_files(db: Path) -> None:
    for data in (db / "images.lance" / "data").glob("*.lance"):
        with open(data, "r+b") as handle:
            handle.truncate(100)


def empty_oldest_manifest(db: Path) -> None:
    manifests = sorted((db / "images.lance" / "_versions").glob("*.manifest"))
    manifests[0].write_bytes(b"")  # Lance names versions in reverse order: the first name is the newest version


@pytest.mark.parametrize("damage", [damage_data_files, empty_oldest_manifest])
def test_a_damaged_index_is_one_line_naming_the_folder_and_the_way_out(library, tmp_path, damage):
    copy = tmp_path / "damaged"
    shutil.copytree(library.db, copy)
    damage(copy)
    for argv in (["stats"], ["search", "--stats"], ["search", "dog"], ["search", "--like", library.path("red")]):
        done = glance_process(*argv, "--db", copy)
        line = one_error_line(done.stderr)
        assert done.returncode == 2 and f"the index {copy} is damaged" in line
        assert f"glance index --reindex PATH --db {copy}" in line


def test_a_read_only_index_can_be_searched_and_its_writer_is_one_line(library, tmp_path, tiny_model_dirs):
    copy = tmp_path / "read-only"
    shutil.copytree(library.db, copy)
    bound = subprocess.run(["mount", "--bind", str(copy), str(copy)], capture_output=True).returncode == 0
    if os.geteuid() != 0 or not bound or subprocess.run(["mount", "-o", "remount,bind,ro", str(copy)],
                                                        capture_output=True).returncode:
        subprocess.run(["umount", str(copy)], capture_output=True)
        pytest.skip("needs root and mount for a folder that root cannot write either")
    vision, text = tiny_model_dirs
    try:
        searched = glance_process("search", "--like", library.path("red"), "--top", "1", "--db", copy)
        stats = glance_process("stats", "--json", "--db", copy)
        indexed = glance_process("index", library.root, "--db", copy, "--vision-model", vision, "--text-model", text)
    finally:
        subprocess.run(["umount", str(copy)], check=True)
    assert searched.returncode == 0 and searched.stdout.split("\t")[1].strip() == str(library.path("red2"))
    assert stats.returncode == 0 and json.loads(stats.stdout)["photos"] == len(library.ids) + len(library.extra_rows)
    assert indexed.returncode == 2 and "read-only" in one_error_line(indexed.stderr)


def test_every_kind_of_refusal_is_one_line_and_exit_2(library, tmp_path, tiny_model_dirs):
    from models.synthetic import write_pair
    from tests.conftest import FIXTURE

    vision, text = tiny_model_dirs
    disguised = tmp_path / "q.jpg"
    disguised.write_bytes(EPS)
    old_vision, _ = write_pair(tmp_path / "v1", version="v1", template=FIXTURE)
    models = ["--vision-model", vision, "--text-model", text]
    cases = {  # one command line per kind of refusal a user meets
        "usage": (["search", "0:dog", "--db", library.db], "empty query"),
        "flag": (["search", "--top", "x"], "invalid int value: 'x' (see glance search --help)"),
        "index": (["stats", "--db", tmp_path / "none"], "no Glance index at"),
        "model": (["embed", "--text", "x", "--vision-model", "nomic-v1"], "is not in the Hugging Face cache"),
        "pair": (["embed", "--text", "x", "--vision-model", old_vision, "--text-model", text], "not comparable"),
        "dim": (["embed", "--text", "x", *models, "--dim", "100"], "--dim 100 is not available"),
        "photo": (["search", "--like", "0" * 40, "--db", library.db], "no photo with id"),
        "image": (["search", "--image", disguised, "--db", library.db], "PostScript/EPS files are never opened"),
    }
    for kind, (argv, words) in cases.items():
        done = glance_process(*argv)
        assert done.returncode == 2 and words in one_error_line(done.stderr), (kind, done.stderr)


def test_odd_names_print_on_a_strict_utf8_terminal(library, tmp_path):
    copy = tmp_path / "db"
    shutil.copytree(library.db, copy)
    odd = os.fsdecode(bytes(library.root) + b"/caf\xe9")  # not indexed: nothing to remove, but it is printed
    done = glance_process("remove", odd, "--db", copy, env={"PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 0 and "nothing indexed under" in done.stdout and "caf\\xe9" in done.stdout, done.stderr
