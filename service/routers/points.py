"""Upsert, fetch and delete points."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import CatalogDep, ReadAccess, WriteAccess
from service.schemas import DeletePoints, PointIdT, PointOut, UpsertPoints, WriteAck

router = APIRouter(prefix="/v1/collections/{name}/points", tags=["points"])


@router.put("", response_model=WriteAck, dependencies=WriteAccess)
def upsert_points(name: str, body: UpsertPoints, catalog: CatalogDep) -> WriteAck:
    collection = catalog.get(name)
    ack = collection.upsert([p.to_input() for p in body.points])
    return WriteAck(count=ack.count, operation_id=ack.operation_id)


@router.post("/delete", response_model=WriteAck, dependencies=WriteAccess)
def delete_points(name: str, body: DeletePoints, catalog: CatalogDep) -> WriteAck:
    ack = catalog.get(name).delete(body.ids)
    return WriteAck(count=ack.count, operation_id=ack.operation_id)


@router.get("/{point_id}", response_model=PointOut, response_model_exclude_none=False, dependencies=ReadAccess)
def get_point(name: str, point_id: str, catalog: CatalogDep, with_vector: bool = False) -> PointOut:
    collection = catalog.get(name)
    # Path segments are strings: an all-digit segment means the integer id when one exists.
    key: PointIdT = point_id
    if point_id.lstrip("-").isdigit() and collection.store.get(int(point_id)) is not None:
        key = int(point_id)
    point = collection.get(key, with_vector=with_vector)
    return PointOut(
        id=point.id,
        text=point.text,
        payload=point.payload,
        vector=point.vector.tolist() if point.vector is not None else None,
        vectors=point.tokens.tolist() if point.tokens is not None else None,
        model_version=point.model_version,
    )
