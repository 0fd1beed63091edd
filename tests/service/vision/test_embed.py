import json
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelError
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import YuNetDetector
from service.vision.embed import OnnxEmbedder, preprocess
from service.vision.manifest import Preprocess, load_manifest, manifest_from_dict
from service.vision.models import builtin_manifest, load_embedder_model
from tests.conftest import orl, photo

SFACE_MANIFEST = builtin_manifest("sface")


def crop(detector: YuNetDetector, data: bytes) -> np.ndarray:
    image = decode_image(data)
    return align_face(image, detector.detect(image)[0].landmarks)


def test_embeddings_are_unit_vectors_and_batching_changes_nothing(
    detector: YuNetDetector, embedder: OnnxEmbedder
) -> None:
    crops = [crop(detector, orl(1, i)) for i in (1, 2, 3)] + [crop(detector, orl(2, 1))]
    batch = embedder.embed(crops)
    singles = np.concatenate([embedder.embed([c]) for c in crops])
    assert batch.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, singles, atol=1e-4)


def test_same_person_is_closer_than_another(detector: YuNetDetector, embedder: OnnxEmbedder) -> None:
    a, b, c = embedder.embed(
        [crop(detector, photo("obama.jpg")), crop(detector, photo("obama2.jpg")), crop(detector, photo("biden.jpg"))]
    )
    assert float(a @ b) > SFACE_MANIFEST.threshold.cosine > max(float(a @ c), float(b @ c))


def test_preprocess_follows_the_manifest() -> None:
    crops = [np.full((112, 112, 3), (10, 20, 30), np.uint8)]
    arcface = SFACE_MANIFEST.preprocess.__class__(color="BGR", mean=(127.5,) * 3, std=(127.5,) * 3)
    manifest = SFACE_MANIFEST.__class__(**{**SFACE_MANIFEST.__dict__, "preprocess": arcface})
    x = preprocess(crops, manifest)
    assert x.shape == (1, 3, 112, 112)
    np.testing.assert_allclose(x[0, :, 0, 0], (np.array([30, 20, 10]) - 127.5) / 127.5)
    raw = preprocess(crops, SFACE_MANIFEST)
    np.testing.assert_allclose(raw[0, :, 0, 0], [10, 20, 30])


def test_a_model_file_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    manifest, model = load_embedder_model("builtin:sface")
    (tmp_path / "model.onnx").write_bytes(model)
    data = manifest.to_dict() | {"file": "model.onnx", "sha256": "0" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="sha256"):
        load_embedder_model(str(tmp_path))


def test_a_user_manifest_loads_and_runs(tmp_path: Path, detector: YuNetDetector) -> None:
    manifest, model = load_embedder_model("builtin:sface")
    (tmp_path / "model.onnx").write_bytes(model)
    from service.vision.manifest import sha256_bytes

    data = manifest.to_dict() | {"file": "model.onnx", "sha256": sha256_bytes(model), "name": "mine"}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    loaded, onnx_bytes = load_embedder_model(str(tmp_path / "manifest.json"))
    assert loaded.model_id == "mine@2021dec-int8bq"
    assert loaded == load_manifest(tmp_path / "manifest.json")
    out = OnnxEmbedder(loaded, onnx_bytes).embed([crop(detector, orl(3, 3))])
    assert out.shape == (1, 128)


def test_manifests_are_strict() -> None:
    data = SFACE_MANIFEST.to_dict()
    with pytest.raises(ModelError, match="unknown keys"):
        manifest_from_dict(data | {"mean": [0, 0, 0]})
    with pytest.raises(ModelError, match="unknown keys"):
        manifest_from_dict(data | {"preprocess": data["preprocess"] | {"scale": 1}})
    missing = dict(data)
    del missing["embedding_size"]
    with pytest.raises(ModelError, match="incomplete"):
        manifest_from_dict(missing)
    assert manifest_from_dict(data) == SFACE_MANIFEST
    assert isinstance(SFACE_MANIFEST.preprocess, Preprocess)


def test_embedding_size_mismatch_is_a_start_up_error() -> None:
    manifest, model = load_embedder_model("builtin:sface")
    wrong = manifest.__class__(**{**manifest.__dict__, "embedding_size": 512})
    with pytest.raises(ModelError, match="128-d"):
        OnnxEmbedder(wrong, model)


def test_folding_the_int8_weights_changes_no_embedding(detector: YuNetDetector) -> None:
    from service.vision.manifest import read_verified
    from service.vision.models import _packaged, repair_sface

    raw = read_verified(_packaged(SFACE_MANIFEST.file), SFACE_MANIFEST.sha256)
    crops = [crop(detector, orl(p, 1)) for p in (1, 2, 3)]
    folded = OnnxEmbedder(SFACE_MANIFEST, repair_sface(raw)).embed(crops)
    graph_quantized = OnnxEmbedder(SFACE_MANIFEST, repair_sface(raw, fold=False)).embed(crops)
    np.testing.assert_allclose((folded * graph_quantized).sum(axis=1), 1.0, atol=1e-5)
