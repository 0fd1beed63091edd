"""Backbones by name: `get_model(cfg)` is the one way training, evaluation and export build one.

Every backbone maps `(B, 3, 112, 112)` RGB images normalised as `(x - 127.5) / 127.5`
to `(B, cfg.embedding_size)` embeddings, not L2-normalised.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from training.backbones.iresnet import IResNet
from training.backbones.mobilefacenet import MobileFaceNet
from training.config import BackboneConfig

BACKBONES: dict[str, Callable[[BackboneConfig], nn.Module]] = {
    "iresnet18": IResNet,
    "iresnet34": IResNet,
    "iresnet50": IResNet,
    "iresnet100": IResNet,
    "mobilefacenet": MobileFaceNet,
}


def get_model(cfg: BackboneConfig) -> nn.Module:
    try:
        build = BACKBONES[cfg.name]
    except KeyError:
        raise ValueError(f"unknown backbone {cfg.name!r}; choose one of: {', '.join(BACKBONES)}") from None
    return build(cfg)
