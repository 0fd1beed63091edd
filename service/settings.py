"""Service settings: environment variables prefixed FACEID_, validated at start-up."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.cpus import available_cpus
from service.vision.onnx import DEFAULT_PROVIDERS

# FACEID_ variables that belong to the project's other tools, not to the service
# (and FACEID_TEST_*, the test suite's).
OTHER_FACEID_VARIABLES = frozenset({"FACEID_SHARED", "FACEID_SYNTH_GENERATOR"})


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    # `.env` may hold other tools' variables (Compose's POSTGRES_PASSWORD): those are ignored;
    # a FACEID_ name that is not a setting is a typo, and an error (see _no_unknown_variables).
    # Errors never echo the input: it holds FACEID_ADMIN_KEY and the database password.
    model_config = SettingsConfigDict(
        env_prefix="FACEID_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Storage
    database_url: str = Field(
        default="sqlite:///./faceid.db",
        description="SQLAlchemy URL. SQLite file by default; postgresql+psycopg://user:pass@host/db in deployment.",
    )
    auto_migrate: bool = Field(default=True, description="Apply database migrations at start-up.")
    db_pool_size: int = Field(default=10, ge=1, le=200)

    # Models
    embedder: str = Field(
        default="builtin:sface",
        description="Recogniser: 'builtin:sface' or a path to an exported model's manifest.json (or its folder).",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default=list(DEFAULT_PROVIDERS), description="ONNX Runtime execution providers, in order of preference."
    )
    require_gpu: bool = Field(default=False, description="Fail at start-up unless the embedder runs on a GPU.")
    intra_op_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime threads per inference (0: the cores shared out among the jobs)."
    )
    inference_threads: int = Field(default=0, ge=0, description="Concurrent inference jobs (0: number of cores).")

    # Detection
    detector: Literal["cascade", "retinaface", "yunet"] = Field(
        default="cascade",
        description="'cascade': RetinaFace, with YuNet's second opinion on faces it is unsure of; 'retinaface'; "
        "'yunet' (the detector before issue 11). Measured by bench.robustness.",
    )
    detect_score_threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Detector confidence; unset: the detector's own (RetinaFace 0.5, YuNet 0.6).",
    )
    detect_max_side: int = Field(default=640, ge=64, le=4096, description="Detect on a copy scaled to this side.")
    min_face_size: int = Field(default=12, ge=1, description="Smallest face side in pixels kept by detection.")
    ambiguous_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Enroll rejects an image if a second face is at least this share of the largest.",
    )

    # Matching
    threshold: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Fixed cosine threshold. Unset: derived from target_fpir and the gallery size when the model's "
        "manifest records its impostor distribution, else the manifest's calibrated threshold.",
    )
    target_fpir: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Share of never-enrolled people that may be matched to someone (false-positive identification "
        "rate); the threshold follows the gallery size to keep it.",
    )
    enroll_quality_gate: bool = Field(
        default=True,
        description="Enroll refuses an image whose face is `low` for recognition (low_quality, with the reasons).",
    )
    enroll_templates: bool = Field(
        default=True,
        description="Store each enrolled face as the mean embedding of its aligned crop and five degraded views of "
        "it (blurred twice, low resolution, heavy JPEG, eyes covered), so that poor probe photos still find the "
        "person: 6 embeddings per enrolled face instead of 1. Faces stored before keep their plain embedding.",
    )
    enroll_conflict_gate: bool = Field(
        default=True,
        description="Enroll refuses a face that already matches another identity of the collection at the decision "
        "threshold (identity_conflict, naming it); allow_conflict=true on the request overrides.",
    )
    quality_aware_threshold: bool = Field(
        default=True,
        description="Identify raises the threshold for a face of `low` quality (+0.02), so that poor photos of "
        "strangers are not matched more often than the target FPIR says.",
    )
    self_calibration: bool = Field(
        default=True,
        description="Pool each collection's own between-identity scores with the model's impostor record once it "
        "has 10 identities (45 pairs of people); off: the record alone.",
    )
    gallery_index: Literal["flat", "flat_fp16", "hnsw"] = "flat"
    gallery_threads: int = Field(
        default=1,
        ge=0,
        description="FAISS threads per search (0: all cores). Requests already run in parallel; a one-query "
        "search waiting on a thread team stalls whenever another request holds a core.",
    )
    gallery_device: Literal["auto", "cpu", "cuda"] = "auto"
    sync_interval: float = Field(
        default=0.5, ge=0, description="Seconds between checks of the database change log (0: off)."
    )
    consistency_interval: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between full comparisons of the gallery with the database (0: off); on a "
        "difference the gallery is rebuilt. /ready compares too.",
    )

    malloc_arenas: int = Field(
        default=2,
        ge=0,
        le=64,
        description="glibc malloc arenas at most (0: glibc's default of 8 per core; MALLOC_ARENA_MAX wins when set). "
        "Each arena keeps its threads' high-water mark: fewer keep a long-running server's memory flat.",
    )

    # Audit
    audit_retention_days: int = Field(
        default=365, ge=1, le=36500, description="Audit entries older than this are deleted (checked hourly)."
    )

    # Limits
    max_image_bytes: int = Field(default=15 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000)
    max_images_per_request: int = Field(default=20, ge=1, le=100)
    inference_queue_limit: int = Field(
        default=64,
        ge=0,
        description="Requests that may wait for an inference thread; past it the answer is 503 `overloaded` "
        "with Retry-After at once, instead of latency growing without bound (0: no limit).",
    )
    body_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a client has to send a request's body (slow uploads get 408)."
    )
    max_concurrent_uploads: int = Field(
        default=64,
        ge=1,
        description="Requests whose bodies may be arriving at once; past it, 503 `overloaded` with Retry-After.",
    )
    max_faces_per_image: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="Identify and detect answer for at most this many faces per image, the largest; the "
        "response says how many were found. Only these get the upright pass's crop check.",
    )

    # Access
    auth: bool = Field(
        default=True,
        description="Require an API key on every route but /health, /ready and /metrics. false is for local "
        "experiments only: the service then refuses any host but a loopback address.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="An admin API key to register at start-up (at least 32 characters, e.g. `openssl rand -hex 32`).",
    )
    admin_key_file: Path = Field(
        default=Path("./faceid-admin.key"),
        description="If it holds a key (a Docker secret), that key is registered as an admin key; else, on the "
        "first start (no key at all), a new admin key is written there (mode 0600, never overwritten).",
    )
    rate_limit_per_minute: int = Field(
        default=1200, ge=0, description="Requests per minute per key and process, unless the key says (0: no limit)."
    )
    auth_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="How long a process trusts what it read about a key: a revoked key stops working within it.",
    )
    metrics_require_key: bool = Field(default=False, description="Require a valid API key on GET /metrics too.")

    # Server
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def inference_jobs(self) -> int:
        return self.inference_threads or available_cpus()

    @property
    def onnx_threads(self) -> int:
        """Threads per ONNX Runtime run: the cores shared out among the concurrent jobs, so that
        concurrent requests use every core without oversubscribing them."""
        return self.intra_op_threads or max(1, available_cpus() // self.inference_jobs)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: Any) -> Any:
        names = set(os.environ)
        dotenv = Path(".env")
        if dotenv.is_file():
            names |= {k for k in dotenv_values(dotenv) if k}
        known = {f"FACEID_{name}".upper() for name in cls.model_fields} | OTHER_FACEID_VARIABLES
        unknown = sorted(
            n
            for n in names
            if n.upper().startswith("FACEID_") and n.upper() not in known and not n.upper().startswith("FACEID_TEST_")
        )
        if unknown:
            raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
        return data

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Settings:
        if not self.auth and not is_loopback(self.host):
            raise ValueError(
                f"FACEID_AUTH=false lets anyone who reaches the port read and change every face: it is for local "
                f"experiments only, and then the host must be a loopback address (127.0.0.1, ::1 or localhost), "
                f"not {self.host!r}"
            )
        return self

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        """Comma-separated in the environment: FACEID_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider."""
        if isinstance(value, str):
            if value.startswith("["):
                return json.loads(value)
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        """A SQLite or PostgreSQL URL; a SQLite file's folder is made. Errors never echo the
        URL: it may carry a password."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL; use sqlite:///path/to/faceid.db or postgresql+psycopg://user:pass@host/db"
            ) from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"the {backend} database is not supported; use SQLite or PostgreSQL")
        if value.startswith("sqlite:///") and ":memory:" not in value:
            Path(value.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return value
