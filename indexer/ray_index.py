"""`glance index --ray`: the costly per-file work of a run on a Ray cluster, through Ray Data.

The driver keeps everything that decides and writes: the scan, change detection, captions and every commit, in
the local pipeline's order (indexer/pipeline.py). Ray Data does what costs: reading, hashing and decoding files
in tasks (`prepare_files`), and embedding them in a pool of actors with one model each (`Embedder`). The embedded
rows stream back to the driver, which commits them in batches exactly as a local run commits its own.

Why the driver commits, rather than Ray Data's Lance writer writing fragments for the driver to commit: a batch's
commit is not one append but the ordered, id-keyed upserts of pipeline.py (photo rows marked unfinished, stale
captions deleted, captions, finished rows), which is what makes a killed run converge on re-run. Fragments
written by workers would be appends that a retried task duplicates and that would still need that merge after.
What comes back per photo is small (a vector and a ~20 kB thumbnail), so the one writer is far from the
bottleneck: the model is (see README, "Beyond one machine").

A worker killed mid-run costs only its unfinished batch: Ray retries the task (decoding) or restarts the actor
and re-sends its batch (embedding; Ray Data's actors default to max_restarts=-1, max_task_retries=-1).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.errors import UsageError

from .decode import Decoded, FileBytes
from .pipeline import Prepared, ShaSet, prepare, todo_of
from .scan import Problem

LOCAL = "local"  # `--ray` alone: start a Ray instance on this machine for the run
# The driver's environment that the workers need to read the same photos and models: object-storage credentials
# and endpoint, and where the Hub cache lives. They travel in the job's runtime_env, which the cluster keeps for
# the job's workers; they are never printed or written to the index.
WORKER_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE")
FILES_PER_TASK = 8  # a decoding task is short, so a retried one repeats little
# The driver commits the cluster's rows in batches this big, not the model's: each commit has a fixed cost
# (three LanceDB versions), and at 256 photos one writer keeps up with ~1,400 photos/s on 2 cores against ~300
# at 32 (bench/writer_rate.py). A killed driver loses at most one such batch of finished embeddings.
# `--commit-every` sets it for both paths (Indexer.commit_size).
COMMIT_BATCH = 256

# What a decoding task returns per file: the todo row (so the driver needs no state per file), then the outcome.
PREPARED_SCHEMA = pa.schema([
    ("id", pa.string()), ("root", pa.string()), ("relpath", pa.string()), ("relpath_bytes", pa.binary()),
    ("size", pa.int64()), ("mtime_ns", pa.int64()), ("sidecars", pa.list_(pa.binary())),
    ("old_id", pa.string()), ("old_sha", pa.string()),
    ("problem", pa.string()), ("problem_path", pa.string()),  # set: the file was skipped, and why
    ("file_size", pa.int64()), ("file_mtime_ns", pa.int64()), ("sha256", pa.string()),
    ("decoded", pa.bool_()),  # false: the content is indexed already, its vector is reused
    ("width", pa.int32()), ("height", pa.int32()), ("taken_at", pa.timestamp("s")), ("camera", pa.string()),
    ("thumb", pa.binary()),
    ("descriptions", pa.list_(pa.struct([("source", pa.string()), ("text", pa.string())]))),
    ("sidecar_texts", pa.list_(pa.string())),
    ("pixels", pa.binary()),  # uint8 RGB at the model's input size (H x W x 3), for the embedding actors
])


@dataclass(frozen=True)
class RayPlan:
    """How a run uses the cluster, decided on the driver once connected."""
    workers: int  # embedding actors: one model each
    threads: int  # torch threads per actor (its CPUs)
    gpus: float  # GPUs per actor (0 on a CPU cluster)

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


def process_on_ray(indexer, todo: pa.Table) -> None:
    """Indexer._process for `--ray`: the same Prepared batches, made on the cluster, committed here."""
    if not todo.num_rows:
        return
    # Ray prints the cluster's error messages (a worker died, its task is retried) on stdout, which belongs to
    # --json: they go to stderr with the run's other notices.
    with contextlib.redirect_stdout(sys.stderr):
        _run_on_ray(indexer, todo)


def _run_on_ray(indexer, todo: pa.Table) -> None:
    started = connect(indexer.o.ray, indexer.o.ray_workers)
    try:
        plan = plan_cluster(indexer.o.ray_workers, indexer.o.threads)
        dataset = _dataset(indexer, todo, plan)
        _commit_stream(indexer, dataset, todo.num_rows)
    finally:
        if started:
            import ray

            ray.shutdown()


def connect(address: str, workers: int | None) -> bool:
    """Join the cluster at `address` ("auto", "ray://host:port", "host:port"), or start a local instance for
    LOCAL. Returns whether this run started Ray (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
             "runtime_env": {"env_vars": {k: os.environ[k] for k in WORKER_ENV if k in os.environ}}}
    # Ray starts its daemons by fork+exec; lancedb warns about forks, but nothing of lancedb runs in them.
    warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
    # Ray Data logs every actor as "has constructor arguments in the object store" at error level (it keeps
    # them for the restarts itself): the driver's own core logs stay for fatal errors only.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a self-hosted tool reports nothing anywhere
    if address not in (LOCAL, "auto"):
        _probe(address)
    try:
        if address == LOCAL:
            cores = os.cpu_count() or 1
            # Logical CPUs: one per embedding actor plus one for decoding tasks, at least the real cores. Actors
            # and tasks then take turns on the real cores, as the local pipeline's threads do.
            ray.init(num_cpus=max(cores, (workers or cores) + 1), **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot reach the Ray cluster at {address}: {first}") from None
    _quiet_ray_data()
    return True


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens on: ray.init itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: give host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def plan_cluster(workers: int | None, threads: int | None) -> RayPlan:
    """One actor per GPU where the cluster has GPUs; else actors on all but one in eight CPUs (decoding needs
    ~30 ms a photo against the model's ~260 ms for Nomic v1.5, so it needs few), each with `threads` CPUs."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    threads = threads or 1
    if workers is None:
        workers = gpus or max(1, (cpus - max(1, cpus // 8)) // threads)
    if workers < 1:
        raise UsageError("--ray-workers must be at least 1")
    return RayPlan(workers=workers, threads=threads, gpus=1.0 if gpus else 0.0)


def _quiet_ray_data() -> None:
    """The run shows one bar of its own (photos/s across the cluster); Ray Data's per-operator bars and logs
    would interleave with it."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # A small run has fewer blocks than actors; Ray Data warns that some then idle, which is no fault here.
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)


def _dataset(indexer, todo: pa.Table, plan: RayPlan):
    import ray.data

    height, width = indexer.preprocess.input_size
    blocks = [todo.slice(start, indexer.batch_size) for start in range(0, todo.num_rows, indexer.batch_size)]
    # Decoding tasks ask for less CPU than an actor, which also keeps Ray Data from fusing them into the actors:
    # the actors only embed, and decoding runs beside them (a GPU actor never waits on a JPEG).
    decoding = ray.data.from_arrow(blocks).map_batches(
        prepare_files, batch_size=FILES_PER_TASK, batch_format="pyarrow", zero_copy_batch=True, num_cpus=0.5,
        fn_kwargs={"known": indexer.known, "preprocess": indexer.preprocess, "max_pixels": indexer.max_pixels,
                   "storage_options": indexer.storage})
    return decoding.map_batches(
        Embedder, batch_size=indexer.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.workers), num_cpus=plan.threads, num_gpus=plan.gpus,
        fn_constructor_kwargs={"model": indexer.choice.vision_model, "precision": indexer.o.precision,
                               "device": plan.device, "dim": indexer.choice.dim, "threads": plan.threads,
                               "shape": (height, width, 3)})


# ----- on the workers ----------------------------------------------------------------------------------------
def prepare_files(batch: pa.Table, known: ShaSet, preprocess, max_pixels: int, storage_options: dict) -> pa.Table:
    """Ray task: read, hash and decode a few files, as the local pipeline's decoding threads do."""
    return pa.Table.from_pylist([_prepared_row(row, prepare(todo_of(row), known, preprocess, max_pixels,
                                                            storage_options)) for row in batch.to_pylist()],
                                schema=PREPARED_SCHEMA)


def _prepared_row(row: dict, result: Prepared | Problem) -> dict:
    if isinstance(result, Problem):
        return {**row, "problem": result.reason, "problem_path": result.path}
    out = {**row, "file_size": result.file.size, "file_mtime_ns": result.file.mtime_ns,
           "sha256": result.file.sha256, "decoded": result.decoded is not None,
           "sidecar_texts": result.sidecar_texts}
    d = result.decoded
    if d is not None:
        out.update(width=d.width, height=d.height, taken_at=d.taken_at, camera=d.camera, thumb=d.thumb,
                   descriptions=[{"source": s, "text": t} for s, t in d.descriptions],
                   pixels=np.asarray(d.pixels, dtype=np.uint8).tobytes())
    return out


class Embedder:
    """Ray actor: one vision model, loaded once, embedding the decoded photos of each batch it is sent."""

    def __init__(self, model, precision: str, device: str, dim: int, threads: int, shape: tuple[int, int, int]):
        from models import load, preprocess_of
        from models.encoders import set_threads

        set_threads(threads)
        self.encoder = load(model, precision, device)
        self.preprocess, self.dim, self.shape = preprocess_of(model), dim, shape

    def __call__(self, batch: pa.Table) -> pa.Table:
        pixels = batch.column("pixels").to_pylist()
        todo = [i for i, p in enumerate(pixels) if p is not None]
        vectors: list = [None] * batch.num_rows
        if todo:
            images = [np.frombuffer(pixels[i], dtype=np.uint8).reshape(self.shape) for i in todo]
            embedded = self.encoder.embed_pixels(self.preprocess.to_tensor(images), self.dim).float().numpy()
            for i, vector in zip(todo, embedded):
                vectors[i] = vector.tolist()
        column = pa.array(vectors, type=pa.list_(pa.float32()))
        return batch.drop_columns(["pixels"]).append_column("vector", column)


# ----- back on the driver ------------------------------------------------------------------------------------
def _commit_stream(indexer, dataset, total: int) -> None:
    """Commit the cluster's rows COMMIT_BATCH at a time, with one bar across the cluster."""
    bar = indexer._bar(total)
    try:
        results = (_result_of(row) for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow",
                                                                      prefetch_batches=1)
                   for row in block.to_pylist())
        indexer.commit_in_batches(results, bar, COMMIT_BATCH)
    finally:
        bar.close()


def _result_of(row: dict) -> Prepared | Problem:
    if row["problem"] is not None:
        return Problem(row["problem_path"], row["problem"])
    file = FileBytes(row["file_size"], row["file_mtime_ns"], row["sha256"], None)
    decoded = vector = None
    if row["decoded"]:
        decoded = Decoded(None, row["thumb"], row["width"], row["height"], row["taken_at"], row["camera"],
                          [(d["source"], d["text"]) for d in row["descriptions"]])
        vector = np.asarray(row["vector"], dtype=np.float32)
    return Prepared(todo_of(row), file, decoded, list(row["sidecar_texts"] or []), vector)
