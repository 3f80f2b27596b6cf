"""Helpers for the app tests: a small photo library indexed by the real indexer, and app.py as a real server.

`shared_library(...)` builds the library once per test session (every module that asks gets the same one);
`AppServer` starts `python app.py` on 127.0.0.1 and a free port as a subprocess and stops it again.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
AUTH = ("glance", "s3cret-pass")
READY_TIMEOUT_S = 120  # two busy cores: importing gradio and torch alone can take 10 s
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright cannot download its own browser here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# ------------------------------------------------------------------------------------------ the library

def solid(rgb):
    return lambda size: Image.new("RGB", size, rgb)


def stripes(rgb):
    def paint(size):
        a = np.zeros((size[1], size[0], 3), np.uint8)
        a[::6] = rgb
        a[1::6] = rgb
        return Image.fromarray(a)
    return paint


def checker(cell=10):
    def paint(size):
        ys, xs = np.indices((size[1], size[0]))
        on = ((ys // cell + xs // cell) % 2).astype(np.uint8) * 255
        return Image.fromarray(np.stack([on, on // 2, 255 - on], -1))
    return paint


def gradient(size):
    xs = np.linspace(0, 255, size[0], dtype=np.float32)
    row = np.stack([xs, 255 - xs, np.full_like(xs, 90)], -1)
    return Image.fromarray(np.repeat(row[None], size[1], 0).astype(np.uint8))


def blocks(seed: int):
    """A distinct picture per seed: a colour gradient under a 4x4 grid of random blocks."""
    def paint(size):
        rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:size[1], 0:size[0]]
        base = rng.uniform(0, 255, 3) + xs[..., None] * rng.uniform(-2, 2, 3) + ys[..., None] * rng.uniform(-2, 2, 3)
        grid = rng.uniform(0, 90, (4, 4, 3)).repeat(-(-size[1] // 4), 0)[:size[1]].repeat(-(-size[0] // 4), 1)
        return Image.fromarray(np.clip(base + grid[:, :size[0]], 0, 255).astype(np.uint8))
    return paint


@dataclass(frozen=True)
class Photo:
    relpath: str
    paint: object
    taken: str | None = None  # EXIF DateTimeOriginal, "YYYY:MM:DD HH:MM:SS"
    camera: tuple[str, str] | None = None  # EXIF make, model
    caption: str | None = None  # written as a sidecar .txt


PHOTOS = [
    Photo("plain/red.jpg", solid((220, 30, 30)), "2021:03:01 10:00:00", ("Canon", "Canon EOS 5D"),
          "a red kite on a sunny day"),
    Photo("plain/sub/crimson.jpg", solid((190, 20, 50)), "2021:03:02 11:00:00"),
    Photo("plain/purple.png", solid((140, 30, 160))),
    Photo("nature/green.jpg", solid((30, 200, 40)), "2022:07:14 09:00:00", caption="green meadow"),
    Photo("nature/deep/blue.png", solid((30, 40, 220))),
    Photo("nature/yellow.jpg", solid((230, 220, 30)), "2022:08:01 12:00:00"),
    Photo("2023/trip/checker.png", checker()),
    Photo("2023/trip/stripes.jpg", stripes((255, 255, 255)), "2023:07:10 15:30:00", ("FUJIFILM", "X100V")),
    Photo("2023/trip/gradient.jpg", gradient, "2023:07:11 08:00:00"),
    Photo("2023/trip-old/white.png", solid((250, 250, 250))),
    Photo("2023/cyan.jpg", solid((30, 220, 220)), "2023:12:31 23:59:00"),
    Photo("black.png", solid((5, 5, 5))),
    # enough photos for more than one page of results (app.PAGE_SIZE is 24)
    *(Photo(f"bulk/{seed:02d}.png", blocks(seed)) for seed in range(14)),
]
FREE_TEXTS = ["receipt", "mountain lake at dawn", "a birthday cake"]
SIZE = (96, 64)


@dataclass
class Library:
    base: Path
    root: Path
    db: Path
    outside: Path  # a file outside the root that a symlink in the root points to
    hidden: Path  # a photo inside the root that the indexer skips (hidden folder)
    ids: dict[str, str] = field(default_factory=dict)  # relpath -> photo id

    def path(self, relpath: str) -> Path:
        return self.root / relpath


def _exif(photo: Photo) -> bytes:
    exif = Image.Exif()
    if photo.camera:
        exif[271], exif[272] = photo.camera
    if photo.taken:
        exif.get_ifd(0x8769)[36867] = photo.taken
    return exif.tobytes()


def paint_library(base: Path) -> Library:
    root = (base / "photos").resolve()
    for photo in PHOTOS:
        target = root / photo.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        image = photo.paint(SIZE)
        if target.suffix == ".jpg":
            image.save(target, quality=92, exif=_exif(photo))
        else:
            image.save(target)
        if photo.caption:
            Path(f"{target}.txt").write_text(photo.caption + "\n")
    outside = base / "outside" / "secret.png"
    outside.parent.mkdir(parents=True)
    solid((90, 90, 90))(SIZE).save(outside)
    (root / "links").mkdir()
    os.symlink(outside, root / "links" / "escape.png")
    hidden = root / ".private" / "hidden.png"
    hidden.parent.mkdir()
    solid((10, 120, 90))(SIZE).save(hidden)
    (root / "notes.txt").write_text("not a photo\n")
    (base / "labels.txt").write_text("\n".join(FREE_TEXTS) + "\n")
    return Library(base, root, base / "index", outside, hidden)


def index_library(library: Library, encoders, model_dirs) -> None:
    """The real indexer, in this process, with the already loaded tiny encoders."""
    from indexer.pipeline import IndexOptions, index
    from store import Store, image_id

    vision_dir, text_dir = model_dirs
    summary = index(IndexOptions(paths=[str(library.root)], db=library.db, captions=[str(library.base / "labels.txt")],
                                 vision_model=str(vision_dir), text_model=str(text_dir), precision="fp32",
                                 encoders=encoders, workers=1))
    assert summary.exit_status in (0, 1), summary.text()
    indexed = Store(library.db).table("images").to_arrow().column("relpath").to_pylist()
    library.ids = {rel: image_id(str(library.root), rel) for rel in indexed}


_LIBRARIES: dict[str, Library] = {}


def shared_library(tmp_path_factory, encoders, model_dirs) -> Library:
    """The test library and its index, built on first use and shared by every test module of the session."""
    if "main" not in _LIBRARIES:
        library = paint_library(tmp_path_factory.mktemp("app-library"))
        index_library(library, encoders, model_dirs)
        _LIBRARIES["main"] = library
    return _LIBRARIES["main"]


def copy_index(library: Library, target: Path) -> Path:
    shutil.copytree(library.db, target, dirs_exist_ok=True)
    return target


# ------------------------------------------------------------------------------------------ the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    """`python app.py ...` on 127.0.0.1:port; output goes to files under `logs`. `env` adds to the environment
    (a None value removes the variable)."""
    args: list[str]
    logs: Path
    env: dict[str, str | None] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    first_200_s: float | None = None  # seconds from start to the first HTTP 200 on /

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "AppServer":
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("GLANCE_AUTH", None)
        env.update(self.env)
        env = {name: value for name, value in env.items() if value is not None}
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--port", str(self.port), *self.args], cwd=REPO, env=env,
            stdout=(self.logs / "stdout.txt").open("wb"), stderr=(self.logs / "stderr.txt").open("wb"))
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "AppServer":
        """Until the app says it is ready (models loaded); fails with its output if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.first_200_s is None and self._answers():
                self.first_200_s = time.monotonic() - self.started_at
            if "Glance: ready" in self.stdout():
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"app.py exited with {self.process.returncode}:\n{self.stderr()}")
            time.sleep(0.2)
        raise AssertionError(f"app.py was not ready after {timeout} s:\n{self.stdout()}\n{self.stderr()}")

    def wait_exit(self, timeout: float = READY_TIMEOUT_S) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def stdout(self) -> str:
        return (self.logs / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.logs / "stderr.txt").read_text(errors="replace")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def assert_no_unexpected_errors(server: AppServer) -> None:
    """No handler of app.py failed unexpectedly. (gradio logs tracebacks of its own refusals, e.g. of a payload
    naming a file that was not uploaded; those are its business and never reach the client.)"""
    log = server.stderr()
    assert "unexpected error" not in log and 'app.py", line' not in log, log[-3000:]


def start_app(tmp_path_factory, *args: str, env: dict[str, str | None] | None = None) -> AppServer:
    return AppServer(list(args), tmp_path_factory.mktemp("app-server"), env=env or {}).start()


def login(server: AppServer, auth=AUTH) -> httpx.Client:
    """An HTTP client holding gradio's login cookie."""
    client = httpx.Client(base_url=server.url.rstrip("/"), timeout=30)
    response = client.post("/login", data={"username": auth[0], "password": auth[1]})
    assert response.status_code == 200, response.text
    return client


# ------------------------------------------------------------------------------------------ the browser

def chromium_missing() -> str | None:
    """Why browser tests cannot run here, or None. On CI (CI=true) a missing browser is a failure, not a skip."""
    if CHROMIUM.exists():
        return None
    message = f"{CHROMIUM} is missing: apt-get install chromium"
    if os.environ.get("CI") == "true":
        raise AssertionError(message)
    return message


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def logged_in_server(tmp_path_factory, library: Library, env: dict[str, str | None] | None = None):
    """A real app on the library behind --auth; on a clean exit its log must hold no unexpected error."""
    server = start_app(tmp_path_factory, "--db", str(library.db), "--auth", ":".join(AUTH), env=env)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
    assert_no_unexpected_errors(server)


def log_in(page, url: str) -> None:
    """Fill in gradio's login form at `url` and wait for the search page."""
    page.goto(url)
    page.fill("input[type=password]", AUTH[1])
    page.locator("input[type=text]").first.fill(AUTH[0])
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#query textarea", timeout=60_000)


@contextmanager
def page_on_index(tmp_path_factory, db):
    """A logged-in Chromium page on a real app over the index at `db` (not the shared library)."""
    server = start_app(tmp_path_factory, "--db", str(db), "--auth", ":".join(AUTH))
    try:
        server.wait_ready()
        with chromium() as browser:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            log_in(page, server.url)
            yield page
    finally:
        server.stop()
    assert_no_unexpected_errors(server)

