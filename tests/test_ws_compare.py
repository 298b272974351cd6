"""WS /v1/ws/chat comparisons: two sides streamed at once, votes mid-stream, stop, refusals.

Runs on SQLite and PostgreSQL. Every refusal is checked twice: the caller gets an error
frame on a socket that stays open, and the database holds exactly what it held before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from store.db.models import Comparison, ComparisonChoice, Generation, GenerationStatus
from tests.dbutil import count, fetch
from tests.fakes import FakeEngine
from tests.test_api_chat import HELLO
from tests.test_feedback_api import new_user

WS = "/v1/ws/chat"
MakeClient = Callable[..., TestClient]
Frame = dict[str, Any]

pytestmark = pytest.mark.timeout(90)

WORDS = [f"w{i}" for i in range(40)]
LONG = " ".join(WORDS)  # 40 deltas per side
SLOW = 0.02  # seconds per delta: a side takes about 0.8 s


def connect(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    # websocket_connect adds upgrade headers to the dict it gets: hand it a copy.
    return client.websocket_connect(WS, headers=dict(headers or {}))


def me(client: TestClient, headers: dict[str, str]) -> str:
    r = client.get("/v1/me", headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["user_id"])


def receive_until_done(ws: Any, limit: int = 10_000) -> list[Frame]:
    """Frames up to and including the second `done` (one per side); fails on error/stopped."""
    frames: list[Frame] = []
    dones = 0
    for _ in range(limit):
        f = ws.receive_json()
        assert f["type"] not in ("error", "stopped"), f
        frames.append(f)
        if f["type"] == "done":
            dones += 1
            if dones == 2:
                return frames
    raise AssertionError(f"no two done frames in {limit} frames")


def receive_type(ws: Any, kind: str, limit: int = 10_000) -> tuple[list[Frame], Frame]:
    """The frames before the first frame of `kind`, and that frame."""
    before: list[Frame] = []
    for _ in range(limit):
        f = ws.receive_json()
        if f["type"] == kind:
            return before, f
        before.append(f)
    raise AssertionError(f"no {kind} frame in {limit} frames")


def expect_error(ws: Any, code: str) -> Frame:
    f = ws.receive_json()
    assert f["type"] == "error", f
    err: Frame = f["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["code"] == code, err
    assert err["message"] and "Traceback" not in err["message"]
    return err


@dataclass
class Streamed:
    comparison: Frame
    frames: list[Frame]  # after the comparison frame, up to the second done

    def deltas(self, side: str) -> list[Frame]:
        return [f for f in self.frames if f["type"] == "delta" and f["side"] == side]

    def text(self, side: str) -> str:
        return "".join(f["content"] for f in self.deltas(side))

    def done(self, side: str) -> Frame:
        [d] = [f for f in self.frames if f["type"] == "done" and f["side"] == side]
        return d

    def gid(self, side: str) -> str:
        return str(self.comparison[side]["generation_id"])


def compare(ws: Any, **fields: Any) -> Frame:
    """Send a compare frame; the first frame back must announce the comparison."""
    ws.send_json({"type": "compare", "messages": HELLO, **fields})
    f: Frame = ws.receive_json()
    assert f["type"] == "comparison", f
    return f


def compare_to_end(ws: Any, **fields: Any) -> Streamed:
    first = compare(ws, **fields)
    return Streamed(first, receive_until_done(ws))


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def generations(db: str) -> dict[str, Generation]:
    return {g.id: g for g in fetch(db, Generation)}


def the_comparison(db: str, cid: str) -> Comparison:
    [row] = fetch(db, Comparison, Comparison.id == cid)
    return row


def test_compare_streams_both_sides_interleaved(make_client: MakeClient, db_url: str) -> None:
    words = [f"t{i}" for i in range(8)]
    client = make_client(db_url, engine=FakeEngine(" ".join(words), delay=0.01), auth=False)
    dev = new_user(client)
    with connect(client, dev) as ws:
        s = compare_to_end(ws)

    c = s.comparison
    assert set(c) == {"type", "id", "a", "b"}
    assert c["id"].startswith("cmp-") and len(c["id"]) == 36
    assert c["a"]["generation_id"] != c["b"]["generation_id"]
    assert all(c[side]["generation_id"].startswith("chatcmpl-") for side in "ab")
    assert {f["type"] for f in s.frames} == {"delta", "done"}

    sides = [f["side"] for f in s.frames if f["type"] == "delta"]
    assert sides.count("a") == sides.count("b") == len(words)
    # Interleaved, not one side after the other.
    assert sides.index("b") < len(sides) - 1 - sides[::-1].index("a")
    assert sides.index("a") < len(sides) - 1 - sides[::-1].index("b")
    expected_deltas = [words[0]] + [" " + w for w in words[1:]]
    for side in "ab":
        assert [d["content"] for d in s.deltas(side)] == expected_deltas
        assert all(d["index"] == 0 for d in s.deltas(side))
        # Each side's done comes after all of its deltas.
        own = [f for f in s.frames if f["side"] == side]
        assert own[-1]["type"] == "done" and [f["type"] for f in own[:-1]] == ["delta"] * 8
        done = s.done(side)
        assert done["choices"] == [
            {"index": 0, "generation_id": s.gid(side), "finish_reason": "stop"}
        ]
        usage = done["usage"]
        assert usage["completion_tokens"] == len(words)
        assert usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + len(words)

    user_id = me(client, dev)
    gens = generations(db_url)
    assert set(gens) == {s.gid("a"), s.gid("b")}
    for side in "ab":
        g = gens[s.gid(side)]
        assert (g.text, g.source, g.status, g.finish_reason) == (
            " ".join(words),
            "comparison",
            GenerationStatus.COMPLETED,
            "stop",
        )
        assert g.user_id == user_id and g.completion_tokens == len(words)
        assert g.prompt == HELLO
    row = the_comparison(db_url, c["id"])
    assert (row.user_id, row.generation_a_id, row.generation_b_id) == (
        user_id,
        s.gid("a"),
        s.gid("b"),
    )
    assert row.prompt == HELLO and row.choice is None and row.voted_at is None


def test_vote_frame_while_streaming(make_client: MakeClient, db_url: str) -> None:
    client = make_client(db_url, engine=FakeEngine(LONG, delay=SLOW), auth=False)
    dev = new_user(client)
    with connect(client, dev) as ws:
        first = compare(ws)
        cid = first["id"]
        opening = ws.receive_json()
        assert opening["type"] == "delta"  # streaming has begun
        ws.send_json(
            {"type": "vote", "comparison_id": cid, "choice": "a", "reason": "more_helpful"}
        )
        before, voted = receive_type(ws, "voted")
        before.insert(0, opening)
        assert {f["type"] for f in before} <= {"delta"}

        shown = voted["comparison"]
        assert shown["id"] == cid and shown["object"] == "comparison"
        assert (shown["choice"], shown["reason"]) == ("a", "more_helpful")
        assert shown["voted_at"] is not None
        for side in "ab":
            assert shown[side]["generation_id"] == first[side]["generation_id"]
            assert shown[side]["model"] == "loopchat@v0"  # revealed by the vote
            assert shown[side]["finish_reason"] is None  # still streaming
        # The vote is stored while both replies are still being generated.
        row = the_comparison(db_url, cid)
        assert row.choice is ComparisonChoice.A and row.reason == "more_helpful"
        assert row.voted_at is not None
        gens = generations(db_url)
        assert {g.status for g in gens.values()} == {GenerationStatus.STREAMING}

        rest = receive_until_done(ws)
        assert sum(f["type"] == "delta" for f in rest) > 10  # deltas kept coming after the vote
        s = Streamed(first, before + rest)
        assert s.text("a") == s.text("b") == LONG

        gens = generations(db_url)
        for side in "ab":
            g = gens[first[side]["generation_id"]]
            assert (g.status, g.text, g.finish_reason) == (GenerationStatus.COMPLETED, LONG, "stop")

        # One vote per comparison: the second is refused and the first is kept.
        ws.send_json({"type": "vote", "comparison_id": cid, "choice": "b"})
        expect_error(ws, "already_voted")
        # The socket is still open and still answers.
        ws.send_json({"type": "vote", "comparison_id": cid, "choice": "tie"})
        expect_error(ws, "already_voted")

    row = the_comparison(db_url, cid)
    assert (row.choice, row.reason) == (ComparisonChoice.A, "more_helpful")
    got = client.get(f"/v1/comparisons/{cid}", headers=dev).json()
    assert got["a"]["content"] == got["b"]["content"] == LONG
    assert got["a"]["model"] == got["b"]["model"] == "loopchat@v0"
    assert got["choice"] == "a"


def test_http_vote_during_websocket_stream(make_client: MakeClient, db_url: str) -> None:
    client = make_client(db_url, engine=FakeEngine(LONG, delay=SLOW), auth=False)
    dev = new_user(client)
    with connect(client, dev) as ws:
        first = compare(ws)
        cid = first["id"]
        assert ws.receive_json()["type"] == "delta"
        r = client.post(
            f"/v1/comparisons/{cid}/vote",
            json={"choice": "b", "reason": "more_concise"},
            headers=dev,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["choice"], body["reason"]) == ("b", "more_concise")
        assert body["a"]["model"] == body["b"]["model"] == "loopchat@v0"
        assert body["a"]["finish_reason"] is None and body["b"]["finish_reason"] is None

        rest = receive_until_done(ws)  # the stream is not disturbed by the vote
        assert sum(f["type"] == "delta" for f in rest) > 10
        assert "voted" not in {f["type"] for f in rest}  # HTTP votes are answered over HTTP

        ws.send_json({"type": "vote", "comparison_id": cid, "choice": "a"})
        expect_error(ws, "already_voted")

    row = the_comparison(db_url, cid)
    assert (row.choice, row.reason) == (ComparisonChoice.B, "more_concise")
    gens = generations(db_url)
    assert [(g.status, g.text) for g in gens.values()] == [(GenerationStatus.COMPLETED, LONG)] * 2


def test_stop_during_comparison_cuts_off_both(make_client: MakeClient, db_url: str) -> None:
    words = [f"s{i}" for i in range(300)]
    engine = FakeEngine(" ".join(words), delay=0.01)
    client = make_client(db_url, engine=engine, auth=False, max_new_tokens=400)
    dev = new_user(client)
    with connect(client, dev) as ws:
        first = compare(ws, max_tokens=300)
        for _ in range(4):
            assert ws.receive_json()["type"] == "delta"
        ws.send_json({"type": "stop"})
        before, stopped = receive_type(ws, "stopped")
        assert {f["type"] for f in before} <= {"delta"}  # no done: neither side finished
        ids = [first["a"]["generation_id"], first["b"]["generation_id"]]
        assert stopped == {"type": "stopped", "generation_ids": ids}

        def both_cut_off() -> bool:
            gens = generations(db_url)
            return all(gens[i].status is GenerationStatus.CUT_OFF for i in ids)

        wait_for(both_cut_off)
        gens = generations(db_url)
        for gid in ids:
            g = gens[gid]
            assert 1 <= g.completion_tokens < 300
            assert g.text == " ".join(words[: g.completion_tokens])  # what was produced
            assert g.finish_reason is None and g.source == "comparison"
        wait_for(lambda: engine.active == 0, timeout=5)  # the engine stopped both

        # The socket carries the next request.
        s = compare_to_end(ws, max_tokens=2)
        assert s.text("a") == s.text("b") == "s0 s1"
        assert s.done("a")["choices"][0]["finish_reason"] == "length"

    assert count(db_url, Comparison) == 2
    statuses = [g.status for g in fetch(db_url, Generation)]
    assert sorted(statuses) == sorted(
        [GenerationStatus.CUT_OFF] * 2 + [GenerationStatus.COMPLETED] * 2
    )


def test_bad_frames_get_errors_and_change_nothing(make_client: MakeClient, db_url: str) -> None:
    client = make_client(db_url, engine=FakeEngine("short answer"), auth=False)
    alice, bob = new_user(client), new_user(client)
    with connect(client, alice) as ws:
        s = compare_to_end(ws)
        cid = s.comparison["id"]
        stored = sorted((g.id, g.status, g.text) for g in fetch(db_url, Generation))

        checked_by_service: list[Frame] = [  # what the schema allows, the service refuses
            {"messages": [{"role": "user", "content": " "}]},
            {"messages": HELLO, "max_tokens": 100_000},
        ]
        refused: list[Frame] = [
            {"messages": HELLO, "model": "loopchat@v0"},  # versions are hidden: no choosing
            {"messages": HELLO, "n": 2},
            {"messages": []},
            {"messages": HELLO, "temperature": 0},
            {"messages": HELLO, "seed": 3},
            *checked_by_service,
        ]
        for fields in refused:
            ws.send_json({"type": "compare", **fields})
            err = ws.receive_json()
            assert err["type"] == "error", (fields, err)
            # Schema errors are invalid_value (as HTTP's 422); a cap is bad_request (HTTP's 400).
            expected = "bad_request" if fields in checked_by_service else "invalid_value"
            assert err["error"]["code"] == expected, (fields, err)
            assert err["error"]["type"] == "invalid_request_error"
        assert ws_error_message(ws, {"type": "compare", "messages": HELLO, "model": "x"}) == (
            "model: Extra inputs are not permitted"
        )
        assert ws_error_message(ws, {"type": "compare", "messages": HELLO, "n": 2}) == (
            "n: Extra inputs are not permitted"
        )

        for frame, code in (
            ({"type": "vote", "comparison_id": cid, "choice": "c"}, "invalid_value"),
            ({"type": "vote", "comparison_id": cid}, "invalid_value"),
            ({"type": "vote", "choice": "a"}, "invalid_value"),
            ({"type": "vote", "comparison_id": cid, "choice": "a", "extra": 1}, "invalid_value"),
            (
                {"type": "vote", "comparison_id": cid, "choice": "a", "reason": "wrong"},
                "invalid_value",
            ),
            ({"type": "vote", "comparison_id": f"cmp-{'0' * 32}", "choice": "a"}, "not_found"),
            ({"type": "vote", "comparison_id": "nope", "choice": "a"}, "not_found"),
            ({"type": "wave"}, "bad_request"),
        ):
            ws.send_json(frame)
            expect_error(ws, code)

        with connect(client, bob) as other:
            other.send_json({"type": "vote", "comparison_id": cid, "choice": "a"})
            err = expect_error(other, "not_your_comparison")
            other.send_json({"type": "vote", "comparison_id": cid, "choice": "b"})
            assert expect_error(other, "not_your_comparison") == err

        # Nothing changed.
        assert count(db_url, Comparison) == 1
        row = the_comparison(db_url, cid)
        assert row.choice is None and row.voted_at is None
        assert sorted((g.id, g.status, g.text) for g in fetch(db_url, Generation)) == stored

        # The same socket still works: its owner's vote goes through.
        ws.send_json({"type": "vote", "comparison_id": cid, "choice": "tie"})
        voted = ws.receive_json()
        assert voted["type"] == "voted" and voted["comparison"]["choice"] == "tie"
    assert the_comparison(db_url, cid).choice is ComparisonChoice.TIE


def ws_error_message(ws: Any, frame: Frame) -> str:
    ws.send_json(frame)
    f = ws.receive_json()
    assert f["type"] == "error", f
    return str(f["error"]["message"])


def test_websocket_needs_credentials(make_client: MakeClient, db_url: str) -> None:
    client = make_client(db_url, engine=FakeEngine("hello you"), auth=False)
    with connect(client) as ws:
        err = expect_error(ws, "missing_credentials")
        assert err["type"] == "authentication_error"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    with connect(client, {"Authorization": "Bearer lc-unknown"}) as ws:
        expect_error(ws, "invalid_api_key")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    assert count(db_url, Generation) == 0

    r = client.post("/v1/session")
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    with connect(client) as ws:  # the client sends its session cookie
        s = compare_to_end(ws)
        assert s.text("a") == s.text("b") == "hello you"
    gens = generations(db_url)
    assert {g.user_id for g in gens.values()} == {user_id}
    assert the_comparison(db_url, s.comparison["id"]).user_id == user_id

    cookie = client.cookies.get("loopchat_session")
    assert cookie is not None
    client.cookies.clear()
    client.cookies.set("loopchat_session", cookie[:-2] + ("xx" if cookie[-2:] != "xx" else "yy"))
    with connect(client) as ws:
        expect_error(ws, "invalid_session")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_vote_rate_limit_over_websocket(make_client: MakeClient, db_url: str) -> None:
    client = make_client(
        db_url, engine=FakeEngine("hi"), auth=False, vote_burst=1, vote_rate_per_minute=1
    )
    dev = new_user(client)
    with connect(client, dev) as ws:
        first = compare_to_end(ws).comparison["id"]
        second = compare_to_end(ws).comparison["id"]
        ws.send_json({"type": "vote", "comparison_id": first, "choice": "a"})
        assert ws.receive_json()["type"] == "voted"
        ws.send_json({"type": "vote", "comparison_id": second, "choice": "b"})
        err = expect_error(ws, "rate_limit_exceeded")
        assert err["type"] == "rate_limit_error"
        assert err["message"].startswith("too many votes; try again in ")
        seconds = int(err["message"].removeprefix("too many votes; try again in ").split()[0])
        assert 1 <= seconds <= 60
        # The socket stays open: a non-vote frame still gets an answer.
        s = compare_to_end(ws)
        assert s.text("a") == "hi"
    assert the_comparison(db_url, first).choice is ComparisonChoice.A
    assert the_comparison(db_url, second).choice is None
    # Limits are per user.
    other = new_user(client)
    with connect(client, other) as ws:
        cid = compare_to_end(ws).comparison["id"]
        ws.send_json({"type": "vote", "comparison_id": cid, "choice": "both_bad"})
        assert ws.receive_json()["comparison"]["choice"] == "both_bad"
