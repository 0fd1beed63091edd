"""Aligned face crops -> L2-normalised embeddings, through ONNX Runtime.

Preprocessing comes from the model's manifest and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.errors import ModelError
from service.vision.manifest import ModelManifest
from service.vision.onnx import DEFAULT_PROVIDERS, create_session, provider_in_use


class Embedder(Protocol):
    manifest: ModelManifest

    @property
    def provider(self) -> str: ...

    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """(N, H, W, 3) RGB aligned crops -> (N, D) unit vectors."""
        ...


def l2_normalize(x: NDArray[np.float32], eps: float = 1e-12) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


def preprocess(crops: Sequence[NDArray[np.uint8]], manifest: ModelManifest) -> NDArray[np.float32]:
    """RGB uint8 crops -> the model's input tensor as the manifest declares it."""
    pre = manifest.preprocess
    w, h = pre.size
    batch = np.stack([np.asarray(c) for c in crops]).astype(np.float32)  # (N, H, W, 3) RGB
    if batch.shape[1:] != (h, w, 3):
        raise ValueError(f"crops must be ({h}, {w}, 3), got {batch.shape[1:]}")
    if pre.color == "BGR":
        batch = batch[..., ::-1]
    batch = ((batch - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)).astype(np.float32)
    if pre.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


class OnnxEmbedder:
    def __init__(
        self,
        manifest: ModelManifest,
        model: bytes,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 0,
        require_gpu: bool = False,
        max_batch: int = 64,
    ) -> None:
        self.manifest = manifest
        self.max_batch = max_batch
        self.session: ort.InferenceSession = create_session(
            model,
            providers=providers,
            intra_op_threads=intra_op_threads,
            require_gpu=require_gpu,
            label=f"embedder {manifest.model_id}",
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{manifest.model_id}: expected one input, the model has {[i.name for i in inputs]}")
        self._input = inputs[0].name
        if manifest.input_name and manifest.input_name != self._input:
            raise ModelError(f"{manifest.model_id}: manifest input {manifest.input_name!r}, model has {self._input!r}")
        batch_dim = inputs[0].shape[0]
        self.batched = manifest.dynamic_batch and not isinstance(batch_dim, int)
        probe = self.embed([np.zeros((manifest.preprocess.size[1], manifest.preprocess.size[0], 3), np.uint8)] * 2)
        if probe.shape[1] != manifest.embedding_size:
            raise ModelError(
                f"{manifest.model_id}: model gives {probe.shape[1]}-d embeddings, "
                f"manifest says {manifest.embedding_size}"
            )

    @property
    def provider(self) -> str:
        return provider_in_use(self.session)

    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        if len(crops) == 0:
            return np.zeros((0, self.manifest.embedding_size), np.float32)
        x = preprocess(crops, self.manifest)
        step = self.max_batch if self.batched else 1
        outs = [self.session.run(None, {self._input: x[i : i + step]})[0] for i in range(0, len(x), step)]
        raw = np.concatenate(outs).reshape(len(x), -1).astype(np.float32)
        return l2_normalize(raw)
