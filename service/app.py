"""The composition root: `create_app(settings)` builds every component once, at start-up."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import Components, collection_in_path
from service.api.errors import BodyTimeout, BodyTooLarge, error_response, install_error_handlers
from service.api.openapi import install_openapi
from service.api.routes import audit, health, identities, keys, recognition
from service.api.routes import collections as collection_routes
from service.auth.authenticator import Authenticator
from service.auth.bootstrap import bootstrap_admin_key
from service.auth.keys import KeyStore
from service.collections import DEFAULT, Collections
from service.faces import FaceAnalyzer
from service.gallery import FaissGallery
from service.logs import configure_logging
from service.memory import limit_malloc_arenas
from service.metrics import Metrics
from service.settings import Settings
from service.store import CollectionRecord, Store
from service.store.audit import AuditLog
from service.store.migrate import upgrade
from service.store.notify import ChangeListener
from service.threshold import FixedThreshold, GalleryAwareThreshold, ThresholdPolicy
from service.vision.detectors import build_detector
from service.vision.embed import OnnxEmbedder
from service.vision.manifest import ModelManifest
from service.vision.models import load_embedder_model

log = logging.getLogger("faceid")

DESCRIPTION = """
Self-hosted face identification. Enroll people from photos, then ask who is in a photo:
every face comes back as a **match** or **unknown** (open-set rejection by a calibrated
cosine threshold). Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.
"""


def threshold_policy(
    settings: Settings, manifest: ModelManifest, collection: CollectionRecord | None = None
) -> ThresholdPolicy:
    """A collection's fixed threshold, else the settings' one; else one that keeps the target FPIR
    (the collection's, else the settings') at the collection's gallery size, when the manifest
    records the model's impostor distribution."""
    if collection is not None and collection.threshold is not None:
        return FixedThreshold(collection.threshold, "collection")
    if settings.threshold is not None:
        return FixedThreshold(settings.threshold, "fixed")
    if manifest.impostors is not None:
        target = collection.target_fpir if collection is not None and collection.target_fpir else settings.target_fpir
        return GalleryAwareThreshold(
            manifest.impostors, target, manifest.threshold.cosine, self_calibration=settings.self_calibration
        )
    log.warning("%s has no impostor record in its manifest: using its fixed threshold", manifest.model_id)
    return FixedThreshold(manifest.threshold.cosine, "manifest")


def build_collections(settings: Settings) -> Collections:
    """Every heavy component, built once. Fails fast on a bad model, provider or database."""
    store = Store.from_url(settings.database_url, pool_size=settings.db_pool_size)
    if settings.auto_migrate:
        upgrade(store.engine)
    detector = build_detector(
        settings.detector,
        score_threshold=settings.detect_score_threshold,
        max_side=settings.detect_max_side,
        min_face=settings.min_face_size,
        providers=settings.providers,
        check_most=settings.max_faces_per_image,
    )
    manifest, model = load_embedder_model(settings.embedder)
    embedder = OnnxEmbedder(
        manifest,
        model,
        providers=settings.providers,
        intra_op_threads=settings.onnx_threads,
        require_gpu=settings.require_gpu,
    )
    analyzer = FaceAnalyzer(
        detector=detector,
        embedder=embedder,
        max_image_pixels=settings.max_image_pixels,
        ambiguous_ratio=settings.ambiguous_ratio,
        detect_side=settings.detect_max_side,
        max_faces=settings.max_faces_per_image,
        quality_gate=settings.enroll_quality_gate,
        min_face=settings.min_face_size,
        augment_templates=settings.enroll_templates,
    )

    def new_gallery() -> FaissGallery:
        return FaissGallery(
            manifest.embedding_size,
            kind=settings.gallery_index,
            device=settings.gallery_device,
            threads=settings.gallery_threads,
        )

    probe = new_gallery()  # fails fast on a GPU gallery that cannot be had
    collections = Collections(
        store=store,
        analyzer=analyzer,
        new_gallery=new_gallery,
        policy=lambda record: threshold_policy(settings, manifest, record),
        self_calibration=settings.self_calibration,
        conflict_gate=settings.enroll_conflict_gate,
        quality_aware=settings.quality_aware_threshold,
    )
    store.ensure_collection(DEFAULT, manifest.model_id)
    collections.rebuild()
    log.info(
        "faceid ready: embedder %s on %s, detector %s, %d faces in %d collections (%s, %s), database %s",
        manifest.model_id,
        embedder.provider,
        detector.name,
        collections.size,
        len(collections.all()),
        settings.gallery_index,
        probe.device,
        store.engine.url.render_as_string(hide_password=True),
    )
    return collections


class BodyLimit:
    """Refuse request bodies over `limit` bytes before they are parsed or spooled, bodies that take
    longer than `timeout` seconds to arrive (408), and more than `max_uploads` bodies arriving at
    once (503 `overloaded`, with Retry-After).

    A declared Content-Length over the limit is refused at once; a chunked body is counted as
    it arrives and reading stops at the limit (the error handlers turn that into 413).
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float = 60.0, max_uploads: int = 64) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.max_uploads = max_uploads
        self.uploading = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(413, "payload_too_large", f"the request is over {self.limit} bytes")(
                scope, receive, send
            )
            return
        has_body = (declared is not None and declared not in (b"", b"0")) or b"transfer-encoding" in headers
        if has_body and self.uploading >= self.max_uploads:
            response = error_response(503, "overloaded", f"{self.uploading} uploads are in progress; try again shortly")
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        seen = 0
        deadline = time.monotonic() + self.timeout
        uploading = has_body
        self.uploading += uploading

        async def limited() -> Message:
            nonlocal seen, uploading
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as wait:
                message = await receive()
            if wait.cancelled_caught:
                raise BodyTimeout(self.timeout)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
                if uploading and not message.get("more_body", False):
                    uploading = False
                    self.uploading -= 1
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:  # read outside FastAPI's body parsing (which reports it itself)
            await error_response(413, "payload_too_large", f"the request is over {self.limit} bytes")(
                scope, receive, send
            )
        except BodyTimeout as exc:
            await error_response(408, "request_timeout", str(exc))(scope, receive, send)
        finally:
            if uploading:
                self.uploading -= 1


class RequestId:
    """Every request gets an id (the client's `X-Request-ID` when it is a sane token, else a new one),
    kept in `request.state.request_id` for the audit log and sent back in `X-Request-ID`."""

    _TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if self._TOKEN.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, tagged)


class RequestMetrics:
    """Latency and status per route, as plain ASGI (no per-request Request/Response objects)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            components: Components | None = getattr(scope["app"].state, "components", None)
            if components is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                components.metrics.latency.labels(path).observe(time.perf_counter() - start)
                components.metrics.requests.labels(path, str(status)).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        limit_malloc_arenas(settings.malloc_arenas)  # before the request and inference threads start
        collections = await anyio.to_thread.run_sync(build_collections, settings)
        workers = ThreadPoolExecutor(max_workers=settings.inference_jobs, thread_name_prefix="faceid-inference")
        app.state.components = Components(
            settings=settings,
            collections=collections,
            audit=AuditLog(collections.store),
            metrics=Metrics(),
            inference=workers,
            auth=Authenticator.from_settings(settings, KeyStore(collections.store)),
        )
        # The first admin key (or the given one), once, even when several processes start together.
        app.state.admin_key = await anyio.to_thread.run_sync(
            bootstrap_admin_key, app.state.components.auth.keys, settings
        )
        # PostgreSQL also notifies: other processes' writes arrive in milliseconds, not at the next poll.
        listener = ChangeListener.for_store(collections.store, collections.sync) if settings.sync_interval > 0 else None
        async with anyio.create_task_group() as tasks:
            if settings.sync_interval > 0:
                tasks.start_soon(_follow_changes, collections, settings.sync_interval, settings.consistency_interval)
            tasks.start_soon(_prune_audit, app.state.components.audit, settings.audit_retention_days)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
        if listener is not None:
            listener.stop()
        workers.shutdown(wait=False, cancel_futures=True)
        collections.store.close()

    app = FastAPI(
        title="faceid",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={500: {"description": "Internal error (JSON error body)."}},
    )
    install_error_handlers(app)
    install_openapi(app, max_images=settings.max_images_per_request)
    # The recognition and identity routes work in a collection; at the root they serve `default`,
    # so clients written before collections existed keep working.
    in_collection = {"prefix": "/collections/{collection}", "dependencies": [Depends(collection_in_path)]}
    for router in (recognition.router, identities.router):
        app.include_router(router)
        app.include_router(router, **in_collection)  # type: ignore[arg-type]
    app.include_router(collection_routes.router)
    app.include_router(keys.router)
    app.include_router(audit.router)
    app.include_router(health.router)

    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestId)
    body_limit = settings.max_image_bytes * settings.max_images_per_request + 1024 * 1024
    app.add_middleware(
        BodyLimit, limit=body_limit, timeout=settings.body_timeout, max_uploads=settings.max_concurrent_uploads
    )
    return app


async def _prune_audit(log_: AuditLog, keep_days: int, every: float = 3600.0) -> None:
    """Delete audit entries past their retention, at start and then hourly."""
    while True:
        try:
            removed = await anyio.to_thread.run_sync(log_.prune, keep_days)
            if removed:
                log.info("audit log: %d entries older than %d days deleted", removed, keep_days)
        except Exception as exc:  # the database may be away; try again next time
            log.warning("could not prune the audit log: %s", type(exc).__name__)
        await anyio.sleep(every)


async def _follow_changes(collections: Collections, interval: float, check_every: float) -> None:
    """Apply enrolls and deletes made by other processes or replicas (the database's change log), and
    now and then compare the whole gallery with the database (rebuilding it on a difference)."""
    last_check = time.monotonic()
    while True:
        await anyio.sleep(interval)
        check = check_every > 0 and time.monotonic() - last_check >= check_every
        try:
            await anyio.to_thread.run_sync(collections.check if check else collections.sync)
            await anyio.to_thread.run_sync(collections.recalibrate)
            if check:
                last_check = time.monotonic()
        except Exception as exc:  # the database may be briefly away; keep following from where we are
            log.warning(
                "could not apply the change log: %s", type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG)
            )
