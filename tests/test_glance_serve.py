"""`glance serve` does what `python app.py` did: the same page and API on 127.0.0.1, the same flags, one-line
errors with exit status 2, and a clean exit on SIGTERM.

The server is the real `python -m glance serve` subprocess (PYTHONPATH and cwd: the repository), reached with
gradio_client behind --auth; its /stats must be the very dict `glance stats --json` prints for the same index.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from gradio_client import Client

from tests import app_server
from tests.app_server import AUTH, REPO, AppServer

SIGTERM_WAIT_S = 20


class GlanceServe(AppServer):
    """`python -m glance serve ...` instead of `python app.py ...`; waits and stops the same way."""

    def start(self) -> "GlanceServe":
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONPATH": str(REPO)}
        env.pop("GLANCE_AUTH", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "glance", "serve", "--port", str(self.port), *self.args], cwd=REPO, env=env,
            stdout=(self.logs / "stdout.txt").open("wb"), stderr=(self.logs / "stderr.txt").open("wb"))
        return self


def glance(*argv, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("GLANCE_AUTH", None)
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("glance: error:") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory, app_library):
    server = GlanceServe(["--db", str(app_library.db), "--auth", ":".join(AUTH)],
                         tmp_path_factory.mktemp("glance-serve")).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()
    app_server.assert_no_unexpected_errors(server)


@pytest.fixture(scope="module")
def client(served):
    return Client(served.url, auth=AUTH, verbose=False)


def test_glance_serve_says_where_it_serves(served, app_library):
    out = served.stdout()
    assert f"Glance: serving {app_library.db} on http://127.0.0.1:{served.port}/" in out
    assert out.rstrip().endswith("Glance: ready")


def test_search_text_answers_with_every_photo(client, app_library):
    result = client.predict("a red kite", top=100, api_name="/search_text")
    ids = [hit["id"] for hit in result["hits"]]
    assert sorted(ids) == sorted(app_library.ids.values()) and result["has_more"] is False
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_stats_are_what_glance_stats_prints(client, app_library):
    served_stats = client.predict(api_name="/stats")
    done = glance("stats", "--json", "--db", app_library.db)
    assert done.returncode == 0, done.stderr
    assert served_stats == json.loads(done.stdout)
    assert served_stats["photos"] == len(app_library.ids)


def test_the_login_is_needed(served):
    with pytest.raises(Exception):
        Client(served.url, verbose=False)


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_bad_port_is_one_line(app_library, port):
    line = one_error_line(glance("serve", "--db", app_library.db, "--port", port, timeout=60))
    assert "--port" in line and port in line


@pytest.mark.parametrize("auth", ["nopassword", "user:", ":pass"])
def test_a_bad_auth_is_one_line(app_library, auth):
    line = one_error_line(glance("serve", "--db", app_library.db, "--auth", auth, timeout=60))
    assert "--auth" in line and "USER:PASS" in line


@pytest.mark.parametrize("kind", [GlanceServe, AppServer], ids=["glance-serve", "app.py"])
def test_sigterm_stops_the_server(tmp_path_factory, app_library, kind):
    """Its own server (the module's is still in use): SIGTERM right after "Glance: ready" (a service manager
    stopping it as soon as it started) ends it promptly, with exit status 0 and no abort; `python app.py` too."""
    server = kind(["--db", str(app_library.db)], tmp_path_factory.mktemp("sigterm")).start()
    try:
        deadline = time.monotonic() + app_server.READY_TIMEOUT_S
        while "Glance: ready" not in server.stdout():  # polled tightly: the signal comes right after the line
            assert server.process.poll() is None and time.monotonic() < deadline, server.stderr()[-3000:]
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(SIGTERM_WAIT_S)
    finally:
        server.stop()
    assert code == 0, f"exit status {code}:\n{server.stderr()[-3000:]}"
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
    assert port_is_free(server.port)  # the listening socket went with it
