"""The built web app is served from the API's origin without shadowing the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fakes import FakeEngine


def test_pages_and_files_are_served_and_the_api_is_untouched(
    make_client: Any, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>app</title>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    client = make_client(engine=FakeEngine(), web_dir=dist)
    for page in ("/", "/compare", "/dashboard", "/c/conv-123"):
        r = client.get(page)
        assert r.status_code == 200 and "<title>app</title>" in r.text, page
    r = client.get("/assets/app.js")
    assert r.status_code == 200 and r.text == "console.log(1)"
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"]
    r = client.get("/nope.js")
    assert r.status_code == 404 and r.json()["error"]["type"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").json()["data"][0]["id"] == "loopchat"


def test_an_unbuilt_app_says_how_to_build_it(make_client: Any, tmp_path: Path) -> None:
    client = make_client(engine=FakeEngine(), web_dir=tmp_path / "missing")
    r = client.get("/")
    assert r.status_code == 200 and "npm run build" in r.text
