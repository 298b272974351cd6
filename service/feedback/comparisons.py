"""A-vs-B comparisons: two replies to one prompt, sides shuffled, versions hidden until the vote.

`ComparisonService` plans and runs the two generations (async, on the engine); the
plain functions below are the storage side and run in the caller's transaction. The
comparison row and both generation rows are written in one transaction before any id
reaches the client, so a vote may arrive while the replies are still streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.chat.service import ChatResult, ChatService, ChoiceDelta, PreparedChat
from service.errors import Conflict, Forbidden, InvalidValue, NotFound
from service.feedback.reasons import check_comparison_reason
from service.policies.registry import PolicyRegistry
from service.protocol.feedback import ComparisonRequest
from store.db import repository
from store.db.models import (
    Comparison,
    ComparisonChoice,
    Generation,
    PolicyVersion,
    new_id,
    utcnow,
)
from store.db.session import session_scope

COMPARISON_ID = re.compile(r"^cmp-[0-9a-f]{32}$")


@dataclass(frozen=True)
class SideView:
    generation_id: str
    content: str
    finish_reason: str | None
    model: str | None  # the policy version, revealed after the vote


@dataclass(frozen=True)
class ComparisonView:
    id: str
    a: SideView
    b: SideView
    choice: str | None
    reason: str | None
    created_at: datetime
    voted_at: datetime | None


@dataclass
class ComparisonPlan:
    id: str
    a: PreparedChat
    b: PreparedChat

    def side(self, name: str) -> PreparedChat:
        return self.a if name == "a" else self.b


class ComparisonService:
    def __init__(
        self,
        chat: ChatService,
        registry: PolicyRegistry,
        sessions: sessionmaker[Session],
        temperature: float = 0.7,
    ):
        self._chat = chat
        self._registry = registry
        self._sessions = sessions
        self._temperature = temperature

    async def start(self, req: ComparisonRequest, user_id: str, source: str) -> ComparisonPlan:
        """Check the request, pick two versions, shuffle sides, store the rows. Nothing runs yet."""
        first_version, second_version = self._registry.comparison_pair()
        chat = req.to_chat(self._temperature, seed=secrets.randbelow(2**31))
        first = self._chat.prepare(
            chat, source=source, user_id=user_id, version=first_version, sides=2
        )
        second = self._chat.variant(first, second_version, seed_offset=1)
        a, b = (first, second) if secrets.randbelow(2) == 0 else (second, first)
        plan = ComparisonPlan(new_id("cmp"), a, b)
        await asyncio.to_thread(self._store, plan, user_id)
        return plan

    def _store(self, plan: ComparisonPlan, user_id: str) -> None:
        with session_scope(self._sessions) as s:
            repository.insert_generations(
                s, self._chat.pending_records(plan.a) + self._chat.pending_records(plan.b)
            )
            s.add(
                Comparison(
                    id=plan.id,
                    user_id=user_id,
                    prompt=plan.a.messages,
                    generation_a_id=plan.a.id,
                    generation_b_id=plan.b.id,
                )
            )
        plan.a.begun = plan.b.begun = True

    async def complete(self, plan: ComparisonPlan) -> tuple[ChatResult, ChatResult]:
        a, b = await asyncio.gather(self._chat.complete(plan.a), self._chat.complete(plan.b))
        return a, b

    async def stream(
        self, plan: ComparisonPlan
    ) -> AsyncIterator[tuple[str, ChoiceDelta | ChatResult]]:
        """Both replies, released in step: ("a" | "b", delta or final result).

        While both sides generate, a delta of one side goes out only with a delta of the
        other, so both advance at the slower side's pace; once one side has ended, the
        rest of the other is held until it ends too. The two versions may decode at
        different speeds (an adapter costs time), and a voter who saw which side ran
        faster could tell the canary before voting."""
        queue: asyncio.Queue[tuple[str, ChoiceDelta | ChatResult | BaseException]] = asyncio.Queue()

        async def pump(side: str) -> None:
            try:
                async with contextlib.aclosing(self._chat.stream(plan.side(side))) as events:
                    async for ev in events:
                        queue.put_nowait((side, ev))
            except Exception as e:
                queue.put_nowait((side, e))

        tasks = [asyncio.create_task(pump(side)) for side in ("a", "b")]
        held: dict[str, list[ChoiceDelta]] = {"a": [], "b": []}
        results: dict[str, ChatResult] = {}
        try:
            while len(results) < 2:
                side, ev = await queue.get()
                if isinstance(ev, BaseException):
                    raise ev
                if isinstance(ev, ChatResult):
                    results[side] = ev
                    continue
                if not ev.text:
                    continue
                held[side].append(ev)
                while held["a"] and held["b"]:
                    yield "a", held["a"].pop(0)
                    yield "b", held["b"].pop(0)
            for side in ("a", "b"):
                for delta in held[side]:
                    yield side, delta
            for side in ("a", "b"):
                yield side, results[side]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _owned(session: Session, comparison_id: str, user_id: str, lock: bool) -> Comparison:
    if not COMPARISON_ID.match(comparison_id):
        raise NotFound(f"no comparison with id '{comparison_id[:80]}'")
    stmt = select(Comparison).where(Comparison.id == comparison_id)
    if lock:
        stmt = stmt.with_for_update()
    cmp = session.scalars(stmt).first()
    if cmp is None:
        raise NotFound(f"no comparison with id '{comparison_id}'")
    if cmp.user_id != user_id:
        raise Forbidden("you can only vote on comparisons shown to you", code="not_your_comparison")
    return cmp


def vote(
    session: Session, user_id: str, comparison_id: str, choice: str, reason: str | None, alias: str
) -> ComparisonView:
    """Record the one vote of a comparison; a second vote is refused and the first kept."""
    try:
        value = ComparisonChoice(choice)
    except ValueError:
        raise InvalidValue("choice must be one of a, b, tie, both_bad", param="choice") from None
    check_comparison_reason(reason)
    cmp = _owned(session, comparison_id, user_id, lock=True)
    if cmp.choice is not None:
        raise Conflict(
            f"this comparison already has a vote ({cmp.choice.value}); a comparison takes one vote",
            code="already_voted",
        )
    cmp.choice = value
    cmp.reason = reason
    cmp.voted_at = utcnow()
    session.flush()
    return view(session, cmp, alias)


def get(session: Session, user_id: str, comparison_id: str, alias: str) -> ComparisonView:
    return view(session, _owned(session, comparison_id, user_id, lock=False), alias)


def view(session: Session, cmp: Comparison, alias: str) -> ComparisonView:
    rows = session.execute(
        select(Generation, PolicyVersion.name)
        .join(PolicyVersion, Generation.policy_version_id == PolicyVersion.id)
        .where(Generation.id.in_([cmp.generation_a_id, cmp.generation_b_id]))
    ).all()
    by_id = {g.id: (g, name) for g, name in rows}
    revealed = cmp.choice is not None

    def side(gid: str) -> SideView:
        g, name = by_id[gid]
        return SideView(g.id, g.text, g.finish_reason, f"{alias}@{name}" if revealed else None)

    return ComparisonView(
        cmp.id,
        side(cmp.generation_a_id),
        side(cmp.generation_b_id),
        None if cmp.choice is None else cmp.choice.value,
        cmp.reason,
        cmp.created_at,
        cmp.voted_at,
    )
