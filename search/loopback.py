"""`glance search` through a running `glance serve` on the same index, over loopback; in process otherwise.

A fresh `glance search` pays for importing torch and LanceDB and for loading the text model (seconds); a running
server has them loaded. So `glance serve` announces itself in a discovery file, and `glance search` asks it first:

    LoopbackServer(library).start()      # glance serve: 127.0.0.1, a free port, a random token; .stop() on exit
    reply = ask(db, request)             # glance search: the server's reply, or None (no server: search here)

The discovery file (port, index path, token, pid) is the user's alone: mode 0600, in $XDG_RUNTIME_DIR/glance (a
per-user folder of the login session) or else ~/.cache/glance/run (made 0700). Whoever can read it is the same
login, which is the whole authorisation: a request without its token gets 403. The server binds 127.0.0.1 only,
reads bodies of MAX_REQUEST_BYTES at most, and removes the file when it stops. A missing, stale or unreadable
file, a server that is gone, another index or any failure to talk to it: `ask` returns None, silently, and the
search runs in process. The reply is what `glance search` prints, as data (`reply`): the same function builds it
in both places, so the output is the same either way.

Only plain photo searches and browsing travel (text, filters, paging, --cutoff, --no-tuning, --sort, --group,
--collapse):
image files, --like, --liked/--disliked, --captions and model overrides are read in process.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from core import location

REQUEST_KEYS = ("query", "folder", "date_from", "date_to", "has_caption", "top", "offset", "cutoff", "tuning", "sort",
                "group", "collapse")
MAX_REQUEST_BYTES = 64 * 1024
ASK_TIMEOUT_S = 30.0  # a loaded server may be slow; an answer is still faster than loading the models here
CONNECT_TIMEOUT_S = 0.5  # nothing listening on loopback answers at once
PATH = "/glance/search"
TOKEN_HEADER = "X-Glance-Token"

log = logging.getLogger("glance.loopback")


# ------------------------------------------------------------------------------------------- the reply

def reply(engine, request: dict, image=None, like: str | None = None, liked=(), disliked=()) -> dict:
    """What `glance search` prints for `request` (REQUEST_KEYS; in process also a query image, `like` and the
    liked/disliked photos), as JSON-able data; raises GlanceError. No query at all browses the library
    (search/browser.py)."""
    from .query import no_query

    if no_query(request["query"], image, like, liked):
        return browse_reply(engine.browser, request)
    results = engine.search(request["query"], image=image, like=like, filters=request_filters(request),
                            top=request["top"], offset=request["offset"], cutoff=request["cutoff"],
                            tuning=request["tuning"], sort=request["sort"], collapse=request["collapse"],
                            liked=tuple(liked), disliked=tuple(disliked))
    return reply_json(results, request, engine.roots, engine.tuning_problem)


def browse_reply(browser, request: dict) -> dict:
    """reply() for browsing: it needs only the store, so `glance search --sort date` loads no model."""
    results = browser.browse(request_filters(request), top=request["top"], offset=request["offset"])
    return reply_json(results, request, tuple(browser.store.photo_roots()), None)


def request_filters(request: dict):
    from .filters import Filters

    return Filters(request["folder"], request["date_from"], request["date_to"], request["has_caption"])


def reply_json(results, request: dict, roots: tuple[str, ...], tuning_problem: str | None) -> dict:
    from .serialize import groups_json, hit_json

    cut = results.cutoff is not None and results.cutoff.cut
    return {"hits": [hit_json(h) for h in results.hits], "note": results.note, "tuning_problem": tuning_problem,
            "has_more": results.has_more, "next_offset": results.offset + results.top,
            "browsing": results.mode == "browse", "roots": list(roots),
            "groups": groups_json(results.hits, request["group"]) if request["group"] else None,
            "cut": {"dropped": results.dropped, "threshold": results.cutoff.threshold} if cut else None}


# ------------------------------------------------------------------------------------------- discovery

def runtime_folder() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "glance"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance" / "run"


def index_key(db: Path | str) -> str:
    """The index's one spelling: a local folder resolved, an object-storage URI as normalized (core/location.py)."""
    return location.normalize(str(db)) if location.is_uri(str(db)) else str(Path(db).resolve())


def discovery_file(db: Path) -> Path:
    """One file per index: several servers on several indexes do not meet."""
    key = hashlib.sha256(index_key(db).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return runtime_folder() / f"serve-{key}.json"


def read_discovery(db: Path) -> dict | None:
    path = discovery_file(db)
    try:
        if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
            return None  # not written by this login as the server writes it: do not send it anything
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("db") != index_key(db):
        return None
    return found


# ------------------------------------------------------------------------------------------- the client

def ask(db: Path, request: dict) -> dict | None:
    """The running server's reply to `request`, or None when there is no usable server (search in process).
    A user error from the server comes back as {"error": message}."""
    found = read_discovery(db)
    if found is None:
        return None
    try:
        connection = http.client.HTTPConnection("127.0.0.1", int(found["port"]), timeout=CONNECT_TIMEOUT_S)
        connection.connect()
        connection.sock.settimeout(ASK_TIMEOUT_S)
        body = json.dumps({key: request[key] for key in REQUEST_KEYS}).encode()
        connection.request("POST", PATH, body, {"Content-Type": "application/json", TOKEN_HEADER: str(found["token"])})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
        return None
    if response.status == 200 and isinstance(answer, dict) and ("hits" in answer or "error" in answer):
        return answer
    return None


# ------------------------------------------------------------------------------------------- the server

class LoopbackServer:
    """The loopback endpoint of `glance serve`: answers `ask` with `reply(library.engine(), request)`."""

    def __init__(self, library):
        self.library = library
        self.token = secrets.token_hex(32)
        self.file = discovery_file(library.db)
        self._http: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Listen and announce; a server that cannot write its discovery file still serves its page."""
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="glance-loopback", daemon=True).start()
        record = {"port": self._http.server_address[1], "db": index_key(self.library.db),
                  "token": self.token, "pid": os.getpid()}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = self.file.with_name(f".{self.file.name}.{os.getpid()}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
            os.replace(partial, self.file)  # a reader sees the old file or the whole new one
        except OSError as exc:
            log.warning("glance search will not find this server (%s)", exc)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        try:  # only our own announcement: a newer server on the same index may have replaced it
            if json.loads(self.file.read_text()).get("token") == self.token:
                self.file.unlink()
        except (OSError, ValueError):
            pass

    def answer(self, request) -> dict:
        from core.errors import GlanceError, one_line

        if not isinstance(request, dict) or set(request) != set(REQUEST_KEYS):
            return {"error": "a malformed search request"}
        try:
            return reply(self.library.engine(), request)
        except GlanceError as exc:
            return {"error": one_line(exc)}


def _handler(server: LoopbackServer):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            token = self.headers.get(TOKEN_HEADER, "")
            if self.path != PATH or not hmac.compare_digest(token.encode(), server.token.encode()):
                return self._send(403, {"error": "forbidden"})
            size = int(self.headers.get("Content-Length") or 0)
            if not 0 < size <= MAX_REQUEST_BYTES:
                return self._send(413, {"error": "request too large"})
            try:
                request = json.loads(self.rfile.read(size))
            except ValueError:
                return self._send(400, {"error": "not JSON"})
            try:
                self._send(200, server.answer(request))
            except Exception:  # the traceback goes to the server's log; the CLI falls back to searching itself
                log.exception("unexpected error in a loopback search")
                self._send(500, {"error": "server error"})

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet: one line per search would flood the server's log
            pass

    return Handler
