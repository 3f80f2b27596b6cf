"""Errors a user can fix, and the one way every Glance command reports them.

Every such error derives from GlanceError, whose message is one line meant for the user. Commands print it as
`glance: error: <message>` and exit with status 2; nothing else turns into a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys

EXIT_OK = 0
EXIT_PARTIAL = 1  # finished, but some files or captions were skipped (the indexer), or no results (search)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
PROGRAM = "glance"


class GlanceError(Exception):
    """A problem the user can fix: bad input, a missing model, an unusable index. str() is one line."""


class UsageError(GlanceError):
    """Bad input from the user (a flag, a path, a query, an image)."""


class CommandParser(argparse.ArgumentParser):
    """A bad flag is reported like every other Glance error: one line, exit status 2 (argparse alone would print
    the whole usage first). Subcommand parsers made by add_subparsers inherit this class."""

    def error(self, message: str):
        _fail(PROGRAM, f"{message} (see {self.prog} --help)")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def os_error_message(exc: OSError, what: str = "") -> str:
    """An I/O error as one line that names the file and the way out."""
    where = f" {exc.filename}" if exc.filename else (f" {what}" if what else "")
    reason = exc.strerror or one_line(exc)
    advice = {errno.ENOSPC: "free some disk space and run again",
              errno.EDQUOT: "free some disk space and run again",
              errno.EROFS: "the file system is read-only: use another --db",
              errno.EACCES: "check the permissions, or use another --db",
              errno.EPERM: "check the permissions, or use another --db"}.get(exc.errno)
    return f"{reason}:{where}" + (f" ({advice})" if advice else "")


@contextlib.contextmanager
def exit_on_user_error(program: str = PROGRAM):
    """Run a command body: a GlanceError or OSError becomes one line on stderr and exit 2, Ctrl-C exit 130,
    and a closed stdout (`glance stats | head`) ends quietly."""
    _tolerate_odd_names()
    try:
        yield
    except GlanceError as exc:
        _fail(program, one_line(exc))
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as exc:
        _fail(program, os_error_message(exc))
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def _tolerate_odd_names() -> None:
    """A file name that is not UTF-8 reaches print() with surrogate escapes; a strict UTF-8 terminal would raise.
    Written as \\xNN instead, as the index shows such names."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a text stream we own (pytest's capture, a closed pipe)
            pass


def finish(status: int, as_program: bool, quick_exit: bool) -> None:
    """End a command with `status`. A `quick_exit` command (one whose writes, if any, are all done and closed
    when it returns: `glance search`) run as the program, not called by a test or other Python code, skips the
    interpreter's teardown: unloading torch and LanceDB costs 0.3-0.5 s after a search that took ~2.3 s.
    Output is flushed first, so nothing printed is lost."""
    if as_program and quick_exit:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
        os._exit(status)
    sys.exit(status)


def _fail(program: str, message: str):
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _quiet_broken_pipe():
    """The reader went away (`| head`): stop without a message; Python would complain again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_OK)
