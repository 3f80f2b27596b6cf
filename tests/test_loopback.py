"""`glance search` through a running `glance serve` (search/loopback.py): the same output as searching in process,
found through the discovery file, refused without its token, and a silent fall-back when the server is gone.

The server is the real app (tests/app_server.py) on the shared test library; the CLI is a real `python -m glance
search` subprocess. Whether the CLI searched in process is seen in `python -X importtime`: only then is torch
imported.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import pytest

from search import loopback
from tests import app_server
from tests.app_server import REPO

SEARCHES = [["red kite"], ["green", "--top", "3", "--json"], ["blue", "--folder", "plain", "--top", "2"],
            ["sunset", "--top", "5", "--offset", "20"], ["kite", "--from", "2099"]]


def glance_search(*argv, runtime) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "glance", "search", *map(str, argv)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def imported_torch(done: subprocess.CompletedProcess) -> bool:
    return any(line.startswith("import time:") and line.split("|")[-1].strip() == "torch"
               for line in done.stderr.splitlines())


def messages(done: subprocess.CompletedProcess) -> list[str]:
    """stderr without -X importtime's lines."""
    return [line for line in done.stderr.splitlines() if not line.startswith("import time:")]


def printed_scores(stdout: str) -> dict[str, float]:
    """`score<TAB>path` lines, or --json's hits -> {path: score}."""
    if stdout.startswith("["):
        return {hit["file"]: hit["score"] for hit in json.loads(stdout)}
    return {path: float(score) for score, path in (line.split("\t", 1) for line in stdout.splitlines())}


def assert_same_up_to_precision(served: dict[str, float], own: dict[str, float], argv, tolerance=0.002) -> None:
    """Common photos score alike; a photo only one side printed sat at one of the other's cuts, in a near-tie
    (the tiny test model's random weights put many photos within a few thousandths of each other). A page after
    an --offset has two cuts, its first photo and its last."""
    assert len(served) == len(own), argv
    for path in served.keys() & own.keys():
        assert abs(served[path] - own[path]) <= tolerance, (argv, path)
    for mine, theirs in ((served, own), (own, served)):
        for path in mine.keys() - theirs.keys():
            at_last = mine[path] <= min(theirs.values()) + 2 * tolerance
            at_first = "--offset" in argv and mine[path] >= max(theirs.values()) - 2 * tolerance
            assert at_last or at_first, (argv, path)


@pytest.fixture(scope="module")
def in_process(app_library, tmp_path_factory):
    """What each search prints with no server around (an empty runtime folder)."""
    runtime = tmp_path_factory.mktemp("no-server-runtime")
    done = [glance_search(*argv, "--db", app_library.db, runtime=runtime) for argv in SEARCHES]
    assert all(imported_torch(d) for d in done)
    return done


@pytest.fixture(scope="module")
def served(tmp_path_factory, app_library):
    with app_server.logged_in_server(tmp_path_factory, app_library) as server:
        yield server


def test_the_server_announces_itself_for_its_user_only(served, app_library):
    path = loopback.discovery_file(app_library.db)
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600
    record = json.loads(path.read_text())
    assert record["db"] == str(app_library.db.resolve()) and record["pid"] == served.process.pid
    assert len(record["token"]) == 64


def test_glance_search_through_the_server_prints_what_it_prints_in_process(served, app_library, in_process):
    for argv, expected in zip(SEARCHES, in_process):
        done = glance_search(*argv, "--db", app_library.db, runtime=os.environ["XDG_RUNTIME_DIR"])
        assert not imported_torch(done), argv  # the server answered: nothing heavy was loaded here
        assert (done.returncode, messages(done)) == (expected.returncode, messages(expected)), argv
        # The same photos, their scores a precision apart: in process, one query loads the text model in fp32
        # (search/vectors.py SINGLE_QUERY_TEXT_PRECISION); the server holds it as `auto` chose.
        assert_same_up_to_precision(printed_scores(done.stdout), printed_scores(expected.stdout), argv)
    assert in_process[0].stdout.count("\n") == 10 and in_process[-1].returncode == 1


def test_a_user_error_from_the_server_is_one_line(served, app_library):
    done = glance_search("red", "--folder", "no/such/folder", "--db", app_library.db,
                         runtime=os.environ["XDG_RUNTIME_DIR"])
    assert not imported_torch(done)
    lines = messages(done)
    assert done.returncode in (1, 2) and len(lines) == 1 and lines[0].startswith("glance: ") and "Traceback" \
        not in done.stderr


def test_a_request_without_the_token_is_refused(served, app_library):
    record = json.loads(loopback.discovery_file(app_library.db).read_text())
    for token in ("", "0" * 64):
        connection = http.client.HTTPConnection("127.0.0.1", record["port"], timeout=10)
        body = json.dumps({key: None for key in loopback.REQUEST_KEYS})
        connection.request("POST", loopback.PATH, body, {loopback.TOKEN_HEADER: token})
        assert connection.getresponse().status == 403


def test_a_discovery_file_others_could_read_is_not_used(served, app_library):
    path = loopback.discovery_file(app_library.db)
    path.chmod(0o644)
    try:
        assert loopback.read_discovery(app_library.db) is None
    finally:
        path.chmod(0o600)
    assert loopback.read_discovery(app_library.db)["port"] > 0


def test_after_the_server_stops_glance_search_searches_in_process(tmp_path_factory, app_library, in_process):
    runtime = tmp_path_factory.mktemp("stale-runtime")
    server = app_server.start_app(tmp_path_factory, "--db", str(app_library.db),
                                  env={"XDG_RUNTIME_DIR": str(runtime)}).wait_ready()
    path = runtime / "glance" / loopback.discovery_file(app_library.db).name
    assert path.is_file()
    server.process.kill()  # no clean-up: the file stays behind, naming a port nobody listens on
    server.process.wait(15)
    assert path.is_file()
    stale = glance_search(*SEARCHES[0], "--db", app_library.db, runtime=runtime)
    assert imported_torch(stale)
    assert (stale.returncode, stale.stdout) == (in_process[0].returncode, in_process[0].stdout)

    server = app_server.start_app(tmp_path_factory, "--db", str(app_library.db),
                                  env={"XDG_RUNTIME_DIR": str(runtime)}).wait_ready()
    server.stop()  # a clean stop removes its announcement
    assert not path.exists()
