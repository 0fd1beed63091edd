from __future__ import annotations

import pytest

from service.vision.detect import YuNetDetector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_detector_model, load_embedder_model


@pytest.fixture(scope="session")
def detector() -> YuNetDetector:
    return YuNetDetector(load_detector_model())


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    manifest, model = load_embedder_model("builtin:sface")
    return OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"])
