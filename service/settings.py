"""Configuration from the environment (prefix TROVE_) or a .env file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from encoders.errors import InvalidInput
from index.segments.policy import EngineSettings
from index.shards.handles import ShardRuntime


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TROVE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("trove-data"), description="Where collections, their segments and models live.")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, description="Port to bind.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys allowed to read and write."
    )
    read_only_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys allowed to read (query, get, list) only."
    )
    max_request_bytes: int = Field(32 * 1024 * 1024, description="Larger request bodies get 413.")
    max_concurrent_requests: int = Field(256, description="Requests in flight beyond this get 429 with Retry-After.")
    models_dir: Path | None = Field(None, description="Folders of local models, each usable by its folder name. Default: <data_dir>/models.")
    seal_points: int = Field(20_000, ge=1, description="Rows in a collection's appendable (exactly searched) segment that make the optimizer seal and index it.")
    max_segment_points: int = Field(1_000_000, ge=1, description="No seal or merge writes a larger segment.")
    merge_factor: int = Field(10, ge=2, description="Segments of one size tier that the optimizer merges into one.")
    vacuum_dead_share: float = Field(0.2, gt=0, le=1, description="Share of dead rows (deleted or overwritten) at which a sealed segment is rewritten without them.")
    optimizer_interval_s: float = Field(1.0, gt=0, description="How often the optimizer looks for segments to seal, merge or vacuum.")
    log_level: str = Field("info", description="uvicorn log level.")
    faiss_threads: int = Field(
        1, ge=1, description="OpenMP threads per FAISS search. Requests already run in parallel; more threads per query oversubscribe the cores."
    )
    gil_switch_interval_ms: float = Field(
        0.5,
        gt=0,
        description="How long a Python thread may hold the GIL while another waits (Python's default: 5 ms). A build's row checks hold it "
        "for long stretches, and each query takes it several times: at 5 ms, query p99 during a 1M-row build was 30 ms (11x idle), at 0.5 ms 15 ms.",
    )
    job_workers: int = Field(1, ge=1, description="Background jobs (builds) that run at once; more wait queued.")
    build_source_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated folders that builds and relevance fits may read files from. Default: <data_dir>/imports only.",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster for builds with engine 'ray' and for sharded collections (each shard a Ray actor); unset starts a local Ray for builds."
    )
    ray_actors: int = Field(2, ge=1, description="Encoding actors a Ray build uses.")
    ray_shards: bool = Field(False, description="Run sharded collections' shards as Ray actors on a local Ray (`trove serve --ray`); implied by TROVE_RAY_ADDRESS.")
    shard_cpus: float = Field(1.0, gt=0, description="CPUs each shard actor reserves (its placement bundle).")
    shard_memory_bytes: int | None = Field(None, ge=1, description="Memory each shard actor reserves, in bytes (default: no reservation).")
    shard_max_restarts: int = Field(-1, ge=-1, description="How often Ray restarts a dead shard actor from its data dir (-1: always).")
    shard_timeout_s: float = Field(30.0, gt=0, description="How long a query waits for a shard before answering 503 shard_unavailable (or leaving it out with allow_partial).")

    @field_validator("api_keys", "read_only_api_keys", "build_source_dirs", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def source_dirs(self) -> list[Path]:
        return self.build_source_dirs or [self.data_dir / "imports"]

    def readable_source(self, path: str) -> Path:
        """A file a job may read: inside the imports folder or TROVE_BUILD_SOURCE_DIRS after resolving links and
        '..'; a relative path is taken from the first of those folders."""
        folders = [d.resolve() for d in self.source_dirs]
        resolved = (folders[0] / path).resolve() if "\x00" not in path else None
        if resolved is None or not any(resolved.is_relative_to(d) for d in folders):
            # Nothing about the path: whether it exists or what lies there is not the client's to learn.
            raise InvalidInput(
                "jobs read files only from the imports folder (<data_dir>/imports) or the folders in TROVE_BUILD_SOURCE_DIRS",
                code="source_not_allowed",
            )
        return resolved

    @property
    def engine(self) -> EngineSettings:
        return EngineSettings(
            seal_points=self.seal_points,
            max_segment_points=max(self.max_segment_points, self.seal_points),
            merge_factor=self.merge_factor,
            vacuum_dead_share=self.vacuum_dead_share,
        )

    @property
    def shard_runtime(self) -> ShardRuntime:
        return ShardRuntime(
            ray=self.ray_shards or self.ray_address is not None,
            address=self.ray_address,
            cpus_per_shard=self.shard_cpus,
            memory_per_shard=self.shard_memory_bytes,
            max_restarts=self.shard_max_restarts,
            timeout_s=self.shard_timeout_s,
            optimizer_interval_s=self.optimizer_interval_s,
            models_dir=self.resolved_models_dir,
        )

    @cached_property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.read_only_api_keys)
