"""Shared test setup: never touch the network; tiny official-layout models from tests/fixtures."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Servers started by tests announce themselves to `glance search` here (search/loopback.py), not in the user's own
# runtime folder, where a real `glance search` would find them.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="glance-test-run-")

# The precision probe's outcomes (models/precision_cache.py) go to a file of this run, not the user's cache.
os.environ["GLANCE_PRECISION_CACHE"] = os.path.join(tempfile.mkdtemp(prefix="glance-test-cache-"), "precision.json")
# And what torch.compile builds for the vision tower (models/compiled.py) to a folder of this run.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="glance-test-inductor-")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "nomic-tiny"
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURE


@pytest.fixture(scope="session")
def tiny_model_dirs() -> tuple[Path, Path]:
    """(vision folder, text folder): Nomic's official layout, tiny sizes, random weights."""
    return FIXTURE / "vision-v1.5", FIXTURE / "text-v1.5"


@pytest.fixture(scope="session")
def tiny_encoders(tiny_model_dirs):
    """(VisionEncoder, TextEmbedder) on the tiny models, exact fp32 path."""
    from models import load_pair

    vision, text = tiny_model_dirs
    return load_pair(str(vision), str(text), precision="fp32")


@pytest.fixture(scope="session")
def library(tmp_path_factory, tiny_encoders):
    """The painted library of tests/search_library.py, indexed once per session by the real indexer."""
    from tests import search_library

    return search_library.build(tmp_path_factory.mktemp("search-library"), *tiny_encoders)


@pytest.fixture(scope="session")
def bursts(tmp_path_factory, tiny_encoders):
    """tests/burst_library.py: bursts of generated scenes and lone photos, indexed once per session."""
    from tests import burst_library

    return burst_library.build(tmp_path_factory.mktemp("bursts"), tiny_encoders)


@pytest.fixture(scope="module")
def app_library(tmp_path_factory, tiny_encoders, tiny_model_dirs):
    """The painted photo library the app tests share, indexed once by the real indexer."""
    from tests import app_server

    return app_server.shared_library(tmp_path_factory, tiny_encoders, tiny_model_dirs)


@pytest.fixture(scope="module")
def app(tmp_path_factory, app_library):
    """A real app server on 127.0.0.1 over `app_library`, behind --auth."""
    from tests import app_server

    with app_server.logged_in_server(tmp_path_factory, app_library) as server:
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server (moto) on 127.0.0.1 with authentication on; see tests/s3_server.py."""
    from tests import s3_server

    server = s3_server.start(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()
