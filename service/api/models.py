"""GET /v1/models: the serving alias and every loaded policy version."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep, UserDep
from service.api.openapi import CALLER
from service.policies.registry import LiveVersion
from service.protocol.chat import ModelCard, ModelList

router = APIRouter(tags=["models"], responses=CALLER)


@router.get("/v1/models", response_model=ModelList)
async def list_models(user: UserDep, runtime: RuntimeDep) -> ModelList:
    """The alias and the versions this caller may name. Only operators see each
    version's role (canary, candidate) and kind: a voter who knew which reply came
    from the canary could steer its promotion."""
    reg = runtime.registry
    cards = []
    if runtime.chat is not None:
        serving = reg.serving
        shown = reg.loaded() if user.may_pin else [serving]
        cards.append(_card(reg.alias, serving, "serving", user.is_operator))
        for v in shown:
            status = v.status if user.is_operator or v.name == serving.name else "available"
            cards.append(_card(reg.public_name(v), v, status, user.is_operator))
    return ModelList(data=cards)


def _card(name: str, v: LiveVersion, status: str, operator: bool) -> ModelCard:
    return ModelCard(
        id=name,
        created=int(v.created_at.timestamp()),
        status=status,
        kind=v.kind if operator else None,
    )
