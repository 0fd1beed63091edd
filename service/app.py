"""The composition root: `create_app(settings)` builds every component once, at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import Components
from service.api.errors import BodyTooLarge, error_response, install_error_handlers
from service.api.routes import health, identities, recognition
from service.gallery import FaissGallery
from service.metrics import Metrics
from service.recognizer import Recognizer
from service.settings import Settings
from service.store import Store
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


def threshold_policy(settings: Settings, manifest: ModelManifest) -> ThresholdPolicy:
    """A fixed threshold if the settings give one; else one that keeps the target FPIR at the
    current gallery size, when the manifest records the model's impostor distribution."""
    if settings.threshold is not None:
        return FixedThreshold(settings.threshold, "fixed")
    if manifest.impostors is not None:
        return GalleryAwareThreshold(manifest.impostors, settings.target_fpir, manifest.threshold.cosine)
    log.warning("%s has no impostor record in its manifest: using its fixed threshold", manifest.model_id)
    return FixedThreshold(manifest.threshold.cosine, "manifest")


def build_recognizer(settings: Settings) -> Recognizer:
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
    )
    manifest, model = load_embedder_model(settings.embedder)
    embedder = OnnxEmbedder(
        manifest,
        model,
        providers=settings.providers,
        intra_op_threads=settings.onnx_threads,
        require_gpu=settings.require_gpu,
    )
    gallery = FaissGallery(
        manifest.embedding_size,
        kind=settings.gallery_index,
        device=settings.gallery_device,
        threads=settings.gallery_threads,
    )
    recognizer = Recognizer(
        detector=detector,
        embedder=embedder,
        gallery=gallery,
        store=store,
        threshold=threshold_policy(settings, manifest),
        max_image_pixels=settings.max_image_pixels,
        ambiguous_ratio=settings.ambiguous_ratio,
        detect_side=settings.detect_max_side,
        max_faces=settings.max_faces_per_image,
    )
    recognizer.rebuild()
    log.info(
        "faceid ready: embedder %s on %s, detector %s, gallery %d faces (%s, %s), database %s",
        manifest.model_id,
        embedder.provider,
        detector.name,
        gallery.size,
        settings.gallery_index,
        gallery.device,
        store.engine.url.render_as_string(hide_password=True),
    )
    return recognizer


class BodyLimit:
    """Refuse request bodies over `limit` bytes before they are parsed or spooled.

    A declared Content-Length over the limit is refused at once; a chunked body is counted as
    it arrives and reading stops at the limit (the error handlers turn that into 413).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(413, "payload_too_large", f"the request is over {self.limit} bytes")(
                scope, receive, send
            )
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:  # read outside FastAPI's body parsing (which reports it itself)
            await error_response(413, "payload_too_large", f"the request is over {self.limit} bytes")(
                scope, receive, send
            )


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
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        recognizer = await anyio.to_thread.run_sync(build_recognizer, settings)
        workers = ThreadPoolExecutor(max_workers=settings.inference_jobs, thread_name_prefix="faceid-inference")
        app.state.components = Components(settings, recognizer, Metrics(), workers)
        # PostgreSQL also notifies: other processes' writes arrive in milliseconds, not at the next poll.
        listener = ChangeListener.for_store(recognizer.store, recognizer.sync) if settings.sync_interval > 0 else None
        async with anyio.create_task_group() as tasks:
            if settings.sync_interval > 0:
                tasks.start_soon(_follow_changes, recognizer, settings.sync_interval, settings.consistency_interval)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
        if listener is not None:
            listener.stop()
        workers.shutdown(wait=False, cancel_futures=True)
        recognizer.store.close()

    app = FastAPI(
        title="faceid",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={500: {"description": "Internal error (JSON error body)."}},
    )
    install_error_handlers(app)
    app.include_router(recognition.router)
    app.include_router(identities.router)
    app.include_router(health.router)

    app.add_middleware(RequestMetrics)
    body_limit = settings.max_image_bytes * settings.max_images_per_request + 1024 * 1024
    app.add_middleware(BodyLimit, limit=body_limit)
    return app


async def _follow_changes(recognizer: Recognizer, interval: float, check_every: float) -> None:
    """Apply enrolls and deletes made by other processes or replicas (the database's change log), and
    now and then compare the whole gallery with the database (rebuilding it on a difference)."""
    last_check = time.monotonic()
    while True:
        await anyio.sleep(interval)
        check = check_every > 0 and time.monotonic() - last_check >= check_every
        try:
            await anyio.to_thread.run_sync(recognizer.check if check else recognizer.sync)
            if check:
                last_check = time.monotonic()
        except Exception as exc:  # the database may be briefly away; keep following from where we are
            log.warning(
                "could not apply the change log: %s", type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG)
            )
