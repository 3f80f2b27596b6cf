"""search/server_options.py: the serve flags, checked without importing anything heavy (`glance serve` and
`python app.py` share them)."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from core.errors import UsageError
from search import server_options
from tests.app_server import REPO


def parse(*argv: str) -> argparse.Namespace:
    parser = server_options.add_arguments(argparse.ArgumentParser(prog="glance serve"))
    return server_options.check(parser.parse_args(list(argv)))


def test_defaults_bind_this_machine_only(monkeypatch):
    monkeypatch.delenv("GLANCE_AUTH", raising=False)
    args = parse()
    assert (args.host, args.port, args.auth, args.db, args.precision) == ("127.0.0.1", 7860, None, None, "auto")


def test_auth_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("GLANCE_AUTH", "env:pass")
    assert parse().auth == ("env", "pass")
    assert parse("--auth", "me:pa:ss").auth == ("me", "pa:ss")  # the password may hold a colon
    args = parse("--auth", "me:secret")
    assert server_options.check(args).auth == ("me", "secret")  # checking twice (glance serve, app.main) is fine


@pytest.mark.parametrize("argv, words", [
    (["--auth", "nopassword"], "--auth must be USER:PASS"),
    (["--auth", ":pass"], "--auth must be USER:PASS"),
    (["--port", "0"], "--port must be from 1 to 65535, not 0"),
    (["--port", "70000"], "--port must be from 1 to 65535"),
])
def test_bad_values_are_one_clear_error(monkeypatch, argv, words):
    monkeypatch.delenv("GLANCE_AUTH", raising=False)
    with pytest.raises(UsageError, match=words):
        parse(*argv)


def test_importing_the_options_loads_nothing_heavy():
    probe = ("import sys; import search.server_options; "
             "print(sorted(m for m in ('gradio', 'torch', 'lancedb', 'PIL') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr


def test_app_py_reports_bad_flags_as_glance():
    bad = subprocess.run([sys.executable, "app.py", "--port", "seven"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("glance: error: argument --port: invalid int value")
    assert len(bad.stderr.strip().splitlines()) == 1
