"""A small synchronous Python client for the v1 API (httpx)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx


class TroveAPIError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class TroveClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> TroveClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text, "details": {}}
            raise TroveAPIError(response.status_code, error["code"], error["message"], error.get("details", {}))
        return response.json() if response.content else None

    def healthy(self) -> bool:
        return self._http.get("/healthz").status_code == 200

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/models")["models"])

    def create_collection(self, name: str, **config: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/collections", json={"name": name, **config}))

    def collections(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/collections")["collections"])

    def collection(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/collections/{name}"))

    def drop_collection(self, name: str) -> None:
        self._call("DELETE", f"/v1/collections/{name}")

    def upsert(self, collection: str, points: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._call("PUT", f"/v1/collections/{collection}/points", json={"points": points}))

    def get_point(self, collection: str, point_id: int | str, with_vector: bool = False) -> dict[str, Any]:
        """By URL: for ids a URL cannot carry exactly ('/', '.', '..', digit strings beside an integer id) use lookup."""
        return dict(self._call("GET", f"/v1/collections/{collection}/points/{quote(str(point_id), safe='')}", params={"with_vector": with_vector}))

    def lookup(self, collection: str, ids: list[int | str], with_vector: bool = False) -> dict[str, Any]:
        """Points by id, any id: {"points": [...], "missing": [ids]}."""
        return dict(self._call("POST", f"/v1/collections/{collection}/points/lookup", json={"ids": ids, "with_vector": with_vector}))

    def delete(self, collection: str, ids: list[int | str]) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/collections/{collection}/points/delete", json={"ids": ids}))

    def query(self, collection: str, **query: Any) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/collections/{collection}/query", json=query))

    def query_batch(self, collection: str, queries: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/collections/{collection}/query/batch", json={"queries": queries}))

    def add_text_index(self, collection: str, tokenizer: str | None = None) -> str:
        """Start the job that indexes the stored text for keyword and hybrid queries; its id."""
        return str(self._call("PUT", f"/v1/collections/{collection}/text_index", json={} if tokenizer is None else {"tokenizer": tokenizer})["job_id"])

    def drop_text_index(self, collection: str) -> None:
        self._call("DELETE", f"/v1/collections/{collection}/text_index")

    def start_build(self, collection: str, request: dict[str, Any]) -> str:
        return str(self._call("POST", f"/v1/collections/{collection}/builds", json=request)["job_id"])

    def build(self, collection: str, path: str, format: str, **options: Any) -> str:
        return self.start_build(collection, {"source": {"path": path, "format": format}, **options})

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, collection: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/jobs", params={"collection": collection} if collection else None)["jobs"])

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/v1/jobs/{job_id}"))

    def wait_job(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["state"] not in {"succeeded", "failed", "cancelled"}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll_s)
        return job
