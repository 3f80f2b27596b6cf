"""One short text query on one thread: the precision `auto` chooses vs held bf16 weights vs bf16 autocast over fp32
weights vs fp32.

The full-size Nomic text v1.5 architecture with random weights (models.synthetic.write_text, size "full") is
loaded three times: with precision "auto" (on a CPU with int8 units: int8 weights and per-call int8 inputs, where
the probe allows), with "bf16" (bf16 weights held for the linear layers) and with "fp32"; the fp32 model also
runs under bf16 autocast, the path every query took before. The paths take turns on the same texts (query i on
each before query i+1), so a change in load hits all of them alike. Cosines are to the fp32 embedding of the
same text.

    python bench/query_embed.py [--queries 60] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nomic-tiny"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

QUERIES = ["dog", "sunset at the beach", "my passport", "birthday cake with candles", "snow on mountains",
           "a red car", "whiteboard notes", "cat sleeping on a sofa", "receipt", "kids playing football",
           "fireworks over the river", "a bowl of ramen", "old family photo", "the eiffel tower at night",
           "a foggy forest path in autumn", "screenshot of a chat", "wedding", "bicycle", "pizza", "selfie"]


def bench_query_embed(text_dir: Path, queries: int = 60) -> dict:
    """query_embed_ms_p50 (auto), query_embed_{bf16_weights,autocast,fp32}_ms_p50, cosines, ratios."""
    import torch

    from models.encoders import Precision, TextEmbedder

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        auto = TextEmbedder(str(text_dir), precision="auto")
        held = TextEmbedder(str(text_dir), precision="bf16")
        exact = TextEmbedder(str(text_dir), precision="fp32")
        autocast = Precision(torch.bfloat16)

        def fp32(texts):
            return exact.embed_queries(texts)

        def under_autocast(texts):
            exact.precision = autocast
            try:
                return exact.embed_queries(texts)
            finally:
                exact.precision = Precision(torch.float32)

        paths = {"auto": auto.embed_queries, "bf16_weights": held.embed_queries, "autocast": under_autocast,
                 "fp32": fp32}
        times = {name: [] for name in paths}
        vectors = {name: [] for name in paths}
        for i in range(-2, queries):  # two warm-up rounds, not counted
            texts = [f"{QUERIES[i % len(QUERIES)]} {i}"]
            for name, embed in paths.items():
                start = time.perf_counter()
                out = embed(texts)
                if i >= 0:
                    times[name].append(time.perf_counter() - start)
                    vectors[name].append(out[0])
    finally:
        torch.set_num_threads(before)
    reference = torch.stack(vectors["fp32"])
    row = {"threads": 1, "queries": queries, "auto_path": auto.precision.path,
           "auto_probe_cosine": auto.precision.cosine_to_fp32, "bf16_path": held.precision.path}
    for name in paths:
        key = "query_embed_ms_p50" if name == "auto" else f"query_embed_{name}_ms_p50"
        row[key] = float(np.percentile(np.asarray(times[name]) * 1000, 50))
        row[key.replace("p50", "p95")] = float(np.percentile(np.asarray(times[name]) * 1000, 95))
        cosine = torch.nn.functional.cosine_similarity(torch.stack(vectors[name]), reference)
        row[f"{name}_cosine_to_fp32_min"] = cosine.min().item()
    row["autocast_over_auto"] = row["query_embed_autocast_ms_p50"] / row["query_embed_ms_p50"]
    row["bf16_weights_over_auto"] = row["query_embed_bf16_weights_ms_p50"] / row["query_embed_ms_p50"]
    print(f"  one short query, 1 thread, {queries} queries each, taking turns:\n"
          f"    auto ({row['auto_path']:<13})  p50 {row['query_embed_ms_p50']:6.1f} ms   "
          f"p95 {row['query_embed_ms_p95']:6.1f} ms   min cosine to fp32 {row['auto_cosine_to_fp32_min']:.6f}\n"
          f"    bf16 ({row['bf16_path']:<13})  p50 {row['query_embed_bf16_weights_ms_p50']:6.1f} ms   "
          f"p95 {row['query_embed_bf16_weights_ms_p95']:6.1f} ms   "
          f"min cosine to fp32 {row['bf16_weights_cosine_to_fp32_min']:.6f}\n"
          f"    bf16 autocast         p50 {row['query_embed_autocast_ms_p50']:6.1f} ms   "
          f"p95 {row['query_embed_autocast_ms_p95']:6.1f} ms   min cosine to fp32 {row['autocast_cosine_to_fp32_min']:.6f}\n"
          f"    fp32                  p50 {row['query_embed_fp32_ms_p50']:6.1f} ms   "
          f"p95 {row['query_embed_fp32_ms_p95']:6.1f} ms\n"
          f"    autocast / auto: {row['autocast_over_auto']:.2f}x   "
          f"bf16 weights / auto: {row['bf16_weights_over_auto']:.2f}x", flush=True)
    return row



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=60, help="measured queries per path (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    args = parser.parse_args()
    import torch

    from models.device import cpu_name
    from models.encoders import cpu_has_bf16, cpu_has_int8
    from models.synthetic import write_text

    work = Path(tempfile.mkdtemp(prefix="glance-bench-"))
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, bf16 units: {cpu_has_bf16()}, int8 units: {cpu_has_int8()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    try:
        text_dir = write_text(work / "nomic-embed-text-v1.5", size="full", dtype=torch.float32, template=TEMPLATE)
        report = bench_query_embed(text_dir, args.queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_average_end"] = os.getloadavg()[0]
    print(f"load average {report['load_average_end']:.2f} at the end")
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
