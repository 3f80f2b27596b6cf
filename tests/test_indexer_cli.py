"""`python -m indexer` as users and scripts run it: help, exit statuses, --json, --errors, SIGKILL, locking."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from indexer.pipeline import IndexOptions, index
from store import CAPTIONS, IMAGES, Store
from store.lock import writer_lock
from tests.conftest import FIXTURE
from tests.indexer_library import assert_same_rows, dump, make_library, pattern

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_flags(tiny_model_dirs) -> list[str]:
    vision, text = tiny_model_dirs
    return ["--vision-model", str(vision), "--text-model", str(text), "--precision", "fp32"]


def command(*args) -> list[str]:
    return [sys.executable, "-m", "indexer", *map(str, args)]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def cli(*args, cwd=REPO, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def main(*args, capsys) -> subprocess.CompletedProcess:
    """The same entry point in this process (argparse, error handling, exit status), without paying for a new
    Python with torch each time; subprocesses are kept for what only a real process shows."""
    from indexer.cli import main as cli_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_.value.code, out.out, out.err)


def assert_one_line_error(result, words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error:") and words in lines[0], result.stderr


def test_help_teaches_usage_examples_and_exit_statuses(capsys):
    result = main("--help", capsys=capsys)
    assert result.returncode == 0
    for words in ("python -m indexer [index] PATH", "examples:", "exit status:", "--captions FILE", "GLANCE_DB",
                  "stats", "remove", "130"):
        assert words in result.stdout, words
    options = main("index", "--help", capsys=capsys)
    assert options.returncode == 0
    for flag in ("--db", "--captions", "--vision-model", "--text-model", "--reindex", "--max-megapixels",
                 "--errors", "--json", "--quiet"):
        assert flag in options.stdout, flag
    bare = main(capsys=capsys)
    assert bare.returncode == 2 and bare.stderr.startswith("glance: error: the following arguments are required: PATH")
    real = cli("--help")  # and as a real command
    assert real.returncode == 0 and "exit status:" in real.stdout


def test_library_run_json_errors_file_and_exit_status(tmp_path, model_flags, capsys):
    lib = make_library(tmp_path)
    errors = tmp_path / "errors.jsonl"
    db = tmp_path / "db"
    result = cli(lib.root, "--db", db, "--captions", lib.captions_csv, "--captions", lib.captions_jsonl,
                 "--json", "--errors", errors, *model_flags)
    assert result.returncode == 1, result.stderr  # finished, some files skipped
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == len(lib.good) and summary["failed"] == len(lib.bad)
    assert summary["captions"]["total"] == 12 and summary["images_total"] == len(lib.good)
    listed = [json.loads(line) for line in errors.read_text().splitlines()]
    assert sorted(os.path.relpath(e["path"], lib.root) for e in listed) == sorted(lib.bad)
    assert all(e["reason"] for e in listed)
    for path in lib.bad:
        assert f"{lib.root / path}: " in result.stderr  # each skipped file is reported as it is found
    again = main(lib.root, "--db", db, "--json", "--quiet", *model_flags, capsys=capsys)
    assert json.loads(again.stdout)["unchanged"] == len(lib.good) and again.stderr == ""
    assert again.returncode == 1  # the bad files are still there
    stats = json.loads(main("stats", "--db", db, "--json", capsys=capsys).stdout)
    assert stats["photos"] == len(lib.good) and stats["text_index"] is True


def test_clean_library_exits_0_and_a_folder_named_like_a_command_still_indexes(tmp_path, model_flags, capsys,
                                                                             monkeypatch):
    folder = tmp_path / "stats"  # named like the stats command
    folder.mkdir()
    pattern(1).save(folder / "a.jpg")
    pattern(2).save(folder / "b.png")
    result = cli("./stats", "--db", "db", *model_flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "added 2" in result.stdout and "failed 0" in result.stdout
    monkeypatch.chdir(tmp_path)
    stats = main("stats", "--db", "db", capsys=capsys)  # the command, not the folder
    assert stats.returncode == 0 and "photos: 2" in stats.stdout
    removed = main("remove", folder / "a.jpg", "--db", "db", capsys=capsys)
    assert removed.returncode == 0 and "removed 1 photos" in removed.stdout
    assert Store(tmp_path / "db").table(IMAGES).count_rows() == 1


def test_user_errors_are_one_line_with_exit_status_2(tmp_path, model_flags, tiny_encoders, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    pattern(3).save(folder / "a.jpg")
    db = tmp_path / "db"
    assert_one_line_error(cli(tmp_path / "nope", "--db", db, *model_flags), "no such folder")  # a real process
    bad_captions = tmp_path / "bad.jsonl"
    bad_captions.write_text('{"path": "a.jpg", "caption": "ok"}\nnot json\n')
    assert_one_line_error(main(folder, "--db", db, "--captions", bad_captions, *model_flags, capsys=capsys),
                          "line 2: not JSON")
    assert_one_line_error(main(folder, "--db", folder / "index", *model_flags, capsys=capsys),
                          "never writes into a photo library")
    assert_one_line_error(main(folder, "--db", db, "--errors", folder / "e.jsonl", *model_flags, capsys=capsys),
                          "never writes there")
    assert_one_line_error(main(folder, "--db", db, "--batch-size", "0", *model_flags, capsys=capsys), "at least 1")
    assert_one_line_error(main("stats", "--db", tmp_path / "empty", capsys=capsys), "no Glance index")
    index(IndexOptions([str(folder)], db=db, encoders=tiny_encoders))
    from models.synthetic import write_pair

    vision, text = write_pair(tmp_path / "other", seed=3, template=FIXTURE)
    refused = main(folder, "--db", db, "--vision-model", vision, "--text-model", text, capsys=capsys)
    assert_one_line_error(refused, "--reindex")
    with writer_lock(db):
        assert_one_line_error(main(folder, "--db", db, *model_flags, capsys=capsys), "another indexer")


def check_snapshot(db: Path) -> int:
    """What a reader sees mid-run: whole rows only, no duplicates, no caption without its photo.
    Returns the number of photos."""
    store = Store(db, consistency=timedelta(0))
    if not store.exists() or CAPTIONS not in store.table_names():
        return 0
    captions = store.table(CAPTIONS).to_arrow()  # read before the photos: photos are written first
    images = store.table(IMAGES).to_arrow()
    assert set(captions["image_id"].to_pylist()) - {""} <= set(images["id"].to_pylist())
    assert images["id"].null_count == 0 and images["vector"].null_count == 0 and images["thumb"].null_count == 0
    assert len(set(images["id"].to_pylist())) == images.num_rows
    assert len(set(zip(images["root"].to_pylist(), images["relpath"].to_pylist()))) == images.num_rows
    assert all(len(v) == 128 for v in images["vector"].to_pylist())
    return images.num_rows


def test_sigkill_at_any_point_then_rerun_equals_a_clean_run(tmp_path, model_flags, tiny_encoders):
    lib = make_library(tmp_path)
    captions = ["--captions", lib.captions_csv, "--captions", lib.captions_jsonl]
    clean = tmp_path / "clean"
    index(IndexOptions([str(lib.root)], db=clean, captions=[str(lib.captions_csv), str(lib.captions_jsonl)],
                       encoders=tiny_encoders))
    db = tmp_path / "killed"
    args = command(lib.root, "--db", db, *captions, *model_flags, "--batch-size", "1", "--commit-every", "1",
                   "--workers", "1", "--quiet")
    seen_at_kill = []
    for more_rows in (1, 5):  # kill right after the first commit, then again further into the resumed run
        start = check_snapshot(db)
        process = subprocess.Popen(args, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            if check_snapshot(db) >= start + more_rows:
                process.send_signal(signal.SIGKILL)
                process.wait()
                seen_at_kill.append(check_snapshot(db))
                break
            time.sleep(0.02)
        assert process.wait(timeout=60) in (-signal.SIGKILL, 1), process.stderr.read()
    assert seen_at_kill and seen_at_kill[0] < len(lib.good)  # the first kill landed mid-run
    final = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 1, final.stderr
    assert_same_rows(dump(db), dump(clean))
