"""One rclip indexing run, for bench/peer_rclip.py; runs inside rclip's own venv (Python >= 3.12, no torch).

It uses rclip's real code: its DB, Model and RClip.ensure_index (the indexing that runs before every search),
with RCLIP_DATADIR (set by the caller) holding the exported model files where rclip looks for them. The setup is
init_rclip's, minus the search, and with the ONNX session created before the clock starts (as the Glance run
loads its model first). Prints one JSON line: seconds, images indexed, model-only images/s, peak RSS.

    RCLIP_DATADIR=... python bench/rclip_child.py PHOTO_FOLDER --batch-size 8 --images 200
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import time
from pathlib import Path

import numpy as np
from rclip import db, model
from rclip.main import RClip
from rclip.utils import helpers
from rclip.utils.preprocess import IMAGE_SIZE, preprocess


def model_only(session, folder: Path, batch: int, images: int) -> float:
    """images/s of ONNX Runtime alone on rclip-preprocessed photos, in batches of `batch`, over `images` images."""
    files = sorted(folder.glob("*.jpg"))[:batch]
    tensors = [preprocess(helpers.read_image(str(f), min_side=IMAGE_SIZE)) for f in files]
    while len(tensors) < batch:
        tensors += tensors[: batch - len(tensors)]
    stacked = np.stack(tensors)
    session.run(None, {"input": stacked})  # warm-up
    done, start = 0, time.perf_counter()
    while done < images:
        n = min(batch, images - done)
        session.run(None, {"input": stacked[:n]})
        done += n
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--batch-size", type=int, default=8, help="rclip's -b (its default: 8)")
    parser.add_argument("--images", type=int, required=True, help="how many images model-only runs over")
    args = parser.parse_args()
    folder = args.folder.resolve()

    datadir = helpers.get_app_datadir()  # RCLIP_DATADIR
    database = db.DB(datadir / "db.sqlite3")
    model_instance = model.Model()
    model_instance.ensure_downloaded()  # finds the files in place, so downloads nothing
    rclip = RClip(model_instance=model_instance, database=database, indexing_batch_size=args.batch_size,
                  exclude_dirs=None)
    session = model_instance._session_visual_index  # created here instead of inside the first batch
    forward_before = model_only(session, folder, args.batch_size, args.images)
    start = time.perf_counter()
    rclip.ensure_index(str(folder))
    seconds = time.perf_counter() - start
    forward = max(forward_before, model_only(session, folder, args.batch_size, args.images))
    rclip.close()
    database.close()
    with sqlite3.connect(datadir / "db.sqlite3") as con:
        indexed = con.execute("SELECT COUNT(*) FROM images WHERE deleted IS NULL").fetchone()[0]
    print(json.dumps({
        "seconds": seconds, "indexed": indexed, "model_only_images_per_s": forward, "batch_size": args.batch_size,
        "decode_threads": rclip._image_loading_workers, "model_threads": session.get_session_options().intra_op_num_threads,
        "precision": "fp32", "runtime": f"onnxruntime {__import__('onnxruntime').__version__}",
        "peak_rss_mb_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pid": os.getpid(),
    }))


if __name__ == "__main__":
    main()
