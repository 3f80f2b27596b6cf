"""ASGI middleware around gradio: Glance's server never fetches a URL on a client's behalf."""
from __future__ import annotations

import json

MAX_JSON_BODY = 1 << 20  # API requests carry text and upload references; files come via /upload
HISTORY_BUCKET_HEADER = b"x-gradio-history-bucket"  # gradio.history.BUCKET_HEADER


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


async def _refuse(send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
