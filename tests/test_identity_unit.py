"""Identity building blocks on their own: keys, cookies, pseudonyms, secrets, rate limits."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import pytest

from service.identity.credentials import (
    CookieSigner,
    hash_key,
    new_api_key,
    pseudonym,
    shown_prefix,
)
from service.identity.ratelimit import RateLimiter, retry_after_seconds
from store.secrets import load_or_create_secret

SECRET = "unit-test-secret"
DAY = 86_400
T0 = 1_700_000_000  # a fixed "now", in seconds since the epoch
USER = "usr-0123456789abcdef0123456789abcdef"
URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- API keys ---------------------------------------------------------------------------


def test_new_api_key_shape_and_uniqueness() -> None:
    keys = [new_api_key() for _ in range(200)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key.startswith("lc-") and len(key) == 46
        assert URLSAFE.match(key[3:])
        assert shown_prefix(key) == key[:10]
    assert len({shown_prefix(k) for k in keys}) == len(keys)  # prefixes tell keys apart


def test_hash_key_is_sha256_hex() -> None:
    key = "lc-" + "a" * 43
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(hash_key(key)) == 64 and re.fullmatch(r"[0-9a-f]{64}", hash_key(key))
    assert hash_key(key) == hash_key(key)
    assert hash_key(key) != hash_key(key + "b")
    assert key not in hash_key(key)


# -- session cookies --------------------------------------------------------------------


def test_cookie_round_trip() -> None:
    signer = CookieSigner(SECRET, max_age_s=DAY)
    value = signer.sign(USER, now=T0)
    user_id, issued, mac = value.split(".")
    assert (user_id, issued) == (USER, str(T0))
    assert URLSAFE.match(mac) and len(mac) == 43  # SHA-256, base64url without padding
    assert signer.verify(value, now=T0) == USER
    assert signer.verify(value, now=T0 + 1) == USER
    assert signer.sign(USER, now=T0) == value  # deterministic for the same second
    assert signer.sign(USER, now=T0 + 0.9) == value  # issued at whole seconds
    assert signer.sign(USER, now=T0 + 1) != value


def test_cookie_expires_after_max_age() -> None:
    signer = CookieSigner(SECRET, max_age_s=DAY)
    value = signer.sign(USER, now=T0)
    assert signer.verify(value, now=T0 + DAY) == USER  # the last valid second
    assert signer.verify(value, now=T0 + DAY + 1) is None
    assert signer.verify(value, now=T0 + 10 * DAY) is None
    longer = CookieSigner(SECRET, max_age_s=10 * DAY)  # age is checked, not baked in
    assert longer.verify(value, now=T0 + 10 * DAY) == USER


def test_cookie_tampering_is_refused() -> None:
    signer = CookieSigner(SECRET, max_age_s=DAY)
    value = signer.sign(USER, now=T0)
    user_id, issued, mac = value.split(".")
    other = "usr-ffffffffffffffffffffffffffffffff"
    flipped = ("B" if mac[0] == "A" else "A") + mac[1:]
    for bad in (
        f"{user_id}.{issued}.{flipped}",  # tampered mac
        f"{user_id}.{issued}.{mac[:-1]}",  # truncated mac
        f"{other}.{issued}.{mac}",  # tampered user id
        f"{user_id}.{int(issued) + DAY}.{mac}",  # extended issue time
        f"{user_id}.{issued}.{signer.sign(other, now=T0).split('.')[2]}",  # another's mac
    ):
        assert signer.verify(bad, now=T0) is None, bad
    # Another secret (a rotated one) logs every session out.
    assert CookieSigner("rotated", max_age_s=DAY).verify(value, now=T0) is None
    assert CookieSigner("rotated", max_age_s=DAY).sign(USER, now=T0) != value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "..",
        "abc",
        f"{USER}.{T0}",
        f"{USER}.{T0}.mac.extra",
        f"{USER}.notanumber.mac",
        f"{USER}.-5.mac",
        f"{USER}.1.5.mac",
        f"{USER}..mac",
    ],
)
def test_malformed_cookies_are_refused(value: str) -> None:
    signer = CookieSigner(SECRET, max_age_s=DAY)
    assert signer.verify(value, now=T0) is None


def test_non_ascii_cookie_is_refused_not_crashed() -> None:
    # A client can send any latin-1 byte in a Cookie header; such a value is not a valid
    # session and must be refused like any other (None), not raise.
    signer = CookieSigner(SECRET, max_age_s=DAY)
    assert signer.verify(f"{USER}.{T0}.\u00e9", now=T0) is None


def test_signer_does_not_trust_non_ascii_digits() -> None:
    # str.isdigit() accepts '²'; the mac check must still refuse before int() sees it.
    signer = CookieSigner(SECRET, max_age_s=DAY)
    mac = signer.sign(USER, now=T0).split(".")[2]
    assert signer.verify(f"{USER}.\u00b2.{mac}", now=T0) is None


# -- pseudonyms -------------------------------------------------------------------------


def test_pseudonym_is_stable_and_secret_dependent() -> None:
    p = pseudonym(SECRET, USER)
    assert p == pseudonym(SECRET, USER)
    assert p.startswith("u-") and len(p) == 18 and URLSAFE.match(p[2:])
    assert USER not in p and USER[4:20] not in p
    assert pseudonym("another secret", USER) != p
    assert pseudonym(SECRET, "usr-other") != p
    users = [f"usr-{i:032x}" for i in range(500)]
    assert len({pseudonym(SECRET, u) for u in users}) == len(users)
    # A pseudonym is not a session mac: the two uses are domain-separated.
    mac = CookieSigner(SECRET, DAY).sign(USER, now=T0).split(".")[2]
    assert p[2:] != mac[:16]


# -- secret files -----------------------------------------------------------------------


def test_load_or_create_secret_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "session_secret"
    first = load_or_create_secret(path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first + "\n"
    assert len(first) == 43 and URLSAFE.match(first)
    mtime = path.stat().st_mtime_ns
    assert load_or_create_secret(path) == first
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert os.listdir(path.parent) == ["session_secret"]  # no temporary file left behind
    assert load_or_create_secret(tmp_path / "other") != first


def test_load_or_create_secret_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "admin_token"
    path.write_text("  chosen-by-the-operator \n")
    assert load_or_create_secret(path) == "chosen-by-the-operator"
    assert path.read_text() == "  chosen-by-the-operator \n"


# -- rate limits ------------------------------------------------------------------------


def test_burst_then_refused_with_exact_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)  # one token a second
    assert [limiter.take("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("u") == pytest.approx(1.0)
    assert limiter.take("u") == pytest.approx(1.0)  # a refusal spends nothing
    clock.advance(0.25)
    assert limiter.take("u") == pytest.approx(0.75)
    clock.advance(0.75)
    assert limiter.take("u") == 0.0
    assert limiter.take("u") == pytest.approx(1.0)


def test_refill_rate_and_burst_cap() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=2, clock=clock)  # one token per 10 s
    assert limiter.take("u") == limiter.take("u") == 0.0
    assert limiter.take("u") == pytest.approx(10.0)
    clock.advance(25)  # 2.5 tokens' worth, but the bucket holds at most 2
    assert limiter.take("u") == 0.0
    assert limiter.take("u") == 0.0
    assert limiter.take("u") == pytest.approx(10.0)
    clock.advance(3600)  # a long pause still refills only to the burst
    assert [limiter.take("u") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("u") == pytest.approx(10.0)


def test_steady_rate_after_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=120, burst=1, clock=clock)  # one token per 0.5 s
    allowed = []
    for i in range(160):  # a call every 1/16 s (exact in binary) for 10 s
        if limiter.take("u") == 0.0:
            allowed.append(i)
        clock.advance(0.0625)
    assert allowed == list(range(0, 160, 8))  # the burst at 0, then one every 0.5 s


def test_waiting_the_wait_is_enough() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=1, burst=1, clock=clock)
    assert limiter.take("u") == 0.0
    wait = limiter.take("u")
    assert wait == 60.0
    clock.advance(59.5)
    assert limiter.take("u") == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.take("u") == 0.0


def test_waiting_exactly_the_wait_at_an_awkward_rate() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(per_minute=17, burst=1, clock=clock)
    assert limiter.take("u") == 0.0
    wait = limiter.take("u")
    assert wait == pytest.approx(60 / 17)
    clock.advance(wait)
    assert limiter.take("u") == 0.0  # actually 3.9e-16: refused once more


def test_keys_are_isolated() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") > 0
    assert limiter.take("bob") == 0.0  # alice's use does not touch bob's bucket
    assert limiter.take("bob") > 0
    clock.advance(1.0)
    assert limiter.take("alice") == 0.0
    assert limiter.take("bob") == 0.0


def test_bounded_memory_drops_only_refilled_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key) == 0.0
    assert len(limiter._buckets) == 3
    clock.advance(0.5)  # nobody has refilled yet: nothing may be forgotten
    assert limiter.take("d") == 0.0
    assert set(limiter._buckets) == {"a", "b", "c", "d"}
    clock.advance(0.6)  # a, b, c are full again (1.1 s at 1/s); d is not
    assert limiter.take("e") == 0.0
    assert set(limiter._buckets) == {"d", "e"}
    # A forgotten bucket was full: its owner gets the whole burst back, as before.
    assert [limiter.take("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a") > 0
    # d kept its partly spent bucket: 1 - 1 + 0.6 tokens.
    assert limiter.take("d") == 0.0
    assert limiter.take("d") == pytest.approx(0.4)


def test_known_keys_do_not_trigger_forgetting() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock, max_keys=2)
    limiter.take("a")
    limiter.take("b")
    clock.advance(100)
    assert limiter.take("a") == 0.0  # an existing key: no sweep
    assert set(limiter._buckets) == {"a", "b"}


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [
        (0.0, 1),
        (1e-9, 1),
        (0.5, 1),
        (1.0, 1),
        (1.000001, 2),
        (1.5, 2),
        (59.01, 60),
        (60.0, 60),
        (3600.2, 3601),
    ],
)
def test_retry_after_rounds_up_to_at_least_one(wait: float, seconds: int) -> None:
    assert retry_after_seconds(wait) == seconds
    assert isinstance(retry_after_seconds(wait), int)
