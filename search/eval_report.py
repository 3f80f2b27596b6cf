"""The index's latest `glance eval` report: saved beside the tables (store/extras.py), read back for the page.

A server outlives evaluation runs, and an evaluation takes seconds to minutes, so the page shows the saved figures
instead of computing them. Reports grow (more model sections, vector-index rows): the whole report is saved as
`glance eval --json` prints it, and the readers here take the keys they know and ignore the rest; a missing
figure shows as a blank, never as an error.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core import location
from store import MODEL_KEYS, Store

REPORT = "eval"  # <index>/extras/eval.json
EVALUATED_AT = "evaluated_at"
TABLE_HEADERS = ["dim", "bytes/photo", "caption→photo recall@1", "recall@5", "recall@10", "MRR",
                 "photo→caption recall@5"]
TABLE_CELLS = (("caption_to_photo", "recall@1"), ("caption_to_photo", "recall@5"), ("caption_to_photo", "recall@10"),
               ("caption_to_photo", "mrr"), ("photo_to_caption", "recall@5"))
PLOTTED = ("recall@1", "recall@5", "recall@10")  # caption -> photo, the way search is used
MISSING = "–"


@dataclass(frozen=True)
class Latest:
    report: dict
    stale: bool  # the index was rebuilt with other models (or another dimension) after this report


def stamped(report: dict, started: datetime) -> dict:
    return {EVALUATED_AT: started.astimezone(timezone.utc).isoformat(timespec="seconds"), **report}


def save(db: str | Path | None, report: dict) -> str | None:
    """Keep `report` as the index's latest evaluation; the reason it could not be saved, or None.

    No writer lock: the report is no part of the photo library and is replaced whole (store/extras.py), so an
    indexing run and an evaluation never see each other's halves."""
    store = Store(db)
    try:
        store.write_report(REPORT, report)
    except OSError as exc:
        return f"{exc.filename or store.path}: {exc.strerror or exc}"
    except location.StorageError as exc:  # an index in a bucket that refuses the write
        return str(exc)
    return None


def latest(store: Store) -> Latest | None:
    """The saved report and whether it still describes the index; None before the first `glance eval`."""
    try:
        report = store.read_report(REPORT)
    except OSError:  # an extras folder this server may not read: as if no evaluation had been saved
        return None
    if not isinstance(report, dict):
        return None
    return Latest(report, is_stale(report, store.meta()))


def is_stale(report: dict, meta: dict) -> bool:
    """The figures measure the stored photo and caption vectors, which only the model keys determine."""
    return any(report.get(key) != meta.get(key) for key in MODEL_KEYS)


def eval_command(db: str | Path) -> str:
    """With --db always: a server's index is often not the default one (--db, $GLANCE_DB)."""
    return f"glance eval --db {shlex.quote(str(db))}"


def ran_at(report: dict) -> str:
    """When the report was made, as the page shows it ("2024-05-01 10:00 UTC"), or "unknown"."""
    try:
        moment = datetime.fromisoformat(str(report.get(EVALUATED_AT)))
    except ValueError:
        return "unknown"
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo is not None else "")


def dim_rows(report: dict) -> list[dict]:
    rows = report.get("rows")
    return [r for r in rows if isinstance(r, dict) and _is_number(r.get("dim"))] if isinstance(rows, list) else []


def value(row: dict, direction: str, metric: str) -> float | None:
    figures = row.get(direction)
    figure = figures.get(metric) if isinstance(figures, dict) else None
    found = figure.get("value") if isinstance(figure, dict) else None
    return float(found) if _is_number(found) else None


def table_rows(report: dict) -> list[list]:
    """One line per dimension: dim, bytes/photo, then TABLE_CELLS to three decimals ("–" where absent)."""
    return [[int(row["dim"]), _count(row.get("bytes_per_photo")),
             *(_decimal(value(row, direction, metric)) for direction, metric in TABLE_CELLS)]
            for row in dim_rows(report)]


def plot_points(report: dict) -> list[dict]:
    """caption -> photo recall@1/5/10 against dimension, in long form (one point a record), smallest dim first."""
    return [{"dim": int(row["dim"]), "recall": found, "metric": metric}
            for row in sorted(dim_rows(report), key=lambda r: r["dim"]) for metric in PLOTTED
            if (found := value(row, "caption_to_photo", metric)) is not None]


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _decimal(x: float | None) -> str:
    return MISSING if x is None else f"{x:.3f}"


def _count(x) -> str:
    return f"{int(x):,}" if _is_number(x) else MISSING
