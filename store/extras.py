"""Files an index keeps beside its tables: tunings (`glance tune`, safetensors), the latest evaluation (`glance
eval`, JSON) and the map of the collection (Arrow). They live in `<index>/extras/`; LanceDB ignores folders that
are not tables.

Each file is written whole and then renamed into place, so a reader sees the old file or the new one, never half
of one. For an index in object storage the same files are objects under `<index>/extras/`, each written in one PUT,
which is just as atomic (core/location.py).
Which tuning is active is a meta key (TUNING), so readers follow it the way they follow the models.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from core import location

from .schema import TUNING

EXTRAS_DIR = "extras"
TUNING_INFO = "glance_tuning"  # the safetensors metadata key holding the tuning's JSON description
MAP_FILE = "map.arrow"
MAP_INFO = "glance_map"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


class ExtrasQueries:
    """Mixed into store.Store; `self` is the Store."""

    def extra_path(self, name: str) -> Path | str:
        if not SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"not a file name for the index's extras: {name!r}")
        if self.remote:
            return location.join(self.path, f"{EXTRAS_DIR}/{name}")
        return self.path / EXTRAS_DIR / name

    def drop_extras(self) -> None:
        if self.remote:
            location.delete_tree(location.join(self.path, EXTRAS_DIR), self.storage_options)
        else:
            shutil.rmtree(self.path / EXTRAS_DIR, ignore_errors=True)

    def write_extra(self, name: str, data: bytes) -> Path | str:
        target = self.extra_path(name)
        if self.remote:
            location.write_bytes(target, data, self.storage_options)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def read_extra(self, name: str) -> bytes | None:
        try:
            if self.remote:
                return location.read_bytes(self.extra_path(name), self.storage_options)
            return self.extra_path(name).read_bytes()
        except FileNotFoundError:
            return None

    # ----- JSON reports --------------------------------------------------------------------------------
    def write_report(self, name: str, report: dict) -> Path:
        return self.write_extra(f"{name}.json", json.dumps(report, indent=1).encode())

    def read_report(self, name: str) -> dict | None:
        data = self.read_extra(f"{name}.json")
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # written by something else: as good as none

    # ----- the map of the collection (indexer/collection_map.py) ------------------------------------------
    def write_map(self, points: pa.Table, info: dict) -> Path | str:
        """id, x, y per photo (an Arrow IPC file), with `info` (method, photos) in its schema metadata."""
        points = points.replace_schema_metadata({MAP_INFO: json.dumps(info)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, points.schema) as writer:
            writer.write_table(points)
        return self.write_extra(MAP_FILE, sink.getvalue().to_pybytes())

    def read_map(self) -> tuple[pa.Table, dict] | None:
        data = self.read_extra(MAP_FILE)
        if data is None:
            return None
        try:
            points = pa.ipc.open_file(pa.BufferReader(data)).read_all()
            info = json.loads((points.schema.metadata or {}).get(MAP_INFO.encode(), b"{}"))
        except (pa.ArrowInvalid, ValueError):
            return None  # damaged or foreign: as good as none, and the next index run writes it again
        return points.replace_schema_metadata(None), info

    # ----- tunings -----------------------------------------------------------------------------------------
    def save_tuning(self, name: str, tensors: dict[str, np.ndarray], info: dict) -> Path:
        """A tuning as safetensors (never a pickle), with `info` (model keys, method, metrics) in its metadata."""
        from safetensors.numpy import save

        arrays = {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in tensors.items()}
        return self.write_extra(f"{name}.safetensors", save(arrays, metadata={TUNING_INFO: json.dumps(info)}))

    def load_tuning(self, name: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """The tensors and info of a saved tuning, or None when the file is missing or not a Glance tuning."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        data = self.read_extra(f"{name}.safetensors")
        if data is None:
            return None
        try:
            tensors = load(data)
            info = json.loads(_metadata(data).get(TUNING_INFO) or "null")
        except (SafetensorError, ValueError):
            return None
        return (tensors, info) if isinstance(info, dict) else None

    def active_tuning_name(self) -> str | None:
        return self.current_meta().get(TUNING) or None

    def set_active_tuning(self, name: str | None) -> None:
        with self.writing():
            self.write_meta({TUNING: name})


def _metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file (its JSON header), without loading the tensors again."""
    header = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + header]).get("__metadata__") or {}
