"""Aligned crops -> unit embeddings, from a PyTorch checkpoint or an exported ONNX model.

Both sides take (112, 112, 3) uint8 RGB crops, as the service's `Embedder` does, so
evaluation and export compare models through one interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from training.data.transforms import crop_to_tensor

if TYPE_CHECKING:
    from service.vision.embed import OnnxEmbedder
    from training.config import ExperimentConfig


class CropEmbedder(Protocol):
    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """(N,) RGB crops -> (N, D) unit vectors."""
        ...


def l2_normalize(x: NDArray[np.floating], eps: float = 1e-12) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


class TorchEmbedder:
    """A backbone in eval mode, fed the same (x - 127.5) / 127.5 RGB tensors as training."""

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        if len(crops) == 0:
            raise ValueError("no crops to embed")
        batch = torch.stack([crop_to_tensor(c) for c in crops]).to(self.device)  # (N, 3, 112, 112)
        return l2_normalize(self.model(batch).float().cpu().numpy())


def embed_all(
    embedder: CropEmbedder,
    crops: Sequence[NDArray[np.uint8]],
    *,
    flip: bool = False,
    batch_size: int = 64,
    desc: str | None = None,
) -> NDArray[np.float32]:
    """Embed in batches; with `flip`, InsightFace's test-time trick: normalise(e(x) + e(mirror x))."""
    out = []
    for start in tqdm(range(0, len(crops), batch_size), desc=desc, disable=desc is None, unit="batch"):
        chunk = crops[start : start + batch_size]
        emb = embedder.embed(chunk)
        if flip:
            emb = emb + embedder.embed([np.ascontiguousarray(c[:, ::-1]) for c in chunk])
        out.append(emb)
    return l2_normalize(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, ExperimentConfig]:
    """A train-loop checkpoint ({"config": dict, "model": backbone state_dict}) -> (backbone, config)."""
    from training.backbones import get_model
    from training.checkpoint import load
    from training.config import config_from_dict

    state: dict[str, Any] = load(Path(path))
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not a training checkpoint (expected the keys 'config' and 'model')")
    cfg = config_from_dict(state["config"], source=str(path))
    model = get_model(cfg.backbone)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def load_onnx_embedder(ref: str) -> OnnxEmbedder:
    """`builtin:<name>` or a manifest path -> the service's own ONNX embedder (CPU)."""
    from service.vision.embed import OnnxEmbedder
    from service.vision.models import load_embedder_model

    manifest, model = load_embedder_model(ref)
    return OnnxEmbedder(manifest, model, providers=("CPUExecutionProvider",))
