"""`python -m search`: output formats, exit codes, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import main

REPO = Path(__file__).resolve().parent.parent




def run(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main([*argv])
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_prints_score_tab_path_best_first(capsys, library):
    code, out, err = run(capsys, "--db", str(library.db), "--image", str(library.path("red")), "--top", "3",
                         "--precision", "fp32")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    scores = [float(line.split("\t")[0]) for line in lines]
    paths = [line.split("\t")[1] for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert paths[0] == str(library.path("red2")) and all(Path(p).exists() for p in paths)
    assert "--offset 3" in err  # paging hint on stderr, stdout stays pipeable


def test_json_output_and_filters(capsys, library):
    code, out, _ = run(capsys, "x", "--db", str(library.db), "--folder", "x' OR '1'='1", "--json", "--precision", "fp32")
    rows = json.loads(out)
    assert code == 0 and [r["relpath"] for r in rows] == ["x' OR '1'='1/black.png"]
    assert set(rows[0]) >= {"score", "file", "id", "taken_at", "camera", "width", "height", "has_caption"}
    from search.engine import Engine
    from search.filters import Filters
    from search.serialize import hit_json

    hits = Engine(library.db, precision="fp32").search("x", filters=Filters(folder="x' OR '1'='1"), top=10).hits
    assert rows == [hit_json(h) for h in hits]  # the CLI and the API share one serializer


def test_captions_mode(capsys, library):
    code, out, _ = run(capsys, "chess", "--db", str(library.db), "--captions", "--top", "2")
    first = out.splitlines()[0].split("\t")
    assert code == 0 and first[1] == "a chess board" and first[2] == str(library.path("checker"))
    code, out, _ = run(capsys, "--db", str(library.db), "--captions", "--image", str(library.path("red")), "--json")
    assert code == 0 and len(json.loads(out)) == 9


@pytest.mark.parametrize("argv, message", [
    ([], "empty query"),
    (["   "], "empty query"),
    (["dog " * 2500], "limit is 1,000"),
    (["dog", "--from", "last week"], "invalid from date"),
    (["--image", "/no/such.jpg"], "no such image file"),
    (["--image", "https://example.com/a.jpg"], "URLs are not accepted"),
    (["dog", "--top", "0"], "top must be"),
    (["dog", "--folder", "/etc"], "not inside an indexed folder"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, library, argv, message):
    code, out, err = run(capsys, *argv, "--db", str(library.db))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("glance: error:")


def test_a_corrupt_image_and_a_missing_index(capsys, library, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    code, _, err = run(capsys, "--image", str(bad), "--db", str(library.db))
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "dog", "--db", str(tmp_path / "none"))
    assert code == 2 and "no Glance index" in err and "glance index" in err


def test_no_results_exit_1(capsys, library):
    code, out, err = run(capsys, "dog", "--db", str(library.db), "--folder", "nowhere")
    assert code == 1 and out == "" and "no results: no photos match the filters" in err


def test_help_teaches_the_grammar(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "beach -people +sunset 2:dog" in out and "--captions" in out


def test_python_dash_m_search_end_to_end(library):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "GLANCE_DB": str(library.db)}
    done = subprocess.run([sys.executable, "-m", "search", "--like", library.ids["red"], "--top", "1",
                           "--precision", "fp32"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[1].strip() == str(library.path("red2"))
