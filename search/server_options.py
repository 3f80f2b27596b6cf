"""The flags of the web server (`python app.py`, `glance serve`), parsed before anything heavy is imported.

Nothing here imports gradio, torch or lancedb: `--help` and a mistyped flag must answer at once, and the
`glance` command imports this module to build its `serve` subcommand.
"""
from __future__ import annotations

import argparse
import os

from core import location
from core.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
AUTH_ENV = "GLANCE_AUTH"
DESCRIPTION = "Glance: search your photos in a browser (the page and its API)."
EPILOG = """\
what the page offers:
  a search box in Glance's query grammar:   beach -people +sunset 2:dog
  an image slot: drop a photo, upload one, or paste from the clipboard (combined with the text if any)
  filters: folder, taken from/to (YYYY, YYYY-MM, YYYY-MM-DD), only captioned, hide irrelevant results
  click a result for the large view and "More like this"; the Image -> Text tab finds captions for an image

API (gradio_client, same login as the page):
  from gradio_client import Client, handle_file
  c = Client("http://127.0.0.1:7860/", auth=("me", "secret"))
  c.predict("red bicycle", api_name="/search_text")                  -> {"hits": [...], "has_more": ...}
  c.predict(handle_file("cat.jpg"), api_name="/search_image")
  c.predict("receipt", api_name="/search_captions")                  -> [{"text", "score", ...}]
  also /more_like_this, /image_to_text, /photo, /stats (see the page's "Use via API" link)

models: the ones recorded in the index (Hub ids or folders); --vision-model/--text-model override them
and are refused unless they reproduce the index's vectors.

safety: only 127.0.0.1 is bound unless --host says otherwise; with --host 0.0.0.0 use --auth (or
GLANCE_AUTH=USER:PASS, which keeps the password out of the process list). The app serves thumbnails and
previews of indexed photos only, never fetches URLs, and never creates a public share link.

exit status: 0 after Ctrl-C; 2 for bad arguments or an index/model that cannot be used (one line on stderr).
"""




def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(parser)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login for every page and API call "
                                                            f"(default: ${AUTH_ENV}, else no login)")
    parser.add_argument("--vision-model", metavar="M", help="override the index's vision model (Hub id or folder)")
    parser.add_argument("--text-model", metavar="M", help="override the index's text model (Hub id or folder)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="model precision")
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="embed each request's query on its own, two requests at a time (the way before dynamic "
                             "batching; for comparison: bench/query_load.py)")
    return parser


def check(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments made ready for app.main: `auth` becomes (user, password) or None. Raises UsageError."""
    args.auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    location.configure_from(args)  # --storage-option: every Store the server opens uses them
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, not {args.port}")
    return args


def parse_auth(text: str | tuple | None) -> tuple[str, str] | None:
    if not text:
        return None
    if isinstance(text, tuple):  # already parsed (check() may run twice: glance serve, then app.main)
        return text
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise UsageError("--auth must be USER:PASS, both non-empty")
    return user, password
