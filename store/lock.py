"""One writer per index: a second indexer, `remove` or a schema migration on the same database is refused, not
interleaved."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

LOCK_NAME = "indexer.lock"  # inside the database folder; LanceDB ignores files that are not tables


@contextlib.contextmanager
def writer_lock(db: Path):
    """Hold the index's writer lock. A folder that this call had to create, and that holds nothing but the lock
    when the writer is done (a first run that failed before writing), is removed again."""
    from .db import StoreError

    created = not db.exists()
    db.mkdir(parents=True, exist_ok=True)
    fd = os.open(db / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StoreError(f"another indexer (pid {holder}) is writing to {db}; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # the kernel drops the lock with the descriptor, also when the process is killed
        if created and {p.name for p in db.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(db, ignore_errors=True)
