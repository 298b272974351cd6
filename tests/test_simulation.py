"""Simulated users: the prompt set, gold functions, the noise model's vote
statistics, plug-in golds by `module:function`, and a run through a real server's HTTP
API, checked against what the database stored."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.simulation import SimulatedUser, SimulationError, load_gold, load_prompts, simulate
from harness.simulation.gold import (
    GoldSpecError,
    answers_number,
    concise,
    reasons_for,
    uses_list,
    wants_list,
    wants_number,
    warm,
    with_reasons,
)
from harness.simulation.prompts import KINDS, PromptFileError, parse_prompts
from loopchat.cli import main
from service.chat.engines.base import Delta, Sampling
from service.feedback import reasons as tags
from service.settings import Settings
from store.db.models import ApiKey, Comparison, Generation, Rating, TrainingRun, User, UserKind
from tests.conftest import ADMIN_TOKEN
from tests.dbutil import count, fetch
from tests.fakes import FakeEngine
from tests.servers import running_server

N = 4000  # draws per statistical check


def within_3se(hits: int, n: int, p: float) -> bool:
    se = math.sqrt(p * (1 - p) / n)
    return abs(hits / n - p) <= 3 * se + 1e-12


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# -- a preference this project does not ship, plugged in by module:function ---------------


@with_reasons(up="creative", down="not_helpful", comparison="more_helpful")
def my_gold(prompt: str, reply: str) -> float:
    """Likes replies that mention the letter z."""
    return 1.0 if "z" in reply.lower() else 0.0


NOT_CALLABLE = 42


def fixed_gold(prompt: str, reply: str) -> float:
    """The score is the reply itself: '0.7' scores 0.7."""
    return float(reply)


# -- the prompt set --------------------------------------------------------------------------


def test_the_prompt_set_is_large_varied_and_split_by_kind() -> None:
    prompts = load_prompts()
    assert len(prompts) >= 300
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.text for p in prompts}) == len(prompts)
    train, held = load_prompts("train"), load_prompts("heldout")
    assert len(train) + len(held) == len(prompts)
    assert 0.15 <= len(held) / len(prompts) <= 0.25
    for kind in KINDS:
        of_kind = [p for p in prompts if p.kind == kind]
        share = sum(p.split == "heldout" for p in of_kind) / len(of_kind)
        assert 0.15 <= share <= 0.25, (kind, share)  # stratified
        assert any(p.kind == kind for p in train) and any(p.kind == kind for p in held)
    assert {p.split for p in held} == {"heldout"}
    # Fixed in the file: the same prompts are held out in every run.
    assert [p.id for p in load_prompts("heldout")] == [p.id for p in held]


def test_what_prompts_ask_for_is_recognised_from_their_text() -> None:
    # The gold functions see only the text: each list/multi-part prompt must read as
    # one, each numeric prompt must read as asking for a number, and no other must.
    for p in load_prompts():
        assert wants_list(p.text) == (p.kind in ("list", "multipart")), p
        assert wants_number(p.text) == (p.kind == "numeric"), p


def test_a_malformed_prompt_file_is_refused_with_its_line() -> None:
    good = '{"id": "p0001", "text": "Hi", "kind": "smalltalk", "split": "train"}'
    with pytest.raises(PromptFileError, match=r"x:2: duplicate id"):
        parse_prompts([good, good.replace("Hi", "Hello")], "x")
    with pytest.raises(PromptFileError, match="unknown kind 'poem'"):
        parse_prompts([good.replace("smalltalk", "poem")], "x")
    with pytest.raises(PromptFileError, match="unknown split"):
        parse_prompts([good.replace('"train"', '"test"')], "x")
    with pytest.raises(PromptFileError, match="not JSON"):
        parse_prompts(["{"], "x")


# -- gold functions ----------------------------------------------------------------------------


def words(n: int) -> str:
    return " ".join(["word"] * n) + "."


def test_concise_prefers_shorter_complete_replies_but_not_empty_ones() -> None:
    assert concise("q", words(20)) > concise("q", words(60)) > concise("q", words(200))
    assert concise("q", "") == 0.0
    assert concise("q", "Yes.") < concise("q", "Yes, it is safe to do.")
    assert concise("q", words(30)) > concise("q", words(30)[:-1])  # cut mid-sentence
    assert all(0.0 <= concise("q", words(n)) <= 1.0 for n in range(0, 400, 7))


def test_warm_rewards_friendly_tone_and_is_bounded() -> None:
    cold = "The capital of France is Paris."
    kind = "Great question! I'm glad you asked: the capital of France is Paris. Enjoy your trip!"
    assert warm("q", kind) > 0.5 > warm("q", cold)
    assert warm("q", "!!!!!!!! " * 50 + "you " * 100 + "thanks " * 100) <= 1.0


def test_uses_list_and_answers_number_are_neutral_where_they_do_not_apply() -> None:
    listed = "- apples\n- pears\n- plums"
    assert (
        uses_list("List three fruits.", listed)
        > 0.8
        > 0.3
        > uses_list("List three fruits.", "Apples.")
    )
    assert uses_list("What is a volcano, and also why do they erupt?", "1. Rock\n2. Gas") > 0.5
    assert uses_list("What is photosynthesis?", listed) == 0.5
    assert uses_list("What is photosynthesis?", "Plants make sugar.") == 0.5
    q = "How many legs does a spider have?"
    assert answers_number(q, "8 legs.") > answers_number(q, "Spiders " * 40 + "have 8.")
    assert answers_number(q, "Spiders " * 40 + "have 8.") > answers_number(q, "Many legs.")
    assert answers_number(q, "Eight.") > 0.9
    assert answers_number("Why is the sky blue?", "42") == 0.5
    assert answers_number("Why is the sky blue?", "Scattering.") == 0.5


def test_shipped_golds_give_reasons_the_server_accepts() -> None:
    for fn in (concise, warm, uses_list, answers_number, my_gold):
        r = reasons_for(fn)
        assert r.up in tags.POSITIVE and r.down in tags.NEGATIVE and r.comparison in tags.COMPARISON
    assert (reasons_for(concise).up, reasons_for(concise).down) == ("concise", "too_long")
    with pytest.raises(ValueError, match="not one of the server's tags"):
        with_reasons(up="too_long")


# -- load_gold -----------------------------------------------------------------------------------


def test_load_gold_plugs_in_a_function_the_project_does_not_ship() -> None:
    gold = load_gold("tests.test_simulation:my_gold")
    assert gold is my_gold and gold("q", "zebra") == 1.0
    assert load_gold("harness.simulation.gold:concise") is concise
    assert load_gold("concise") is concise  # shipped shorthand
    user = SimulatedUser(gold, random.Random(0), flip_rate=0.0)
    assert user.compare("q", "a zebra", "a horse") == "a"
    assert user.thumbs("q", "fizz buzz") == ("up", "creative")  # its own reason tags


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("not_a_spec", "is not 'module:function'"),
        (":my_gold", "is not 'module:function'"),
        ("tests.test_simulation:", "is not 'module:function'"),
        ("a:b:c", "is not 'module:function'"),
        ("no_such_module_zz:f", "no module named 'no_such_module_zz'"),
        ("tests.test_simulation:missing", "has no attribute 'missing'"),
        ("tests.test_simulation:NOT_CALLABLE", "is a int, not a function"),
    ],
)
def test_load_gold_explains_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(GoldSpecError, match=message):
        load_gold(spec)


def test_a_gold_that_returns_junk_fails_loudly() -> None:
    user = SimulatedUser(lambda p, r: float("nan"), random.Random(0))
    with pytest.raises(ValueError, match="returned nan"):
        user.thumbs("q", "r")


# -- the noise model: vote statistics against their expected values ----------------------------


def agreement(user: SimulatedUser, better: str, worse: str, n: int = N) -> int:
    """Votes (sides shuffled) that name the reply with the higher gold score."""
    sides = random.Random(99)
    hits = 0
    for _ in range(n):
        if sides.random() < 0.5:
            hits += user.compare("q", better, worse) == "a"
        else:
            hits += user.compare("q", worse, better) == "b"
    return hits


@pytest.mark.parametrize("flip_rate", [0.25, 0.0, 0.5])
def test_comparisons_agree_with_gold_one_minus_flip_rate_of_the_time(flip_rate: float) -> None:
    user = SimulatedUser(fixed_gold, random.Random(1), flip_rate)  # default temperature 0.02
    hits = agreement(user, "0.9", "0.1")  # a large gap: BT alone is sure
    assert within_3se(hits, N, 1 - flip_rate), hits / N
    if flip_rate == 0.0:
        assert hits == N


def test_bradley_terry_probability_on_a_moderate_gap() -> None:
    # gap / temperature = 1: the unflipped user prefers the better reply sigmoid(1) = 0.731
    # of the time; the flip mixes that with its complement.
    for flip_rate in (0.0, 0.25):
        user = SimulatedUser(fixed_gold, random.Random(2), flip_rate, temperature=0.1)
        p = 1 / (1 + math.exp(-1.0))
        expected = p * (1 - flip_rate) + (1 - p) * flip_rate
        hits = agreement(user, "0.6", "0.5")
        assert within_3se(hits, N, expected), (flip_rate, hits / N, expected)
        assert user.expected_agreement(0.6, 0.5) == pytest.approx(expected)


def test_zero_temperature_unflipped_choice_is_always_the_gold_winner() -> None:
    user = SimulatedUser(fixed_gold, random.Random(3), 0.0, temperature=0.0)
    assert agreement(user, "0.5001", "0.5", n=500) == 500
    picks = [user.judge("q", "0.2", "0.3") for _ in range(50)]
    assert {p.choice for p in picks} == {"b"} and not any(p.flipped for p in picks)


def test_ties_only_within_epsilon() -> None:
    user = SimulatedUser(fixed_gold, random.Random(4), 0.25)
    assert {user.compare("q", "0.5", "0.5") for _ in range(100)} == {"tie"}
    assert "tie" not in {user.compare("q", "0.5", "0.50001") for _ in range(100)}
    loose = SimulatedUser(fixed_gold, random.Random(4), 0.25, tie_epsilon=0.01)
    assert {loose.compare("q", "0.5", "0.505") for _ in range(100)} == {"tie"}
    assert user.judge("q", "0.5", "0.5").reason is None


@pytest.mark.parametrize("gold", [0.6, 0.4, 0.5, 0.75])
def test_thumbs_up_rate_matches_the_threshold_noise_model(gold: float) -> None:
    user = SimulatedUser(fixed_gold, random.Random(5), thumbs_threshold=0.5, thumbs_noise=0.1)
    expected = 1 - phi((0.5 - gold) / 0.1)  # P(gold + N(0, 0.1^2) > 0.5)
    ups = sum(user.thumbs("q", str(gold))[0] == "up" for _ in range(N))
    assert within_3se(ups, N, expected), (gold, ups / N, expected)
    assert user.expected_up(gold) == pytest.approx(expected)


def test_noiseless_thumbs_are_a_threshold_and_reasons_follow_the_gold() -> None:
    user = SimulatedUser(concise, random.Random(6), thumbs_noise=0.0)
    assert user.thumbs("q", "Paris is the capital of France.") == ("up", "concise")
    assert user.thumbs("q", words(120)) == ("down", "too_long")
    assert user.thumbs("q", "Hm") == ("down", "too_short")
    assert user.judge("q", "Paris.", words(120)).reason == "more_concise"


# -- end to end: simulated users against a real server --------------------------------------


SHORT = "Paris is the capital of France."
LONG = " ".join(["It is a long and winding answer that goes on"] * 15) + "."  # 150 words


class TwoReplyEngine(FakeEngine):
    """FakeEngine that answers with a short or a long reply, at random (seeded), and
    fails every `fail_every`-th request if asked to."""

    def __init__(self, fail_every: int = 0, dead_after: int | None = None) -> None:
        super().__init__(SHORT)
        self.rng = random.Random(7)
        self.fail_every = fail_every
        self.dead_after = dead_after  # every request after this many fails (a dead engine)
        self.requests = 0

    async def generate(
        self, version: str, prompt_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        self.requests += 1
        dead = self.dead_after is not None and self.requests > self.dead_after
        if dead or (self.fail_every and self.requests % self.fail_every == 0):
            raise RuntimeError("scripted engine failure")
        self.reply = self.rng.choice([SHORT, LONG])  # read before the first await
        async for d in super().generate(version, prompt_ids, sampling, request_id):
            yield d


@pytest.fixture
def server(tmp_path: Path, tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    db_url = f"sqlite:///{tmp_path}/sim.db"
    extra: dict[str, Any] = dict(getattr(request, "param", {}))
    engine = TwoReplyEngine(
        fail_every=extra.pop("fail_every", 0), dead_after=extra.pop("dead_after", None)
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        model=tiny_model_dir,
        admin_token=ADMIN_TOKEN,
        policy_poll_seconds=3600,
        **extra,
    )
    with running_server(settings, engine) as base:
        yield base, db_url


@pytest.mark.parametrize(
    "server", [{"vote_burst": 3, "vote_rate_per_minute": 600.0}], indirect=True
)
def test_simulate_through_http_stores_exactly_what_it_reports(server: Any) -> None:
    base, db = server
    seen: list[int] = []
    result = simulate(
        base,
        votes=40,
        gold="harness.simulation.gold:concise",
        flip_rate=0.25,
        comparison_share=0.5,
        users=4,
        seed=0,
        max_tokens=200,
        progress=lambda p: seen.append(p.votes),
    )
    assert result.errors == 0 and not result.error_kinds, result.error_kinds
    assert result.votes == 40 and not result.stopped_early
    assert result.ratings == result.chats == 20  # the comparison share is exact
    assert result.comparisons == result.voted_comparisons == 20
    assert seen[-1] == 40
    # Burst 3 per user: the server said 429 and the users waited it out.
    assert result.retries["429"] > 0

    ratings = fetch(db, Rating)
    assert len(ratings) == result.ratings
    assert sum(r.value == 1 for r in ratings) == result.thumbs_up
    assert sum(r.value == -1 for r in ratings) == result.thumbs_down
    assert all(r.live for r in ratings)
    assert {r.reason for r in ratings} <= {"concise", "too_long", "too_short"}
    comparisons = fetch(db, Comparison)
    assert len(comparisons) == result.comparisons
    stored = Counter(c.choice.value for c in comparisons if c.choice is not None)
    assert stored == +Counter(result.comparison_votes)
    assert all(c.choice is not None for c in comparisons)
    # Every vote came from a web session; several users; nothing through the operator.
    voters = {r.user_id for r in ratings} | {c.user_id for c in comparisons}
    kinds = {u.id: u.kind for u in fetch(db, User)}
    assert 1 < len(voters) <= 4 and {kinds[v] for v in voters} == {UserKind.ANONYMOUS}
    # The users judged by gold: short replies are liked more than long ones.
    texts = {g.id: g.text for g in fetch(db, Generation)}
    up_short = [r.value == 1 for r in ratings if texts[r.generation_id] == SHORT]
    up_long = [r.value == 1 for r in ratings if texts[r.generation_id] == LONG]
    assert up_short and up_long and all(up_short) and not any(up_long)
    # Per version: v0 wrote everything.
    v0 = result.per_version["v0"]
    assert set(result.per_version) == {"v0"}
    assert v0.replies == result.chats + 2 * result.comparisons
    assert (v0.thumbs_up, v0.thumbs_down) == (result.thumbs_up, result.thumbs_down)
    assert v0.wins == v0.losses == 0  # no other version to beat
    # Agreement with gold, checked against the stored votes: only SHORT vs LONG pairs
    # count (identical replies are ties), and there BT is sure, so the ceiling is exactly
    # 1 - flip rate.
    decided = [
        c
        for c in comparisons
        if c.choice is not None
        and c.choice.value in ("a", "b")
        and texts[c.generation_a_id] != texts[c.generation_b_id]
    ]
    agreed = sum(
        texts[c.generation_a_id if c.choice.value == "a" else c.generation_b_id] == SHORT
        for c in decided
    )
    assert result.gold_decided == len(decided) > 0
    assert result.gold_agreement == agreed / len(decided)
    assert result.accuracy_ceiling == pytest.approx(0.75)
    assert result.to_dict()["per_version"]["v0"]["thumbs_up_rate"] == v0.thumbs_up_rate


@pytest.mark.parametrize("server", [{"fail_every": 5}], indirect=True)
def test_failed_requests_are_counted_and_replaced_not_fatal(server: Any) -> None:
    base, db = server
    result = simulate(base, votes=20, gold=concise, users=2, seed=1, max_tokens=200)
    assert result.votes == 20 and not result.stopped_early
    assert result.errors > 0 and sum(result.error_kinds.values()) == result.errors
    assert all(" 500 " in kind for kind in result.error_kinds), result.error_kinds
    assert count(db, Rating) == result.ratings
    assert count(db, Comparison, Comparison.choice.is_not(None)) == result.voted_comparisons
    assert result.ratings + result.voted_comparisons == 20


@pytest.mark.parametrize("server", [{"dead_after": 3}], indirect=True)
def test_the_loop_stops_when_the_votes_do_and_trains_on_nothing(
    server: Any, tmp_path: Path
) -> None:
    from harness.simulation.loop import run_loop

    base, db = server
    lines: list[str] = []
    report = run_loop(
        base,
        ADMIN_TOKEN,
        rounds=3,
        votes_per_round=20,
        gold=concise,
        eval_samples=3,  # the baseline's 3 replies are the engine's last good ones
        users=2,
        out_dir=tmp_path / "report",
        progress=lines.append,
    )
    assert report.stopped_early
    assert report.stop_reason is not None
    # at least the error budget (10) failed; requests in flight may add a few
    reason = re.fullmatch(
        r"round 1: votes stopped at 0/20 after (\d+) failed requests \((.*)\)", report.stop_reason
    )
    assert reason is not None and int(reason[1]) >= 10, report.stop_reason
    assert "500 engine_error" in reason[2]
    assert [r.round for r in report.rounds] == [0, 1]
    assert count(db, TrainingRun) == 0  # no round was queued on no votes
    assert "Stopped early: round 1" in (tmp_path / "report" / "report.md").read_text()
    assert not any("training run" in line for line in lines)


@pytest.mark.parametrize("server", [{"dead_after": 0}], indirect=True)
def test_the_loop_refuses_to_start_without_a_baseline(server: Any) -> None:
    from harness.simulation.loop import LoopError, run_loop

    base, db = server
    with pytest.raises(LoopError, match="v0 answered none of the 3 held-out prompts"):
        run_loop(
            base,
            ADMIN_TOKEN,
            rounds=1,
            votes_per_round=5,
            gold=concise,
            eval_samples=3,
            write=False,
        )
    assert count(db, Rating) == 0


def test_no_server_is_a_clear_error() -> None:
    with pytest.raises(SimulationError, match="cannot start simulated user 0"):
        simulate("http://127.0.0.1:9", votes=1, gold=concise, users=1)


@pytest.mark.parametrize("server", [{"anonymous_sessions": False}], indirect=True)
def test_cli_with_a_plug_in_gold_and_api_keys_when_sessions_are_off(
    server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, db = server
    monkeypatch.delenv("LOOPCHAT_ADMIN_TOKEN", raising=False)
    argv = ["simulate", "--url", base, "--votes", "6", "--users", "2", "--seed", "3"]
    argv += ["--gold", "tests.test_simulation:my_gold", "--max-tokens", "32", "--json"]
    assert main(argv) == 1  # sessions refused and no operator token: nothing can start
    assert "anonymous sessions are turned off" in capsys.readouterr().err
    assert count(db, Rating) + count(db, Comparison) == 0

    assert main([*argv, "--admin-token", ADMIN_TOKEN]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["votes"] == 6 and summary["errors"] == 0
    assert summary["config"]["gold"] == "tests.test_simulation:my_gold"
    assert count(db, Rating) == summary["thumbs_up"] + summary["thumbs_down"] == 3
    assert count(db, Comparison, Comparison.choice.is_not(None)) == 3
    # No reply has a z: my_gold dislikes them all, with its own reason.
    assert {r.reason for r in fetch(db, Rating)} == {"not_helpful"}
    keys = fetch(db, ApiKey)
    assert len(keys) == 2 and all(k.revoked_at is not None for k in keys)  # cleaned up

    assert main(["simulate", "--url", base, "--gold", "nope:nothing"]) == 2
    assert "no module named 'nope'" in capsys.readouterr().err


def test_plain_words_scores_word_length_not_reply_length() -> None:
    from harness.simulation.gold import plain_words

    plain = "You can do it. It is not hard. Just try."
    fancy = "Consideration of multifaceted circumstances necessitates deliberation."
    assert plain_words("q", plain) > 0.9 > 0.1 > plain_words("q", fancy)
    # saying the same thing three times changes nothing
    assert plain_words("q", " ".join([plain] * 3)) == pytest.approx(plain_words("q", plain))
    assert plain_words("q", "") == 0.0 and plain_words("q", "123 !!") == 0.0


def test_asks_back_looks_at_the_end_only() -> None:
    from harness.simulation.gold import asks_back, last_sentence

    assert asks_back("q", "Paris is the capital. Would you like to know more?") == 1.0
    assert asks_back("q", "Paris is the capital. Let me know if you need more.") == 0.8
    assert asks_back("q", "Paris is the capital. Hope this helps!") == 0.8
    assert asks_back("q", "Is it Paris? Yes, Paris is the capital.") == 0.2
    assert asks_back("q", "Let me know if... no. Paris is the capital.") == 0.2
    assert asks_back("q", "   ") == 0.0
    assert last_sentence("One. Two! Three?") == "Three"
    longer = "Paris is the capital. " * 5 + "Anything else?"
    assert asks_back("q", longer) == asks_back("q", "Anything else?")


def test_simple_sentences_scores_commas_per_word_not_reply_length() -> None:
    from harness.simulation.gold import simple_sentences

    plain = "The sun is a star. It gives us light and heat every day of the year."
    busy = "The sun, a star, gives us light, heat, and, in a sense, life itself, daily."
    assert simple_sentences("q", plain) > 0.9 > 0.1 > simple_sentences("q", busy)
    assert simple_sentences("q", " ".join([busy] * 4)) == pytest.approx(
        simple_sentences("q", busy), abs=0.02
    )
    assert simple_sentences("q", "") == 0.0
