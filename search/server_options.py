"""The flags of the web server (`python app.py`, `glance serve`), parsed before anything heavy is imported.

Nothing here imports gradio, torch or lancedb: `--help` and a mistyped flag must answer at once, and the
`glance` command imports this module to build its `serve` subcommand.
"""
from __future__ import annotations

import argparse
import os

from core.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
AUTH_ENV = "GLANCE_AUTH"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--db", metavar="DIR", help="index folder (default: $GLANCE_DB or ~/.local/share/glance/index)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login for every page and API call "
                                                            f"(default: ${AUTH_ENV}, else no login)")
    parser.add_argument("--vision-model", metavar="M", help="override the index's vision model (Hub id or folder)")
    parser.add_argument("--text-model", metavar="M", help="override the index's text model (Hub id or folder)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="model precision")
    return parser


def check(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments made ready for app.main: `auth` becomes (user, password) or None. Raises UsageError."""
    args.auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
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
