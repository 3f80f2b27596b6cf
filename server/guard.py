"""ASGI middleware around gradio: nothing without the login but the login page, and no URL ever fetched."""
from __future__ import annotations

import json

from starlette.requests import HTTPConnection

MAX_JSON_BODY = 1 << 20  # API requests carry text and upload references; files come via /upload
HISTORY_BUCKET_HEADER = b"x-gradio-history-bucket"  # gradio.history.BUCKET_HEADER


# What a browser that is not logged in may fetch: the login page and what it is built from. Everything else,
# including any route a future gradio adds, needs the login.
OPEN_PATHS = frozenset({
    "/",  # gradio renders it as the login form (no components, no library data) until the login cookie is set
    "/login", "/login/",  # the form posts here
    "/favicon.ico", "/theme.css", "/manifest.json",  # referenced by the login page's HTML
    "/robots.txt",  # static text that asks crawlers nothing of the library
})
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/")  # gradio's frontend bundles, the same in every install
# gradio's launch() calls this itself, without a cookie, once; it stays closed from then on.
STARTUP_PATH = "/gradio_api/startup-events"


class LoginRequired:
    """ASGI middleware: with a login set, a request without it gets 401 unless it is for the login page.

    gradio checks the login per route, and some of its routes answer without it (the heartbeat stream that
    opens a session, /gradio_api/app_id, /gradio_api/user...). This turns that around: closed unless listed.
    The login is gradio's own (its cookie, its token table), read from the FastAPI app in the ASGI scope.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or _is_open(scope) or _logged_in(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        gradio = scope["app"]
        detail = {"error": "Not authenticated", "auth_message": gradio.get_blocks().auth_message}
        return await _refuse(send, 401, detail, key="detail")  # the shape gradio's own refusals have


def _is_open(scope) -> bool:
    path = scope.get("path", "")
    if scope["type"] != "http":
        return False
    if path == STARTUP_PATH:
        return not getattr(scope.get("app"), "startup_events_triggered", True)
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _logged_in(scope) -> bool:
    gradio = scope.get("app")
    if gradio is None:  # not mounted in a FastAPI app: nothing to check against, so nothing passes
        return False
    if getattr(gradio, "auth", None) is None and getattr(gradio, "auth_dependency", None) is None:
        return True  # served without --auth
    cookies = HTTPConnection(scope).cookies
    token = (cookies.get(f"access-token-{gradio.cookie_id}")
             or cookies.get(f"access-token-unsecure-{gradio.cookie_id}"))
    return token is not None and gradio.tokens.get(token) is not None


class RefuseRemoteFiles:
    """ASGI middleware: Glance's server never fetches a URL on a client's behalf.

    Gradio would: `/gradio_api/file=https://...` streams a remote file through the server, and a file input
    whose "path" is a URL is downloaded before the handler runs. Both are refused here, before gradio sees them.
    The run-history header (a Hugging Face bucket to upload each query to, with the host's HF_TOKEN) is
    dropped too; run history is also switched off at launch, so this holds should a gradio update revive it.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = _without_history_bucket(scope)
        if _remote_file_route(scope.get("path", "")):
            return await _refuse(send, 403, "Glance does not fetch URLs")
        if scope.get("method") != "POST" or _is_form(scope):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BODY:
                return await _refuse(send, 413, "request too large")
        if _names_remote_file(body):
            return await _refuse(send, 400, "Glance does not fetch URLs: upload the file instead")
        return await self.app(scope, _replay(body, receive), send)


def _without_history_bucket(scope):
    headers = scope.get("headers", [])
    kept = [(name, value) for name, value in headers if name.lower() != HISTORY_BUCKET_HEADER]
    return scope if len(kept) == len(headers) else {**scope, "headers": kept}


def _is_form(scope) -> bool:
    """Uploads and the login form; any other POST body may be read as JSON by FastAPI, even untyped."""
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"").lower()
    return content_type.startswith((b"multipart/form-data", b"application/x-www-form-urlencoded"))


def _remote_file_route(path: str) -> bool:
    for marker in ("/file=", "/file/", "/proxy="):
        _, found, rest = path.partition(marker)
        if found and _has_scheme(rest.lstrip("/") if marker == "/file/" else rest):
            return True
    return False


def _has_scheme(text: str) -> bool:
    scheme, colon, _ = text.strip().partition(":")
    return bool(colon) and scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme)


def _names_remote_file(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False  # gradio answers malformed JSON itself
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("path"), str) and _has_scheme(item["path"]):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replayed


async def _refuse(send, status: int, message, key: str = "error") -> None:
    payload = json.dumps({key: message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
