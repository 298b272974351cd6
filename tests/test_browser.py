"""The web app in a real browser: Debian's chromium driven by Playwright (its Python
binding; no browser download), against a running server.

Chat, votes, compare and the dashboard run on the tiny model (transformers engine). The
markdown-safety test runs on a scripted engine, because it needs a reply that carries
HTML and script. Screenshots of the three views are written to tests/artifacts/screenshots/.
The copies that README shows are in docs/screenshots/ and are refreshed from these.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.conftest import ADMIN, ADMIN_TOKEN
from tests.fakes import FakeEngine
from tests.servers import running_server
from tests.test_swap_under_load import make_adapter, register

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "artifacts" / "screenshots"
WEB = Path(__file__).resolve().parent.parent / "frontend" / "dist"
TIMEOUT_MS = 60_000


def settings(data: Path, model: Path) -> Settings:
    return Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'loopchat.db'}",
        model=model,
        engine="transformers",
        admin_token=ADMIN_TOKEN,
        policy_poll_seconds=3600,
        default_max_tokens=48,
        web_dir=WEB,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `scripts/bootstrap.sh test` installs it")
    if not (WEB / "index.html").is_file():
        pytest.fail("the web app is not built: `scripts/bootstrap.sh test` builds it")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("web")
    st = settings(data, tiny_model_dir)
    with running_server(st) as base:
        yield base, st


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def ws_frames(page: Any) -> list[dict[str, Any]]:
    """Every frame the page receives on its websockets, parsed, in order."""
    frames: list[dict[str, Any]] = []

    def on_ws(ws: Any) -> None:
        ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_ws)
    return frames


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def api(page: Any, path: str) -> Any:
    """GET through the page's own cookie: what the server stored for this browser user."""
    origin = "/".join(page.url.split("/")[:3])
    r = page.request.get(origin + path)
    assert r.ok, r.text()
    return r.json()


def test_chat_streams_and_a_thumbs_up_with_a_reason_is_stored(server: Any, page: Any) -> None:
    base, _ = server
    expect = playwright.expect
    frames = ws_frames(page)
    page.goto(base + "/")
    composer = page.get_by_test_id("composer")
    composer.fill("Tell me about the sea.")
    composer.press("Enter")
    reply = page.get_by_test_id("message-assistant").last
    expect(reply).to_have_attribute("data-status", "done")
    deltas = [f for f in frames if f["type"] == "delta"]
    assert len(deltas) >= 2, "the reply should arrive token by token"
    shown = reply.inner_text()
    assert deltas[0]["content"].strip()[:3] in shown
    expect(reply.get_by_test_id("model-tag")).to_have_text("loopchat@v0")

    reply.get_by_test_id("thumb-up").click()
    reply.get_by_test_id("reason-helpful").click()
    reply.get_by_test_id("vote-comment").fill("nice and short")
    reply.get_by_test_id("vote-submit").click()
    expect(reply.get_by_test_id("thumb-up")).to_have_attribute("aria-pressed", "true")

    gid = next(f for f in frames if f["type"] == "start")["generation_ids"][0]
    deadline = time.monotonic() + 10
    while (vote := api(page, f"/v1/feedback/{gid}"))["reason"] is None:
        assert time.monotonic() < deadline, vote
        time.sleep(0.1)
    assert (vote["rating"], vote["reason"], vote["comment"]) == ("up", "helpful", "nice and short")
    [conv] = api(page, "/v1/conversations")["data"]
    assert conv["title"] == "Tell me about the sea."
    composer.fill("```python\nprint('hello')\n```\nAnd a second question?")
    composer.press("Enter")
    expect(page.get_by_test_id("message-assistant").nth(1)).to_have_attribute("data-status", "done")
    shot(page, "chat")

    # After a reload the stored vote shows on the buttons.
    page.reload()
    first = page.get_by_test_id("message-assistant").first
    expect(first.get_by_test_id("thumb-up")).to_have_attribute("aria-pressed", "true")
    expect(first.get_by_test_id("thumb-down")).to_have_attribute("aria-pressed", "false")


def test_a_compare_round_with_a_vote_reveals_the_versions(server: Any, page: Any) -> None:
    base, _ = server
    expect = playwright.expect
    frames = ws_frames(page)
    page.goto(base + "/compare")
    page.get_by_test_id("compare-input").fill("Name a colour.")
    page.get_by_test_id("compare-send").click()
    vote_a = page.get_by_test_id("vote-a")
    expect(vote_a).to_be_enabled()
    vote_a.click()  # allowed while the replies may still stream
    expect(page.get_by_test_id("vote-result")).to_be_visible()
    expect(page.get_by_test_id("reveal-a")).to_contain_text("loopchat@v0")
    expect(page.get_by_test_id("reveal-b")).to_contain_text("loopchat@v0")
    expect(page.get_by_test_id("side-a")).not_to_be_empty()
    shot(page, "compare")
    cmp_id = next(f for f in frames if f["type"] == "comparison")["id"]
    stored = api(page, f"/v1/comparisons/{cmp_id}")
    assert stored["choice"] == "a"
    assert {stored["a"]["model"], stored["b"]["model"]} == {"loopchat@v0"}


def test_model_output_cannot_run_script(tmp_path: Path, tiny_model_dir: Path, page: Any) -> None:
    evil = "\n\n".join(
        [
            "**bold**",
            "<script>window.__pwned=1</script>",
            '<img src=x onerror="window.__pwned=2">',
            "[click](javascript:window.__pwned=3) and "
            '<a href="#" onclick="window.__pwned=4">a</a> <b onmouseover="window.__pwned=5">b</b>',
        ]
    )
    with running_server(settings(tmp_path, tiny_model_dir), FakeEngine(evil)) as base:
        page.goto(base + "/")
        page.get_by_test_id("composer").fill("Say something dangerous.")
        page.get_by_test_id("send").click()
        reply = page.get_by_test_id("message-assistant").last
        playwright.expect(reply).to_have_attribute("data-status", "done")
        playwright.expect(reply.locator("strong")).to_have_text("bold")  # markdown still renders
        for link in reply.locator("a").all():
            link.click()
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned") is None
        assert reply.locator("script").count() == 0
        assert reply.locator("[onerror], [onclick], [onmouseover], img").count() == 0
        playwright.expect(reply).to_contain_text("<script>")  # shown as text, not run
        assert all(
            not (href or "").lower().startswith("javascript:")
            for href in reply.locator("a").evaluate_all(
                "els => els.map(e => e.getAttribute('href'))"
            )
        )


def models(base: str) -> dict[str, str]:
    cards = httpx.get(f"{base}/v1/models", headers=ADMIN, timeout=30).json()["data"]
    return {c["id"]: c["status"] for c in cards}


def test_dashboard_shows_versions_and_charts_and_promotes_and_rolls_back(
    server: Any, page: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base, st = server
    expect = playwright.expect
    make_adapter(tiny_model_dir, tmp_path / "v1", seed=3)
    register(st.resolved_database_url, "v1", tmp_path / "v1")
    r = httpx.post(f"{base}/v1/admin/policies/notify", json={"version": "v1"}, headers=ADMIN)
    assert r.status_code == 202
    deadline = time.monotonic() + 60
    while models(base).get("loopchat@v1") != "canary":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    page.goto(base + "/dashboard")
    page.get_by_test_id("token-input").fill(ADMIN_TOKEN)
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("version-v0")).to_have_attribute("data-status", "serving")
    expect(page.get_by_test_id("version-v1")).to_have_attribute("data-status", "canary")
    for chart in ("chart-thumbs", "chart-elo", "chart-votes"):
        expect(page.get_by_test_id(chart).locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("events-list")).to_contain_text("canary")
    shot(page, "dashboard")

    page.get_by_test_id("promote-v1").click()
    page.get_by_test_id("confirm-reason").fill("better in the browser test")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("version-v1")).to_have_attribute("data-status", "serving")
    assert models(base)["loopchat@v1"] == "serving"
    assert models(base)["loopchat@v0"] == "retired"

    page.get_by_test_id("rollback").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("version-v0")).to_have_attribute("data-status", "serving")
    assert models(base)["loopchat@v0"] == "serving"
    events = httpx.get(f"{base}/v1/admin/policies/events", headers=ADMIN).json()
    assert [e["kind"] for e in events if e["kind"] != "swap"][:2] == ["rollback", "promote"]
    assert any(e["reason"] == "better in the browser test" for e in events)


def test_the_chat_works_on_a_phone_sized_screen(server: Any, browser: Any) -> None:
    base, _ = server
    context = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(base + "/")
        toggle = page.get_by_test_id("sidebar-toggle")
        playwright.expect(toggle).to_be_visible()
        playwright.expect(toggle).to_have_attribute("aria-expanded", "false")
        page.get_by_test_id("composer").fill("Hi")
        page.get_by_test_id("composer").press("Enter")
        reply = page.get_by_test_id("message-assistant").last
        playwright.expect(reply).to_have_attribute("data-status", "done")
        box = page.get_by_test_id("composer").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        shot(page, "chat-phone")
    finally:
        context.close()


UNLABELED_JS = """() => [...document.querySelectorAll(
  'button, a[href], input, textarea, select, [role=button], canvas'
)].filter(el => el.offsetParent !== null).filter(el => {
  const named = (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') ||
    el.getAttribute('title') || (el.labels && el.labels.length) ||
    (el.textContent || '').trim() || el.getAttribute('alt'));
  return !named;
}).map(el => el.outerHTML.slice(0, 120))"""


def test_every_control_has_a_name_and_errors_show(server: Any, page: Any) -> None:
    base, _ = server
    expect = playwright.expect
    page.goto(base + "/")
    composer = page.get_by_test_id("composer")
    composer.fill("word " * 3000)  # over the prompt limit: the server refuses it
    composer.press("Enter")
    error = page.get_by_test_id("chat-error")
    expect(error).to_be_visible()
    assert error.get_attribute("data-code")  # the server's error code, shown to the user
    assert page.evaluate(UNLABELED_JS) == []
    # Keyboard: Shift+Enter makes a new line instead of sending.
    composer.fill("first line")
    composer.press("Shift+Enter")
    composer.type("second line")
    assert composer.input_value() == "first line\nsecond line"
    page.goto(base + "/compare")
    expect(page.get_by_test_id("compare-input")).to_be_visible()
    assert page.evaluate(UNLABELED_JS) == []
    page.goto(base + "/dashboard")
    page.get_by_test_id("token-input").fill(ADMIN_TOKEN)
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("timeline")).to_be_visible()
    expect(page.get_by_test_id("chart-elo").locator("canvas")).to_be_visible()
    assert page.evaluate(UNLABELED_JS) == []
