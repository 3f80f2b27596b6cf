"""`python -m indexer`: build and maintain a Glance index from the command line."""
from __future__ import annotations

import argparse
import sys

from search.errors import exit_on_user_error

from . import embed

VERBS = ("embed",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description="Glance indexer: embeds photos and captions into a local search index.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    embed.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        sys.exit(2)
    with exit_on_user_error("glance"):
        args.run(args)
