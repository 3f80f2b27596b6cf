"""One writer per index: a second indexer, `remove` or a schema migration on the same database is refused, not
interleaved.

A local index uses flock on a file inside its folder. Object storage has no flock, so an index in a bucket uses a
lease instead: an object `indexer.lock` naming its holder, renewed every LEASE_RENEW_S by a thread while the writer
works, and deleted at the end. A lease not renewed for LEASE_STALE_S belongs to a writer that was killed, and is
taken over. Checking and writing the lease are two requests, so two writers starting in the same instant can both
win; LanceDB's own commits stay atomic either way (each is a conditional write of a new manifest), so the worst case
is interleaved batches of two runs, which the next run repairs like a crash.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from core import location

LOCK_NAME = "indexer.lock"  # inside the database folder; LanceDB ignores files that are not tables
LEASE_RENEW_S = 15.0
LEASE_STALE_S = 90.0


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


@contextlib.contextmanager
def remote_writer_lock(db: str, storage_options: dict | None = None):
    """Hold the writer lease of the index at the URI `db` (see the module's docstring)."""
    from .db import StoreError

    lease = location.join(db, LOCK_NAME)
    holder = _read_lease(lease, storage_options)
    if holder and time.time() - float(holder.get("renewed") or 0) < LEASE_STALE_S:
        raise StoreError(f"another indexer (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) is writing to "
                         f"{location.display(db)}; wait for it to finish (a lease not renewed for "
                         f"{LEASE_STALE_S:.0f} s is taken over)")
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}

    def renew() -> None:
        location.write_bytes(lease, json.dumps({**mine, "renewed": time.time()}).encode(), storage_options)

    renew()
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(LEASE_RENEW_S):
            try:
                renew()
            except location.StorageError:
                pass  # the writer's own requests report the store's trouble; the lease tries again later

    thread = threading.Thread(target=keep_renewing, name="glance-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(location.StorageError):
            if (_read_lease(lease, storage_options) or {}).get("token") == mine["token"]:
                location.delete(lease, storage_options)


def _read_lease(lease: str, storage_options: dict | None) -> dict | None:
    try:
        found = json.loads(location.read_bytes(lease, storage_options, limit=4096))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # not ours to read: treated as a stale lease
    return found if isinstance(found, dict) else {}
