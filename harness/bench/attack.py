"""`loopchat bench attack`: can a share of scripted votes decide a canary?

A canary runs against the serving version; honest people compare the two, and the
candidate is worse for them (they pick it with probability 0.40) or better (0.60). An
adversary casts a share of all comparison votes, always for the canary when it is worse
and always against it when it is better. It is given the worst case: it knows which side
is the canary (as if the blinding of `docs/policies.md` had failed, e.g. by a classifier
on the canary's replies), so its side rate is 0.5 and no side-bias test can see it. It
mints sessions as fast as the product's default limit lets one address (20 an hour)
and spreads its votes over them, or spreads them over several addresses.

The decision is the product's own: `store.evidence.screen` with the default rules, then
`head_to_head` and `decide` with the default promotion rule, evaluated once a minute of
simulated time. Each configuration is run with the screen on and off, over many seeds,
and the table gives how often the decision went the adversary's way, the adversary's
share of the votes the rule counted, and the adversary votes cast by the decision. The
last table gives, per configuration, the smallest adversary share that flips a majority
of seeds (searched on a grid).

The trainer reads votes through the same screen, so "adversary share of counted votes"
is also the share of its comparisons that would reach the reward model. The reward
model's held-out accuracy under attack is not measured here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from service.policies.ratings import Match, head_to_head
from service.policies.rules import PromotionRule, Verdict, decide
from service.settings import Settings
from store.evidence import Ballot, EvidenceRules, screen

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CANARY, SERVING = "v1", "v0"


@dataclass(frozen=True)
class Scenario:
    candidate: str  # "worse" or "better" for the honest voters
    share: float  # the adversary's share of all comparison votes cast
    addresses: int = 1  # the adversary's client addresses
    honest_per_hour: float = 120.0  # honest canary comparisons an hour
    honest_people: int = 300
    new_people: float = 0.2  # share of honest votes from sessions started that minute
    mints_per_hour: int = 20  # sessions one address may start (the product's default)
    horizon_h: float = 8.0
    eval_every_s: float = 60.0

    @property
    def honest_p(self) -> float:  # P(an honest vote picks the canary)
        return 0.40 if self.candidate == "worse" else 0.60


@dataclass
class Outcome:
    verdict: str  # "promote", "retire", "none"
    at_minutes: float
    counted: int = 0
    adversary_counted: int = 0
    adversary_cast: int = 0
    set_aside: dict[str, int] = field(default_factory=dict)

    @property
    def adversary_share_counted(self) -> float:
        return self.adversary_counted / self.counted if self.counted else 0.0


def _ballot(
    i: int,
    user: str,
    since: datetime,
    origin: str,
    canary_wins: bool,
    at: datetime,
    rng: random.Random,
) -> Ballot:
    canary_on_a = rng.random() < 0.5  # the server shuffles sides
    a, b = (CANARY, SERVING) if canary_on_a else (SERVING, CANARY)
    choice = "a" if canary_on_a == canary_wins else "b"
    return Ballot(f"c{i}", user, since, a, b, choice, at, origin)


def run_once(sc: Scenario, rules: EvidenceRules, rule: PromotionRule, seed: int) -> Outcome:
    rng = random.Random(seed)
    ballots: list[Ballot] = []
    adversary_ids: set[str] = set()
    adv_sessions: list[tuple[str, datetime, str]] = []
    adv_rate = sc.honest_per_hour * sc.share / (1.0 - sc.share) if sc.share < 1 else 0.0
    want_canary = sc.candidate == "worse"  # the adversary pushes the worse one, sinks the better
    taste = [min(0.95, max(0.05, rng.gauss(sc.honest_p, 0.1))) for _ in range(sc.honest_people)]
    step = sc.eval_every_s
    t, next_eval, i = 0.0, step, 0
    next_h = rng.expovariate(sc.honest_per_hour / 3600.0)
    next_a = rng.expovariate(adv_rate / 3600.0) if adv_rate else float("inf")
    next_mint = 0.0
    while t < sc.horizon_h * 3600:
        t = min(next_h, next_a, next_mint, next_eval)
        now = T0 + timedelta(seconds=t)
        if t == next_mint:
            for k in range(sc.addresses):
                adv_sessions.append((f"adv{len(adv_sessions)}", now, f"adv-addr{k}"))
            next_mint += 3600.0 / sc.mints_per_hour
        elif t == next_h:
            person = rng.randrange(sc.honest_people)
            fresh = rng.random() < sc.new_people
            since = now - timedelta(seconds=rng.uniform(0, 60)) if fresh else T0 - timedelta(days=7)
            user = f"h{person}-{i}" if fresh else f"h{person}"
            wins = rng.random() < taste[person]
            ballots.append(_ballot(i, user, since, f"addr-h{person}", wins, now, rng))
            i += 1
            next_h += rng.expovariate(sc.honest_per_hour / 3600.0)
        elif t == next_a:
            user, since, origin = adv_sessions[i % len(adv_sessions)]  # spread over them
            ballots.append(_ballot(i, user, since, origin, want_canary, now, rng))
            adversary_ids.add(f"c{i}")
            i += 1
            next_a += rng.expovariate(adv_rate / 3600.0)
        else:
            next_eval += step
            s = screen(ballots, rules, now)
            matches = [
                Match(b.version_a, b.version_b, 1.0 if b.choice == "a" else 0.0) for b in s.kept
            ]
            h2h = head_to_head(matches, CANARY, SERVING, rule.level)
            d = decide(rule, h2h, (0, 0), (0, 0))
            if d.verdict in (Verdict.PROMOTE, Verdict.RETIRE):
                return Outcome(
                    d.verdict.value,
                    t / 60.0,
                    counted=len(s.kept),
                    adversary_counted=sum(b.id in adversary_ids for b in s.kept),
                    adversary_cast=len(adversary_ids),
                    set_aside={k: v for k, v in s.counts().items() if v},
                )
    return Outcome("none", t / 60.0, adversary_cast=len(adversary_ids))


def adversary_won(sc: Scenario, o: Outcome) -> bool:
    return o.verdict == ("promote" if sc.candidate == "worse" else "retire")


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    defences: bool
    seeds: int
    adversary_wins: int
    honest_wins: int
    undecided: int
    share_counted: float
    adversary_cast: float
    minutes: float


def run_row(sc: Scenario, defences: bool, seeds: int, settings: Settings) -> Row:
    rules = settings.evidence_rules() if defences else EvidenceRules(enabled=False)
    rule = PromotionRule(
        min_comparisons=settings.promote_min_comparisons,
        win_lower_bound=settings.promote_win_lower_bound,
    )
    outs = [run_once(sc, rules, rule, seed) for seed in range(seeds)]
    decided = [o for o in outs if o.verdict != "none"]
    adv = sum(adversary_won(sc, o) for o in outs)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return Row(
        sc,
        defences,
        seeds,
        adv,
        len(decided) - adv,
        len(outs) - len(decided),
        mean([o.adversary_share_counted for o in decided]),
        mean([float(o.adversary_cast) for o in decided]),
        mean([o.at_minutes for o in decided]),
    )


def flip_share(
    candidate: str, addresses: int, defences: bool, seeds: int, settings: Settings
) -> float | None:
    """The smallest share on a 5% grid at which the adversary wins a majority of seeds."""
    for pct in range(0, 95, 5):
        sc = Scenario(candidate, pct / 100.0, addresses)
        if run_row(sc, defences, seeds, settings).adversary_wins * 2 > seeds:
            return pct / 100.0
    return None


def run_bench_attack(
    settings: Settings, shares: list[float], addresses: list[int], seeds: int
) -> int:
    print(
        "bench attack: the product's canary rule and vote screen on simulated votes "
        f"({seeds} seeds a row; evidence rules {settings.evidence_rules()})"
    )
    print(
        f"{'candidate':<9} {'adv share':>9} {'addrs':>5} {'defences':<8} {'adv wins':>8} "
        f"{'honest':>6} {'none':>4} {'adv in counted':>14} {'adv cast':>8} {'minutes':>7}"
    )
    for candidate in ("worse", "better"):
        for share in shares:
            for n in addresses:
                for defences in (False, True):
                    r = run_row(Scenario(candidate, share, n), defences, seeds, settings)
                    print(
                        f"{candidate:<9} {share:>9.2f} {n:>5} {'on' if defences else 'off':<8} "
                        f"{r.adversary_wins:>8} {r.honest_wins:>6} {r.undecided:>4} "
                        f"{r.share_counted:>14.3f} {r.adversary_cast:>8.1f} {r.minutes:>7.1f}"
                    )
    print("\nsmallest adversary share that wins a majority of seeds (5% grid; none: never)")
    print(f"{'candidate':<9} {'addrs':>5} {'defences off':>12} {'defences on':>11}")
    for candidate in ("worse", "better"):
        for n in addresses:
            off = flip_share(candidate, n, False, seeds, settings)
            on = flip_share(candidate, n, True, seeds, settings)
            print(f"{candidate:<9} {n:>5} {_pct(off):>12} {_pct(on):>11}")
    return 0


def _pct(x: float | None) -> str:
    return "none" if x is None else f"{x:.2f}"
