"""Which comparison votes count as evidence: people, not requests.

The canary rule and the trainer both decide from comparison votes, and a script can cast
votes far faster than people do. Before either counts them, `screen` sets aside:

- votes of sessions too young to trust (`trust_age_s`): a session's votes count once it
  has existed that long, so a burst of freshly minted sessions cannot decide a canary
  or fill a training round. Minting is limited per address, so aged sessions accrue
  slowly. API keys (made by the operator) are trusted from the start.
- votes past `max_per_user_pair`: one person counts at most that many comparisons
  between one pair of versions (the first ones they cast); and all sessions started
  from one address together count at most `max_per_origin_pair` votes on a pair, or
  `max_origin_share` of the pair's counted votes when that is more (a script that
  mints sessions gets a fresh user each time, not a fresh address; capped as a share,
  it cannot get in early, before people's votes have come).
- every vote of a voter whose choices are implausible for a person, with at least
  `anomaly_min_votes` decisive votes:
  - side bias: the sides of a comparison are shuffled, so whatever a person prefers,
    they pick side a half the time; a voter whose a-rate is this unlikely
    (two-sided binomial p < `anomaly_p`) is voting on position, not content;
  - against everyone else: under the Bradley-Terry model fitted to the other voters'
    votes (for a pair of versions, their win rate), a voter who agrees with it this
    rarely (Poisson-binomial p < `anomaly_p`) is flagged, as the Arena flags voters.
    With few other votes the fit says little and the test is skipped.

The screen is a pure function over plain records, used by the service (canary rule,
statistics, export) and the trainer alike, so both count the same votes.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

# Why a vote was set aside (stable strings: they appear in stats, events and the export).
UNTRUSTED = "session_too_new"
OVER_CAP = "over_user_cap"
SIDE_BIAS = "side_bias"
AGAINST_CONSENSUS = "against_consensus"
REASONS = (UNTRUSTED, OVER_CAP, SIDE_BIAS, AGAINST_CONSENSUS)

# Fewer votes than this from the others on a pair: their win rate is no yardstick.
MIN_REFERENCE_VOTES = 10


@dataclass(frozen=True)
class EvidenceRules:
    trust_age_s: float = 60.0
    max_per_user_pair: int = 10  # 0: no cap
    # All sessions from one address together, per pair: at most this many votes, or
    # `max_origin_share` of the pair's counted votes when that is more. 0: no cap.
    max_per_origin_pair: int = 5
    max_origin_share: float = 0.1
    anomaly_min_votes: int = 10
    anomaly_p: float = 1e-3
    enabled: bool = True

    def __post_init__(self) -> None:
        caps = (self.max_per_user_pair, self.max_per_origin_pair)
        if self.trust_age_s < 0 or min(caps) < 0 or self.anomaly_min_votes < 1:
            raise ValueError("trust_age_s, max_per_user_pair >= 0 and anomaly_min_votes >= 1")
        if not 0 <= self.max_origin_share <= 1:
            raise ValueError("max_origin_share must be in [0, 1]")
        if not 0 < self.anomaly_p < 1:
            raise ValueError("anomaly_p must be in (0, 1)")


@dataclass(frozen=True)
class Ballot:
    """One voted comparison as the screen sees it."""

    id: str
    user: str
    user_since: datetime | None  # when the voter's account began; None: trusted (a key)
    version_a: str
    version_b: str
    choice: str  # "a", "b", "tie", "both_bad"
    at: datetime
    origin: str | None = None  # the address (hashed) a web session came from


@dataclass
class Screening:
    kept: list[Ballot] = field(default_factory=list)
    dropped: list[tuple[Ballot, str]] = field(default_factory=list)  # with the reason
    flagged: dict[str, str] = field(default_factory=dict)  # user -> reason, with figures

    def reasons(self) -> dict[str, str]:
        """Ballot id -> why it was set aside."""
        return {b.id: r for b, r in self.dropped}

    def counts(self, pair: set[str] | None = None) -> dict[str, int]:
        """Ballots set aside by reason; `pair`: only comparisons between those versions."""
        by = Counter(
            r for b, r in self.dropped if pair is None or {b.version_a, b.version_b} == pair
        )
        return {r: by.get(r, 0) for r in REASONS}

    def summary(self) -> dict[str, object]:
        """For stats and round records: what was set aside, and why."""
        return {
            "kept": len(self.kept),
            "set_aside": len(self.dropped),
            "by_reason": self.counts(),
            "flagged_voters": len(self.flagged),
        }


class _Vote(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def user_since(self) -> datetime | None: ...
    @property
    def at(self) -> datetime: ...
    @property
    def origin(self) -> str | None: ...


_V = TypeVar("_V", bound=_Vote)


def _trusted_and_capped(
    votes: Iterable[_V], group: Callable[[_V], Hashable], rules: EvidenceRules, now: datetime
) -> tuple[list[_V], list[_V], list[tuple[_V, str]]]:
    """(trusted, trusted and within the caps, set aside with the reason), in vote order.
    `group`: what the caps count per (a comparison's pair of versions, a thumb's version)."""
    dropped: list[tuple[_V, str]] = []
    trusted: list[_V] = []
    for v in sorted(votes, key=lambda v: (v.at, v.id)):
        young = (
            v.user_since is not None and (now - v.user_since).total_seconds() < rules.trust_age_s
        )
        if young:
            dropped.append((v, UNTRUSTED))
        else:
            trusted.append(v)
    capped: list[_V] = []
    per_user: Counter[tuple[str, Hashable]] = Counter()
    per_origin: Counter[tuple[str, Hashable]] = Counter()
    per_group: Counter[Hashable] = Counter()
    for v in trusted:  # in vote order: a cap that grows with the group counts as it grew
        g = group(v)
        user_n = per_user[(v.user, g)] + 1
        origin_n = 0 if v.origin is None else per_origin[(v.origin, g)] + 1
        origin_cap = max(rules.max_per_origin_pair, rules.max_origin_share * (per_group[g] + 1))
        if (rules.max_per_user_pair and user_n > rules.max_per_user_pair) or (
            rules.max_per_origin_pair and origin_n > origin_cap
        ):
            dropped.append((v, OVER_CAP))
            continue
        per_user[(v.user, g)] = user_n
        if v.origin is not None:
            per_origin[(v.origin, g)] = origin_n
        per_group[g] += 1
        capped.append(v)
    return trusted, capped, dropped


def screen(ballots: Iterable[Ballot], rules: EvidenceRules, now: datetime) -> Screening:
    """Split `ballots` into those that count and those set aside (with the reason)."""
    out = Screening()
    if not rules.enabled:
        out.kept = sorted(ballots, key=lambda b: (b.at, b.id))
        return out
    trusted, capped, out.dropped = _trusted_and_capped(
        ballots, lambda b: frozenset((b.version_a, b.version_b)), rules, now
    )
    # A voter is tested on all their votes (a bot past the cap has shown more of itself),
    # against what everyone else's counted votes say.
    out.flagged = _anomalous(trusted, capped, rules)
    for b in capped:
        reason = out.flagged.get(b.user)
        if reason is None:
            out.kept.append(b)
        else:
            out.dropped.append((b, reason.split(":", 1)[0]))
    return out


@dataclass(frozen=True)
class Thumb:
    """One live thumbs rating as the screen sees it."""

    id: str
    user: str
    user_since: datetime | None  # None: trusted (a key)
    version: str
    value: int  # +1 up, -1 down
    at: datetime
    origin: str | None = None


@dataclass
class ThumbScreening:
    kept: list[Thumb] = field(default_factory=list)
    dropped: list[tuple[Thumb, str]] = field(default_factory=list)

    def reasons(self) -> dict[str, str]:
        return {t.id: r for t, r in self.dropped}

    def counts(self, versions: set[str] | None = None) -> dict[str, int]:
        """Thumbs set aside by reason; `versions`: only thumbs of those versions."""
        by = Counter(r for t, r in self.dropped if versions is None or t.version in versions)
        return {r: by.get(r, 0) for r in (UNTRUSTED, OVER_CAP)}

    def per_version(self) -> dict[str, tuple[int, int]]:
        """(up, down) of the thumbs that count, per version."""
        up: Counter[str] = Counter(t.version for t in self.kept if t.value > 0)
        down: Counter[str] = Counter(t.version for t in self.kept if t.value < 0)
        return {v: (up[v], down[v]) for v in sorted(set(up) | set(down))}


def screen_thumbs(thumbs: Iterable[Thumb], rules: EvidenceRules, now: datetime) -> ThumbScreening:
    """Thumbs that count as evidence, by the rules comparisons are counted by: a session's
    thumbs once it is `trust_age_s` old, and per version at most `max_per_user_pair`
    from one voter and the origin cap from one address. (No side or consensus test: a
    thumb has no sides, and one person's taste may differ from everyone's.) Without the
    caps, a script minting sessions could retire a canary with thumbs-down alone."""
    out = ThumbScreening()
    if not rules.enabled:
        out.kept = sorted(thumbs, key=lambda t: (t.at, t.id))
        return out
    _, out.kept, out.dropped = _trusted_and_capped(thumbs, lambda t: t.version, rules, now)
    return out


def _decisive(b: Ballot) -> bool:
    return b.choice in ("a", "b")


def _anomalous(
    tested: Sequence[Ballot], reference: Sequence[Ballot], rules: EvidenceRules
) -> dict[str, str]:
    by_user: dict[str, list[Ballot]] = defaultdict(list)
    for b in tested:
        if _decisive(b):
            by_user[b.user].append(b)
    # Wins of the alphabetically first version of each pair, in the reference votes, and
    # each voter's own share of them (left out when they are tested).
    wins: Counter[tuple[str, str]] = Counter()
    games: Counter[tuple[str, str]] = Counter()
    own_ref: dict[str, Counter[tuple[str, str, int]]] = defaultdict(Counter)
    for b in reference:
        if _decisive(b) and b.version_a != b.version_b:
            pair, first_won = _oriented(b)
            games[pair] += 1
            wins[pair] += first_won
            own_ref[b.user][(*pair, first_won)] += 1
    flagged: dict[str, str] = {}
    for user, votes in by_user.items():
        if len(votes) < rules.anomaly_min_votes:
            continue
        a_picks = sum(b.choice == "a" for b in votes)
        p_side = _binomial_two_sided(a_picks, len(votes))
        if p_side < rules.anomaly_p:
            flagged[user] = f"{SIDE_BIAS}: side a in {a_picks} of {len(votes)} (p={p_side:.1g})"
            continue
        own_wins: Counter[tuple[str, str]] = Counter()
        own_games: Counter[tuple[str, str]] = Counter()
        for b in votes:
            if b.version_a != b.version_b:
                pair, first_won = _oriented(b)
                own_games[pair] += 1
                own_wins[pair] += first_won
        probs: list[float] = []
        agreed = 0
        mine = own_ref.get(user, Counter())
        for pair, n in own_games.items():
            my_games = mine[(*pair, 0)] + mine[(*pair, 1)]
            others = games[pair] - my_games
            if others < MIN_REFERENCE_VOTES:
                continue
            rate = (wins[pair] - mine[(*pair, 1)] + 0.5) / (others + 1.0)  # the others' view
            favoured_first = rate >= 0.5
            probs += [max(rate, 1.0 - rate)] * n
            agreed += own_wins[pair] if favoured_first else n - own_wins[pair]
        if len(probs) < rules.anomaly_min_votes:
            continue
        p_low = _poisson_binomial_cdf(agreed, probs)
        if p_low < rules.anomaly_p:
            flagged[user] = (
                f"{AGAINST_CONSENSUS}: agreed with the other voters in {agreed} of "
                f"{len(probs)} (p={p_low:.1g})"
            )
    return flagged


def _oriented(b: Ballot) -> tuple[tuple[str, str], int]:
    """The pair in a fixed order and whether its first version won this vote."""
    first, second = sorted((b.version_a, b.version_b))
    winner = b.version_a if b.choice == "a" else b.version_b
    return (first, second), int(winner == first)


def _binomial_two_sided(k: int, n: int) -> float:
    """P(a count at least as far from n/2 as k) for a fair coin."""
    far = abs(k - n / 2)
    total = sum(math.comb(n, i) for i in range(n + 1) if abs(i - n / 2) >= far)
    return float(min(1.0, total / 2**n))


def _poisson_binomial_cdf(k: int, probs: Sequence[float]) -> float:
    """P(X <= k) where X is the number of successes of independent trials `probs`."""
    dist = [1.0]
    for p in probs:
        nxt = [0.0] * (len(dist) + 1)
        for i, mass in enumerate(dist):
            nxt[i] += mass * (1.0 - p)
            nxt[i + 1] += mass * p
        dist = nxt
    return float(min(1.0, sum(dist[: k + 1])))
