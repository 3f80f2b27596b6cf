"""Errors a user can fix, and how command-line tools report them: one line, exit status 2, no traceback."""
from __future__ import annotations

import contextlib
import sys

from models import CheckpointMismatch, MismatchedModels, ModelUnavailable, UnsupportedDim

from .store import StoreError


class UsageError(Exception):
    """Bad input from the user (a flag, a path, a query)."""


USER_ERRORS = (ModelUnavailable, MismatchedModels, CheckpointMismatch, UnsupportedDim, StoreError, UsageError)
EXIT_USER_ERROR = 2


@contextlib.contextmanager
def exit_on_user_error(program: str):
    try:
        yield
    except USER_ERRORS as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        sys.exit(130)
