"""What `glance tune` costs on this CPU: wall time and peak memory of the adapter and of LoRA, at 1k and 10k photos.

Models: full-size Nomic Embed Vision/Text v1.5 (768-d, 12 layers; the text tower is the 137M-parameter one LoRA
runs) with random weights, written in the official Hub layout by models/synthetic.py (offline: no real weights
can be downloaded). Random weights cost what real ones cost (the same FLOPs and memory), but they know nothing,
so the recall figures below say that training learns something on this data, not what it would learn on yours.

The index is written directly through the Store API (embedding 10k photos with the full vision model would take
about half an hour on 2 cores, and tuning never runs the vision model): one caption per photo, generated from five
attributes ("two red dogs on the beach at night"; at 10k about 70% of the texts are distinct, the rest shared, as
in real libraries). Each attribute value has a random direction in the 768-d space; a photo vector is the weighted
sum of its values' directions plus noise, so photos and captions gather around shared class centroids.
  adapter runs: caption vectors are built the same way from the caption's attributes, through a fixed random
                linear distortion (the gap between the text and image spaces) plus noise, so the identity is a
                fair but beatable start, a linear map has something to learn and early stopping behaves as on
                real data;
  LoRA runs:    caption vectors are what the full-size text model embeds for the caption texts (LoRA trains that
                model, and its base must be what the index holds); that embedding is timed on its own, as what
                indexing those captions costs (precision='auto', as the indexer runs it).

Each `glance tune ... --json` runs in a fresh child process (bench/tune_cost.py --child, which runs glance's own
CLI in-process with timers around the trainer's phases) and reports its peak RSS as VmHWM, the high-water mark of
the child's own memory map (this parent holds torch and a text model; rusage would start from the parent's size).
  adapter: the defaults (at most MAX_EPOCHS; early stopping once the validation MRR has not improved for
           PATIENCE_STEPS optimiser steps, and at least MIN_PATIENCE_EPOCHS epochs: search/tune.py);
  lora:    --epochs E, a few only (default 2 at 1k, 1 at 10k): every epoch runs the text model forward and
           backward on every training caption, and from epoch 2 on forward again over all of them to mine hard
           negatives. A full run is never pretended: the table gives seconds per epoch and what the fewest and the
           most epochs a default run can take (its patience to MAX_EPOCHS) would cost at that rate.
LoRA at 10k runs one epoch only, and still takes ~10 of the ~14 minutes of a default run on 2 cores (load average
~2): --lora-sizes 1000 leaves it out.

Run from the repo root:
    python bench/tune_cost.py                         # adapter and LoRA at 1k and 10k (~14 min on 2 cores)
    python bench/tune_cost.py --skip-lora --json      # the adapter only (~1 min)
    python bench/tune_cost.py --sizes 10000 --skip-lora --profile   # plus cProfile of each adapter run
    python bench/tune_cost.py --lora-sizes 1000 --lora-epochs 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
TEMPLATE = REPO / "tests" / "fixtures" / "nomic-tiny"  # the official layout (configs, tokenizer) to write into
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the network

import numpy as np  # noqa: E402

DIM = 768
# (values, weight in a photo vector, weight in a caption vector): what a photo shows strongly (its subject) and
# what a caption names that a photo barely shows (the time of day) differ, as in real captioned photos.
ATTRIBUTES = {
    "count": (("one", "two", "three"), 0.4, 0.6),
    "colour": (("red", "blue", "green", "yellow", "black", "white", "brown", "grey"), 0.6, 0.8),
    "subject": (("dog", "cat", "car", "bicycle", "boat", "horse", "bird", "tree", "house", "tent", "kite", "duck"),
                1.0, 1.0),
    "place": (("on the beach", "in the park", "on the street", "in the garden", "in the kitchen", "in the forest",
               "by the lake", "on the mountain", "in the city", "in the field"), 0.8, 0.8),
    "time": (("in the morning", "in the evening", "at night", "in winter", "in summer"), 0.4, 0.6),
}
PHOTO_NOISE = 6.0  # norm of a photo's own noise, next to ~1.5 for its attributes: retrieval is hard
CAPTION_NOISE = 4.0
GAP = 0.8  # caption side: (1 - GAP^2)^0.5 of the identity plus GAP of a random rotation
DEFAULT_SIZES = "1000,10000"
DEFAULT_LORA_SIZES = "1000,10000"


# ----- the library ---------------------------------------------------------------------------------------------
def library(count: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(caption texts, photo vectors, adapter caption vectors): photo i's caption is texts[i]."""
    rng = np.random.default_rng(seed)
    space = np.random.default_rng(1234)  # the attribute directions and the gap: one space for every size
    directions = {name: _unit(space.normal(size=(len(values), DIM))) for name, (values, _, _) in ATTRIBUTES.items()}
    rotation, _ = np.linalg.qr(space.normal(size=(DIM, DIM)))
    gap = (1 - GAP ** 2) ** 0.5 * np.eye(DIM) + GAP * rotation
    picks = {name: rng.integers(0, len(values), count) for name, (values, _, _) in ATTRIBUTES.items()}
    photo = sum(w * directions[name][picks[name]] for name, (_, w, _) in ATTRIBUTES.items())
    photo = photo + PHOTO_NOISE * rng.normal(size=(count, DIM)) / DIM ** 0.5
    said = sum(w * directions[name][picks[name]] for name, (_, _, w) in ATTRIBUTES.items())
    caption = said @ gap.T + CAPTION_NOISE * rng.normal(size=(count, DIM)) / DIM ** 0.5
    texts = [caption_text(*(ATTRIBUTES[name][0][picks[name][i]] for name in ATTRIBUTES)) for i in range(count)]
    return texts, _unit(photo), _unit(caption)


def caption_text(count: str, colour: str, subject: str, place: str, when: str) -> str:
    return f"{count} {colour} {subject if count == 'one' else subject + 's'} {place} {when}"


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def write_index(db: Path, models: dict, texts: list[str], photos: np.ndarray, captions: np.ndarray) -> None:
    """Photo i as /library/{i:05d}.jpg with one sidecar caption texts[i], through the Store API."""
    import pyarrow as pa

    from models import PREPROCESS_VERSION
    from store import (DIM as DIM_KEY, MODEL_VERSION, PREPROCESS_VERSION_KEY, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
                       TEXT_MODEL, VISION_MODEL, Store, caption_id, captions_schema, image_id, images_schema)

    def vectors(a: np.ndarray) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float32()), a.shape[1])

    ids = [image_id("/library", f"{i:05d}.jpg") for i in range(len(texts))]
    store = Store(db)
    with store.writing():
        store.create_tables(DIM)
        store.write_meta({VISION_MODEL: models["vision"], TEXT_MODEL: models["text"], MODEL_VERSION: "v1.5",
                          DIM_KEY: DIM, PREPROCESS_VERSION_KEY: PREPROCESS_VERSION,
                          SCHEMA_VERSION_KEY: SCHEMA_VERSION})
        schema = images_schema(DIM)
        store.upsert_photos(pa.table({
            "id": ids, "root": ["/library"] * len(ids), "relpath": [f"{i:05d}.jpg" for i in range(len(ids))],
            **{f.name: pa.nulls(len(ids), f.type) for f in schema if f.name not in ("id", "root", "relpath",
                                                                                  "has_caption", "vector")},
            "has_caption": [True] * len(ids), "vector": vectors(photos)}).select(schema.names).cast(schema))
        store.upsert_captions(pa.table({
            "id": [caption_id(i, "sidecar", t) for i, t in zip(ids, texts)], "image_id": ids, "text": texts,
            "source": ["sidecar"] * len(ids), "vector": vectors(captions)}, schema=captions_schema(DIM)))
        store.publish()


def write_models(root: Path) -> dict:
    """The full-size pair in fp32, as the Hub ships it (547 MB text, 372 MB vision)."""
    import torch

    from models import resolve
    from models.synthetic import write_pair

    vision, text = write_pair(root, size="full", seed=0, dtype=torch.float32, template=TEMPLATE)
    return {"vision": resolve(str(vision), "vision").spec, "text": resolve(str(text), "text").spec}


def embed_captions(text_spec: str, texts: list[str]) -> tuple[np.ndarray, dict]:
    """Each distinct text once, as the indexer embeds captions (its batches of 64, precision='auto')."""
    from indexer.pipeline import TEXT_BATCH
    from models import load, resolve

    model = load(resolve(text_spec, "text"), "auto")
    distinct = list(dict.fromkeys(texts))
    started = time.perf_counter()
    parts = [model.embed_captions(distinct[i:i + TEXT_BATCH], DIM).float().numpy()
             for i in range(0, len(distinct), TEXT_BATCH)]
    seconds = time.perf_counter() - started
    row = {t: r for r, t in enumerate(distinct)}
    vectors = np.concatenate(parts)[[row[t] for t in texts]]
    return vectors, {"texts": len(distinct), "seconds": seconds, "texts_per_s": len(distinct) / seconds,
                     "precision": str(model.precision.dtype).replace("torch.", "")}


# ----- one `glance tune` in its own process --------------------------------------------------------------------
def run_tune(db: Path, extra: list[str], profile: bool) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as phases:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", phases.name,
                *(["--child-profile"] if profile else []), "--", "tune", "--db", str(db), "--json", *extra]
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"glance tune {' '.join(extra)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        child = json.loads(Path(phases.name).read_text())
    return {"report": json.loads(done.stdout), "process_seconds": wall, **child}


def child(out: str, profile: bool, argv: list[str]) -> None:
    """Runs glance's CLI here, timing the trainer's phases from outside (nothing in search/ knows about it)."""
    import cProfile
    import io
    import pstats

    from glance.cli import main as glance
    from search import tune

    timings = {"calls": {}, "queries": [], "epoch_ends": []}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings["calls"].setdefault(name, []).append(time.perf_counter() - started)
        return wrapper

    def trainer_for(*args, **kwargs):
        trainer = original_trainer_for(*args, **kwargs)
        timings["batch"] = trainer.batch
        for name in ("fit", "epoch", "mine"):
            setattr(trainer, name, timed(name, getattr(trainer, name)))
        queries = trainer.queries

        def timed_queries(role):
            started = time.perf_counter()
            result = queries(role)
            timings["queries"].append({"role": role, "texts": len(result), "seconds": time.perf_counter() - started})
            return result
        trainer.queries = timed_queries
        return trainer

    original_trainer_for = tune.trainer_for
    tune.trainer_for = timed("setup", trainer_for)
    tune.load_split = timed("load", tune.load_split)
    update = tune.progress_bar.update

    def epoch_done(bar, step):  # fit calls it once per epoch, bar or no bar
        timings["epoch_ends"].append(time.perf_counter())
        update(bar, step)
    tune.progress_bar.update = epoch_done
    profiler = cProfile.Profile() if profile else None
    status = 0
    try:
        if profiler:
            profiler.enable()
        glance(argv)
    except SystemExit as exit_:
        status = exit_.code or 0
    finally:
        if profiler:
            profiler.disable()
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        text.write("\n")
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        timings["profile"] = text.getvalue()
    timings["peak_rss_mb"] = _vm_hwm_mb()
    Path(out).write_text(json.dumps(timings))
    sys.exit(status)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ----- figures -------------------------------------------------------------------------------------------------
def summarise(method: str, photos: int, run: dict, epochs_asked: int) -> dict:
    from search.tune import MAX_EPOCHS, MIN_PATIENCE_EPOCHS, PATIENCE_STEPS

    report, calls = run["report"], run["calls"]
    fit = sum(calls["fit"])
    train, mine = sum(calls.get("epoch", [])), sum(calls.get("mine", []))
    epochs = report["epochs"]
    durations = np.diff(run["epoch_ends"]).tolist()  # epochs 2..n, each with its steps, mining and validation
    row = {
        "method": method, "photos": photos, "split": report["split"], "batch": run["batch"],
        "epochs_asked": epochs_asked,
        "epochs": epochs, "best_epoch": report["best_epoch"], "process_seconds": run["process_seconds"],
        "tune_seconds": report["seconds"], "seconds_per_epoch": fit / epochs,
        "phases": {"load": sum(calls["load"]), "setup": sum(calls["setup"]), "fit": fit, "train_steps": train,
                   "mining": mine, "validation": fit - train - mine,
                   "held_out_and_save": report["seconds"] - sum(calls["load"]) - sum(calls["setup"]) - fit},
        "train_step_seconds_by_epoch": calls.get("epoch", []), "mining_seconds_by_epoch": calls.get("mine", []),
        "peak_rss_mb": run["peak_rss_mb"],
        "held_out": {stage: {k: report["held_out"][stage][k] for k in ("recall@5", "mrr")}
                     for stage in ("base", "tuned")},
        "active": report["active"], "no_grad_queries": by_role(run["queries"]),
    }
    if method == "lora":
        # The steady rate a longer run would go at: a measured epoch with mining if there is one, else epoch 1
        # plus one no-grad pass over the training texts at the rate this run embedded its other texts.
        if durations:
            steady, how = float(np.mean(durations)), "measured, epochs 2+"
        else:
            scored = [q for q in run["queries"] if q["role"] != "train"]
            rate = sum(q["texts"] for q in scored) / sum(q["seconds"] for q in scored)
            steady = fit / epochs + report["split"]["train"]["caption_texts"] / rate
            how = f"epoch 1 + mining estimated at this run's {rate:.1f} no-grad texts/s"
        fixed = report["seconds"] - fit
        # The fewest epochs a default run can take: its patience, when no epoch beats the base (fit's rule).
        steps = -(-report["split"]["train"]["pairs"] // run["batch"])
        fewest = max(MIN_PATIENCE_EPOCHS, -(-PATIENCE_STEPS // steps))
        row["default_run_projection"] = {
            "seconds_per_epoch": steady, "how": how, "fixed_seconds": fixed,
            "min_epochs": fewest, "max_epochs": MAX_EPOCHS,
            "min_seconds": fixed + fewest * steady, "max_seconds": fixed + MAX_EPOCHS * steady}
    return row


def by_role(queries: list[dict]) -> dict:
    out: dict = {}
    for q in queries:
        role = out.setdefault(q["role"], {"calls": 0, "texts": 0, "seconds": 0.0})
        role["calls"], role["texts"], role["seconds"] = role["calls"] + 1, role["texts"] + q["texts"], \
            role["seconds"] + q["seconds"]
    return out


def measure(args) -> dict:
    import torch

    sizes = [] if args.skip_adapter else [int(s) for s in args.sizes.split(",")]
    lora_sizes = [] if args.skip_lora else [int(s) for s in args.lora_sizes.split(",")]
    results: dict = {"config": {"sizes": sizes, "lora_sizes": lora_sizes, "seed": args.seed, "dim": DIM,
                                "torch": torch.__version__, "threads": torch.get_num_threads()},
                     "cpu": cpu(), "load_average_before": os.getloadavg(), "runs": [], "caption_embedding": {}}
    profiles = {}
    with tempfile.TemporaryDirectory(prefix="glance-bench-tune-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        models = write_models(tmp / "models")
        os.sync()  # write the ~0.9 GB back now, so disk writeback does not run during the timings
        results["config"]["models_written_s"] = time.perf_counter() - started
        for size in sizes:
            texts, photos, captions = library(size, args.seed)
            db = tmp / f"adapter-{size}"
            write_index(db, models, texts, photos, captions)
            run = run_tune(db, [], args.profile)
            profiles[f"adapter {size}"] = run.pop("profile", None)
            results["runs"].append(summarise("adapter", size, run, 100))
        for size in lora_sizes:
            texts, photos, _ = library(size, args.seed)
            captions, cost = embed_captions(models["text"], texts)
            results["caption_embedding"][str(size)] = cost
            db = tmp / f"lora-{size}"
            write_index(db, models, texts, photos, captions)
            epochs = args.lora_epochs or (2 if size <= 2000 else 1)
            run = run_tune(db, ["--method", "lora", "--epochs", str(epochs)], False)
            results["runs"].append(summarise("lora", size, run, epochs))
    results["load_average_after"] = os.getloadavg()
    adapter = {r["photos"]: r for r in results["runs"] if r["method"] == "adapter"}
    if 10000 in adapter:
        results["target"] = {"adapter_10k_under_s": 120, "adapter_10k_s": adapter[10000]["process_seconds"],
                             "met": adapter[10000]["process_seconds"] < 120}
    if args.profile:
        results["profiles"] = profiles
    return results


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"model": name, "cores": os.cpu_count(), "amx": any(f.startswith("amx") for f in flags),
            "avx512_bf16": "avx512_bf16" in flags}


def print_report(r: dict) -> None:
    c = r["cpu"]
    print(f"CPU: {c['model']}, {c['cores']} cores, AMX {'yes' if c['amx'] else 'no'}; torch {r['config']['torch']}, "
          f"{r['config']['threads']} threads; load average before "
          f"{' '.join(f'{x:.2f}' for x in r['load_average_before'])}, after "
          f"{' '.join(f'{x:.2f}' for x in r['load_average_after'])}")
    print("full-size random-weight Nomic v1.5 (768-d); recall@5 / MRR on the held-out photos, from glance tune --json")
    print()
    head = (f"{'method':<8}{'photos':>7}{'train':>6}{'texts':>6}{'epochs':>8}{'best':>5}{'wall s':>8}{'s/epoch':>8}"
            f"{'mine s':>7}{'valid s':>8}{'RSS MB':>7}  {'recall@5':>13}  {'MRR':>13}")
    print(head)
    for row in r["runs"]:
        split, held, ph = row["split"]["train"], row["held_out"], row["phases"]
        epochs = f"{row['epochs']}/{row['epochs_asked']}"
        print(f"{row['method']:<8}{row['photos']:>7}{split['photos']:>6}{split['caption_texts']:>6}{epochs:>8}"
              f"{row['best_epoch']:>5}{row['process_seconds']:>8.1f}{row['seconds_per_epoch']:>8.2f}"
              f"{ph['mining']:>7.1f}{ph['validation']:>8.1f}{row['peak_rss_mb']:>7.0f}  "
              f"{held['base']['recall@5']:.3f}->{held['tuned']['recall@5']:.3f}  "
              f"{held['base']['mrr']:.3f}->{held['tuned']['mrr']:.3f}")
    print()
    for row in r["runs"]:
        ph = row["phases"]
        print(f"{row['method']} {row['photos']}: process {row['process_seconds']:.1f} s = tune "
              f"{row['tune_seconds']:.1f} s (read {ph['load']:.1f}, set up {ph['setup']:.1f}, train steps "
              f"{ph['train_steps']:.1f}, mining {ph['mining']:.1f}, validation {ph['validation']:.1f}, held-out + "
              f"save {ph['held_out_and_save']:.1f}) + start-up and imports "
              f"{row['process_seconds'] - row['tune_seconds']:.1f}")
    for size, cost in r["caption_embedding"].items():
        print(f"indexing captions for LoRA at {size}: {cost['texts']} distinct texts in {cost['seconds']:.1f} s "
              f"({cost['texts_per_s']:.1f}/s, {cost['precision']})")
    for row in r["runs"]:
        p = row.get("default_run_projection")
        if p:
            print(f"lora {row['photos']}: ran {row['epochs']} epoch(s) only; at {p['seconds_per_epoch']:.0f} s/epoch "
                  f"({p['how']}) a default run ({p['min_epochs']}-{p['max_epochs']} epochs, early stopping) would "
                  f"take {p['min_seconds'] / 60:.0f}-{p['max_seconds'] / 60:.0f} min (not run)")
    if "target" in r:
        t = r["target"]
        print(f"target: the adapter trains 10k captioned photos in under {t['adapter_10k_under_s']} s: "
              f"{t['adapter_10k_s']:.1f} s, {'met' if t['met'] else 'NOT met'}")
    for name, text in (r.get("profiles") or {}).items():
        if text:
            print(f"\n----- cProfile: {name} -----\n{text}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        rest = argv[2:]
        profile = rest[:1] == ["--child-profile"]
        rest = rest[1:] if profile else rest
        child(argv[1], profile, rest[1:] if rest[:1] == ["--"] else rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="captioned photos per adapter run (default: "
                                                                "%(default)s)")
    parser.add_argument("--lora-sizes", default=DEFAULT_LORA_SIZES, help="captioned photos per LoRA run (default: "
                                                                          "%(default)s; 10000: ~10 min)")
    parser.add_argument("--lora-epochs", type=int, default=None, help="epochs per LoRA run (default: 2 up to 2000 "
                                                                       "photos, else 1)")
    parser.add_argument("--skip-lora", action="store_true", help="the adapter only (quick)")
    parser.add_argument("--skip-adapter", action="store_true", help="LoRA only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated library")
    parser.add_argument("--profile", action="store_true", help="cProfile each adapter run and print the top")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
