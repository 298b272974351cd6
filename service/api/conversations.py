"""/v1/conversations: a web user's stored chats (the WS chat frame fills them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from service.api.deps import RuntimeDep, UserDep
from service.api.openapi import CALLER, errors
from service.conversations import store
from service.protocol.conversations import (
    ConversationDetail,
    ConversationIn,
    ConversationList,
    ConversationOut,
    ConversationRename,
    MessageOut,
)
from service.runtime import Runtime
from store.db.session import in_session

router = APIRouter(prefix="/v1/conversations", tags=["conversations"], responses=CALLER)
NOT_FOUND = errors(404)


def _run(runtime: Runtime, fn: Any, *, write: bool = False) -> Any:
    return in_session(runtime.sessions if write else runtime.read_sessions, fn)


@router.get("", response_model=ConversationList)
async def list_conversations(
    user: UserDep, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> ConversationList:
    """Your conversations, most recently active first."""
    rows = await _run(runtime, lambda s: store.list_for(s, user.user_id, limit))
    return ConversationList(data=[ConversationOut(**r.__dict__) for r in rows])


@router.post("", response_model=ConversationOut, status_code=201)
async def create_conversation(
    user: UserDep, runtime: RuntimeDep, body: ConversationIn | None = None
) -> ConversationOut:
    title = body.title if body else None
    info = await _run(runtime, lambda s: store.create(s, user.user_id, title), write=True)
    return ConversationOut(**info.__dict__)


@router.get("/{conversation_id}", response_model=ConversationDetail, responses=NOT_FOUND)
async def get_conversation(
    conversation_id: str, user: UserDep, runtime: RuntimeDep
) -> ConversationDetail:
    """The stored history, with the policy version of each reply and your vote on it."""
    alias = runtime.registry.alias
    info, msgs = await _run(
        runtime, lambda s: store.messages(s, conversation_id, user.user_id, alias)
    )
    return ConversationDetail(**info.__dict__, messages=[MessageOut(**m.__dict__) for m in msgs])


@router.patch("/{conversation_id}", response_model=ConversationOut, responses=NOT_FOUND)
async def rename_conversation(
    conversation_id: str, body: ConversationRename, user: UserDep, runtime: RuntimeDep
) -> ConversationOut:
    info = await _run(
        runtime, lambda s: store.rename(s, conversation_id, user.user_id, body.title), write=True
    )
    return ConversationOut(**info.__dict__)


@router.delete("/{conversation_id}", status_code=204, responses=NOT_FOUND)
async def delete_conversation(conversation_id: str, user: UserDep, runtime: RuntimeDep) -> Response:
    await _run(runtime, lambda s: store.remove(s, conversation_id, user.user_id), write=True)
    return Response(status_code=204)
