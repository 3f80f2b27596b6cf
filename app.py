"""Glance web UI: search your photos in a browser.

    python app.py [--db DIR] [--host 127.0.0.1] [--port 7860] [--auth USER:PASS]

This file is page layout and event wiring only. Every search decision lives in search/ (search.engine.Engine);
the Engine's lifecycle and hot reload in search/live.py, the JSON shapes in search/serialize.py, thumbnails and
previews in search/preview.py, the flags in search/server_options.py, and the URL guard in server/guard.py.
The page: one query box (the grammar of search/query.py) plus an image slot (drop, upload or paste), filters,
a gallery of thumbnails with "Load more", a detail view with "More like this", an Image -> Text tab and an Index
tab (the index's stats and its latest `glance eval`, read by search/eval_report.py). gradio_client can call the
named endpoints listed in API_ENDPOINTS.

Safety: binds 127.0.0.1 unless told otherwise; never share=True; with --auth every page, file and API call
needs a login. The browser only ever gets gradio's cached copies of thumbnails and previews: originals are
read through Engine.file_path (strictly inside an indexed root), never served by path, and no
allowed_paths are given to gradio. Query images are uploads only, checked by Engine.check_image (bytes,
pixels, decodable); the server never fetches a URL (server/guard.py RefuseRemoteFiles), and without the
login nothing but the login page answers (server/guard.py LoginRequired); gradio's run history is off.
Bad input gets a one-line message in the page and an error from the API, never a stack trace.
"""
import argparse
import html
import logging
import os
import signal
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from functools import wraps
from pathlib import Path
from urllib.parse import urlencode

from core.errors import PROGRAM, CommandParser, UsageError, exit_on_user_error
from search import server_options

# ------------------------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="python app.py", description=server_options.DESCRIPTION,
                           epilog=server_options.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    return server_options.add_arguments(parser)


def parse_args(argv: list[str]) -> argparse.Namespace:
    with exit_on_user_error():
        return server_options.check(build_parser().parse_args(argv))


if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])  # --help and bad flags answer at once, before the imports below take seconds

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, before gradio is imported
# gradio's queue rebuilds a pandas summary of its last 10,000 events after every event, for a monitoring page
# Glance does not serve: ~19 ms of CPU per request once a server has answered 10k (4 ms at 300). Never.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**12))

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402  (gradio's own dependency: its plots take DataFrames)
from gradio.data_classes import FileData  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from core.errors import GlanceError, one_line  # noqa: E402
from search import eval_report, timeline  # noqa: E402
from search.query import no_query  # noqa: E402
from search.filters import Filters  # noqa: E402
from search.live import IndexMissing, Library  # noqa: E402
from search.loopback import LoopbackServer  # noqa: E402
from search.preview import Pictures  # noqa: E402
from search.export import export_rows, export_text  # noqa: E402
from search.consistency import MIN_CAPTIONS  # noqa: E402
from search.saved import Saved  # noqa: E402
from search.serialize import (caption_report_json, duplicates_json, hit_json, map_json, photo_json,  # noqa: E402
                              results_json, stats_json, text_hit_json)
from search.uploads import MAX_UPLOAD_BYTES  # noqa: E402
from server.guard import LoginRequired, RefuseRemoteFiles  # noqa: E402

# The page's small stylesheet lives in the checkout (`pip install -e .`); a copy installed without it still
# serves the page, only plainer.
ASSETS = Path(__file__).resolve().parent / "assets"
PAGE_SIZE = 24  # photos per page of results ("Load more" fetches the next one)
MAP_DRAWN = 4000  # points the Map tab draws at most (an even sample of a larger library)
MAX_MAP_SELECTION = 100  # photos a box on the map may ask for more of
MINI_MAP_DRAWN = 600  # points of the large view's small map
GENERIC_ERROR = "something went wrong on the server; the details are in its log"
API_ENDPOINTS = ("/search_text", "/search_image", "/more_like_this", "/browse", "/search_captions", "/image_to_text",
                 "/refine", "/duplicates", "/export", "/saved", "/save_search", "/run_saved", "/delete_saved",
                 "/check_captions", "/map", "/photo",
                 "/stats")
SORT_CHOICES = [("Relevance", "relevance"), ("Date, newest first", "date")]
GROUP_CHOICES = [("None", ""), ("Day", "day"), ("Month", "month")]
# Text queries are embedded in batches (search/batching.py): these endpoints let many requests in at once so that
# they reach the batcher together; the others run two at a time, one core each.
BATCHED_ENDPOINTS = ("/search_text", "/search_captions")
BATCHED_CONCURRENCY = 64
UNBATCHED_CONCURRENCY = 2
MAX_THREADS = BATCHED_CONCURRENCY + 40  # gradio's worker threads: the batched requests and the rest (its default)

log = logging.getLogger("glance.app")


# --------------------------------------------------------------------------------- query and view

@dataclass
class Query:
    """What the user asked for; kept in the page's state so "Load more" asks the same again."""
    text: str = ""
    image: str | None = None  # an uploaded file in gradio's upload folder
    like: str | None = None  # an indexed photo's id ("More like this")
    like_name: str = ""
    filters: Filters = field(default_factory=Filters)
    cutoff: bool = False
    sort: str = "relevance"
    collapse: bool = False  # near-duplicates as one tile (search/duplicates.py)
    liked: tuple = ()  # 👍 photo ids: the query moves towards them (Rocchio); alone, "more like these"
    disliked: tuple = ()  # 👎 photo ids: away from them, and left out
    saved: str | None = None  # opened from this saved search: pages come from Engine.run_saved (its image too)

    @property
    def browsing(self) -> bool:
        """No words, image or photo: the library itself, newest first (Engine.browse)."""
        return no_query(self.text, self.image, self.like, self.liked)


@dataclass
class View:
    """One browser session's results: the query, every hit shown so far, and the photo in the large view."""
    query: Query | None = None
    hits: list = field(default_factory=list)
    has_more: bool = False
    selected: str | None = None
    group: str = ""  # "", "day" or "month" (search/timeline.py)
    expanded: frozenset = frozenset()  # collapsed tiles opened: their near-duplicates follow them

    def shown(self) -> list:
        """The hits as the tiles show them: an opened group's near-duplicates right after it."""
        return [member for hit in self.hits
                for member in ((hit, *hit.duplicates) if hit.id in self.expanded else (hit,))]


def make_filters(folder, date_from, date_to, captioned) -> Filters:
    return Filters(as_text(folder, "folder").strip() or None, as_text(date_from, "from date").strip() or None,
                   as_text(date_to, "to date").strip() or None, True if captioned else None)


def as_text(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError(f"the {name} must be text")
    return value


def uploaded_file(payload) -> str | None:
    """The server-side path of an uploaded query image, or None when there is none.

    Only files in gradio's upload folder are accepted, so that a client cannot make the server read another
    local file (or fetch a URL) by sending a path of its choosing.
    """
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path:
        raise UsageError("the query image must be uploaded as a file (URLs and server paths are not accepted)")
    upload_folder = Path(gr.utils.get_upload_folder()).resolve()
    if not Path(path).resolve().is_relative_to(upload_folder):
        raise UsageError("the query image must be uploaded as a file (URLs and server paths are not accepted)")
    return path


def run_query(engine, query: Query, offset: int, top: int = PAGE_SIZE):
    if query.saved:
        return engine.run_saved(query.saved, top=top, offset=offset)
    if query.browsing:
        return engine.browse(query.filters, top=top, offset=offset)
    return engine.search(query.text, image=upload_bytes(query.image), like=query.like, filters=query.filters,
                         top=top, offset=offset, cutoff=query.cutoff, sort=query.sort, collapse=query.collapse,
                         liked=query.liked, disliked=query.disliked)


def upload_bytes(path: str | None) -> bytes | None:
    """The upload's bytes: the engine checks them, and its messages then speak of "the uploaded image" rather
    than of a path in gradio's cache. gradio's max_file_size has already bounded the size."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        raise UsageError("the query image is no longer on the server; drop it again") from None


# ------------------------------------------------------------------------------------ formatting

def md_escape(text: str) -> str:
    """User and file text shown in Markdown: no emphasis, links or HTML can come from it."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~" else ch for ch in str(text))


def when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "unknown"


def file_size(size) -> str:
    if size is None:
        return "unknown size"
    if size < 1000:
        return f"{size} bytes"
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


def save_query(engine, name: str, query: Query) -> Saved:
    """Keep a page or API query as a saved search (search/saved.py): its filters are checked first."""
    engine.check_filters(query.filters)
    f = query.filters
    return engine.saved.save(Saved(name, query.text, liked=query.liked, disliked=query.disliked, folder=f.folder,
                                   date_from=f.date_from, date_to=f.date_to, has_caption=f.has_caption,
                                   sort=query.sort), image=upload_bytes(query.image))


def saved_query(saved: Saved) -> Query:
    """The page's query for a saved search: run through Engine.run_saved, which has its image."""
    return Query(saved.query, filters=saved.filters, sort=saved.sort, liked=saved.liked, disliked=saved.disliked,
                 saved=saved.name)


URL_KEYS = ("q", "folder", "from", "to", "captioned", "cutoff", "sort", "group", "collapse", "saved", "photo")


def page_address(view: View) -> str:
    """The page's state as its URL's query (what open_url reads back); "" leaves the address as it is."""
    query = view.query
    if query is None:
        return ""
    f = query.filters
    asked = {"saved": query.saved} if query.saved else {
        "q": query.text, "folder": f.folder, "from": f.date_from, "to": f.date_to,
        "captioned": "1" if f.has_caption else None, "cutoff": "1" if query.cutoff else None,
        "sort": query.sort if query.sort != "relevance" else None, "collapse": "1" if query.collapse else None}
    asked.update({"group": view.group or None, "photo": view.selected})
    return "?" + urlencode({key: value for key, value in asked.items() if value})


def map_svg(points, here=None) -> str:
    """Points (x, y in [0, 1]) as SVG circles carrying their ids; each names its photo and date on hover. `here`:
    one more point, drawn last and marked (the large view's photo)."""
    def circle(p, marked: bool = False) -> str:
        mark = ' class="here" r="18"' if marked else ' r="6"'
        return (f'<circle cx="{20 + p.x * 960:.1f}" cy="{20 + (1 - p.y) * 960:.1f}"{mark} '
                f'data-id="{html.escape(p.id)}"><title>{html.escape(Path(p.path).name)} · {when(p.date)}</title>'
                "</circle>")
    circles = "".join(circle(p) for p in points) + (circle(here, True) if here is not None else "")
    return f'<svg viewBox="0 0 1000 1000" xmlns="http://www.w3.org/2000/svg" role="img">{circles}</svg>'


def even_sample(points: list, at_most: int) -> list:
    """Every k-th point, so that at most `at_most` are drawn and they spread over the whole list."""
    return points[::-(-len(points) // at_most)] if len(points) > at_most else points


def exif_markdown(fields: list[tuple[str, str]]) -> str:
    if not fields:
        return ""
    return "\n\n**EXIF** · " + " · ".join(f"{md_escape(label)}: {md_escape(value)}" for label, value in fields)


def export_table(engine, hits: list, fmt: str) -> str:
    return export_text(export_rows([hit_json(h) for h in hits], engine.caption_texts([h.id for h in hits])), fmt)


def hit_caption(hit, browsing: bool = False, opened: bool = False) -> str:
    """Score (browsing: date) and name; a hit that a caption brought in says so (the caption route); a collapsed
    group says how many near-duplicates it holds."""
    via = " · caption match" if hit.routes.get("caption") else ""
    first = timeline.group_label(timeline.photo_date(hit), "day") if browsing else f"{hit.score:.3f}"
    similar = f" · +{len(hit.duplicates)} similar" if hit.duplicates and not opened else ""
    return f"{first} · {Path(hit.relpath).name}{via}{similar}"


def query_label(query: Query) -> str:
    parts = []
    if query.text.strip():
        parts.append(f"for “{md_escape(query.text.strip())}”")
    if query.image:
        parts.append("like the query image")
    if query.like:
        parts.append(f"like {md_escape(query.like_name)}")
    if query.liked and not parts:
        parts.append(f"like the {len(query.liked)} liked photos")
    elif query.liked or query.disliked:
        parts.append(f"refined by {len(query.liked)} 👍 and {len(query.disliked)} 👎")
    return " and ".join(parts)


def results_status(view: View, results) -> str:
    if not view.hits:
        return f"**{md_escape(results.note)}**" if results.note else "No results."
    if view.query.browsing:
        return f"{len(view.hits):,} of {results.total_considered:,} photos, newest first"
    order = f"newest first among the best {timeline.DATE_SORT_POOL}" if results.sort == "date" else "best first"
    status = f"{len(view.hits):,} of {results.total_considered:,} photos {query_label(view.query)}, {order}"
    if results.dropped:
        status += f" · {results.dropped:,} weak matches hidden"
    hidden = sum(len(h.duplicates) for h in view.hits)
    if hidden:
        status += f" · {hidden:,} near-duplicates collapsed (click a tile to open its group)"
    return status


def group_tiles(hits: list, tiles: list, by: str) -> list[tuple[str, list, list[int]]]:
    """The tiles in day or month groups: (label, tiles, each tile's index among the hits)."""
    index = {hit.id: number for number, hit in enumerate(hits)}
    return [(label, [tiles[index[h.id]] for h in members], [index[h.id] for h in members])
            for label, members in timeline.groups(hits, by)]


def error_status(message: str) -> str:
    return f"⚠️ **{md_escape(message)}**"


def photo_markdown(details, score: float | None) -> str:
    lines = [f"### {md_escape(Path(details.relpath).name)}", f"`{details.path}`" if "`" not in details.path
             else md_escape(details.path), ""]
    facts = [f"score {score:.3f}" if score is not None else None, f"taken {when(details.taken_at)}",
             f"camera {md_escape(details.camera)}" if details.camera else "camera unknown",
             f"{details.width}×{details.height}" if details.width else None, file_size(details.size)]
    lines.append(" · ".join(f for f in facts if f))
    lines.append("")
    if details.captions:
        lines.append("**Captions**")
        lines += [f"- {md_escape(text)} _({md_escape(source)})_" for text, source in details.captions]
    else:
        lines.append("_No captions._")
    return "\n".join(lines)


def stats_markdown(stats: dict) -> str:
    rows = [("Photos", f"{stats['photos']:,}"), ("Captioned photos", f"{stats.get('photos_with_captions') or 0:,}"),
            ("Captions", f"{stats['captions']:,}"), ("Free-standing texts", f"{stats['texts']:,}"),
            ("Vision model", stats["vision_model"]), ("Text model", stats["text_model"]), ("Dimension", stats["dim"]),
            ("Caption model", stats.get("caption_model") or "none"),
            ("Last indexed", stats.get("last_indexed") or "unknown"),
            ("Indexed folders", ", ".join(stats.get("roots") or []) or "none"), ("Index", stats["db"]),
            ("Vector index", stats.get("vector_index") or "none (exact search)")]
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {md_escape(value)} |" for name, value in rows)


def banner_markdown(stats: dict) -> str:
    model = Path(str(stats["vision_model"]).rstrip("/")).name
    return (f"**{stats['photos']:,} photos** · {stats['captions']:,} captions · model {md_escape(model)} · "
            f"last indexed {md_escape(stats.get('last_indexed') or 'unknown')}")


def missing_markdown(library: Library) -> str:
    return (f"### No photos indexed yet\nGlance has no index at `{library.db}`. Build one (the first run "
            f"downloads the models and takes a while):\n\n```\n{library.build_command()}\n```\n\n"
            f"then press **Reload**.")


def evaluation_markdown(latest, db) -> str:
    command = f"```\n{eval_report.eval_command(db)}\n```"
    if latest is None:
        return f"### Search quality\nNo evaluation yet. Measure recall on your captioned photos with\n\n{command}"
    report = latest.report
    if latest.stale:
        return (f"### Search quality\n⚠️ **The latest evaluation is stale**: it ran {eval_report.ran_at(report)} "
                f"on {md_escape(report.get('vision_model'))} + {md_escape(report.get('text_model'))} at dimension "
                f"{md_escape(report.get('dim'))}, and the index has been rebuilt since. Run it again:\n\n{command}")
    return (f"### Search quality\nLatest evaluation: {eval_report.ran_at(report)} · **{report.get('pairs', '?')} "
            f"pairs** (caption, photo) · {report.get('captioned_photos', '?')} captioned photos among "
            f"{report.get('photos', '?')} · `{eval_report.eval_command(db)}` measures again")


def evaluation_outputs(latest, db) -> tuple:
    """The evaluation's text, table and plot; the figures are hidden when there are none (or stale ones)."""
    rows = eval_report.table_rows(latest.report) if latest and not latest.stale else []
    if not rows:
        return evaluation_markdown(latest, db), gr.update(visible=False), gr.update(visible=False)
    points = pd.DataFrame(eval_report.plot_points(latest.report), columns=["dim", "recall", "metric"])
    return evaluation_markdown(latest, db), gr.update(value=rows, visible=True), gr.update(value=points, visible=True)


def text_rows(hits) -> list[list]:
    return [[round(h.score, 4), h.text, h.source, h.path or "(free-standing text)", route_label(h.routes)]
            for h in hits]


def route_label(routes: dict) -> str:
    """Which routes found a caption, with its rank in each: "keyword 1, caption model 2"."""
    return ", ".join(f"{route.replace('_', ' ')} {rank}" for route, rank in routes.items() if rank is not None)


# --------------------------------------------------------------------------------------- errors

def api_errors(fn):
    """API endpoints: a user error becomes gr.Error with its one-line message, anything else a generic one
    (the traceback goes to the server log, never to the client)."""
    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GlanceError as exc:
            raise gr.Error(one_line(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
    return run


def shown_in_page(on_error):
    """UI events: a user error is written into the page by on_error(message); nothing raises to the browser."""
    def decorate(fn):
        @wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except GlanceError as exc:
                return on_error(one_line(exc))
            except Exception:
                log.exception("unexpected error in %s", fn.__name__)
                return on_error(GENERIC_ERROR)
        return run
    return decorate


# ------------------------------------------------------------------------------------------- the page

class Page:
    """The event handlers of the page. Each returns new values for its outputs; errors become page text."""

    def __init__(self, library: Library, pictures: Pictures):
        self.library = library
        self.pictures = pictures
        self.exports = tempfile.mkdtemp(prefix="glance-exports-")  # private (0700); never inside the library

    # ----- results (search, load more, more like this): gallery, status, view, load-more button, detail panel

    @staticmethod
    def results_error(message: str):
        return [], error_status(message), gr.skip(), gr.update(visible=False), gr.update(visible=False), []

    def show(self, view: View, results, engine):
        view.hits = view.hits + list(results.hits)
        view.has_more = results.has_more
        gallery, grouped = self.tiles(view, engine)
        return gallery, results_status(view, results), view, gr.update(visible=view.has_more), \
            gr.update(visible=False), grouped

    def tiles(self, view: View, engine):
        """The gallery, or with a grouping the day/month groups (label, tiles, their indexes in view.shown())."""
        shown = view.shown()
        tiles = [(self.pictures.thumbnail(engine, hit.id),
                  hit_caption(hit, view.query.browsing, hit.id in view.expanded)) for hit in shown]
        grouped = group_tiles(shown, tiles, view.group) if view.group else []
        return gr.update(value=[] if view.group else tiles, visible=not view.group), grouped

    def search(self, text, image, folder, date_from, date_to, captioned, cutoff, sort="relevance", group="",
               collapse=False):
        filters = make_filters(folder, date_from, date_to, captioned)
        query = Query(as_text(text, "query"), uploaded_file(image), filters=filters, cutoff=bool(cutoff),
                      sort=timeline.check_sort(sort), collapse=bool(collapse))
        engine = self.library.engine()
        view = View(query, group=timeline.check_grouping(group))
        return self.show(view, run_query(engine, query, 0), engine)

    def load_more(self, view: View):
        if view.query is None:
            raise UsageError("search first")
        engine = self.library.engine()
        return self.show(view, run_query(engine, view.query, len(view.hits)), engine)

    def more_like_this(self, view: View):
        if not view.selected:
            raise UsageError("click a photo first")
        hit = next((h for h in view.shown() if h.id == view.selected), None)
        asked = view.query or Query()  # the same filters and cut-off as the results the photo came from
        query = Query(like=view.selected, like_name=hit.relpath if hit else view.selected, filters=asked.filters,
                      cutoff=asked.cutoff, sort=asked.sort, collapse=asked.collapse)
        engine = self.library.engine()
        return self.show(View(query, group=view.group), run_query(engine, query, 0), engine)

    @staticmethod
    def export_error(message: str):
        return gr.update(visible=False), error_status(message)

    def export(self, view: View, fmt: str):
        """The results shown so far as a CSV or JSON file to download (written outside the library)."""
        if not view.hits:
            raise UsageError("search first: there are no results to export")
        folder = Path(tempfile.mkdtemp(prefix="glance-export-", dir=self.exports))  # one per export: names stay simple
        path = folder / f"glance-results.{fmt}"
        path.write_text(export_table(self.library.engine(), view.hits, fmt), encoding="utf-8")
        return gr.update(value=str(path), visible=True), f"{len(view.hits):,} results exported as {fmt.upper()}"

    def judge(self, view: View, verdict: str):
        """👍 or 👎 on the photo in the large view: the same query, refined (Rocchio), run again."""
        if not view.selected:
            raise UsageError("click a photo first")
        asked = view.query or Query()
        liked = tuple(i for i in asked.liked if i != view.selected)
        disliked = tuple(i for i in asked.disliked if i != view.selected)
        if verdict == "liked":
            liked += (view.selected,)
        else:
            disliked += (view.selected,)
        query = replace(asked, liked=liked, disliked=disliked)
        engine = self.library.engine()
        return self.show(View(query, group=view.group), run_query(engine, query, 0), engine)

    def more_like_these(self, view: View):
        """The 👍 photos together as the query."""
        asked = view.query or Query()
        if not asked.liked:
            raise UsageError("give a 👍 to the photos you want more of first")
        query = Query(liked=asked.liked, disliked=asked.disliked, filters=asked.filters, cutoff=asked.cutoff,
                      sort=asked.sort, collapse=asked.collapse)
        engine = self.library.engine()
        return self.show(View(query, group=view.group), run_query(engine, query, 0), engine)

    def step(self, view: View, delta: int):
        """The previous (-1) or next (+1) photo of the results in the large view (the ← and → keys)."""
        shown = view.shown()
        at = next((i for i, hit in enumerate(shown) if hit.id == view.selected), None)
        if at is None:
            raise UsageError("click a photo first")
        return self.select(view, min(max(at + delta, 0), len(shown) - 1))

    def download_original(self, view: View):
        """The open photo's original file, to download: only from inside an indexed folder, behind the login."""
        if not view.selected:
            raise UsageError("click a photo first")
        source = self.library.engine().file_path(view.selected)  # refused outside the indexed folders
        copy = Path(tempfile.mkdtemp(prefix="glance-original-", dir=self.exports)) / source.name
        shutil.copyfile(source, copy)  # gradio serves files from its own folders; the library stays untouched
        return gr.update(value=str(copy), visible=True)

    def where_on_map(self, view: View):
        """A small map of the collection with the open photo marked (its place among similar photos)."""
        found = self.library.engine().collection_map()
        here = next((p for p in found.points if p.id == view.selected), None)
        if here is None:
            return ""
        return map_svg([p for p in even_sample(found.points, MINI_MAP_DRAWN) if p.id != here.id], here=here)

    # ----- the page's address: opening one

    @staticmethod
    def url_error(message: str):
        return (*[gr.skip()] * 9, *Page.results_error(message), gr.skip(), gr.skip())

    def open_url(self, request: gr.Request):
        """The search the address names (URL_KEYS), its photo opened; no parameters: the library, newest first."""
        asked = {key: value for key, value in request.query_params.items() if key in URL_KEYS}
        flag = lambda key: asked.get(key) == "1"  # noqa: E731
        values = (asked.get("q", ""), asked.get("folder", ""), asked.get("from", ""), asked.get("to", ""),
                  flag("captioned"), flag("cutoff"), asked.get("sort", "relevance"), asked.get("group", ""),
                  flag("collapse"))
        if asked.get("saved"):
            opened = self.open_saved(asked["saved"])
            shown, values = opened[:6], (*opened[6:10], False, False, opened[10], "", False)
        else:
            shown = self.search(values[0], None, *values[1:])
        large = info = gr.skip()
        view = shown[2]
        if asked.get("photo"):
            index = next((i for i, hit in enumerate(view.shown()) if hit.id == asked["photo"]), None)
            if index is not None:
                detail, large, info, opened, gallery, grouped = self.select(view, index)
                expanded = opened.expanded != view.expanded  # a collapsed group's tile opens its group
                shown = (gallery if expanded else shown[0], shown[1], opened, shown[3], detail,
                         grouped if expanded else shown[5])
        if not asked:  # leave the boxes alone: someone may have started typing while the page opened
            values = tuple(gr.skip() for _ in values)
        return (*values, *shown, large, info)

    # ----- the Map tab: the picture; a click or a box from it

    def map_picture(self):
        """The map as an SVG of up to MAP_DRAWN points, and a line on what it shows."""
        found = self.library.engine().collection_map()
        if found.method is None:
            return "", "No map yet: `glance index` makes one after its next run."
        points = even_sample(found.points, MAP_DRAWN)  # the browser stays quick
        note = f" ({found.unmapped:,} photos indexed since join it when the map is made again)" if found.unmapped \
            else ""
        return map_svg(points), (f"{len(points):,} of {found.mapped:,} photos, placed by {found.method}{note}. "
                                 "Click a point to open the photo; draw a box for more like those photos.")

    def from_map(self, selection, view: View):
        """The photos a click (one) or a box (several) chose on the map: the Search tab, with their results."""
        ids = [i for i in as_text(selection, "selection").split(",") if i][:MAX_MAP_SELECTION]
        if not ids:
            raise UsageError("click a point or draw a box around some")
        engine = self.library.engine()
        if len(ids) == 1:
            photo = engine.photo(ids[0])
            query = Query(like=photo.id, like_name=photo.relpath)
            shown = self.show(View(query), run_query(engine, query, 0), engine)
            image, note = self.pictures.preview(engine, photo.id)
            info = photo_markdown(photo, None) + (f"\n\n_{md_escape(note)}_" if note else "")
            opened = replace(shown[2], selected=photo.id)
            return (shown[0], shown[1], opened, shown[3], gr.update(visible=True), shown[5], image, info,
                    gr.Tabs(selected="search"))
        query = Query(liked=tuple(ids))
        shown = self.show(View(query), run_query(engine, query, 0), engine)
        return (*shown, gr.skip(), gr.skip(), gr.Tabs(selected="search"))

    def map_preview(self, photo_id):
        """The thumbnail of the point under the pointer, and its name and date."""
        engine = self.library.engine()
        photo = engine.photo(as_text(photo_id, "photo"))
        return self.pictures.thumbnail(engine, photo.id), f"{md_escape(Path(photo.relpath).name)} · " \
            f"{when(photo.taken_at)}"

    @staticmethod
    def map_error(message: str):
        return (*Page.results_error(message), gr.skip(), gr.skip(), gr.skip())

    # ----- the Index tab's caption check: table, status

    @staticmethod
    def check_error(message: str):
        return gr.update(visible=False), error_status(message)

    def check_captions(self):
        report = self.library.engine().check_captions(top=100)
        rows = [[round(c.z, 2), c.path, c.text, " | ".join(c.suggestions)] for c in report.flagged]
        if report.checked < MIN_CAPTIONS:
            return gr.update(visible=False), (f"{report.checked} captions: too few to judge ({MIN_CAPTIONS} or more "
                                              "are needed)")
        summary = f"{len(rows)} of {report.checked:,} captions fit their photo worse than most " \
                  f"(median cosine {report.median:.3f})"
        return gr.update(value=rows, visible=bool(rows)), summary

    # ----- saved searches: the list, and opening one

    @staticmethod
    def saved_error(message: str):
        return gr.skip(), error_status(message)

    def save(self, view: View, name):
        if view.query is None:
            raise UsageError("search first, then save the search")
        engine = self.library.engine()
        saved = save_query(engine, as_text(name, "name"), replace(view.query, saved=None))
        return (gr.update(choices=[s.name for s in engine.saved.all()], value=saved.name),
                f"Saved “{md_escape(saved.name)}”: opening it searches the index as it is then")

    def saved_choices(self):
        try:
            return gr.update(choices=[s.name for s in self.library.engine().saved.all()])
        except GlanceError:  # no index yet, or one in object storage: no list
            return gr.update(choices=[])

    @staticmethod
    def open_error(message: str):
        return (*Page.results_error(message), *[gr.skip()] * 5)

    def open_saved(self, name):
        engine = self.library.engine()
        saved = engine.saved.get(as_text(name, "saved search"))
        query = saved_query(saved)
        shown = self.show(View(query), run_query(engine, query, 0), engine)
        return (*shown, saved.query, saved.folder or "", saved.date_from or "", saved.date_to or "", saved.sort)

    # ----- the large view: panel, image, details, view

    @staticmethod
    def detail_error(message: str):
        return gr.update(visible=True), None, error_status(message), gr.skip(), gr.skip(), gr.skip()

    def select(self, view: View, index):
        """The large view of a tile; a collapsed group's tile also opens the group in the gallery."""
        if isinstance(index, (list, tuple)):
            index = index[0]
        shown = view.shown()
        if not isinstance(index, int) or not 0 <= index < len(shown):
            raise UsageError("that photo is no longer in the results; search again")
        hit = shown[index]
        engine = self.library.engine()
        image, note = self.pictures.preview(engine, hit.id)
        info = photo_markdown(engine.photo(hit.id), hit.score) + exif_markdown(engine.exif(hit.id)) + \
            (f"\n\n_{md_escape(note)}_" if note else "")
        gallery = grouped = gr.skip()
        if hit.duplicates and hit.id not in view.expanded:
            view = replace(view, expanded=view.expanded | {hit.id})
            gallery, grouped = self.tiles(view, engine)
        return gr.update(visible=True), image, info, replace(view, selected=hit.id), gallery, grouped

    # ----- image -> text and caption search: table, status

    @staticmethod
    def texts_error(message: str):
        return [], error_status(message)

    def image_to_text(self, image, top):
        path = uploaded_file(image)
        if path is None:
            raise UsageError("drop, upload or paste an image first")
        hits = self.library.engine().image_to_text(image=upload_bytes(path), top=int(top))
        return text_rows(hits), f"{len(hits)} texts nearest to the image" if hits else "The index holds no texts."

    def caption_search(self, text, top):
        hits = self.library.engine().caption_search(as_text(text, "query"), top=int(top))
        return text_rows(hits), f"{len(hits)} captions and texts" if hits else "No caption or text matches."

    # ----- index state: banner, stats, the latest evaluation's text, table and plot

    def status(self):
        try:
            engine = self.library.engine()
            stats, latest = engine.stats(), eval_report.latest(engine.store)
        except IndexMissing:
            return self.status_error(missing_markdown(self.library))
        except GlanceError as exc:
            return self.status_error(error_status(one_line(exc)))
        except Exception:
            log.exception("unexpected error while reading the index stats")
            return self.status_error(error_status(GENERIC_ERROR))
        return banner_markdown(stats), stats_markdown(stats), *evaluation_outputs(latest, self.library.db)

    @staticmethod
    def status_error(text: str):
        return text, text, "", gr.update(visible=False), gr.update(visible=False)


class Api:
    """The named API endpoints: plain JSON in and out (gr.api derives their types from the signatures)."""

    def __init__(self, library: Library):
        self.library = library

    def search_text(self, query: str, folder: str = "", date_from: str = "", date_to: str = "",
                    with_captions: bool = False, cutoff: bool = False, top: int = PAGE_SIZE, offset: int = 0,
                    sort: str = "relevance", group: str = "", collapse: bool = False) -> dict:
        """Photos for a text query in Glance's grammar (`beach -people +sunset 2:dog`), best first or (sort "date")
        its best matches newest first; group "day" or "month" adds the groups (label, ids) in order; collapse
        makes near-duplicates one hit, the others under its `duplicates`."""
        q = Query(as_text(query, "query"), filters=make_filters(folder, date_from, date_to, with_captions),
                  cutoff=bool(cutoff), sort=as_text(sort, "sort"), collapse=bool(collapse))
        if q.browsing:
            raise UsageError("empty query: type some words (weights above 0); /browse shows the library")
        return self._results(q, top, offset, group)

    def browse(self, folder: str = "", date_from: str = "", date_to: str = "", with_captions: bool = False,
               top: int = PAGE_SIZE, offset: int = 0, group: str = "") -> dict:
        """The library without a query, newest first (taken-at date, else file time), through the filters;
        group "day" or "month" adds the groups (label, ids) in order. Hits carry no score (0)."""
        return self._results(Query(filters=make_filters(folder, date_from, date_to, with_captions)), top, offset,
                             group)

    def search_image(self, image: FileData, query: str = "", folder: str = "", date_from: str = "",
                     date_to: str = "", top: int = PAGE_SIZE, offset: int = 0) -> dict:
        """Photos like an uploaded image (use gradio_client.handle_file), optionally plus a text query."""
        path = uploaded_file(image)
        if path is None:
            raise UsageError("give a query image")
        q = Query(as_text(query, "query"), path, filters=make_filters(folder, date_from, date_to, False))
        return self._results(q, top, offset)

    def more_like_this(self, photo_id: str, folder: str = "", date_from: str = "", date_to: str = "",
                       top: int = PAGE_SIZE, offset: int = 0) -> dict:
        """Photos like an indexed photo (its id from a search); the photo itself is left out."""
        q = Query(like=as_text(photo_id, "photo id"), filters=make_filters(folder, date_from, date_to, False))
        return self._results(q, top, offset)

    def export(self, query: str = "", folder: str = "", date_from: str = "", date_to: str = "",
               with_captions: bool = False, sort: str = "relevance", top: int = PAGE_SIZE, format: str = "csv") -> str:
        """A result list as a CSV or JSON table (path, score, taken_at, captions), as text; no query: the library,
        newest first."""
        fmt = as_text(format, "format")
        q = Query(as_text(query, "query"), filters=make_filters(folder, date_from, date_to, with_captions),
                  sort=as_text(sort, "sort"))
        engine = self.library.engine()
        return export_table(engine, run_query(engine, q, 0, top).hits, fmt)

    def refine(self, query: str = "", liked: list[str] | None = None, disliked: list[str] | None = None,
               folder: str = "", date_from: str = "", date_to: str = "", top: int = PAGE_SIZE,
               offset: int = 0) -> dict:
        """A text query refined by 👍 (`liked`) and 👎 (`disliked`) photo ids, Rocchio's way (query + 0.75 x
        mean(liked) - 0.15 x mean(disliked)); the disliked are left out. No text: more like the liked photos."""
        q = Query(as_text(query, "query"), filters=make_filters(folder, date_from, date_to, False),
                  liked=tuple(liked or ()), disliked=tuple(disliked or ()))
        if q.browsing:
            raise UsageError("give a query, or at least one liked photo")
        return self._results(q, top, offset)

    def saved(self) -> list[dict]:
        """The saved searches (kept in the index folder), by name."""
        return [s.as_json() for s in self.library.engine().saved.all()]

    def save_search(self, name: str, query: str = "", folder: str = "", date_from: str = "", date_to: str = "",
                    with_captions: bool = False, sort: str = "relevance", liked: list[str] | None = None,
                    disliked: list[str] | None = None) -> dict:
        """Save a search under a name (replacing one of that name); no query and no liked photos: the filters
        alone, newest first. It re-runs on the index as it is then (/run_saved)."""
        q = Query(as_text(query, "query"), filters=make_filters(folder, date_from, date_to, with_captions),
                  sort=as_text(sort, "sort"), liked=tuple(liked or ()), disliked=tuple(disliked or ()))
        return save_query(self.library.engine(), as_text(name, "name"), q).as_json()

    def run_saved(self, name: str, top: int = PAGE_SIZE, offset: int = 0) -> dict:
        """A saved search's results, on the index as it is now."""
        results = self.library.engine().run_saved(as_text(name, "name"), top=top, offset=offset)
        return results_json(results)

    def delete_saved(self, name: str) -> dict:
        """Delete a saved search; the remaining ones."""
        engine = self.library.engine()
        engine.saved.delete(as_text(name, "name"))
        return {"saved": [s.name for s in engine.saved.all()]}

    def check_captions(self, top: int = 50) -> dict:
        """The captions that match their own photo worse than most (robust z <= -3), furthest first, each with
        the captions of the nearest captioned photos as suggestions."""
        return caption_report_json(self.library.engine().check_captions(top=top))

    def map(self, folder: str = "", date_from: str = "", date_to: str = "") -> dict:
        """The map of the collection: each photo's x, y in [0, 1] (UMAP or PCA of the vectors, made after
        indexing), through the filters; photos indexed since it was made are counted in "unmapped"."""
        return map_json(self.library.engine().collection_map(make_filters(folder, date_from, date_to, False)))

    def duplicates(self, folder: str = "", date_from: str = "", date_to: str = "") -> dict:
        """Near-duplicate groups across the library (bursts, re-encodes, crops): each group's photo to keep (the
        most pixels) and the others, biggest groups first, with the thresholds used. Nothing is deleted."""
        engine = self.library.engine()
        groups = engine.duplicates(make_filters(folder, date_from, date_to, False))
        return duplicates_json(groups, engine.duplicate_threshold())

    def search_captions(self, query: str, top: int = 10) -> list[dict]:
        """Captions and free-standing texts matching a text, by keyword and by meaning."""
        return [text_hit_json(h) for h in self.library.engine().caption_search(as_text(query, "query"), top=top)]

    def image_to_text(self, image: FileData, top: int = 10) -> list[dict]:
        """Captions and free-standing texts nearest to an uploaded image, with cosine scores."""
        path = uploaded_file(image)
        if path is None:
            raise UsageError("give a query image")
        return [text_hit_json(h) for h in self.library.engine().image_to_text(image=upload_bytes(path), top=top)]

    def photo(self, photo_id: str) -> dict:
        """Everything the index knows about one photo, captions included."""
        engine = self.library.engine()
        photo_id = as_text(photo_id, "photo id")
        return {**photo_json(engine.photo(photo_id)), "exif": dict(engine.exif(photo_id))}

    def stats(self) -> dict:
        """What the index holds: counts, models, folders, last indexed."""
        return stats_json(self.library.engine().stats())

    def _results(self, query: Query, top, offset, group: str = "") -> dict:
        group = timeline.check_grouping(as_text(group, "grouping"))
        results = run_query(self.library.engine(), query, offset, top)
        if not results.hits and results.note:
            raise UsageError(results.note)  # e.g. "no photos match the filters (folder x)"
        return results_json(results, group or None)

    def register(self) -> None:
        for name in API_ENDPOINTS:
            method = getattr(self, name.strip("/"))
            batched = self.library.batching and name in BATCHED_ENDPOINTS
            gr.api(api_errors(method), api_name=name.strip("/"),
                   concurrency_limit=BATCHED_CONCURRENCY if batched else UNBATCHED_CONCURRENCY)


# ------------------------------------------------------------------------------------------- layout

def build_ui(library: Library, pictures: Pictures) -> gr.Blocks:
    page = Page(library, pictures)
    with gr.Blocks(title="Glance", delete_cache=(3600, 86400)) as demo:
        with gr.Row(equal_height=False):
            gr.Markdown("# Glance", elem_id="title")
            reload_button = gr.Button("Reload", size="sm", scale=0, elem_id="reload")
        banner = gr.Markdown("Opening the index…", elem_id="banner")
        view = gr.State(View())
        Api(library).register()  # first, so that the endpoints keep their names (UI events are named after theirs)
        with gr.Tabs() as tabs:
            with gr.Tab("Search", id="search"):
                search_outputs = search_tab(page, view, demo.load)
            with gr.Tab("Map", id="map") as map_page:
                map_tab(page, view, search_outputs, tabs, map_page)
            with gr.Tab("Image → Text", id="image-to-text"):
                image_to_text_tab(page)
            with gr.Tab("Index", id="index") as index:
                index_outputs = [gr.Markdown(elem_id="stats"), *evaluation_section()]
                caption_check_section(page)
        # the tab too: a server outlives indexing and evaluation runs, and opening the tab should show their results
        for trigger in (demo.load, reload_button.click, index.select):
            trigger(page.status, outputs=[banner, *index_outputs], api_visibility="private")
    return demo


def caption_check_section(page: Page) -> None:
    gr.Markdown("### Captions that do not fit their photo\nCaptions that match their own photo worse than most "
                "captions do (3 or more spreads below the median cosine), the furthest first, with the captions "
                "of the nearest photos as suggestions.")
    button = gr.Button("Check captions", size="sm", elem_id="check-captions")
    status = gr.Markdown(elem_id="check-status")
    table = gr.Dataframe(headers=["z", "photo", "caption", "suggestions"], datatype=["number", "str", "str", "str"],
                         interactive=False, wrap=True, visible=False, elem_id="check-table")
    button.click(shown_in_page(Page.check_error)(page.check_captions), outputs=[table, status],
                 api_visibility="private")


def evaluation_section() -> list:
    text = gr.Markdown(elem_id="eval-summary")
    table = gr.Dataframe(headers=eval_report.TABLE_HEADERS, datatype=["number"] + ["str"] * 6, interactive=False,
                         visible=False, elem_id="eval-table")
    plot = gr.LinePlot(x="dim", y="recall", color="metric", title="caption → photo recall against dimension",
                       x_title="dimension", y_title="recall", y_lim=[0, 1], sort="x", visible=False,
                       elem_id="eval-plot")
    return [text, table, plot]


def search_tab(page: Page, view: gr.State, load) -> list:
    """The Search tab; returns what the Map tab writes into: the results' outputs, the large image and its info."""
    with gr.Row():
        with gr.Column(scale=3):
            query = gr.Textbox(label="Search", placeholder="beach -people +sunset 2:dog", elem_id="query",
                               info="words; -word subtracts, +word adds, 2:word weighs twice")
            search_button = gr.Button("Search", variant="primary", elem_id="search-button")
            with gr.Accordion("Filters", open=False, elem_id="filters"):
                with gr.Row():
                    folder = gr.Textbox(label="Folder", placeholder="2023/summer or /photos/2023", elem_id="folder")
                    date_from = gr.Textbox(label="Taken from", placeholder="YYYY[-MM[-DD]]", elem_id="date-from")
                    date_to = gr.Textbox(label="Taken to", placeholder="YYYY[-MM[-DD]]", elem_id="date-to")
                with gr.Row():
                    captioned = gr.Checkbox(label="Only photos with captions", elem_id="captioned")
                    cutoff = gr.Checkbox(label="Hide irrelevant results", elem_id="cutoff")
                    collapse = gr.Checkbox(label="Collapse near-duplicates", elem_id="collapse")
            with gr.Row():
                sort = gr.Radio(SORT_CHOICES, value="relevance", label="Order", elem_id="sort")
                group = gr.Radio(GROUP_CHOICES, value="", label="Group by", elem_id="group")
        image = gr.Image(label="Query image: drop, upload or paste", sources=["upload", "clipboard"],
                         type="filepath", image_mode=None, height=200, scale=1, elem_id="query-image")
    with gr.Row():
        save_name = gr.Textbox(show_label=False, placeholder="name this search", scale=2, elem_id="save-name")
        save_button = gr.Button("Save search", size="sm", scale=1, elem_id="save-search")
        saved_list = gr.Dropdown(choices=[], label="Saved searches", scale=2, elem_id="saved-list")
        open_button = gr.Button("Open", size="sm", scale=1, elem_id="open-saved")
    status = gr.Markdown(elem_id="status")
    gallery = gr.Gallery(label="Results", columns=6, height="auto", allow_preview=False, object_fit="cover",
                         fit_columns=False, buttons=[], elem_id="gallery", interactive=False)
    grouped = gr.State([])  # with a grouping: (label, tiles, indexes) per day or month, drawn below
    with gr.Column(elem_id="groups"):
        @gr.render(inputs=[grouped])
        def draw_groups(groups):
            for number, (label, tiles, indexes) in enumerate(groups):
                gr.Markdown(f"#### {md_escape(label)} · {len(tiles)}", elem_classes=["group-divider"])
                part = gr.Gallery(tiles, show_label=False, columns=6, height="auto", allow_preview=False,
                                  object_fit="cover", fit_columns=False, buttons=[], interactive=False,
                                  elem_classes=["group-gallery"], key=f"group-{number}")
                part.select(select_in_group(indexes), inputs=[view], outputs=large_view, api_visibility="private",
                            scroll_to_output=True)
    with gr.Row():
        load_more = gr.Button("Load more", visible=False, elem_id="load-more")
        more_like_these = gr.Button("More like the 👍 photos", size="sm", elem_id="more-like-these")
        export_csv = gr.Button("Export CSV", size="sm", elem_id="export-csv")
        export_json = gr.Button("Export JSON", size="sm", elem_id="export-json")
    exported = gr.File(label="Exported results", visible=False, interactive=False, elem_id="exported")
    with gr.Column(visible=False, elem_id="detail") as detail:
        with gr.Row():
            large = gr.Image(label="Photo", interactive=False, format="jpeg", height=480, scale=2,
                             elem_id="detail-image", buttons=["fullscreen"])
            with gr.Column(scale=1):
                info = gr.Markdown(elem_id="detail-info")
                more_like = gr.Button("More like this", variant="primary", elem_id="more-like-this")
                with gr.Row():
                    thumbs_up = gr.Button("👍 More of this", size="sm", elem_id="thumbs-up")
                    thumbs_down = gr.Button("👎 Less of this", size="sm", elem_id="thumbs-down")
                with gr.Row():
                    previous = gr.Button("‹ Previous", size="sm", elem_id="prev-photo")
                    following = gr.Button("Next ›", size="sm", elem_id="next-photo")
                close = gr.Button("Close (Esc)", size="sm", elem_id="close-detail")
                download = gr.Button("Download original", size="sm", elem_id="download-original")
                original = gr.File(label="Original", visible=False, interactive=False, elem_id="original-file")
                mini_map = gr.HTML(elem_id="detail-map")

    large_view = [detail, large, info, view, gallery, grouped]
    shown = [gallery, status, view, load_more, detail, grouped]
    search_inputs = [query, image, folder, date_from, date_to, captioned, cutoff, sort, group, collapse]
    run_search = shown_in_page(Page.results_error)(page.search)
    for trigger in (search_button.click, query.submit, image.upload, sort.input, group.input, collapse.input):
        # preprocess=False: the upload reaches Engine.check_image as it is, so a corrupt file gets its message
        trigger(run_search, inputs=search_inputs, outputs=shown, preprocess=False, api_visibility="private")
    load_more.click(shown_in_page(Page.results_error)(page.load_more), inputs=[view], outputs=shown,
                    api_visibility="private")
    more_like.click(shown_in_page(Page.results_error)(page.more_like_this), inputs=[view], outputs=shown,
                    api_visibility="private", scroll_to_output=True)
    for button, verdict in ((thumbs_up, "liked"), (thumbs_down, "disliked")):
        button.click(shown_in_page(Page.results_error)(lambda state, verdict=verdict: page.judge(state, verdict)),
                     inputs=[view], outputs=shown, api_visibility="private")
    more_like_these.click(shown_in_page(Page.results_error)(page.more_like_these), inputs=[view], outputs=shown,
                          api_visibility="private", scroll_to_output=True)

    select = shown_in_page(Page.detail_error)(page.select)

    def on_select(state: View, evt: gr.SelectData):
        return select(state, evt.index)

    def select_in_group(indexes: list[int]):
        def on_group_select(state: View, evt: gr.SelectData):
            position = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            return select(state, indexes[position] if isinstance(position, int) and 0 <= position < len(indexes)
                          else -1)
        return on_group_select

    opening = gallery.select(on_select, inputs=[view], outputs=large_view, api_visibility="private",
                             scroll_to_output=True)
    openings = [opening]
    for button, delta in ((previous, -1), (following, 1)):
        openings.append(button.click(shown_in_page(Page.detail_error)(lambda state, d=delta: page.step(state, d)),
                                     inputs=[view], outputs=large_view, api_visibility="private"))
    for event in openings:  # where the photo sits on the map, and no stale download link
        event.then(shown_in_page(lambda message: ("", gr.update(visible=False)))(
            lambda state: (page.where_on_map(state), gr.update(visible=False))), inputs=[view],
            outputs=[mini_map, original], api_visibility="private")
    download.click(shown_in_page(Page.export_error)(lambda state: (page.download_original(state), gr.skip())),
                   inputs=[view], outputs=[original, info], api_visibility="private")
    save_button.click(shown_in_page(Page.saved_error)(page.save), inputs=[view, save_name],
                      outputs=[saved_list, status], api_visibility="private")
    open_button.click(shown_in_page(Page.open_error)(page.open_saved), inputs=[saved_list],
                      outputs=[*shown, query, folder, date_from, date_to, sort], api_visibility="private")
    load(page.saved_choices, outputs=[saved_list], api_visibility="private")
    for button, fmt in ((export_csv, "csv"), (export_json, "json")):
        button.click(shown_in_page(Page.export_error)(lambda state, fmt=fmt: page.export(state, fmt)), inputs=[view],
                     outputs=[exported, status], api_visibility="private")
    close.click(lambda: gr.update(visible=False), outputs=[detail], api_visibility="private")
    # the page's state lives in its URL (a search can be bookmarked or shared; the login still applies): the
    # address opens the search it names, or with nothing asked the library itself, newest first
    url_inputs = [query, folder, date_from, date_to, captioned, cutoff, sort, group, collapse]
    load(shown_in_page(Page.url_error)(page.open_url), outputs=[*url_inputs, *shown, large, info],
         api_visibility="private")
    address = gr.Textbox(show_label=False, container=False, elem_id="address")  # hidden (assets/glance.css)
    view.change(page_address, inputs=[view], outputs=[address], api_visibility="private")
    address.change(None, inputs=[address], js="(a) => { if (a) history.replaceState(null, '', a); return a; }",
                   api_visibility="private")
    return [*shown, large, info]


def map_tab(page: Page, view: gr.State, search_outputs: list, tabs: gr.Tabs, tab: gr.Tab) -> None:
    status = gr.Markdown("Opening the map…", elem_id="map-status")
    with gr.Row():
        picture = gr.HTML(elem_id="map")
        with gr.Column(scale=0, min_width=220):
            preview = gr.Image(label="Under the pointer", interactive=False, height=200, width=200,
                               elem_id="map-preview", buttons=[])
            preview_name = gr.Markdown(elem_id="map-preview-name")
    selection = gr.Textbox(show_label=False, container=False, elem_id="map-selection")  # filled by assets/glance.js
    go = gr.Button("Show", elem_id="map-go")
    hovered = gr.Textbox(show_label=False, container=False, elem_id="map-hover")  # the same, on hover
    peek = gr.Button("Peek", elem_id="map-peek")
    peek.click(shown_in_page(lambda message: (None, error_status(message)))(page.map_preview), inputs=[hovered],
               outputs=[preview, preview_name], api_visibility="private", trigger_mode="always_last")
    tab.select(shown_in_page(lambda message: ("", error_status(message)))(page.map_picture),
               outputs=[picture, status], api_visibility="private")
    go.click(shown_in_page(Page.map_error)(page.from_map), inputs=[selection, view],
             outputs=[*search_outputs, tabs], api_visibility="private", scroll_to_output=True)


def image_to_text_tab(page: Page) -> None:
    gr.Markdown("Drop an image to find the captions and texts in the index that describe it best, "
                "or search the captions by text.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image: drop, upload or paste", sources=["upload", "clipboard"], type="filepath",
                             image_mode=None, height=240, elem_id="i2t-image")
            image_button = gr.Button("Find texts for the image", variant="primary", elem_id="i2t-button")
        with gr.Column():
            text = gr.Textbox(label="Search captions", placeholder="receipt", elem_id="caption-query")
            text_button = gr.Button("Search captions", elem_id="caption-button")
            top = gr.Slider(1, 50, value=10, step=1, label="How many", elem_id="i2t-top")
    status = gr.Markdown(elem_id="i2t-status")
    table = gr.Dataframe(headers=["score", "text", "source", "photo", "found by"],
                         datatype=["number", "str", "str", "str", "str"],
                         interactive=False, wrap=True, elem_id="i2t-table")
    outputs = [table, status]
    for trigger in (image.upload, image_button.click):
        trigger(shown_in_page(Page.texts_error)(page.image_to_text), inputs=[image, top], outputs=outputs,
                preprocess=False, api_visibility="private")
    for trigger in (text.submit, text_button.click):
        trigger(shown_in_page(Page.texts_error)(page.caption_search), inputs=[text, top], outputs=outputs,
                api_visibility="private")


# ------------------------------------------------------------------------------------------- launch

def launch(demo: gr.Blocks, host: str, port: int, auth) -> None:
    theme = gr.themes.Default(primary_hue="blue", font=["system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: the page works offline
    # run_history=False: gradio's run-history routes answer without the login and call the Hugging Face Hub
    # with the host's HF_TOKEN, and a header can make it upload every query to a bucket.
    demo.launch(server_name=host, server_port=port, auth=auth, share=False, prevent_thread_lock=True, quiet=True,
                max_threads=MAX_THREADS,
                show_error=False, max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False, mcp_server=False, pwa=False,
                enable_monitoring=False, strict_cors=True, footer_links=["api"], theme=theme, run_history=False,
                css_paths=[css for css in [ASSETS / "glance.css"] if css.is_file()],
                head_paths=[script for script in [ASSETS / "glance.js"] if script.is_file()],
                auth_message="Glance: log in to search the photos.",
                app_kwargs={"middleware": [Middleware(LoginRequired), Middleware(RefuseRemoteFiles)],
                            "openapi_url": None})  # FastAPI's own schema would list every route to anyone


def warn_if_exposed(host: str, auth) -> None:
    if host not in ("127.0.0.1", "localhost", "::1") and not auth:
        print(f"{PROGRAM}: warning: serving on {host} without --auth: anyone who can reach this machine can "
              f"search and see your photos; add --auth USER:PASS", file=sys.stderr)


def main(args: argparse.Namespace) -> None:
    """Serve until Ctrl-C or SIGTERM. `args` carries the flags of search.server_options (`glance serve`)."""
    with exit_on_user_error():
        server_options.check(args)
        serve(args)


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup checks, one line each
    warn_if_exposed(args.host, args.auth)
    library = Library(args.db, args.vision_model, args.text_model, args.precision, batching=args.batching)
    library.start_loading()
    pictures = Pictures()
    loopback = LoopbackServer(library)  # `glance search` on this index asks us instead of loading the models
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that cleanup runs when a service manager stops us
    try:
        demo = build_ui(library, pictures)
        try:
            launch(demo, args.host, args.port, args.auth)
        except OSError as exc:  # e.g. the port is taken
            raise UsageError(f"cannot serve on {args.host}:{args.port}: {one_line(exc)}") from None
        print(f"Glance: serving {library.db} on http://{args.host}:{args.port}/ (loading the models)", flush=True)
        report_startup(library, demo)
        loopback.start()
        print("Glance: ready", flush=True)
        demo.block_thread()
    finally:
        loopback.stop()
        pictures.remove()
        library.stop()


def report_startup(library: Library, demo: gr.Blocks) -> None:
    """A model or index that cannot be used ends the app with one line (exit 2), like the command-line tools."""
    error = library.wait_started()
    if error is None:
        return
    demo.close()
    if isinstance(error, (GlanceError, OSError, KeyboardInterrupt, SystemExit)):
        raise error  # main's exit_on_user_error reports it
    print(f"{PROGRAM}: error: could not open the index at {library.db}: {type(error).__name__}: {one_line(error)}",
          file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main(ARGS)
