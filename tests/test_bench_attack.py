"""`loopchat bench attack` runs the product's canary rule and vote screen on simulated
votes; these check the simulation does what its table claims, on a few seeds."""

from __future__ import annotations

from harness.bench.attack import Scenario, run_once, run_row
from service.policies.rules import PromotionRule
from service.settings import Settings
from store.evidence import EvidenceRules


def test_one_address_counts_at_most_its_cap() -> None:
    settings = Settings()
    sc = Scenario("worse", 0.3, addresses=1)
    rule = PromotionRule()
    for seed in range(3):
        on = run_once(sc, settings.evidence_rules(), rule, seed)
        off = run_once(sc, EvidenceRules(enabled=False), rule, seed)
        cap = max(
            settings.evidence_max_per_origin_pair, settings.evidence_max_origin_share * on.counted
        )
        assert on.adversary_counted <= cap + 1
        assert off.adversary_counted == off.adversary_cast and off.set_aside == {}
    off_row, on_row = (run_row(sc, d, 10, settings) for d in (False, True))
    assert off_row.adversary_wins >= 8  # unscreened, 30% for the worse candidate promotes it
    assert on_row.adversary_wins < off_row.adversary_wins


def test_without_an_adversary_honest_voters_decide() -> None:
    for candidate in ("worse", "better"):
        row = run_row(Scenario(candidate, 0.0), True, 5, Settings())
        assert row.adversary_wins == 0 and row.honest_wins >= 4, row
