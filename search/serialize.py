"""The JSON form of search results: one serializer per kind, shared by the web API and `--json` on the CLI.

Photo paths go under the key "file", never "path": gradio_client takes any {"path": ...} in a result for a
file to download.
"""
from __future__ import annotations

import json
from datetime import datetime

from . import timeline


def hit_json(hit) -> dict:
    return {"id": hit.id, "file": hit.path, "root": hit.root, "relpath": hit.relpath, "score": round(hit.score, 6),
            "taken_at": iso(hit.taken_at), "camera": hit.camera, "width": hit.width, "height": hit.height,
            "has_caption": hit.has_caption, "file_time": iso(hit.file_time), "routes": hit.routes or None,
            **({"duplicates": [hit_json(d) for d in hit.duplicates]} if hit.duplicates else {})}


def map_json(collection_map) -> dict:
    """/map and `glance map --json`: the method, the counts and every point (x, y in [0, 1])."""
    return {"method": collection_map.method, "mapped": collection_map.mapped, "unmapped": collection_map.unmapped,
            "points": [{"id": p.id, "x": round(p.x, 5), "y": round(p.y, 5), "file": p.path, "date": iso(p.date)}
                       for p in collection_map.points]}


def caption_report_json(report) -> dict:
    """`glance check-captions --json` and /check_captions."""
    def number(x):
        return None if x != x else round(x, 6)  # NaN: too few captions to judge

    return {"checked": report.checked, "median_cosine": number(report.median), "mad": number(report.mad),
            "flagged": [{"text": c.text, "source": c.source, "image_id": c.image_id, "file": c.path,
                         "cosine": round(c.cosine, 6), "z": round(c.z, 3), "suggestions": list(c.suggestions)}
                        for c in report.flagged]}


def duplicates_json(groups, threshold) -> dict:
    """`glance duplicates --json` and /duplicates: each group's photo to keep and its near-duplicates."""
    return {"groups": [{"keep": hit_json(g), "duplicates": [hit_json(d) for d in g.duplicates]} for g in groups],
            "photos_in_groups": sum(1 + len(g.duplicates) for g in groups),
            "threshold": {"cosine": threshold.cosine, "layout": threshold.layout, "precision": threshold.precision,
                          "recall": threshold.recall}}


def text_hit_json(hit) -> dict:
    return {"text": hit.text, "score": round(hit.score, 6),
            "cosine": None if hit.cosine is None else round(hit.cosine, 6), "routes": hit.routes,
            "source": hit.source, "image_id": hit.image_id, "file": hit.path or None}


def results_json(results, group: str | None = None) -> dict:
    """A page of results; with `group` ("day" or "month") also its groups in order: label, ids (search/timeline.py)."""
    answer = {"hits": [hit_json(h) for h in results.hits], "has_more": results.has_more, "offset": results.offset,
              "total_considered": results.total_considered, "dropped": results.dropped, "sort": results.sort}
    if group:
        answer["groups"] = groups_json(results.hits, group)
    return answer


def groups_json(hits, group: str) -> list[dict]:
    """The hits' day or month groups, in order: [{"label": "2024-05-03", "ids": [...]}, ...]."""
    return [{"label": label, "ids": [h.id for h in members]} for label, members in timeline.groups(hits, group)]


def photo_json(details) -> dict:
    return {"id": details.id, "file": details.path, "root": details.root, "relpath": details.relpath,
            "size": details.size, "mtime": iso(details.mtime), "sha256": details.sha256, "width": details.width,
            "height": details.height, "taken_at": iso(details.taken_at), "camera": details.camera,
            "has_caption": details.has_caption, "indexed_at": iso(details.indexed_at),
            "captions": [{"text": text, "source": source} for text, source in details.captions]}


def stats_json(stats: dict) -> dict:
    """The engine's stats as they are; anything JSON has no type for (dates, paths) becomes its str()."""
    return json.loads(json.dumps(stats, default=str))


def iso(moment) -> str | None:
    return moment.isoformat() if isinstance(moment, datetime) else moment
