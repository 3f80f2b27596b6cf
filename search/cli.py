"""`glance search`: search a Glance index from the command line (`python -m search` is its alias).

Prints one hit per line, `score<TAB>path` (captions mode: `score<TAB>text<TAB>its photo's path or -`), best
first, or a JSON array with --json. Browsing (`--sort date`, no query) prints `date<TAB>path`, newest first;
`--group day|month` puts a `# label (count)` line before each group. Exit status: 0 with results, 1 with
none (a note goes to stderr), 2 for bad input (one line on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import json
import sys

from core import location
from core.errors import CommandParser, UsageError, exit_on_user_error, finish

from .filters import date_range
from .query import no_query
from .serialize import stats_json, text_hit_json
from .timeline import GROUPINGS, SORTS

PROGRAM = "glance"
EPILOG = """\
query grammar (one box, rclip-style):
  golden retriever on the beach   plain words are ONE phrase, embedded as `search_query: ...`
  beach -people +sunset 2:dog     + adds a term, - subtracts one, W: weights it (2:dog = twice dog)
  -0.5:snow                       an operator and a weight together
  t-shirt, black-and-white        a - or + inside a word (or between spaces) is just text
  "-5 degrees"                    double quotes keep operators as text
  terms combine as normalize(sum of weight x embedding); a query image adds with weight 1.

examples:
  glance search "red bicycle"
  glance search "beach -people" --folder 2023/summer --from 2023-07 --to 2023-08
  glance search --image ~/Downloads/cat.jpg --top 20
  glance search "at night" --image photo.jpg          text and an image together
  glance search --like ~/Pictures/cat.jpg             more like an indexed photo (its path or its id)
  glance search "wedding" --cutoff                    hide the clearly irrelevant tail
  glance search --sort date --group month             browse the library, newest first, month by month
  glance search "beach" --sort date --from 2023       the best beach photos of 2023 and later, newest first
  glance search "receipt" --captions                  captions and texts, keyword + semantic
  glance search --image photo.jpg --captions          captions and texts nearest to an image
  glance search "beach" --top 50 --export-links ~/beach   a folder of symlinks to the 50 best
  glance search --stats                               what the index holds (as glance stats --json)

The models are the ones recorded in the index; --vision-model/--text-model point at local copies
(and are refused when they do not reproduce the index's vectors). The index is $GLANCE_DB or
~/.local/share/glance/index unless --db is given.
"""


DESCRIPTION = "Search your photos by text, by image, or both."


def add_search_parser(verbs) -> None:
    p = verbs.add_parser("search", help="search photos by text, by image, or both", description=DESCRIPTION,
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_arguments(p)
    p.set_defaults(run=run, quick_exit=True)


DUPLICATES_DESCRIPTION = """\
List the near-duplicate groups of the library, for cleaning it up: bursts, re-encodes, crops and small exposure
changes of one shot. Nothing is deleted or moved.

Each group prints a `# keep PATH (+N)` line (its photo with the most pixels, then the newest) and then its
near-duplicates, one path per line, biggest groups first; --json prints one object (groups, threshold).
Two photos are near-duplicates when their vectors (or their thumbnails' layouts) are closer than thresholds
measured on the index's vision model with generated bursts, once per model, and, where both have a taken-at
date, they were taken within 5 minutes of each other. Every photo is compared with every other: seconds for
10,000 photos, minutes for 100,000 (narrow it with --folder or --from/--to).

exit status:
  0    groups were found
  1    none were found
  2    an error, in one line on stderr
"""


def add_duplicates_parser(verbs) -> None:
    add_library_command(verbs, "duplicates", "list near-duplicate groups (bursts, re-encodes, crops)",
                        DUPLICATES_DESCRIPTION, run_duplicates)


def add_library_command(verbs, name: str, help: str, description: str, run) -> None:
    """A subcommand over the whole library: its description as written, and the library flags."""
    p = verbs.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_library_flags(p)
    p.set_defaults(run=run)


def add_library_flags(p) -> None:
    """--db, --storage-option, the folder and date filters and --json: the commands over the whole library."""
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(p)
    p.add_argument("--folder", metavar="F", help="only photos in this folder (relative to an indexed root, or absolute)")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="taken on or after DATE (YYYY, YYYY-MM, YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="taken on or before DATE (the whole day/month/year)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def open_store(args):
    """The index as a Store (no model), or a one-line StoreError where there is none."""
    from store import Store, StoreError, no_index_message

    store = Store(args.db)
    with store.lance_errors():
        if not store.exists():
            raise StoreError(no_index_message(store.path))
    return store


def run_duplicates(args) -> int:
    from .engine import Engine
    from .filters import Filters
    from .serialize import duplicates_json

    date_range(args.date_from, args.date_to)
    location.configure_from(args)
    engine = Engine(args.db, single_query=True)  # one answer from this process: no int8 packing to pay for
    groups = engine.duplicates(Filters(args.folder, args.date_from, args.date_to))
    answer = duplicates_json(groups, engine.duplicate_threshold())
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=1))
    else:
        for group in answer["groups"]:
            print(f"# keep {group['keep']['file']} (+{len(group['duplicates'])})")
            for hit in group["duplicates"]:
                print(hit["file"])
        print(f"{PROGRAM}: {len(groups)} groups, {answer['photos_in_groups']} photos", file=sys.stderr)
    return 0 if groups else 1


MAP_DESCRIPTION = """\
The map of the collection: every photo's vector projected to 2-D (UMAP from 500 photos on, PCA below), where
similar photos sit together. glance index computes it after a run and again once the library has changed by
more than a tenth; photos indexed since then join it then. Prints `x<TAB>y<TAB>path` per photo (x, y in
[0, 1]); --json prints one object (method, counts, points). Needs only the index (no model is loaded).
"""


def add_map_parser(verbs) -> None:
    add_library_command(verbs, "map", "the 2-D map of the collection (UMAP or PCA), as computed after indexing",
                        MAP_DESCRIPTION, run_map)


def run_map(args) -> int:
    from .browser import Browser
    from .filters import Filters
    from .serialize import map_json

    date_range(args.date_from, args.date_to)
    location.configure_from(args)
    store = open_store(args)
    with store.lance_errors():
        answer = map_json(Browser(store).collection_map(Filters(args.folder, args.date_from, args.date_to)))
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=1))
    else:
        for point in answer["points"]:
            print(f"{point['x']:.5f}\t{point['y']:.5f}\t{point['file']}")
    if answer["method"] is None:
        print(f"{PROGRAM}: no map yet: glance index makes one after its next run", file=sys.stderr)
    elif answer["unmapped"]:
        print(f"{PROGRAM}: {answer['unmapped']} photos indexed since the map was made are not on it yet",
              file=sys.stderr)
    return 0 if answer["points"] else 1


CHECK_DESCRIPTION = """\
List the captions that match their own photo worse than most of the library's captions do: likely mislabelled
photos, swapped captions or boilerplate, in an image-caption dataset. Each caption's cosine to its photo is
judged against the others (a robust z score: how many spreads below the median); those 3 or more below are
listed, the furthest first, each with the captions of the 3 nearest captioned photos as suggestions. Needs only
the index (no model is loaded).

Prints `z<TAB>path<TAB>caption` per line, then `  suggestion: ...` lines; --json prints one object.

exit status: 0 none flagged, 1 some flagged, 2 an error (one line on stderr)
"""


def add_check_captions_parser(verbs) -> None:
    p = verbs.add_parser("check-captions", help="captions that match their photo worse than most",
                         description=CHECK_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(p)
    p.add_argument("--top", type=int, default=50, metavar="N", help="at most N captions (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run_check_captions)


def run_check_captions(args) -> int:
    from .consistency import check_captions
    from .results import check_paging
    from .serialize import caption_report_json

    top, _ = check_paging(args.top, 0)
    location.configure_from(args)
    store = open_store(args)
    with store.lance_errors():
        report = caption_report_json(check_captions(store.pinned(), top))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        for caption in report["flagged"]:
            print(f"{caption['z']:.2f}\t{caption['file']}\t{caption['text']}")
            for suggestion in caption["suggestions"]:
                print(f"  suggestion: {suggestion}")
        print(f"{PROGRAM}: {len(report['flagged'])} of {report['checked']} captions flagged", file=sys.stderr)
    return 1 if report["flagged"] else 0


SAVED_DESCRIPTION = """\
Saved searches: a query kept under a name in the index folder, re-run on the index as it is now (so new photos
show up after every glance index). The page and the API list, save and open the same searches.

  glance saved                                    list them (name, then what it asks)
  glance saved add beach "beach -people" --folder 2023 --sort date
  glance saved add summer --from 2023-06 --to 2023-08      no query: the photos of those dates, newest first
  glance saved add cats --liked a.jpg --liked b.jpg        more like these photos
  glance saved run beach [--top N] [--json]       its results, printed as glance search prints them
  glance saved remove beach

exit status: 0 done (run: with results), 1 run found nothing, 2 an error (one line on stderr)
"""


def add_saved_parser(verbs) -> None:
    p = verbs.add_parser("saved", help="saved searches: list, add, run, remove", description=SAVED_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", help="save a search under a name (replacing one of that name)")
    add.add_argument("name")
    add.add_argument("query", nargs="?", default="", help="the query text (may be empty: the filters alone)")
    add.add_argument("--liked", action="append", default=[], metavar="PHOTO", help="a photo to find more of")
    add.add_argument("--disliked", action="append", default=[], metavar="PHOTO", help="a photo to find less of")
    add.add_argument("--folder", metavar="F")
    add.add_argument("--from", dest="date_from", metavar="DATE")
    add.add_argument("--to", dest="date_to", metavar="DATE")
    add.add_argument("--sort", choices=SORTS, default="relevance")
    run_saved = actions.add_parser("run", help="run a saved search on the index as it is now")
    run_saved.add_argument("name")
    run_saved.add_argument("--top", type=int, default=10, metavar="N")
    run_saved.add_argument("--offset", type=int, default=0, metavar="N")
    run_saved.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    remove = actions.add_parser("remove", help="delete a saved search")
    remove.add_argument("name")
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    for sub in (add, run_saved, remove):  # either place: `glance saved --db X run N` or `glance saved run N --db X`
        sub.add_argument("--db", metavar="DIR", help=location.DB_HELP, default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(run=run_saved_command)


def run_saved_command(args) -> int:
    from .saved import Saved, SavedSearches

    if args.action == "run":
        from .engine import Engine
        from .loopback import reply_json

        engine = Engine(args.db, single_query=True)
        results = engine.run_saved(args.name, top=args.top, offset=args.offset)
        return print_reply(reply_json(results, {"group": None}, engine.roots, engine.tuning_problem), args.json)
    store = open_store(args)
    saved = SavedSearches(store)
    if args.action == "add":
        date_range(args.date_from, args.date_to)
        ids = [_photo_id(store, p) for p in args.liked], [_photo_id(store, p) for p in args.disliked]
        kept = saved.save(Saved(args.name, args.query, liked=tuple(ids[0]), disliked=tuple(ids[1]),
                                folder=args.folder, date_from=args.date_from, date_to=args.date_to, sort=args.sort))
        print(f"{PROGRAM}: saved {kept.name!r}; run it with: glance saved run {_quoted(kept.name)}", file=sys.stderr)
    elif args.action == "remove":
        saved.delete(args.name)
        print(f"{PROGRAM}: removed {args.name!r}", file=sys.stderr)
    elif args.json:
        print(json.dumps([s.as_json() for s in saved.all()], ensure_ascii=False, indent=1))
    else:
        for search in saved.all():
            print(f"{search.name}\t{describe_saved(search)}")
    return 0


def describe_saved(saved) -> str:
    from .filters import describe

    asked = [f"“{saved.query}”" if saved.query else "", "a query image" if saved.image else "",
             f"{len(saved.liked)} liked" if saved.liked else "", f"{len(saved.disliked)} disliked" if saved.disliked
             else ""]
    browsing = not any(asked[:3])
    where = describe(saved.filters) if not saved.filters.is_empty() else ("the whole library" if browsing else "")
    order = "newest first" if browsing or saved.sort == "date" else ""
    return ", ".join(p for p in (*asked, where, order) if p)


def _photo_id(store, photo: str) -> str:
    from . import files

    with store.lance_errors():
        return files.photo_id_for(store.pinned(), photo)


def _quoted(name: str) -> str:
    import shlex

    return shlex.quote(name)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?", default="", help="text query in the grammar below (may be empty with --image/--like)")
    p.add_argument("--image", metavar="PATH", help="a query image file (combined with the text when both are given)")
    p.add_argument("--like", metavar="PHOTO", help="an indexed photo (its path, or its id from --json): photos like "
                                                  "it (it is left out)")
    p.add_argument("--liked", action="append", default=[], metavar="PHOTO",
                   help="a result you want more of (path or id; repeatable): refines the query (Rocchio); alone, "
                        "the liked photos are the query (more like these)")
    p.add_argument("--disliked", action="append", default=[], metavar="PHOTO",
                   help="a result you want less of (path or id; repeatable); it is left out")
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(p)
    p.add_argument("--top", type=int, default=10, metavar="N", help="how many results (default: %(default)s)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N results (paging)")
    p.add_argument("--folder", metavar="F", help="only photos in this folder (relative to an indexed root, or absolute)")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="taken on or after DATE (YYYY, YYYY-MM, YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="taken on or before DATE (the whole day/month/year)")
    caption = p.add_mutually_exclusive_group()
    caption.add_argument("--has-caption", dest="has_caption", action="store_const", const=True,
                         help="only photos with a caption")
    caption.add_argument("--no-caption", dest="has_caption", action="store_const", const=False,
                         help="only photos without a caption")
    p.add_argument("--cutoff", action="store_true", help="drop the clearly irrelevant tail (adaptive, per query)")
    p.add_argument("--sort", choices=SORTS, default="relevance",
                   help="relevance (best first, the default) or date (newest first; with no query: browse the "
                        "library)")
    p.add_argument("--group", choices=GROUPINGS, help="group the results by day or month (a `# label (count)` line "
                                                      "before each group; `group` in --json)")
    p.add_argument("--collapse", action="store_true",
                   help="near-duplicates (bursts, re-encodes, crops) as one result: `+N` after its path, "
                        "`duplicates` in --json (see glance duplicates)")
    p.add_argument("--captions", action="store_true",
                   help="search captions and free-standing texts instead of photos (text: keyword + semantic; "
                        "--image/--like: nearest texts)")
    p.add_argument("--json", action="store_true", help="print a JSON array of objects instead of lines")
    p.add_argument("--export", metavar="FILE", help="also write the results to FILE, a .csv or .json table: path, "
                                                   "score, taken_at, captions (never inside the photo library)")
    p.add_argument("--export-links", metavar="DIR", help="also make DIR a folder of symlinks to the results, numbered "
                                                       "in order (never inside the photo library)")
    p.add_argument("--stats", action="store_true", help="print what the index holds (JSON) and exit")
    p.add_argument("--vision-model", metavar="M", help="override the recorded vision model (Hub id or folder)")
    p.add_argument("--text-model", metavar="M", help="override the recorded text model (Hub id or folder)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="model precision (default: auto)")
    p.add_argument("--no-tuning", dest="tuning", action="store_false",
                   help="leave the index's active tuning (glance tune) out of this query")


def main(argv: list[str] | None = None) -> None:
    """`python -m search ARGS`: the alias of `glance search ARGS`."""
    parser = CommandParser(prog="python -m search", description=f"{DESCRIPTION} (alias of glance search)",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with exit_on_user_error():
        status = run(args)
    finish(status, as_program=argv is None, quick_exit=True)


def run(args) -> int:
    check_query_given(args)
    location.configure_from(args)  # --storage-option for an index in object storage, for every Store this process opens
    if args.stats:
        from store import Store

        store = Store(args.db)
        with store.lance_errors():
            print(json.dumps(stats_json(store.stats()), indent=2))
        return 0
    if args.captions:
        return print_texts(text_results(open_engine(args), args), args.json)
    request = photo_request(args)
    answer = ask_server(args, request)
    if answer is None:
        answer = reply_in_process(args, request)
    made, written = 0, None
    if args.export and answer["hits"]:  # before printing: a refused file leaves only its one line
        written = export_file(args, answer)
    if args.export_links and answer["hits"]:
        from .export import link_folder

        made = link_folder(answer["hits"], args.export_links, answer["roots"])
    status = print_reply(answer, args.json)
    if written:
        print(f"{PROGRAM}: wrote {len(answer['hits'])} results to {written}", file=sys.stderr)
    if made:
        print(f"{PROGRAM}: linked {made} photos into {args.export_links}", file=sys.stderr)
    return status


def export_file(args, answer: dict):
    """--export FILE: the results as a table, their captions read from the index (no model needed)."""
    from store import Store

    from .export import export_rows, export_text, format_of, write_export

    fmt = format_of(args.export)
    store = Store(args.db)
    with store.lance_errors():
        captions = store.pinned().caption_texts([hit["id"] for hit in answer["hits"]])
    return write_export(args.export, export_text(export_rows(answer["hits"], captions), fmt), answer["roots"])


def reply_in_process(args, request: dict) -> dict:
    from .loopback import browse_reply, reply

    if args.sort == "date" and no_query(args.query, args.image, args.like, args.liked):
        from .browser import Browser

        store = open_store(args)
        with store.lance_errors():
            return browse_reply(Browser(store), request)
    return reply(open_engine(args), request, image=args.image, like=args.like, liked=args.liked,
                 disliked=args.disliked)


def open_engine(args):
    from .engine import Engine  # after argument checks: loading torch takes seconds

    return Engine(args.db, args.vision_model, args.text_model, precision=args.precision, single_query=True)


def photo_request(args) -> dict:
    return {"query": args.query, "folder": args.folder, "date_from": args.date_from, "date_to": args.date_to,
            "has_caption": args.has_caption, "top": args.top, "offset": args.offset, "cutoff": args.cutoff,
            "tuning": args.tuning, "sort": args.sort, "group": args.group, "collapse": args.collapse}


def ask_server(args, request: dict) -> dict | None:
    """A running `glance serve` on this index answers a plain text search without loading anything here
    (search/loopback.py); None: search in process. Its user errors are ours."""
    if args.image or args.like or args.liked or args.disliked or args.vision_model or args.text_model or \
            args.precision != "auto":
        return None
    from store import db_location

    from .loopback import ask

    answer = ask(db_location(args.db), request)
    if answer is not None and "error" in answer:
        raise UsageError(answer["error"])
    return answer


def print_reply(answer: dict, as_json: bool) -> int:
    """Print a search reply (search/loopback.py `reply`): hits on stdout, the rest on stderr."""
    if answer["tuning_problem"]:
        print(f"{PROGRAM}: {answer['tuning_problem']}", file=sys.stderr)
    if not answer["hits"]:
        print(f"{PROGRAM}: no results" + (f": {answer['note']}" if answer["note"] else ""), file=sys.stderr)
        return 1
    groups = answer["groups"] or [{"label": None, "ids": [hit["id"] for hit in answer["hits"]]}]
    by_id = {hit["id"]: hit for hit in answer["hits"]}
    if as_json:
        rows = [{**by_id[i], **({"group": g["label"]} if g["label"] else {})} for g in groups for i in g["ids"]]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        for group in groups:
            if group["label"]:
                print(f"# {group['label']} ({len(group['ids'])})")
            for hit in (by_id[i] for i in group["ids"]):
                first = (hit["taken_at"] or hit["file_time"] or "-").replace("T", " ") if answer["browsing"] \
                    else f"{hit['score']:.4f}"
                more = f"\t+{len(hit['duplicates'])}" if hit.get("duplicates") else ""
                print(f"{first}\t{hit['file']}{more}")
    if answer["cut"]:  # what is not on stdout goes to stderr, so the output stays pipeable
        print(f"{PROGRAM}: the cut-off hid {answer['cut']['dropped']} weaker matches (scores below "
              f"{answer['cut']['threshold']:.4f})", file=sys.stderr)
    if answer["has_more"]:
        print(f"{PROGRAM}: more results: --offset {answer['next_offset']}", file=sys.stderr)
    return 0


def check_query_given(args) -> None:
    """The checks that need no index or model, so a bad query fails in milliseconds, not after loading."""
    if args.stats:
        return
    if (args.export_links or args.export) and args.captions:
        raise UsageError("--export and --export-links take photos; they do not go with --captions")
    if args.export:
        from .export import format_of

        format_of(args.export)
    if no_query(args.query, args.image, args.like, args.liked) and (args.sort != "date" or args.captions):
        raise UsageError("empty query: give some words, --image PATH or --like ID, or browse with --sort date "
                         "(see --help)")
    date_range(args.date_from, args.date_to)


def text_results(engine, args):
    if args.image or args.like:
        if args.query.strip():
            raise UsageError("--captions takes either a text or an image (--image/--like), not both")
        return engine.image_to_text(image=args.image, like=args.like, top=args.top)
    return engine.caption_search(args.query, top=args.top)


def print_texts(hits, as_json: bool) -> int:
    if not hits:
        print(f"{PROGRAM}: no matching captions or texts", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps([text_hit_json(h) for h in hits], ensure_ascii=False, indent=1))
        return 0
    for hit in hits:
        print(f"{hit.score:.4f}\t{_one_line(hit.text)}\t{hit.path or '-'}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


EVAL_DESCRIPTION = ("Measure how well the index finds its own captioned photos: caption -> photo and photo -> "
                    "caption recall@1/5/10 and MRR, from the stored vectors (nothing is re-embedded); --model "
                    "compares other models on the held-out photos.")
EVAL_EPILOG = """\
what it measures:
  Each caption that belongs to a photo (sidecar, EXIF/XMP, --captions files) pairs with that photo.
  caption -> photo: each distinct caption text is a query over every photo; its positives are the photos
  that carry that text. photo -> caption: each captioned photo is a query over every distinct caption text;
  its positives are its own captions. Figures are exact (brute-force cosine over the stored vectors), with
  95% bootstrap intervals over queries. One row per dimension: the full one, then each Matryoshka size the
  index's model was trained for (Nomic v1.5: 512, 256, 128, 64), vectors cut and re-normalised.
  bytes/photo is the float32 vector's size; exact_ms/query the median time to score every photo for one
  query at that dimension (numpy brute force on one core, without the model or LanceDB).
  It needs at least 20 captioned photos.

comparing models (--model SPEC, repeatable):
  SPEC is what `glance index --model` takes: a preset (see `glance models`), a Hub repo id or a local folder
  (an open_clip checkpoint holds both towers; a Nomic vision model alone pairs with the index's text model),
  or two Nomic folders or repos as VISION,TEXT. Each one embeds the held-out photos (the 20% of captioned
  photos, by a seeded hash, that `glance tune` never trains on; all captioned photos when fewer than 20 are
  held out) from their original files, and their captions, in memory: the index and the photo folders are
  not written to. The index's own model is scored on exactly those photos from its stored vectors, and
  every row ranks them among themselves, so the sections compare like with like. A photo that cannot be
  read any more is left out of every row and counted. Cost: the photos are decoded and embedded as
  indexing does it: ~6 photos/s for Nomic v1.5 on 2 cores with 12-MP JPEGs (1,000 held-out photos: ~3 min;
  the ViT-B-32 presets do a quarter of that work per photo), plus loading each model. A model must be
  cached, or reachable on the Hub to download it once.

examples:
  glance eval
  glance eval --db ~/photo-index --json
  glance eval --model clip-vit-b-32 --model siglip-vit-b-16     which family suits these photos?
  glance eval --model ~/models/nomic-embed-vision-v1.5,~/models/nomic-embed-text-v1.5

The report is kept in the index (extras/eval.json), where the page's Index tab shows it; an index folder
that cannot be written only gets a warning.

exit status:
  0    the figures were printed
  2    an error, in one line on stderr: no index, fewer than 20 captioned photos, a damaged index, a --model
       that is not cached (offline) or not a model, fewer than 20 held-out photos that can still be read
"""


def add_eval_parser(verbs) -> None:
    p = verbs.add_parser("eval", help="search quality on your own captioned photos (recall, MRR)",
                         description=EVAL_DESCRIPTION, epilog=EVAL_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the bootstrap resamples "
                                                                    "(default: %(default)s)")
    p.add_argument("--model", action="append", default=[], dest="models", metavar="SPEC",
                   help="also evaluate this model on the held-out photos, embedded in memory (repeatable; see below)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="precision of the --model encoders (default: auto, as the indexer)")
    p.set_defaults(run=run_eval)


def run_eval(args) -> int:
    location.configure_from(args)
    from datetime import datetime, timezone

    from . import compare, eval_report, evaluate  # numpy and LanceDB: only once the flags are known to be good

    started = datetime.now(timezone.utc)
    candidates = compare.resolve_candidates(args.db, args.models)  # a missing model fails before any scoring
    report = evaluate.run(args.db, seed=args.seed)
    if candidates:
        report |= compare.run(args.db, candidates, seed=args.seed, precision=args.precision,
                              progress=sys.stderr.isatty())
    report = eval_report.stamped(report, started)
    unsaved = eval_report.save(args.db, report)
    if unsaved:  # a read-only index still gets its figures: they are on stdout
        print(f"{PROGRAM}: warning: the evaluation is not kept in the index ({unsaved})", file=sys.stderr)
    text = evaluate.report_text(report) + (f"\n\n{compare.report_text(report)}" if candidates else "")
    print(json.dumps(report, indent=1) if args.json else text)
    return 0


TUNE_DESCRIPTION = ("Adapt text search to your own captioned photos: a small map learned from the captions and "
                    "photo vectors the index already holds (nothing is re-embedded), used by search when it beats "
                    "the base on photos it never saw.")
TUNE_EPILOG = """\
how it works:
  Photos are split by a seeded hash: 70% train, 10% validation (early stopping), 20% held out (the figures
  before and after; never trained on). The default adapter is a linear map (centred on the captions' mean),
  initialised to the identity, applied to each text query before photo search; --method lora instead tunes LoRA
  adapters on the text tower (the image side stays locked). Both train a symmetric InfoNCE loss with a learned
  temperature, in-batch negatives and mined hard negatives (near-duplicates of a positive are never negatives).
  The tuning is saved in the index folder (extras/, safetensors) with its figures and the models it belongs to.
  A tuning that does not beat the base on the held-out photos is saved but kept off.
  It needs about 30 captioned photos; hundreds or more give it something to learn.

examples:
  glance tune                         train the adapter; search uses it when it is better
  glance tune --method lora           LoRA on the text tower (slower: it runs the text model)
  glance search "red kite" --no-tuning    one query without the tuning
  glance tune --off                   switch the active tuning off

exit status:
  0    trained (active or kept off: the summary says which), or switched off
  2    an error, in one line on stderr: no index, too few captioned photos, a damaged index
"""


def add_tune_parser(verbs) -> None:
    p = verbs.add_parser("tune", help="adapt text search to your captioned photos (adapter or LoRA)",
                         description=TUNE_DESCRIPTION, epilog=TUNE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(p)
    p.add_argument("--method", choices=("adapter", "lora"), default="adapter",
                   help="a linear query adapter (default) or LoRA on the text tower")
    p.add_argument("--off", action="store_true", help="switch the active tuning off (search uses the base model)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the split and of training "
                                                                    "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=100, metavar="N", help="at most this many epochs (early stopping "
                                                                       "usually ends sooner; default: %(default)s)")
    p.add_argument("--learning-rate", type=float, metavar="LR", help="Adam's step size (default: 0.01 for the "
                                                                      "adapter, 0.005 for LoRA)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run_tune)


def run_tune(args) -> int:
    location.configure_from(args)
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.learning_rate is not None and not 0 < args.learning_rate < 1:
        raise UsageError("--learning-rate must be between 0 and 1")
    from . import tune  # torch and LanceDB: only once the flags are known to be good

    if args.off:
        report = tune.switch_off(args.db)
        print(json.dumps(report, indent=1) if args.json else
              f"tuning {'switched off: ' + report['switched_off'] if report['switched_off'] else 'was already off'}"
              f"; search uses the base model")
        return 0
    report = tune.run(args.db, args.method, seed=args.seed, max_epochs=args.epochs,
                      learning_rate=args.learning_rate, progress=not args.json and sys.stderr.isatty())
    print(json.dumps(report, indent=1) if args.json else tune.report_text(report))
    return 0
