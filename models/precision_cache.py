"""The precision probe's outcome, kept between runs: the probe runs the model two or three times (fp32, then the
bf16 paths) on every load, ~0.3 s for the text tower and seconds for the vision tower on 2 cores, and it always
gives the same answer for the same weights, torch and CPU.

    precision = cached_choice(key, choose, replay)
    value = cached_value(key, compute)          # any other per-model measurement (search/duplicates.py)

`key` names everything the answer depends on (weights_key gives the file part); `choose()` probes and returns a
Precision-like object with `.path` and `.cosine_to_fp32`; `replay(entry)` rebuilds it from a stored entry (and
applies it, e.g. casts weights). A missing, stale or corrupt file is ignored and rewritten atomically; a cache
folder that cannot be written only costs the probe next time.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx512f", "avx2")  # what changes the answer


def cache_file() -> Path:
    """$GLANCE_PRECISION_CACHE, else the user's cache folder (tests point it at a temporary file)."""
    if os.environ.get("GLANCE_PRECISION_CACHE"):
        return Path(os.environ["GLANCE_PRECISION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance" / "precision.json"


def weights_key(path: Path) -> dict:
    """The weights file as the cache knows it: a new or changed file is a new key."""
    stat = path.stat()
    return {"weights": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def machine_key() -> dict:
    """The CPU (model name and the flags that decide bf16/int8) and torch's version."""
    import torch

    from .device import cpu_name

    name, flags = cpu_name(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpu": name, "flags": sorted(flag for flag in CPU_FLAGS if flag in flags), "torch": torch.__version__}


def cached_choice(key: dict, choose, replay):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    known = _read()
    entry = known.get(digest)
    if isinstance(entry, dict) and entry.get("key") == key:
        try:
            return replay(entry)
        except (KeyError, TypeError, ValueError):  # an entry from another Glance: probe again
            pass
    precision = choose()
    known[digest] = {"key": key, "path": precision.path, "cosine_to_fp32": precision.cosine_to_fp32}
    _write(known)
    return precision


def cached_value(key: dict, compute):
    """Another measurement kept the same way: `compute()` returns JSON-able data, replayed as it was stored."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    known = _read()
    entry = known.get(digest)
    if isinstance(entry, dict) and entry.get("key") == key and "value" in entry:
        return entry["value"]
    value = compute()
    known = _read()  # measuring took seconds: keep what another process wrote meanwhile
    known[digest] = {"key": key, "value": value}
    _write(known)
    return value


def _read() -> dict:
    try:
        found = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write(known: dict) -> None:
    target = cache_file()
    partial = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".precision-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(known, out)
        os.replace(partial, target)  # readers see the old file or the whole new one
    except OSError:
        if partial:
            Path(partial).unlink(missing_ok=True)
