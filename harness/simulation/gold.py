"""Gold preferences: the hidden taste of simulated users.

A gold function is any callable `(prompt: str, reply: str) -> float`, higher is better.
Simulated users (`users.py`) turn gold scores into noisy votes; the closed loop measures
the served policy with the same function on held-out prompts. `load_gold("module:function")`
plugs in any such function, from this project or not, with no code change.

The shipped ones return scores in [0, 1], where 0.5 means "no opinion" (a list preference
on a prompt that asks for no list). `SimulatedUser`'s defaults (BT temperature 0.02, thumbs
threshold 0.5) are set for that scale; pass others for a function on another scale.

- `concise`: shorter complete replies; peaks around 7 words, halves at 50, penalizes
  replies under about 3 words and replies that stop mid-sentence.
- `warm`: friendly words, "you"/"your" and exclamation marks, as densities (padding a
  reply with neutral words lowers it), bounded.
- `uses_list`: on prompts that ask for a list or ask several things at once, replies with
  a markdown list of two or more items; 0.5 on every other prompt.
- `answers_number`: on prompts that ask for a number ("How many...", "What is 12 times
  7?"), replies that contain a number, the earlier the better (not that it is right);
  0.5 on every other prompt.

- `plain_words`: short words (mean letters per word), whatever the reply's length.
- `simple_sentences`: few commas per word, whatever the reply's length.
- `asks_back`: the reply ends with a question to the user, or an offer of more help.

The last three are nearly independent of reply length on v0's replies (docs/simulation.md
gives the correlations and base rates): a loop that learns them learns something other
than length. `asks_back` is also rare in v0's replies (about 1 in 20), so few votes carry
its signal.

What SmolLM2-135M can plausibly learn from a few rounds of a few hundred votes: length,
yes, and strongly: it is the first thing a reward model picks up (every vote carries it)
and the policy can move it with the stop token alone. Tone words: plausible; the model
already says "Sure!"/"I'm glad" sometimes, so there is variance to select, but more slowly
than length and partly through length. Lists and numbers: sparse and slower: only the
list/multipart (30%) or numeric (15%) prompts carry any signal, the other votes are coin
flips for them, and a 135M model rarely produces a well-formed list on its own, so expect
little movement within 5 rounds.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from service.feedback import reasons as tags

Gold = Callable[[str, str], float]


class GoldSpecError(ValueError):
    """A `module:function` spec that cannot be loaded; the message says why."""


@dataclass(frozen=True)
class GoldReasons:
    """The reason tags a simulated user gives for a vote judged by one gold function."""

    up: str = "helpful"
    down: str = "not_helpful"
    comparison: str = "more_helpful"

    def __post_init__(self) -> None:
        for tag, allowed in (
            (self.up, tags.POSITIVE),
            (self.down, tags.NEGATIVE),
            (self.comparison, tags.COMPARISON),
        ):
            if tag not in allowed:
                raise ValueError(f"{tag!r} is not one of the server's tags {allowed}")


DEFAULT_REASONS = GoldReasons()
_REASONS: dict[Callable[..., object], GoldReasons] = {}


def with_reasons(
    up: str = "helpful", down: str = "not_helpful", comparison: str = "more_helpful"
) -> Callable[[Gold], Gold]:
    """Decorator: the reason tags votes judged by this gold carry (checked against the
    server's fixed lists). Plug-in golds may use it too; without it they get
    helpful / not_helpful / more_helpful."""
    chosen = GoldReasons(up, down, comparison)

    def register(fn: Gold) -> Gold:
        _REASONS[fn] = chosen
        return fn

    return register


def reasons_for(gold: Callable[..., object]) -> GoldReasons:
    return _REASONS.get(gold, DEFAULT_REASONS)


# -- what a prompt asks for, and what a reply contains ---------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_LIST_CUES = re.compile(
    r"\blist\b|\b(tips|ideas|steps|ways|examples|reasons)\b|\bpros and cons\b|\bwhat are some\b"
    r"|\bname (a few|some|two|three|four|five|six|seven|eight|nine|ten|\d+)\b",
    re.IGNORECASE,
)
_MULTIPART_CUES = re.compile(r"\band also\b", re.IGNORECASE)
_NUMBER_CUES = re.compile(
    r"\bhow (many|much|old|far|long|tall|high|fast|heavy|hot|cold|big)\b"
    r"|\b(what|which) year\b|\bsquare root\b|\bto the power of\b"
    r"|\d\s*(times|plus|minus|divided by|percent|%|squared)"
    r"|\d\s+[-+*/]\s+\d",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,2}[.)])\s+\S", re.MULTILINE)
_NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion dozen"
)
_WORD = re.compile(r"[a-z']+")
_FRIENDLY = _words(
    "glad happy great wonderful lovely love enjoy hope thanks thank please welcome "
    "absolutely delighted awesome fantastic amazing hi hello hey friend sure pleasure "
    "kind nice cheers excited congratulations good"
)
_YOU = frozenset(["you", "your", "you're", "yours", "yourself", "you'll", "you've"])
_COMPLETE_END = re.compile(r"""[.!?)"'`*\]\u2019\u201d]\s*$""")


def wants_list(prompt: str) -> bool:
    """The prompt asks for a list, or asks several things at once."""
    return bool(
        _LIST_CUES.search(prompt) or _MULTIPART_CUES.search(prompt) or prompt.count("?") >= 2
    )


def wants_number(prompt: str) -> bool:
    """The prompt asks for a number: a count, an amount, a year, a sum."""
    return bool(_NUMBER_CUES.search(prompt))


def list_items(reply: str) -> int:
    """Markdown list items (`- x`, `* x`, `1. x`, `2) x`) at the start of a line."""
    return len(_LIST_ITEM.findall(reply))


def first_number_at(reply: str) -> int | None:
    """The index of the first word that is or holds a number (digits or a number word)."""
    for i, word in enumerate(reply.split()):
        if any(c.isdigit() for c in word):
            return i
        if word.strip(".,;:!?()\"'").lower() in _NUMBER_WORDS:
            return i
    return None


def word_count(reply: str) -> int:
    return len(reply.split())


# -- the shipped preferences ---------------------------------------------------------------

CONCISE_HALF_WORDS = 50.0  # concise() halves at this many words
SHORT_WORDS = 3.0  # concise() penalizes replies shorter than about this


@with_reasons(up="concise", down="too_long", comparison="more_concise")
def concise(prompt: str, reply: str) -> float:
    """Shorter complete replies: 1 / (1 + (words/50)^2), times a smooth penalty under
    about 3 words (0 for an empty reply) and x0.85 when the reply stops mid-sentence."""
    w = word_count(reply)
    if w == 0:
        return 0.0
    not_too_short = 1.0 - math.exp(-((w / SHORT_WORDS) ** 2))
    short = 1.0 / (1.0 + (w / CONCISE_HALF_WORDS) ** 2)
    complete = 1.0 if _COMPLETE_END.search(reply) else 0.85
    return not_too_short * short * complete


@with_reasons(up="well_written", down="badly_written", comparison="better_written")
def warm(prompt: str, reply: str) -> float:
    """Friendly tone: friendly words and "you" per word, and up to 3 exclamation marks."""
    words = _WORD.findall(reply.lower().replace("\u2019", "'"))
    if not words:
        return 0.0
    n = max(len(words), 8)  # a two-word "Thanks, friend!" is not infinitely warm
    friendly = sum(w in _FRIENDLY for w in words) / n
    you = sum(w in _YOU for w in words) / n
    bangs = min(reply.count("!"), 3)
    return (
        0.5 * (1.0 - math.exp(-15.0 * friendly))
        + 0.3 * (1.0 - math.exp(-15.0 * you))
        + 0.2 * (1.0 - math.exp(-float(bangs)))
    )


@with_reasons(
    up="followed_instructions", down="ignored_instructions", comparison="followed_instructions"
)
def uses_list(prompt: str, reply: str) -> float:
    """On list or multi-part prompts: 0.2 with fewer than 2 list items, rising to ~1 with
    4 or more; 0.5 (no opinion) on every other prompt."""
    if not wants_list(prompt):
        return 0.5
    items = list_items(reply)
    return 0.2 + 0.8 * (1.0 - math.exp(-float(max(items - 1, 0))))


@with_reasons(up="helpful", down="not_helpful", comparison="more_helpful")
def answers_number(prompt: str, reply: str) -> float:
    """On prompts that ask for a number: 0.1 without one, else 0.5 + 0.5 * exp(-i / 20)
    for the first number at word i; 0.5 (no opinion) on every other prompt."""
    if not wants_number(prompt):
        return 0.5
    at = first_number_at(reply)
    if at is None:
        return 0.1
    return 0.5 + 0.5 * math.exp(-at / 20.0)


_LETTERS = re.compile(r"[A-Za-z]+")
PLAIN_CENTER = 4.6  # letters per word where plain_words() is 0.5
PLAIN_WIDTH = 0.25


@with_reasons(up="well_written", down="badly_written", comparison="better_written")
def plain_words(prompt: str, reply: str) -> float:
    """Plain language: short words. A logistic in the mean letters per word (0.5 at 4.6,
    about 0.02 at 5.6 and 0.98 at 3.6); a ratio, so neither longer nor shorter replies
    score better as such. 0 for a reply with no words."""
    words = _LETTERS.findall(reply)
    if not words:
        return 0.0
    mean = sum(len(w) for w in words) / len(words)
    return 1.0 / (1.0 + math.exp((mean - PLAIN_CENTER) / PLAIN_WIDTH))


COMMA_CENTER = 0.056  # commas per word where simple_sentences() is 0.5 (v0's median)
COMMA_WIDTH = 0.015


@with_reasons(up="well_written", down="badly_written", comparison="better_written")
def simple_sentences(prompt: str, reply: str) -> float:
    """Simple sentences: few commas per word (fewer clauses, asides and lists run into
    one sentence). A logistic in commas per word, 0.5 at 0.056 (about 0.82 at 0.034 and
    0.16 at 0.080); a ratio, so neither longer nor shorter replies score better as such.
    0 for an empty reply."""
    words = len(reply.split())
    if words == 0:
        return 0.0
    per_word = reply.count(",") / max(words, 8)
    return 1.0 / (1.0 + math.exp((per_word - COMMA_CENTER) / COMMA_WIDTH))


_SENTENCE_END = re.compile(r"[.!?]+[\s\"')\]*]*")
_OFFER = re.compile(
    r"\b(let me know|feel free|would you like|do you want|want me to|shall i|happy to help|"
    r"any (other|more) questions|hope (this|that) helps)\b",
    re.IGNORECASE,
)


def last_sentence(reply: str) -> str:
    """The reply's last sentence (its last non-empty piece after splitting at . ! ?)."""
    text = reply.strip()
    cut = text.rstrip(".!?\"')]* \n")
    parts = [p for p in _SENTENCE_END.split(cut) if p.strip()]
    return parts[-1].strip() if parts else ""


@with_reasons(up="helpful", down="not_helpful", comparison="more_helpful")
def asks_back(prompt: str, reply: str) -> float:
    """Ends by turning back to the user: 1 when the reply ends with a question, 0.8 when
    its last sentence offers more ("Let me know if...", "Hope this helps"), else 0.2. It
    looks at the end only, so a longer reply gains nothing by its length."""
    text = reply.strip()
    if not text:
        return 0.0
    if text.rstrip("\"')]* \n").endswith("?"):
        return 1.0
    return 0.8 if _OFFER.search(last_sentence(text)) else 0.2


SHIPPED: dict[str, Gold] = {
    "concise": concise,
    "warm": warm,
    "uses_list": uses_list,
    "answers_number": answers_number,
    "plain_words": plain_words,
    "simple_sentences": simple_sentences,
    "asks_back": asks_back,
}


def gold_spec(gold: Callable[..., object]) -> str:
    """`module:function` of a gold function (what `load_gold` takes back)."""
    return f"{getattr(gold, '__module__', '?')}:{getattr(gold, '__qualname__', repr(gold))}"


def load_gold(spec: str) -> Gold:
    """The callable named `module:function` (`module:Class.attr` works too). A shipped
    name alone (`concise`) means this module's function."""
    spec = spec.strip()
    if ":" not in spec:
        if spec in SHIPPED:
            return SHIPPED[spec]
        raise GoldSpecError(
            f"gold {spec!r} is not 'module:function' (e.g. harness.simulation.gold:concise) "
            f"nor a shipped name ({', '.join(SHIPPED)})"
        )
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path or ":" in attr_path:
        raise GoldSpecError(f"gold {spec!r} is not 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise GoldSpecError(
                f"gold {spec!r}: no module named {module_name!r} (is it on the Python path?)"
            ) from None
        raise GoldSpecError(f"gold {spec!r}: importing {module_name!r} failed: {e}") from e
    except Exception as e:
        raise GoldSpecError(
            f"gold {spec!r}: importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    target: object = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise GoldSpecError(
                f"gold {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise GoldSpecError(
            f"gold {spec!r} is a {type(target).__name__}, not a function (prompt, reply) -> float"
        )
    fn: Gold = target
    return fn
