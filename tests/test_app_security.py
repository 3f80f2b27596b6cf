"""app.py's attack surface against real servers on 127.0.0.1 (with --auth): every route gradio mounts is closed
without the login (but the login page), run history is off, and the server makes no outbound connection."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from tests import app_server
from tests.app_server import AUTH, REPO, login

# What answers 200 without the login: the login page and what its HTML loads (server/guard.py OPEN_PATHS).
LOGIN_PAGE = {
    "/",  # the login form itself; test_app checks that it holds nothing from the library
    "/favicon.ico", "/theme.css", "/manifest.json",  # linked from the login page's HTML, the same in every Glance
    "/robots.txt",  # constant text
}
# Frontend bundles: under these prefixes only files of gradio's own package are served (a dummy name is a 404).
ASSET_PREFIXES = ("/assets/", "/static/", "/svelte/")
RUN_HISTORY = [("GET", "/gradio_api/run-history/buckets"), ("GET", "/gradio_api/run-history/records"),
               ("POST", "/gradio_api/run-history/connect"),
               ("GET", "/gradio_api/run-history/records/search_text/x/assets/x"), ("GET", "/gradio_api/runs")]
HISTORY_HEADER = {"x-gradio-history-bucket": "someone/glance-runs"}


def mounted_routes(db: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route app.py's server mounts, from the same app built in this process."""
    import app
    from search.live import Library
    from search.preview import Pictures

    pictures = Pictures()
    demo = app.build_ui(Library(db), pictures)
    try:
        app.launch(demo, "127.0.0.1", app_server.free_port(), AUTH)
        routes = sorted({(method, path) for path, methods in _walk(demo.app.routes) for method in methods
                         if method != "HEAD"})
    finally:
        demo.close()
        pictures.remove()
    return routes


def _walk(routes):
    for route in routes:
        if hasattr(route, "effective_candidates"):  # FastAPI's included router (gradio's /gradio_api/...)
            yield from _walk(route.effective_candidates())
        else:
            yield route.path, getattr(route, "methods", None) or {"GET"}


def status_of(client: httpx.Client, method: str, path: str) -> int:
    """The status only: some routes stream forever (heartbeats), so the body is never read."""
    with client.stream(method, path, json={} if method == "POST" else None) as response:
        return response.status_code


def test_without_the_login_only_the_login_page_answers(app, app_library):
    routes = mounted_routes(app_library.db)
    paths = {path for _, path in routes}
    assert {"/", "/config", "/gradio_api/heartbeat/{session_hash}", "/gradio_api/queue/join",
            "/gradio_api/upload"} <= paths  # the enumeration found gradio's own routes, not just Glance's
    anonymous = httpx.Client(base_url=app.url.rstrip("/"), timeout=30)
    answered = {}
    for method, template in routes:
        path = re.sub(r"\{[^}]*\}", "x", template)
        answered[(method, template)] = status_of(anonymous, method, path)
    ok = {template for (method, template), status in answered.items() if status == 200}
    assert ok == LOGIN_PAGE, answered
    for prefix in ASSET_PREFIXES:
        assert anonymous.get(f"{prefix}x").status_code != 200
    assert anonymous.get("/openapi.json").status_code != 200  # FastAPI's schema is not mounted at all


def test_run_history_is_off_even_with_the_login(app):
    session = login(app)
    for method, path in RUN_HISTORY:
        status = status_of(session, method, path)
        assert status in (404, 405), (path, status)


def test_the_server_connects_to_nothing_outside_this_machine(tmp_path_factory, app_library):
    hook = tmp_path_factory.mktemp("sitecustomize")
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    record = hook / "outbound.txt"
    env = {"PYTHONPATH": str(hook), "GLANCE_TEST_OUTBOUND": str(record), "HF_TOKEN": "dummy",
           "HF_HUB_OFFLINE": None, "GRADIO_ANALYTICS_ENABLED": "False"}
    assert_the_hook_records(env, record)
    with app_server.logged_in_server(tmp_path_factory, app_library, env=env) as server:
        assert (hook / "armed").read_text() == "armed"  # the hook ran inside the server
        exercise_everything(server, app_library)
        time.sleep(2)  # gradio schedules run-history uploads in the background
    assert not record.exists() or record.read_text() == ""


def exercise_everything(server, app_library) -> None:
    assert httpx.get(server.url, timeout=30).status_code == 200
    session = login(server)
    session.headers.update(HISTORY_HEADER)
    assert session.get("/").status_code == 200 and session.get("/config").status_code == 200
    client = Client(server.url, auth=AUTH, headers=HISTORY_HEADER, verbose=False)
    photo = app_library.ids["plain/red.jpg"]
    image = handle_file(str(app_library.path("plain/red.jpg")))
    assert client.predict("red", api_name="/search_text")["hits"]
    assert client.predict(image, api_name="/search_image")["hits"]
    assert client.predict(photo, api_name="/more_like_this")["hits"]
    assert client.predict("kite", api_name="/search_captions")
    assert client.predict(image, api_name="/image_to_text")
    assert client.predict(photo, api_name="/photo")["id"] == photo
    assert client.predict(api_name="/stats")["photos"] == len(app_library.ids)
    call = session.post("/gradio_api/call/search_text", json={"data": ["red", "", "", "", False, False, 24, 0,
                                                                      "relevance", "", False]})
    assert call.status_code == 200
    assert '"hits"' in session.get(f"/gradio_api/call/search_text/{call.json()['event_id']}").text


def assert_the_hook_records(env: dict, record: Path) -> None:
    """The hook works: a connection to a documentation address (TEST-NET-3) is recorded and never made."""
    run_env = {**os.environ, **{name: value for name, value in env.items() if value is not None}}
    probe = "import socket\ntry:\n    socket.create_connection(('203.0.113.7', 443), timeout=1)\nexcept OSError:\n    pass"
    subprocess.run([sys.executable, "-c", probe], env=run_env, cwd=REPO, timeout=60, check=True)
    assert "203.0.113.7" in record.read_text()
    record.unlink()
    (record.parent / "armed").unlink()  # so that the server must write it again


# Loaded by every Python process that has its folder on PYTHONPATH: records, and refuses, any connection or
# name lookup that would leave this machine.
SITECUSTOMIZE = r'''
import errno
import ipaddress
import os
import socket

_RECORD = os.environ.get("GLANCE_TEST_OUTBOUND")


def _local(host):
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in (None, "", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(kind, host):
    with open(_RECORD, "a") as out:
        out.write(f"{kind} {host}\n")
    raise OSError(errno.ENETUNREACH, f"outbound {kind} to {host} refused by the test")


def _checked_connect(original, kind):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse(kind, address[0])
        return original(self, address, *args)
    return connect


if _RECORD:
    _getaddrinfo, _create_connection = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _refuse("getaddrinfo", host)
        return _getaddrinfo(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        if not _local(address[0]):
            _refuse("create_connection", address[0])
        return _create_connection(address, *args, **kwargs)

    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection
    socket.socket.connect = _checked_connect(socket.socket.connect, "connect")
    socket.socket.connect_ex = _checked_connect(socket.socket.connect_ex, "connect_ex")
    with open(os.path.join(os.path.dirname(_RECORD), "armed"), "w") as out:
        out.write("armed")
'''
