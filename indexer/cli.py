"""The indexer's subcommands of `glance`: `index`, `stats`, `remove`, `embed` (glance/cli.py assembles them).

`python -m indexer` is an alias: `python -m indexer PATH...` is `glance index PATH...`, and
`python -m indexer stats|remove|embed ...` is the `glance` subcommand of that name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from core import location
from core.errors import CommandParser, UsageError, exit_on_user_error
from core.images import LIBRARY_MAX_MEGAPIXELS
from store import VECTOR_INDEX_KINDS, VECTOR_INDEX_MIN_ROWS, VECTOR_INDEX_TRAIN_ROWS, default_db_path

from . import embed

EPILOG = f"""\
examples:
  glance index ~/Pictures                          index (or update) a library
  glance index ~/Pictures /mnt/nas/photos --json   several folders; summary as JSON on stdout
  glance index ~/Pictures --captions labels.csv --errors skipped.jsonl
  glance remove ~/Pictures/private                 forget a folder (the files stay on disk)

what a run does:
  Walks each PATH recursively (hidden files and folders are skipped; symlinks are followed, loops are
  reported). Formats: JPEG, PNG, WebP, GIF (first frame), BMP, TIFF, HEIC/HEIF, AVIF. Runs are incremental:
  a file with the same size and mtime is not even opened; a moved, renamed or copied file (same content hash)
  reuses its vector; a changed file is embedded again; a file gone from disk leaves the index, but only within
  the PATHs given. Kill it at any time (even with SIGKILL) and run it again: nothing is lost or duplicated.
  Photo folders are only ever read.

captions (each is embedded as "search_query: <caption>" and linked to its photo):
  - a sidecar next to the photo: IMG_1.jpg.txt or IMG_1.txt (the whole file is one caption);
  - inside the photo: EXIF ImageDescription, XMP dc:description;
  - --captions FILE (repeatable), the complete set of file captions (those no longer in any FILE are dropped):
      .csv    header row, then path,caption rows; a path may repeat (several captions); an empty path is a
              free-standing text (a label vocabulary, for image->text search)
      .jsonl  {{"path": "a.jpg", "caption": "..."}} or {{"path": "a.jpg", "captions": ["...", "..."]}};
              no path: a free-standing text
      .txt    one free-standing text per line
    Relative paths are looked up beside the captions file, then in each indexed folder. File captions
    follow their path: after a photo moves, give the updated captions file again.

index location: --db DIR, else $GLANCE_DB, else $XDG_DATA_HOME/glance/index (now: {default_db_path()}).
object storage: PATH and --db may be URIs (s3://bucket/prefix; gs://, az:// through pyarrow). Credentials and
endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL, or
--storage-option KEY=VALUE (LanceDB's keys: aws_endpoint, aws_region, ...). In a bucket, an object's size and
last-modified time stand in for size and mtime.
A cosine vector index is built once the index holds {VECTOR_INDEX_MIN_ROWS} photos (exact search is fast
enough below that), and a full-text index on captions. --vector-index picks its kind; bytes per photo at dim d:
  auto  IVF_FLAT from {VECTOR_INDEX_MIN_ROWS} photos (4 x d bytes: the float32 vectors themselves)
  flat  IVF_FLAT from {VECTOR_INDEX_TRAIN_ROWS} photos
  sq    IVF_SQ from {VECTOR_INDEX_TRAIN_ROWS} photos: one byte per component (d bytes)
  pq    IVF_PQ from {VECTOR_INDEX_TRAIN_ROWS} photos: one byte per 8 components (d / 8 bytes)
sq and pq re-rank their best candidates on the float32 vectors, which stay in the index; `glance eval` shows
the recall each costs on your photos. Later runs keep the kind; another one rebuilds the index (nothing is
embedded again).

exit status:
  0    every photo indexed (or already up to date)
  1    finished, but some files or captions were skipped: reasons on stderr and in --errors FILE
  2    stopped with an error (one line on stderr): bad arguments, missing models, an index built with
       other models (see --reindex), another indexer writing to the same index, a folder that is now empty
       or unreadable while the index holds photos from it (see --prune), a damaged index, a full disk;
       what was committed stays consistent
  130  interrupted (Ctrl-C): batches committed so far are kept; run again to finish
"""


def add_index_parser(verbs) -> None:
    p = verbs.add_parser("index", help="index photo folders (incremental, crash-safe)",
                         description="Index photo folders into a Glance index (incremental, crash-safe).",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="photo folders or object-storage prefixes (s3://bucket/prefix) to index (recursively)")
    add_db_flag(p)
    p.add_argument("--captions", action="append", default=[], metavar="FILE",
                   help="captions file: .csv, .jsonl or .txt (repeatable; see below)")
    p.add_argument("--model", "--vision-model", dest="vision_model", metavar="M",
                   help="a preset (see `glance models`), Hub repo id or local folder (default: the index's model, "
                        "else nomic-v1.5); --vision-model with --text-model pairs two Nomic folders")
    p.add_argument("--text-model", metavar="M",
                   help="Hub repo id or local folder (default: the index's model, else nomic-ai/nomic-embed-text-v1.5)")
    p.add_argument("--caption-model", metavar="M",
                   help="also embed every caption with a text model made for text (minilm, mpnet, bge-m3, a Hub id "
                        "or a sentence-transformers folder), for finding captions by meaning; `none` drops it "
                        "(default: the index's)")
    p.add_argument("--dim", type=int, metavar="N",
                   help="store vectors at a smaller Matryoshka size (Nomic v1.5: 512, 256, 128 or 64; see `glance "
                        "eval`): less disk and faster search, some recall lost (default: the index's, else full)")
    p.add_argument("--vector-index", choices=VECTOR_INDEX_KINDS, metavar="KIND",
                   help="the kind of vector index: auto, flat, sq or pq (see below; default: the index's, else auto)")
    p.add_argument("--reindex", action="store_true",
                   help="delete the index and embed everything again (needed to change models)")
    p.add_argument("--prune", action="store_true",
                   help="let a folder that is now empty or unreadable lose its photos from the index (without it, "
                        "that is refused: it usually means a drive that is not mounted)")
    p.add_argument("--max-megapixels", type=float, default=LIBRARY_MAX_MEGAPIXELS, metavar="MP",
                   help="skip images with more pixels than this, e.g. decompression bombs (default: %(default)g)")
    p.add_argument("--errors", metavar="FILE", help="write skipped files with reasons as JSON lines to FILE")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-file messages")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per model call (default: sized to memory and the model: 16 for Nomic on a CPU)")
    p.add_argument("--commit-every", type=int, metavar="N",
                   help="photos per commit to the index (default: 64, or the batch if larger). A kill loses at most "
                        "these; each commit costs time")
    p.add_argument("--workers", type=int, metavar="N", help="decoding threads (default: one per CPU core)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for the model (default: all cores)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the CPU has it and it stays within cosine 0.999 of fp32")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile the vision model on the CPU: ~30 s the first time on a machine, ~5 s after "
                        "(cached), then ~25%% faster batches; auto: when 2,000 photos or more are to be embedded")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="decode and embed on Ray: alone, a local Ray instance; `auto` or ray://HOST:PORT joins a "
                        "cluster (the index is still written by this process; see README, Beyond one machine)")
    p.add_argument("--ray-workers", type=int, metavar="N",
                   help="embedding actors on the Ray cluster, one model each (default: one per GPU, else most CPUs)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the vision model runs: auto picks a CUDA GPU where torch sees one (fp16/bf16 there "
                        "within cosine 0.999 of fp32, batches sized to its memory); photos are decoded on the CPU")
    p.set_defaults(run=run_index)


def add_stats_parser(verbs) -> None:
    p = verbs.add_parser("stats", help="what an index holds", description="Show what a Glance index holds.")
    add_db_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run_stats)


def add_remove_parser(verbs) -> None:
    p = verbs.add_parser("remove", help="take photos out of an index",
                         description="Take every photo at or under each PATH out of the index, with its captions. "
                                     "The files are not touched, and PATH need not exist any more. Photos under a "
                                     "folder that is indexed again come back; move or delete them first.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a photo or folder (absolute or relative)")
    add_db_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run_remove)


def add_db_flag(p) -> None:
    p.add_argument("--db", metavar="DIR", help=location.DB_HELP)
    location.add_storage_flag(p)


def run_index(args) -> int:
    from tqdm import tqdm

    from .pipeline import IndexOptions, index
    from .report import problem_line, write_errors

    for value, flag in ((args.batch_size, "--batch-size"), (args.commit_every, "--commit-every"),
                        (args.workers, "--workers"), (args.threads, "--threads"),
                        (args.ray_workers, "--ray-workers"),
                        (args.dim, "--dim")):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if args.errors:
        _refuse_inside(args.errors, args.paths, "--errors")

    def show(problem):
        if not args.quiet:
            tqdm.write(f"glance: {problem_line(problem)}", file=sys.stderr)

    summary = index(IndexOptions(
        paths=args.paths, db=args.db, storage_options=location.configure_from(args), captions=args.captions,
        vision_model=args.vision_model,
        text_model=args.text_model, caption_model=args.caption_model, dim=args.dim, vector_index=args.vector_index,
        reindex=args.reindex, prune=args.prune,
        max_megapixels=args.max_megapixels,
        batch_size=args.batch_size, commit_every=args.commit_every, workers=args.workers, threads=args.threads,
        precision=args.precision,
        device=args.device, compile=args.compile, ray=args.ray, ray_workers=args.ray_workers,
        progress=sys.stderr.isatty() and not args.quiet, on_problem=show))
    if args.errors:
        write_errors(args.errors, summary.problems)
    print(json.dumps(summary.as_dict()) if args.json else summary.text())
    return summary.exit_status


def run_stats(args) -> int:
    from store import Store

    store = Store(args.db, storage_options=location.configure_from(args))
    with store.lance_errors():
        result = store.stats()
    print(json.dumps(result, default=str) if args.json else stats_text(result))
    return 0


def stats_text(s: dict) -> str:
    lines = [
        f"index: {s['db']} ({s['size_bytes'] / 1e6:.1f} MB, schema {s['schema_version']})",
        f"models: {s['vision_model']} + {s['text_model']} ({s['model_version']}, dim {s['dim']}, "
        f"preprocessing v{s['preprocess_version']})",
        "caption model: " + (f"{s['caption_model']} (dim {s['caption_dim']})" if s["caption_model"] else "none"),
        "tuning: " + (f"{s['tuning']} (glance tune --off to switch it off)" if s.get("tuning") else "none"),
        f"photos: {s['photos']} ({s['photos_with_captions']} with captions)",
        *(f"  {count:>8}  {root}" for root, count in s["roots"].items()),
        f"captions: {s['captions']}" + (" (" + ", ".join(f"{k} {v}" for k, v in s["captions_by_source"].items())
                                        + ")" if s["captions"] else ""),
        f"free-standing texts: {s['texts']}",
        f"last indexed: {s['last_indexed'] or 'never'}",
        "vector index: " + vector_index_text(s),
        "full-text index on captions: " + ("yes" if s["text_index"] else "no"),
    ]
    return "\n".join(lines)


def vector_index_text(s: dict) -> str:
    chosen = "" if s["vector_index_choice"] == "auto" else f", --vector-index {s['vector_index_choice']}"
    if s["vector_index"]:
        return f"{s['vector_index']} (cosine{chosen})"
    return s["vector_index_note"] or (f"none, exact search (built automatically from {s['vector_index_min_rows']} "
                                      f"photos{chosen})")


def run_remove(args) -> int:
    from .admin import remove

    result = remove(args.paths, args.db, location.configure_from(args))
    if args.json:
        print(json.dumps(result))
    else:
        for path, count in result["per_path"].items():
            print(f"removed {count} photos under {path}" if count else f"nothing indexed under {path}")
    return 0


def _refuse_inside(path: str, folders: list[str], flag: str) -> None:
    target = os.path.realpath(os.path.expanduser(path))
    for folder in folders:
        if location.is_uri(folder):
            continue  # --errors is a local file; it cannot be inside a bucket
        real = os.path.realpath(os.path.expanduser(folder))
        if target.startswith(real.rstrip("/") + "/"):
            raise UsageError(f"{flag} {path} is inside the photo folder {folder}; the indexer never writes there")


ALIAS_VERBS = ("stats", "remove", "embed")
ALIAS_USAGE = """python -m indexer [index] PATH [PATH ...] [options]   = glance index
       python -m indexer stats|remove|embed ...              = glance stats|remove|embed"""


def main(argv: list[str] | None = None) -> None:
    """`python -m indexer`: the alias of `glance index` (and of `glance stats|remove|embed`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = CommandParser(
        prog="python -m indexer", usage=ALIAS_USAGE, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The alias of `glance index` (and of `glance stats`, `glance remove`, `glance embed`).")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, prog="python -m indexer")
    add_index_parser(verbs)
    add_stats_parser(verbs)
    add_remove_parser(verbs)
    embed.add_parser(verbs)
    if not argv or argv[0] not in (*ALIAS_VERBS, "index", "-h", "--help"):
        argv = ["index", *argv]  # the alias's one rewrite: `python -m indexer PATH` has always meant index
    args = parser.parse_args(argv)
    with exit_on_user_error():  # also an OSError (a full disk, a closed stdout): one line, or quiet
        status = args.run(args)
    sys.exit(status or 0)
