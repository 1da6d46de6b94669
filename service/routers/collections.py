"""Create, list, describe and drop collections."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from encoders.registry import DEFAULT_MODEL
from service.deps import CatalogDep, ReadAccess, WriteAccess
from service.routers.compression import configure_compression
from service.schemas import CollectionInfo, CollectionList, CreateCollection

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CollectionInfo, dependencies=WriteAccess)
def create_collection(body: CreateCollection, catalog: CatalogDep) -> CollectionInfo:
    model = body.model if body.model is not None or body.dim is not None else DEFAULT_MODEL
    spec = body.compression.to_spec() if body.compression is not None else None
    collection = catalog.create(
        body.name, model=model, dim=body.dim, metric=body.metric, index=body.index.to_spec(),
        multivector=body.multivector, muvera=body.muvera.to_spec() if body.muvera else None,
        text_index=body.text_index.to_spec() if body.text_index else None, shards=body.shards,
    )
    if spec is not None and body.compression is not None:
        try:  # a bad config or bad query samples leave no collection behind
            configure_compression(collection, spec, body.compression.query_samples())
        except BaseException:
            catalog.drop(body.name)
            raise
    return CollectionInfo(**collection.info())


@router.get("", response_model=CollectionList, dependencies=ReadAccess)
def list_collections(catalog: CatalogDep) -> CollectionList:
    return CollectionList(collections=[CollectionInfo(**c.info()) for c in catalog.all()])


@router.get("/{name}", response_model=CollectionInfo, dependencies=ReadAccess)
def get_collection(name: str, catalog: CatalogDep) -> CollectionInfo:
    return CollectionInfo(**catalog.get(name).info())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=WriteAccess)
def drop_collection(name: str, catalog: CatalogDep) -> Response:
    catalog.drop(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
