"""Upsert, fetch and delete points."""

from __future__ import annotations

from fastapi import APIRouter

from encoders.errors import NotFound
from index.storage.store import StoredPoint
from index.validation import path_point_id
from service.deps import CatalogDep, ReadAccess, WriteAccess
from service.schemas import (
    DeletePoints,
    LookupPoints,
    PointIdT,
    PointList,
    PointOut,
    PointPage,
    ScrollPoints,
    UpsertPoints,
    WriteAck,
)

router = APIRouter(prefix="/v1/collections/{name}/points", tags=["points"])


def _out(point: StoredPoint) -> PointOut:
    return PointOut(
        id=point.id,
        text=point.text,
        payload=point.payload,
        vector=point.vector.tolist() if point.vector is not None else None,
        vectors=point.tokens.tolist() if point.tokens is not None else None,
        model_version=point.model_version,
    )


@router.put("", response_model=WriteAck, dependencies=WriteAccess)
def upsert_points(name: str, body: UpsertPoints, catalog: CatalogDep) -> WriteAck:
    collection = catalog.get(name)
    ack = collection.upsert([p.to_input() for p in body.points])
    return WriteAck(count=ack.count, operation_id=ack.operation_id)


@router.post("/delete", response_model=WriteAck, dependencies=WriteAccess)
def delete_points(name: str, body: DeletePoints, catalog: CatalogDep) -> WriteAck:
    ack = catalog.get(name).delete(body.ids)
    return WriteAck(count=ack.count, operation_id=ack.operation_id)


@router.post("/lookup", response_model=PointList, response_model_exclude_none=False, dependencies=ReadAccess)
def lookup_points(name: str, body: LookupPoints, catalog: CatalogDep) -> PointList:
    """Points by id, for any id a write accepts (GET's URL segment cannot tell "7" from 7, nor carry '/')."""
    collection = catalog.get(name)
    points, missing = [], []
    for point_id in body.ids:
        try:
            points.append(_out(collection.get(point_id, with_vector=body.with_vector)))
        except NotFound:
            missing.append(point_id)
    return PointList(points=points, missing=missing)


@router.post("/scroll", response_model=PointPage, response_model_exclude_none=False, dependencies=ReadAccess)
def scroll_points(name: str, body: ScrollPoints, catalog: CatalogDep) -> PointPage:
    """Every point, page by page (any id type): pass each page's next_offset to get the next."""
    points, next_offset = catalog.get(name).scroll(body.offset, body.limit, body.with_vector)
    return PointPage(points=[_out(p) for p in points], next_offset=next_offset)


@router.get("/{point_id}", response_model=PointOut, response_model_exclude_none=False, dependencies=ReadAccess)
def get_point(name: str, point_id: str, catalog: CatalogDep, with_vector: bool = False) -> PointOut:
    collection = catalog.get(name)
    # Path segments are text: a canonical decimal integer means the integer id when one exists.
    key: PointIdT = path_point_id(point_id)
    if isinstance(key, int):
        try:
            return _out(collection.get(key, with_vector=with_vector))
        except NotFound:
            key = point_id
    return _out(collection.get(key, with_vector=with_vector))
