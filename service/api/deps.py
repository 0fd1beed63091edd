"""Request dependencies: what a route needs, handed out from the composition root."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Path, Request, UploadFile

from service.auth.authenticator import Authenticator
from service.auth.principal import Principal
from service.collections import DEFAULT, Collections
from service.errors import ImageTooLarge, InvalidImage, InvalidInput, NotFound, Overloaded
from service.metrics import Metrics
from service.recognizer import Recognizer
from service.settings import Settings
from service.store.audit import AuditLog

T = TypeVar("T")


@dataclass
class Components:
    settings: Settings
    collections: Collections
    audit: AuditLog
    metrics: Metrics
    # A fixed set of worker threads for inference and database work: it bounds concurrent
    # CPU/GPU work, and per-thread state (one YuNet instance per thread) is made once.
    inference: ThreadPoolExecutor
    # API keys, scopes and rate limits (service.api.auth.requires reads it).
    auth: Authenticator
    # Inference jobs submitted and not finished (run_blocking; touched on the event loop only).
    pending: int = 0


def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


ComponentsDep = Annotated[Components, Depends(get_components)]

# A collection's name: lower-case letters, digits, '-' and '_', starting with a letter or digit.
COLLECTION_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def collection_in_path(
    collection: Annotated[str, Path(pattern=COLLECTION_NAME, description="The collection's name.")],
) -> str:
    """Declares `{collection}` for the routes mounted under /collections/{collection}."""
    return collection


def get_recognizer(request: Request, components: ComponentsDep) -> Recognizer:
    """The recognizer of the collection in the path, or of `default` on the routes without one.

    A collection the caller's key may not see is 404 `not_found`, the same answer as one that does
    not exist, so names leak nothing. Runs after the route's key dependency (declared first),
    which leaves the caller in `request.state.principal`.
    """
    name = request.path_params.get("collection", DEFAULT)
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or not principal.sees(name):
        raise NotFound(f"collection {name!r} does not exist")
    return components.collections.recognizer(name)


RecognizerDep = Annotated[Recognizer, Depends(get_recognizer)]


async def run_blocking(components: Components, fn: Callable[..., T], *args: object) -> T:
    """Run inference (and the database work that goes with it) off the event loop, on the inference threads.

    When more jobs already wait for a thread than FACEID_INFERENCE_QUEUE_LIMIT, the answer is 503
    `overloaded` at once: a client can retry elsewhere or later, rather than wait without bound."""
    settings = components.settings
    waiting = components.pending - settings.inference_jobs
    if settings.inference_queue_limit and waiting >= settings.inference_queue_limit:
        raise Overloaded(f"{waiting} requests are waiting for inference; try again shortly")
    components.pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(components.inference, lambda: fn(*args))
    finally:
        components.pending -= 1


async def run_db(fn: Callable[..., T], *args: object) -> T:
    """Database-only work off the event loop; it does not queue behind inference (so /ready answers under load)."""
    return await anyio.to_thread.run_sync(lambda: fn(*args))


async def read_upload(upload: UploadFile, settings: Settings, label: str = "image") -> bytes:
    limit = settings.max_image_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"{label} is larger than the {limit}-byte limit")
    if not data:
        raise InvalidImage(f"{label} is empty")
    return data


async def read_uploads(uploads: list[UploadFile], settings: Settings) -> list[bytes]:
    if not uploads:
        raise InvalidInput("at least one image is required", code="missing_image")
    if len(uploads) > settings.max_images_per_request:
        raise InvalidInput(
            f"{len(uploads)} images sent; at most {settings.max_images_per_request} per request", code="too_many_files"
        )
    return [await read_upload(u, settings, f"image {i}") for i, u in enumerate(uploads)]
