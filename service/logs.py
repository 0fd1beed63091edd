"""Logging set-up, the same for `faceid serve` and for workers that uvicorn starts."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries that narrate their own start-up at INFO (alembic's plugins and migration context,
# faiss's search for a SIMD build, which reads like an error where none is): shown at debug only.
CHATTY = ("alembic.runtime.plugins", "alembic.runtime.migration", "faiss.loader")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    quiet = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet)
