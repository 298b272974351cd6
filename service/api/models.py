"""GET /v1/models: the serving alias and every loaded policy version."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep, UserDep
from service.api.openapi import CALLER
from service.protocol.chat import ModelCard, ModelList

router = APIRouter(tags=["models"], responses=CALLER)


@router.get("/v1/models", response_model=ModelList)
async def list_models(_: UserDep, runtime: RuntimeDep) -> ModelList:
    reg = runtime.registry
    cards = []
    if runtime.chat is not None:
        serving = reg.serving
        created = int(serving.created_at.timestamp())
        cards.append(ModelCard(id=reg.alias, created=created, status="serving", kind=serving.kind))
        for v in reg.loaded():
            cards.append(
                ModelCard(
                    id=reg.public_name(v),
                    created=int(v.created_at.timestamp()),
                    status=v.status,
                    kind=v.kind,
                )
            )
    return ModelList(data=cards)
