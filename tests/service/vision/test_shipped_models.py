"""Every model shipped in models/ loads as the service loads it and tells held-out real people apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import YuNetDetector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_embedder_model
from tests.conftest import orl

MODELS = Path(__file__).resolve().parents[3] / "models"
SHIPPED = sorted(p.parent for p in MODELS.glob("*/manifest.json"))
HELD_OUT = range(11, 21)  # ORL s11-s20: used by no calibration or tuning step of our own models


def test_the_models_folder_ships_a_model() -> None:
    assert SHIPPED, f"no */manifest.json under {MODELS}"


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_loads_documents_itself_and_separates_held_out_people(
    folder: Path, detector: YuNetDetector
) -> None:
    manifest, model = load_embedder_model(str(folder))  # checks the sha256 against the manifest
    assert manifest.licence, "a shipped model states the licence of its weights"
    assert (folder / "MODEL_CARD.md").is_file()
    assert json.loads((folder / "manifest.json").read_text()).get("impostors"), "the gallery-aware threshold needs it"
    embedder = OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"], intra_op_threads=1)

    crops, people = [], []
    for person in HELD_OUT:
        for index in (1, 2, 3, 4):
            image = decode_image(orl(person, index))
            crops.append(align_face(image, detector.detect(image)[0].landmarks))
            people.append(person)
    emb = embedder.embed(crops)
    labels = np.array(people)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    sims = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    genuine, impostor = sims[same & off_diagonal], sims[~same]
    assert genuine.mean() > manifest.threshold.cosine > impostor.mean()
    # Photo 1 of each person enrolled, photos 2-4 searched among the ten.
    gallery = np.arange(0, len(labels), 4)
    probes = np.setdiff1d(np.arange(len(labels)), gallery)
    found = labels[gallery][np.argmax(emb[probes] @ emb[gallery].T, axis=1)]
    assert float(np.mean(found == labels[probes])) >= 0.9
