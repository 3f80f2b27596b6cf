"""`glance`: one command to index photo folders, search them, and serve the search page.

Each package defines its own subcommands (indexer/cli.py: index, stats, remove; indexer/embed.py: embed;
search/cli.py: search, eval; search/server_options.py + app.py: serve); this module only assembles them. Building the
parser imports nothing heavy (no torch, no LanceDB, no gradio): `glance --help` answers at once.
"""
from __future__ import annotations

import argparse
import sys

from core.errors import CommandParser, exit_on_user_error, finish
from indexer import cli as indexer_cli
from indexer import embed
from search import cli as search_cli
from search import server_options

from . import __version__

DESCRIPTION = "Glance: semantic search for your photo library, on your own machine."
EPILOG = """\
start here:
  glance index ~/Pictures                 embed every photo (incremental; run it again after changes)
  glance search "dog on the beach"        words -> photos, best first
  glance search --image cat.jpg           a photo -> similar photos
  glance serve                            the search page on http://127.0.0.1:7860/
  glance stats                            what the index holds
  glance duplicates                       near-duplicate groups (bursts, re-encodes), for cleaning up
  glance saved                            saved searches: list, add, run, remove
  glance check-captions                   captions that match their photo worse than most (dataset cleaning)
  glance map                              the 2-D map of the collection (UMAP or PCA)
  glance models                           the model presets, their licences and costs
  glance eval                             how well search finds your captioned photos (recall, MRR)
  glance tune                             adapt text search to your captioned photos

each command has its own help: glance index --help, glance search --help, ...
The index lives in $GLANCE_DB, else ~/.local/share/glance/index; --db DIR picks another.

exit status:
  0    done
  1    finished, but some files were skipped (index), or nothing was found (search)
  2    an error, explained in one line on stderr (glance: error: ...)
  130  interrupted (Ctrl-C); what was committed is kept
"""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="glance", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"glance {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = commands.choices  # name -> subcommand parser, so a stray flag is reported by its command
    indexer_cli.add_index_parser(commands)
    search_cli.add_search_parser(commands)
    add_serve_parser(commands)
    indexer_cli.add_stats_parser(commands)
    search_cli.add_duplicates_parser(commands)
    search_cli.add_saved_parser(commands)
    search_cli.add_check_captions_parser(commands)
    search_cli.add_map_parser(commands)
    search_cli.add_eval_parser(commands)
    search_cli.add_tune_parser(commands)
    indexer_cli.add_remove_parser(commands)
    embed.add_parser(commands)
    add_models_parser(commands)
    return parser


def add_models_parser(commands) -> None:
    p = commands.add_parser("models", help="the model presets: licence, languages, size, cost, cached or not",
                            description="List the model presets. Give an image-text preset to `glance index --model "
                                        "NAME` and a caption model to `glance index --caption-model NAME` (or any "
                                        "Hub repo id or model folder).")
    p.add_argument("--json", action="store_true", help="one JSON array on stdout (each row's `kind`: image_text "
                                                        "or caption)")
    p.set_defaults(run=run_models)


def run_models(args) -> int:
    import json

    from models.factory import caption_presets, presets

    rows, captions = presets(), caption_presets()
    if args.json:
        print(json.dumps([{"kind": "image_text", **r} for r in rows] +
                         [{"kind": "caption", "family": "sentence_transformers", **r} for r in captions], indent=1))
        return 0
    print(f"image-text models (glance index --model NAME)\n"
          f"{'preset':<18} {'family':<10} {'dim':>4} {'GFLOP':>6} {'MB':>5}  {'cached':<6}  {'languages':<19} licence")
    for r in rows:
        print(f"{r['name']:<18} {r['family']:<10} {r['dim']:>4} {r['gflop_per_image']:>6.1f} {r['download_mb']:>5}  "
              f"{'yes' if r['cached'] else 'no':<6}  {r['languages']:<19} {r['licence']}")
    print(f"\ncaption models (glance index --caption-model NAME), a second space for finding captions by meaning\n"
          f"{'preset':<18} {'repo':<40} {'dim':>4} {'MB':>5}  {'cached':<6}  {'languages':<19} licence")
    for r in captions:
        print(f"{r['name']:<18} {r['repo']:<40} {r['dim']:>4} {r['download_mb']:>5}  "
              f"{'yes' if r['cached'] else 'no':<6}  {r['languages']:<19} {r['licence']}")
    return 0


def add_serve_parser(commands) -> None:
    p = commands.add_parser("serve", help="serve the search page (and its API) in a browser",
                            description=server_options.DESCRIPTION, epilog=server_options.EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    server_options.add_arguments(p)
    p.set_defaults(run=run_serve)


def run_serve(args) -> int:
    server_options.check(args)
    import app  # gradio and the page: seconds, so only once the flags are known to be good

    app.main(args)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, stray = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if stray:  # argparse would blame the top-level `glance`; the command's own usage is the helpful one
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    with exit_on_user_error():
        status = args.run(args)
    finish(status or 0, as_program=argv is None, quick_exit=getattr(args, "quick_exit", False))
