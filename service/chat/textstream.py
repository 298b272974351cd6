"""Incremental detokenization and stop strings, for engines that do not do it themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class IncrementalText:
    """Turns a growing list of token ids into text deltas.

    Decodes the whole suffix each step and holds back a trailing replacement character
    (an incomplete UTF-8 sequence), so multi-byte characters are never split.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        delta = text[self._emitted :]
        self._emitted = len(text)
        return delta


class StopMatcher:
    """Finds stop strings across delta boundaries; holds back a possible partial match."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Return (text safe to emit, stopped)."""
        buf = self._pending + delta
        if not self._stops:
            return buf, False
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        hold = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self._pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
