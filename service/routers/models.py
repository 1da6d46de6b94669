"""GET /v1/models: the embedding models this server can use, read from the models dir on every call (a model added meanwhile is listed)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadAccess, RegistryDep
from service.schemas import ModelBackend, ModelDescription, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=ReadAccess)


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep) -> ModelList:
    models = []
    for name in registry.names():
        info = registry.describe(name)  # an installed model is described by its record, not loaded just to be listed
        models.append(
            ModelDescription(
                name=info.name,
                dim=info.dim,
                kind=info.kinds[0],
                kinds=list(info.kinds),
                family=info.family,
                source=info.source,
                max_tokens=info.max_tokens,
                backend=ModelBackend.model_validate(info.backend) if info.backend else None,
            )
        )
    return ModelList(models=models)
