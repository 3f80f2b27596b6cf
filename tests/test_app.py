"""app.py against a real server on 127.0.0.1 (with --auth): the named API through gradio_client, errors, login,
path traversal and URL fetching. One server for the whole module; the library is indexed by the real indexer."""
from __future__ import annotations

import csv
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests import app_server
from tests.app_server import AUTH, REPO, login

ENDPOINTS = {"/search_text", "/search_image", "/more_like_this", "/browse", "/search_captions", "/image_to_text",
             "/refine", "/duplicates", "/export", "/saved", "/save_search", "/run_saved", "/delete_saved",
             "/check_captions", "/map", "/photo", "/stats"}
# The dated photos of app_server.PHOTOS, newest first; the undated ones' file times (today) come before them.
DATED_NEWEST_FIRST = ["2023/cyan.jpg", "2023/trip/gradient.jpg", "2023/trip/stripes.jpg", "nature/yellow.jpg",
                      "nature/green.jpg", "plain/sub/crimson.jpg", "plain/red.jpg"]


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, auth=AUTH, verbose=False)


@pytest.fixture(scope="module")
def session(app):
    logged_in = login(app)
    yield logged_in
    logged_in.close()


def error_of(client, *args, api_name, **kwargs) -> str:
    with pytest.raises(AppError) as raised:
        client.predict(*args, api_name=api_name, **kwargs)
    message = str(raised.value)
    assert "Traceback" not in message and "/tmp/gradio" not in message  # one line, no server internals
    return message


# ------------------------------------------------------------------------------------------------ search

def test_the_named_endpoints_and_nothing_else(client):
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == ENDPOINTS


def test_text_search_gives_every_photo_best_first(client, app_library):
    result = client.predict("a red kite", top=100, api_name="/search_text")
    hits = result["hits"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert {h["relpath"] for h in hits} == set(app_library.ids) and not result["has_more"]
    assert result["total_considered"] == len(app_library.ids)
    assert set(hits[0]) >= {"id", "file", "relpath", "score", "taken_at", "camera", "width", "height", "has_caption"}
    assert all(Path(h["file"]) == app_library.path(h["relpath"]) for h in hits)


def test_pages_follow_each_other(client, app_library):
    first = client.predict("sunset", api_name="/search_text")
    second = client.predict("sunset", offset=24, api_name="/search_text")
    both = client.predict("sunset", top=48, api_name="/search_text")
    assert len(first["hits"]) == 24 and first["has_more"]  # a page is 24 photos unless `top` says otherwise
    assert len(second["hits"]) == len(app_library.ids) - 24 and not second["has_more"]
    assert [h["id"] for h in first["hits"] + second["hits"]] == [h["id"] for h in both["hits"]]


def test_an_image_from_the_library_finds_itself_first(client, app_library):
    result = client.predict(handle_file(str(app_library.path("nature/green.jpg"))), api_name="/search_image")
    top = result["hits"][0]
    assert top["relpath"] == "nature/green.jpg" and top["score"] > 0.99


def test_image_and_text_together(client, app_library):
    result = client.predict(handle_file(str(app_library.path("plain/red.jpg"))), "kite", top=3, api_name="/search_image")
    assert len(result["hits"]) == 3 and result["hits"][0]["relpath"] == "plain/red.jpg"


def test_more_like_this_leaves_the_photo_out(client, app_library):
    photo = app_library.ids["plain/red.jpg"]
    hits = client.predict(photo, top=100, api_name="/more_like_this")["hits"]
    assert photo not in {h["id"] for h in hits} and len(hits) == len(app_library.ids) - 1
    assert hits[0]["relpath"] == "plain/sub/crimson.jpg"  # the other red photo is the nearest


def test_filters_by_folder_date_and_caption(client):
    def relpaths(**filters):
        return {h["relpath"] for h in client.predict("photo", api_name="/search_text", **filters)["hits"]}

    assert relpaths(folder="2023/trip") == {"2023/trip/checker.png", "2023/trip/stripes.jpg", "2023/trip/gradient.jpg"}
    assert relpaths(date_from="2022", date_to="2022") == {"nature/green.jpg", "nature/yellow.jpg"}
    assert relpaths(date_from="2023-07", date_to="2023-07-10") == {"2023/trip/stripes.jpg"}
    assert relpaths(with_captions=True) == {"plain/red.jpg", "nature/green.jpg"}


def test_browse_shows_the_library_newest_first_in_pages_and_groups(client, app_library):
    whole = client.predict(top=100, api_name="/browse")
    relpaths = [h["relpath"] for h in whole["hits"]]
    assert relpaths[-len(DATED_NEWEST_FIRST):] == DATED_NEWEST_FIRST and set(relpaths) == set(app_library.ids)
    assert whole["sort"] == "date" and whole["total_considered"] == len(app_library.ids) and not whole["has_more"]
    undated = whole["hits"][:-len(DATED_NEWEST_FIRST)]
    assert all(h["taken_at"] is None and h["file_time"] for h in undated)
    assert [h["file_time"] for h in undated] == sorted((h["file_time"] for h in undated), reverse=True)
    first, second = (client.predict(offset=offset, api_name="/browse") for offset in (0, 24))
    assert [h["id"] for h in first["hits"] + second["hits"]] == [h["id"] for h in whole["hits"]] and first["has_more"]
    trip = client.predict(folder="2023", date_from="2023-07", group="day", api_name="/browse")
    assert [h["relpath"] for h in trip["hits"]] == DATED_NEWEST_FIRST[:3]
    assert trip["groups"] == [{"label": "2023-12-31", "ids": [trip["hits"][0]["id"]]},
                              {"label": "2023-07-11", "ids": [trip["hits"][1]["id"]]},
                              {"label": "2023-07-10", "ids": [trip["hits"][2]["id"]]}]


def test_a_text_search_sorted_by_date_and_grouped_by_month(client, app_library):
    dated = client.predict("a red kite", date_from="2021", sort="date", group="month", api_name="/search_text")
    assert [h["relpath"] for h in dated["hits"]] == DATED_NEWEST_FIRST and dated["sort"] == "date"
    assert [g["label"] for g in dated["groups"]] == ["December 2023", "July 2023", "August 2022", "July 2022",
                                                     "March 2021"]
    assert [len(g["ids"]) for g in dated["groups"]] == [1, 2, 1, 1, 2]
    ranked = client.predict("a red kite", date_from="2021", api_name="/search_text")
    assert {h["id"]: h["score"] for h in ranked["hits"]} == {h["id"]: h["score"] for h in dated["hits"]}
    assert "groups" not in ranked and ranked["sort"] == "relevance"


def test_near_duplicates_collapse_in_a_search_and_are_listed(client, app_library):
    flat = client.predict("a red kite", top=100, api_name="/search_text")["hits"]
    collapsed = client.predict("a red kite", top=100, collapse=True, api_name="/search_text")["hits"]
    members = [h["id"] for h in collapsed] + [d["id"] for h in collapsed for d in h.get("duplicates", [])]
    assert sorted(members) == sorted(h["id"] for h in flat)  # every photo once: shown, or under its group
    listed = client.predict(api_name="/duplicates")
    assert listed["threshold"]["precision"] == 1.0 and 0 < listed["threshold"]["recall"] <= 1
    groups = listed["groups"]
    in_groups = [g["keep"]["id"] for g in groups] + [d["id"] for g in groups for d in g["duplicates"]]
    assert listed["photos_in_groups"] == len(in_groups) == len(set(in_groups))
    assert client.predict(folder="no/such/folder", api_name="/duplicates")["groups"] == []
    kite = client.predict(app_library.ids["plain/red.jpg"], api_name="/photo")
    assert kite["exif"]["Model"] == "Canon EOS 5D" and kite["exif"]["Taken"] == "2021:03:01 10:00:00"


def test_thumbs_refine_a_query_and_liked_photos_alone_are_more_like_these(client, app_library):
    red, crimson = app_library.ids["plain/red.jpg"], app_library.ids["plain/sub/crimson.jpg"]
    before = [h["id"] for h in client.predict("a photo", top=100, api_name="/search_text")["hits"]]
    refined = [h["id"] for h in client.predict("a photo", liked=[red], disliked=[crimson], top=100,
                                               api_name="/refine")["hits"]]
    assert crimson not in refined and refined.index(red) <= before.index(red)
    these = client.predict(liked=[red, crimson], top=100, api_name="/refine")["hits"]
    assert {red, crimson}.isdisjoint(h["id"] for h in these) and len(these) == len(before) - 2
    with pytest.raises(AppError, match="give a query, or at least one liked photo"):
        client.predict(disliked=[red], api_name="/refine")


def test_a_saved_search_is_listed_and_re_runs_live(client, app_library):
    saved = client.predict("api trip", "a photo", folder="2023", sort="date", api_name="/save_search")
    assert saved["name"] == "api trip" and saved["folder"] == "2023" and saved["sort"] == "date"
    assert "api trip" in [s["name"] for s in client.predict(api_name="/saved")]
    ran = client.predict("api trip", top=50, api_name="/run_saved")
    direct = client.predict("a photo", folder="2023", sort="date", top=50, api_name="/search_text")
    assert [h["id"] for h in ran["hits"]] == [h["id"] for h in direct["hits"]] and ran["sort"] == "date"
    client.predict("api browse", folder="nature", api_name="/save_search")  # no query: the folder, newest first
    browsed = client.predict("api browse", top=50, api_name="/run_saved")
    assert [h["id"] for h in browsed["hits"]] == [h["id"] for h in client.predict(
        folder="nature", top=50, api_name="/browse")["hits"]]
    for name in ("api trip", "api browse"):
        client.predict(name, api_name="/delete_saved")
    assert not {"api trip", "api browse"} & {s["name"] for s in client.predict(api_name="/saved")}
    with pytest.raises(AppError, match="no saved search is called 'api trip'"):
        client.predict("api trip", api_name="/run_saved")
    with pytest.raises(AppError, match="invalid from date"):
        client.predict("bad", "x", date_from="2021-13", api_name="/save_search")


def test_the_caption_check_answers_as_the_index_says(client, app_library):
    from search.consistency import check_captions
    from search.serialize import caption_report_json
    from store import Store

    answer = client.predict(top=20, api_name="/check_captions")
    assert answer == json.loads(json.dumps(caption_report_json(check_captions(Store(app_library.db).pinned(), 20))))
    with pytest.raises(AppError, match="top must be"):
        client.predict(top=0, api_name="/check_captions")


def test_the_map_places_every_photo(client, app_library):
    answer = client.predict(api_name="/map")
    assert answer["method"] == "PCA" and answer["unmapped"] == 0 and answer["mapped"] == len(app_library.ids)
    assert {p["id"] for p in answer["points"]} == set(app_library.ids.values())
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in answer["points"])
    in_2023 = client.predict(folder="2023", api_name="/map")["points"]
    assert {p["id"] for p in in_2023} == {i for rel, i in app_library.ids.items() if rel.startswith("2023/")}


def test_a_result_list_exports_as_csv_and_json(client, app_library):
    hits = client.predict("a red kite", top=10, api_name="/search_text")["hits"]
    table = client.predict("a red kite", top=10, format="csv", api_name="/export")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [row["path"] for row in rows] == [hit["file"] for hit in hits] and list(rows[0]) == [
        "path", "score", "taken_at", "captions"]
    kite = next(row for row in rows if row["path"].endswith("plain/red.jpg"))
    assert "a red kite on a sunny day" in kite["captions"] and kite["taken_at"] == "2021-03-01T10:00:00"
    browsed = json.loads(client.predict(folder="2023", format="json", top=50, api_name="/export"))
    assert [row["path"] for row in browsed] == [h["file"] for h in client.predict(
        folder="2023", top=50, api_name="/browse")["hits"]]


def test_caption_search_finds_captions_and_texts(client, app_library):
    found = client.predict("kite", api_name="/search_captions")
    assert found[0]["text"] == "a red kite on a sunny day" and found[0]["source"] == "sidecar"
    assert found[0]["file"] == str(app_library.path("plain/red.jpg")) and found[0]["routes"]["keyword"] == 1
    receipt = client.predict("receipt", top=1, api_name="/search_captions")[0]
    assert receipt["text"] == "receipt" and receipt["file"] is None


def test_image_to_text_ranks_every_text(client, app_library):
    texts = client.predict(handle_file(str(app_library.path("nature/yellow.jpg"))), top=10, api_name="/image_to_text")
    assert {t["text"] for t in texts} == {"a red kite on a sunny day", "green meadow", *app_server.FREE_TEXTS}
    scores = [t["score"] for t in texts]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


def test_photo_details_and_stats(client, app_library):
    photo = client.predict(app_library.ids["plain/red.jpg"], api_name="/photo")
    assert photo["taken_at"] == "2021-03-01T10:00:00" and "EOS 5D" in photo["camera"]
    assert photo["captions"] == [{"text": "a red kite on a sunny day", "source": "sidecar"}]
    stats = client.predict(api_name="/stats")
    assert stats["photos"] == len(app_library.ids) and stats["captions"] == 2 and stats["texts"] == 3
    assert stats["roots"] == {str(app_library.root): len(app_library.ids)}


# ---------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("api_name, args, kwargs, words", [
    ("/search_text", [""], {}, "empty query"),
    ("/search_text", ["   "], {}, "empty query"),
    ("/search_text", ["x" * 10_000], {}, "10,000 characters"),
    ("/search_text", ["red"], {"folder": "no/such/folder"}, "no photos match the filters (folder no/such/folder)"),
    ("/search_text", ["red"], {"date_from": "2030"}, "no photos match the filters"),
    ("/search_text", ["red"], {"date_from": "2021-13"}, "invalid from date"),
    ("/search_text", ["red"], {"folder": "../.."}, "must not contain '..'"),
    ("/search_text", ["red"], {"top": 0}, "top must be"),
    ("/export", ["red"], {"format": "xlsx"}, "export format must be one of: csv, json"),
    ("/search_text", ["red"], {"sort": "newest"}, "sort must be one of: relevance, date"),
    ("/search_text", ["red"], {"group": "week"}, "the grouping must be one of: day, month"),
    ("/browse", [], {"folder": "no/such/folder"}, "no photos match the filters (folder no/such/folder)"),
    ("/browse", [], {"offset": -3}, "offset must be"),
    ("/search_captions", [""], {}, "empty query"),
    ("/more_like_this", ["0123456789abcdef"], {}, "no photo with id"),
    ("/photo", ["../../etc/passwd"], {}, "no photo with id"),
])
def test_bad_input_gets_one_clear_error(client, api_name, args, kwargs, words):
    assert words in error_of(client, *args, api_name=api_name, **kwargs)


def write_bad_uploads(folder: Path) -> dict[str, Path]:
    real = (REPO / "tests" / "fixtures" / "nomic-tiny" / "images" / "cmyk.jpg").read_bytes()
    files = {"truncated": folder / "truncated.jpg", "text": folder / "notes.jpg", "bomb": folder / "bomb.png"}
    files["truncated"].write_bytes(real[:len(real) // 3])
    files["text"].write_text("this is not an image\n" * 20)
    Image.new("1", (10_000, 6_000)).save(files["bomb"])  # 60 MP in a few kB: refused from the header
    return files


@pytest.mark.parametrize("kind, words", [
    ("truncated", "damaged or truncated"),
    ("text", "not an image Glance can read"),
    ("bomb", "megapixels"),
])
@pytest.mark.parametrize("api_name", ["/search_image", "/image_to_text"])
def test_bad_uploads_get_one_clear_error(client, tmp_path, kind, words, api_name):
    upload = write_bad_uploads(tmp_path)[kind]
    message = error_of(client, handle_file(str(upload)), api_name=api_name)
    assert words in message and "uploaded image" in message


def test_uploads_over_the_size_limit_are_refused(session, tmp_path):
    from search.uploads import MAX_UPLOAD_BYTES

    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.truncate(MAX_UPLOAD_BYTES + 1)
    with big.open("rb") as data:
        response = session.post("/gradio_api/upload", files={"files": ("big.png", data, "image/png")})
    assert response.status_code == 413


def call(session: httpx.Client, api_name: str, data: list) -> tuple[int, str]:
    """A raw API call (POST, then read the event stream): what any HTTP client, not just gradio_client, can send."""
    response = session.post(f"/gradio_api/call/{api_name}", json={"data": data})
    if response.status_code != 200:
        return response.status_code, response.text
    stream = session.get(f"/gradio_api/call/{api_name}/{response.json()['event_id']}")
    return stream.status_code, stream.text


def test_the_server_never_fetches_a_url(session):
    remote = {"path": "https://example.com/cat.jpg", "meta": {"_type": "gradio.FileData"}}
    status, text = call(session, "search_image", [remote])
    assert status == 400 and "does not fetch URLs" in text
    escaped = '{"data": [{"path": "\\u0068ttp://example.com/cat.jpg", "meta": {"_type": "gradio.FileData"}}]}'
    for headers in ({"content-type": "application/json"}, {"content-type": "text/plain"}, {}):
        response = session.post("/gradio_api/call/image_to_text", content=escaped, headers=headers)
        assert response.status_code == 400, headers
    for route in ("/gradio_api/file=https://example.com/cat.jpg", "/gradio_api/file/http://example.com/x.png",
                  "/gradio_api/proxy=http://example.com/x"):
        response = session.get(route)
        assert response.status_code == 403 and "does not fetch URLs" in response.text


def test_a_client_cannot_name_a_server_file_as_query_image(session, app_library):
    for payload in ({"path": str(app_library.path("plain/red.jpg")), "meta": {"_type": "gradio.FileData"}},
                    {"path": "/etc/passwd"}, {"path": str(app_library.path("plain/red.jpg"))}, "/etc/passwd"):
        status, text = call(session, "search_image", [payload, "", "", "", "", 24, 0])
        assert "event: error" in text and "root:" not in text and '"hits"' not in text, (payload, text)


# ---------------------------------------------------------------------------------------------- login

def test_every_page_file_and_call_needs_the_login(app, session, app_library):
    anonymous = httpx.Client(base_url=app.url.rstrip("/"), timeout=30)
    photo = app_library.path("plain/red.jpg").read_bytes()
    upload = session.post("/gradio_api/upload", files={"files": ("red.jpg", photo)})
    uploaded = upload.json()[0]
    for route in ("/config", "/gradio_api/info", "/gradio_api/openapi.json", f"/gradio_api/file={uploaded}"):
        assert anonymous.get(route).status_code == 401, route
        assert session.get(route).status_code == 200, route
    assert anonymous.post("/gradio_api/call/search_text", json={"data": ["red"]}).status_code == 401
    assert anonymous.post("/gradio_api/upload", files={"files": ("a.jpg", b"x")}).status_code == 401
    # The login form carries no component and nothing from the library. (gradio 6.31 does embed the API schema,
    # the same for every Glance, in it: endpoint and parameter names only.)
    page = anonymous.get("/").text
    for secret in (str(app_library.db), str(app_library.root), "red.jpg", "query-image", "a red kite"):
        assert secret not in page, secret
    assert anonymous.post("/login", data={"username": AUTH[0], "password": "wrong"}).status_code == 400


def test_gradio_client_needs_the_right_login(app):
    with pytest.raises(Exception, match="(?i)login|credentials"):
        Client(app.url, verbose=False)
    with pytest.raises(Exception, match="(?i)login|credentials"):
        Client(app.url, auth=(AUTH[0], "wrong"), verbose=False)


# ------------------------------------------------------------------------------------------ traversal

def traversal_targets(app_library) -> list[str]:
    upload_folder = os.environ.get("GRADIO_TEMP_DIR") or f"{tempfile.gettempdir()}/gradio"
    return [
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=../../../../../../etc/passwd",
        "/gradio_api/file=%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        f"/gradio_api/file={upload_folder}/../../etc/passwd",
        f"/gradio_api/file={upload_folder}/%2e%2e/%2e%2e/etc/passwd",
        "/gradio_api/file/etc/passwd",
        "/gradio_api/file/../../../etc/passwd",
        "/file=/etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2f..%2f..%2fetc%2fpasswd",
        f"/gradio_api/file={app_library.path('plain/red.jpg')}",  # an indexed original: never served by path
        f"/gradio_api/file={app_library.hidden}",  # inside the root, not indexed
        f"/gradio_api/file={app_library.path('links/escape.png')}",  # a symlink out of the root
        f"/gradio_api/file={app_library.outside}",
        f"/gradio_api/file={app_library.db}/images.lance/_versions/1.manifest",
        f"/gradio_api/file={REPO / 'app.py'}",
    ]


def raw_get(app, path: str, cookie: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (HTTP libraries would normalise the dots away)."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_path_traversal_is_refused(app, session, app_library):
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    secret = app_library.outside.read_bytes()
    for path in traversal_targets(app_library):
        status, body = raw_get(app, path, cookie)
        assert status in (403, 404), (path, status, body[:200])
        assert b"root:" not in body and secret not in body and app_library.path("plain/red.jpg").read_bytes() not in body


# -------------------------------------------------------------------------------------------- the CLI

def test_help_and_bad_flags_answer_at_once():
    helped = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--auth USER:PASS" in helped.stdout and "127.0.0.1" in helped.stdout
    bad = subprocess.run([sys.executable, "app.py", "--auth", "nopassword"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.strip() == "glance: error: --auth must be USER:PASS, both non-empty"
    assert bad.stdout == ""


def test_a_huge_upload_is_refused_for_its_pixels(client, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (20_000, 20_000)).save(huge)  # 400 MP in a few kB
    for api_name in ("/search_image", "/image_to_text"):
        message = error_of(client, handle_file(str(huge)), api_name=api_name)
        assert "20000x20000" in message and "limit of 50 MP" in message and "not an image" not in message
